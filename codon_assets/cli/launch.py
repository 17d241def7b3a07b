"""Launching a run: the code location's definitions, on the persistent instance, through Dagster's own
execution API (its implicit asset job and executor), and what the run reports back."""

from __future__ import annotations

import gc
import sys
import threading
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from codon_assets import settings
from codon_assets.cli.progress import run_progress
from codon_assets.cli.terminal import in_background
from codon_assets.settings import dagster_home

INGEST_AND_FEATURES = ["raw_tsv", "converted_dataset", "converted_rejects", "markov_model", "evo2_features"]
MODEL = ["enhanced_dataset", "surrogate_model"]
DESIGN = ["codon_designs"]
LAUNCH_TAG = "codon_assets/launch"  # one id per command-line launch
FOLLOW_POLL_S = 0.5


def materialize_partition(host: str | None, selection: list[str], files: list[Path] | None = None,
                          run_config: dict | None = None, evo2_backend: str | None = None,
                          measured: Path | None = None,
                          on_materialized: Callable[[str, dict], None] | None = None):
    """Materialize the selected assets for one host partition (None: the unpartitioned ones) on the
    persistent instance. ``on_materialized(asset, metadata)`` is called once per stored asset, from a
    background thread while the run goes on (and for any it has not seen, once the run has ended)."""
    import dagster as dg
    from filelock import FileLock

    from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from codon_assets.defs.resources import build_resources
    from codon_assets.deployment import deployment_profile
    from resources.io_manager import release_unused_memory

    # Dagster's own console log is for the UI; the command line prints its own summary lines.
    run_config = {**(run_config or {}), "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    if deployment_profile() == "local":
        # The local executor (multi_or_in_process): small inputs run their steps in this process (a step
        # process costs seconds of imports); large ones one step per process, one at a time, so memory is one
        # step's peak, not what earlier steps left behind. Other profiles place steps by their own executor.
        large = files is not None and sum(f.stat().st_size for f in files) > settings.large_input_bytes()
        run_config["execution"] = {"config": {"multiprocess": {"max_concurrent": 1}} if large else {"in_process": {}}}
    resources = {}
    configured = build_resources(evo2_backend)
    if evo2_backend:
        resources["evo2"] = resource_config(configured["evo2"])
    if files is not None or measured is not None:
        # Measured tables are looked for beside the given input (or taken from --measured), never in the
        # demo's input folder.
        resources["input_files"] = resource_config(
            configured["input_files"],
            input_dir=str(files[0].parent) if files else configured["input_files"].input_dir,
            files={host: [str(f) for f in files]} if files is not None else {},
            measured={host: str(measured)} if measured is not None else {},
        )
    if resources:
        run_config["resources"] = {**run_config.get("resources", {}), **resources}
    from codon_assets.cli import run_guard

    # The process tags let a later command tell that this run's worker is gone (killed) and free its slots.
    launch = uuid.uuid4().hex  # finds this run's events while it runs
    tags = {"codon_assets/source": "cli", LAUNCH_TAG: launch, **({"dagster/partition": host} if host else {}),
            **run_guard.process_tags()}
    delivered: set[str] = set()
    delivering = threading.Lock()  # the follower thread and, once the run has ended, this one

    def deliver(materializations: dict[str, dict]) -> None:
        with delivering:
            for asset, metadata in materializations.items():
                if on_materialized is not None and asset not in delivered:
                    on_materialized(asset, metadata)
                    delivered.add(asset)
    # Two first runs on a new instance would both create its sqlite tables ("table ... already exists"):
    # the first opening of each storage is serialised by a lock file in DAGSTER_HOME.
    with FileLock(str(dagster_home() / ".storage-init.lock"), timeout=300):
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        instance.get_latest_materialization_event(dg.AssetKey("raw_tsv"))
    # The definitions, the libraries they import and the instance live as long as the process: frozen, they are
    # left out of the collector's full passes during the run (~0.4 s of a 52,000-record run).
    import codon_assets.definitions  # noqa: F401

    gc.freeze()
    home = dagster_home()
    # Runs of one host partition from the command line take turns (the waiting one names the holder); a
    # signal cancels the run and frees its slots; runs whose worker was killed are failed before waiting.
    with instance, run_guard.interrupt_handling(instance), \
            run_guard.partition_lock(home, host or "unpartitioned", " ".join(sys.argv)):
        run_guard.fail_orphaned_runs(instance)
        # One step per asset, except the conversion's two outputs.
        steps = [name for name in selection if name != "converted_rejects"]
        following = nullcontext() if on_materialized is None else \
            in_background(lambda stop: _follow_materializations(instance, launch, deliver, stop), "run-outputs")
        with run_guard.slot_wait_reporter(instance), run_progress(instance, steps), following:
            # The code location's own definitions and executor, through its implicit asset job (the job of UI
            # materializations); reconstructable, so step processes load the same definitions.
            job = ReconstructableRepository.for_module("codon_assets.definitions", "defs").get_reconstructable_job(
                IMPLICIT_ASSET_JOB_NAME)
            result = dg.execute_job(job, instance, run_config=run_config, tags=tags,
                                    asset_selection=[dg.AssetKey(name) for name in selection], raise_on_error=False)
        deliver(_materializations(result))
        step_seconds = _step_seconds(instance, result.run_id)
    release_unused_memory()  # the run's tables are gone; what comes next (another host) starts lean
    return result, step_seconds


def resource_config(resource, **overrides) -> dict:
    """Run configuration for a resource: every setting the environment gave it, then ``overrides``. Run
    configuration replaces a resource's whole configuration, so a flag that changes one setting must carry
    the others along (else, e.g., the NIM URL would fall back to its default and receive the API key)."""
    settings = {name: getattr(resource, name) for name in resource.model_fields_set}
    return {"config": {**settings, **overrides}}


def _step_seconds(instance, run_id: str) -> dict[str, float]:
    from dagster import DagsterEventType

    started, seconds = {}, {}
    for entry in instance.all_logs(run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}):
        if entry.dagster_event.event_type == DagsterEventType.STEP_START:
            started[entry.step_key] = entry.timestamp
        elif entry.step_key in started:
            seconds[entry.step_key] = round(entry.timestamp - started[entry.step_key], 3)
    return seconds


def _failure_message(result) -> str:
    """The user-facing cause of a failed run: a dg.Failure's description, else the innermost error."""
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        description = getattr(data.user_failure_data, "description", None)
        if description:
            return description
        error = data.error
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            return f"step {event.step_key} failed: {error.message.strip().splitlines()[-1]}"
    return "the run failed; see the Dagster UI for its logs"


def _materializations(result) -> dict[str, dict]:
    return _metadata_by_asset(result.get_asset_materialization_events())


def _metadata_by_asset(events) -> dict[str, dict]:
    """Each materialized asset's metadata values, from its materialization events (Dagster events)."""
    metadata = {}
    for event in events:
        materialization = event.step_materialization_data.materialization
        metadata[materialization.asset_key.to_user_string()] = {
            key: value.value for key, value in materialization.metadata.items()
        }
    return metadata


def _follow_materializations(instance, launch: str, deliver: Callable[[dict[str, dict]], None],
                             stop: threading.Event) -> None:
    """Hands the run's materializations to ``deliver`` as they are stored, until told to stop."""
    from dagster import DagsterEventType, RunsFilter

    run_id, cursor = None, None
    while True:
        try:
            if run_id is None:
                runs = instance.get_runs(filters=RunsFilter(tags={LAUNCH_TAG: launch}), limit=1)
                run_id = runs[0].run_id if runs else None
            if run_id is not None:
                # Only the events stored since the last poll: a poll costs the same at the last step as at the first.
                page = instance.get_records_for_run(run_id, cursor, of_type=DagsterEventType.ASSET_MATERIALIZATION)
                cursor = page.cursor
                deliver(_metadata_by_asset(record.event_log_entry.dagster_event for record in page.records))
        except Exception:  # noqa: BLE001  (a busy sqlite file: the next poll, or the run's end, delivers them)
            pass
        if stop.wait(FOLLOW_POLL_S):
            return

