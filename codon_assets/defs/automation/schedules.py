"""Schedules: a weekly refresh of every host that has input (one run per host, like a partition backfill)."""

import dagster as dg

from codon_assets.defs.automation import jobs  # the module, so the job is defined (autoloaded) once
from codon_assets.asset_specs import host_partitions
from resources.inputs import InputFiles


@dg.schedule(
    job=jobs.host_graph_job,
    cron_schedule="0 3 * * 1",  # Mondays 03:00
    execution_timezone="UTC",
    description="Every Monday, one host_graph_job run per host with input data. The unified model follows "
                "by declarative automation once the host runs have materialized.",
)
def weekly_host_refresh(context: dg.ScheduleEvaluationContext, input_files: InputFiles):
    hosts = input_files.hosts_with_data(host_partitions.get_partition_keys())
    if not hosts:
        return dg.SkipReason(f"no host has input in {input_files.input_dir}")
    tick = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
    return [dg.RunRequest(run_key=f"{host}:{tick}", partition_key=host, tags={"codon_assets/trigger": "weekly"})
            for host in hosts]

