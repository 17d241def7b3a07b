"""The `codon-assets` command line: materializes assets through Dagster on the persistent instance (so every
run shows in the UI) and writes the original tool's file formats beside them."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from resources.paths import PROJECT_ROOT, dagster_home


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit code ``code``."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def ensure_instance_home() -> Path:
    """Point DAGSTER_HOME at `.dagster_home/` unless set, and give it the project's dagster.yaml."""
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    config = home / "dagster.yaml"
    if not config.exists() and (PROJECT_ROOT / "dagster.yaml").exists():
        config.symlink_to(PROJECT_ROOT / "dagster.yaml")
    return home


def resolve_host(path: Path, host: str | None) -> str:
    from codon_assets.core.hosts import HOSTS_BY_KEY, host_for_filename

    if host:
        if host not in HOSTS_BY_KEY:
            raise CliError(f"unknown host {host!r}; choose one of {', '.join(HOSTS_BY_KEY)}", code=2)
        return host
    found = host_for_filename(path.name) or HOSTS_BY_KEY.get(path.parent.name)
    if found is None:
        from codon_assets.core.hosts import HOSTS

        aliases = ", ".join(f"{a} ({h.key})" for h in HOSTS for a in h.file_aliases)
        raise CliError(f"cannot tell the host of {path.name}: pass --host, or name the file {aliases}", code=2)
    return found.key


def materialize_partition(host: str, files: list[Path] | None, run_config: dict | None = None,
                          evo2_backend: str | None = None):
    """Materialize the graph for one host partition on the persistent instance."""
    import dagster as dg

    from codon_assets.definitions import ALL_ASSETS, build_resources
    from resources import InputFiles

    # Dagster's own console log is for the UI; the command line prints its own summary lines.
    run_config = {**(run_config or {}), "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    resources = build_resources(evo2_backend)
    if files is not None:
        resources["input_files"] = InputFiles(files={host: [str(f) for f in files]})
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            ALL_ASSETS,
            partition_key=host,
            instance=instance,
            resources=resources,
            run_config=run_config,
            raise_on_error=False,
            tags={"codon_assets/source": "cli"},
        )
        step_seconds = _step_seconds(instance, result.run_id)
    return result, step_seconds


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
    metadata = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        metadata[materialization.asset_key.to_user_string()] = {
            key: value.value for key, value in materialization.metadata.items()
        }
    return metadata


def run_file(path: Path, host: str, output_dir: Path, limit: int | None, evo2_backend: str | None = None) -> dict:
    from codon_assets.core.export import converted_records, evo2_feature_records, write_json, write_json_array, write_jsonl

    started = time.perf_counter()
    run_config = {"ops": {"converted_dataset": {"config": {"limit": limit}}}} if limit else None
    print(f"[{host}] materializing raw_tsv -> converted_dataset -> evo2_features for {path}", file=sys.stderr)
    result, step_seconds = materialize_partition(host, [path], run_config, evo2_backend)
    results: dict = {"status": "success" if result.success else "failed", "host": host, "input": str(path),
                     "dagster_run_id": result.run_id, "steps": {}, "outputs": {}}
    meta = _materializations(result)
    if "converted_dataset" in meta:
        converted = meta["converted_dataset"]
        results["steps"]["convert"] = {
            "status": "success",
            "rows_read": converted["rows_read"],
            "valid": converted["valid"],
            "rejected": converted["rejected"],
            "rejects_by_reason": converted["rejects_by_reason_json"],
            "seconds": step_seconds.get("converted_dataset"),
        }
        jsonl = output_dir / f"{path.stem}.jsonl"
        write_jsonl(converted_records(pq.read_table(converted["path"])), jsonl)
        results["outputs"] |= {"jsonl": str(jsonl), "converted_parquet": converted["path"],
                               "rejects_parquet": meta["converted_rejects"]["path"]}
        print(f"[{host}] {converted['rows_read']} rows read: {converted['valid']} valid, "
              f"{converted['rejected']} rejected -> {jsonl}", file=sys.stderr)
    if "evo2_features" in meta:
        features = meta["evo2_features"]
        results["steps"]["evo2_features"] = {
            "status": "success",
            "records": features["records"],
            "success": features["success"],
            "error": features["error"],
            "cache_hits": features["cache_hits"],
            "records_per_s": features["records_per_s"],
            "backend": features["backend"],
            "model_version": features["model_version"],
            "seconds": step_seconds.get("evo2_features"),
        }
        feature_json = output_dir / f"{path.stem}_evo2_features.json"
        converted_table = pq.read_table(meta["converted_dataset"]["path"], columns=["protein_id", "sequence"])
        write_json_array(evo2_feature_records(pq.read_table(features["path"]), converted_table), feature_json)
        results["outputs"] |= {"evo2_features_json": str(feature_json), "evo2_features_parquet": features["path"]}
        print(f"[{host}] {features['success']} records scored ({features['backend']}), {features['error']} errors, "
              f"{features['cache_hits']} from cache -> {feature_json}", file=sys.stderr)
    if not result.success:
        results["error"] = _failure_message(result)
    results["total_seconds"] = round(time.perf_counter() - started, 3)
    write_json(results, output_dir / "pipeline_results.json")
    if not result.success:
        raise CliError(results["error"])
    return results


def cmd_run(args: argparse.Namespace) -> int:
    from codon_assets.core.hosts import HOSTS

    source = Path(args.input)
    if not source.exists():
        raise CliError(f"{source}: no such file or directory")
    ensure_instance_home()
    output_dir = Path(args.output_dir)
    if source.is_dir():
        # Every host file found there, one partition each (release aliases or <host>/ folders).
        from resources import InputFiles

        finder = InputFiles(input_dir=str(source))
        jobs = [(host.key, files) for host in HOSTS if (files := finder.files_for(host.key))]
        if not jobs:
            raise CliError(f"{source}: no host input files found (expected release names such as Sac.tsv)", code=2)
        for host, files in jobs:
            for file in files:
                run_file(file, host, output_dir / host, args.limit, args.evo2_backend)
        return 0
    run_file(source, resolve_host(source, args.host), output_dir, args.limit, args.evo2_backend)
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    """Materialize every asset for each host that has input (what `make demo` does)."""
    from codon_assets.definitions import build_resources
    from codon_assets.partitions import host_partitions

    home = ensure_instance_home()
    finder = build_resources()["input_files"]
    hosts = args.host or finder.hosts_with_data(host_partitions.get_partition_keys())
    if not hosts:
        raise CliError(f"no host has input in {finder.input_dir}")
    skipped = [h for h in host_partitions.get_partition_keys() if h not in hosts]
    failed = []
    for host in hosts:
        result, _ = materialize_partition(host, None)
        if result.success:
            meta = _materializations(result)["converted_dataset"]
            print(f"[{host}] materialized: {meta['valid']} valid, {meta['rejected']} rejected "
                  f"(run {result.run_id[:8]})")
        else:
            failed.append(host)
            print(f"[{host}] FAILED: {_failure_message(result)}", file=sys.stderr)
    if skipped:
        print(f"hosts without input data (not materialized): {', '.join(skipped)}")
    print(f"instance: {home}\nopen the UI with `make ui` and browse http://127.0.0.1:3000/assets")
    if failed:
        raise CliError(f"materialization failed for {', '.join(failed)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codon-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="materialize the graph for an input table (or a folder of host tables)")
    run.add_argument("--input", required=True, help="a host TSV, or a folder of them")
    run.add_argument("--host", help="host partition (default: from the file name, e.g. Sac.tsv -> S_cerevisiae)")
    run.add_argument("--output-dir", required=True, help="where the seed-compatible files go")
    run.add_argument("--limit", type=int, help="convert only the first N rows")
    run.add_argument("--evo2-backend", choices=["markov", "evo2", "nim"],
                     help="feature backend (default: $CODON_EVO2_BACKEND or markov)")
    run.set_defaults(func=cmd_run)

    mat = sub.add_parser("materialize", help="materialize all assets for hosts with input in CODON_INPUT_DIR")
    mat.add_argument("--host", action="append", help="only this host (repeatable)")
    mat.set_defaults(func=cmd_materialize)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    import dagster as dg

    # Beta/preview notices about Dagster's own API are for developers, not for a user at the terminal.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"codon-assets: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("codon-assets: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
