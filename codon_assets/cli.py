"""The `codon-assets` command line: materializes assets through Dagster on the persistent instance (so every
run shows in the UI) and writes the original tool's file formats beside them."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from codon_assets.history import add_history_parser
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
    found = host_for_filename(path.name) or HOSTS_BY_KEY.get(path.stem) or HOSTS_BY_KEY.get(path.parent.name)
    if found is None:
        from codon_assets.core.hosts import HOSTS

        aliases = ", ".join(f"{a} ({h.key})" for h in HOSTS for a in h.file_aliases)
        raise CliError(f"cannot tell the host of {path.name}: pass --host, or name the file {aliases}", code=2)
    return found.key


INGEST_AND_FEATURES = ["raw_tsv", "converted_dataset", "converted_rejects", "evo2_features"]
MODEL = ["enhanced_dataset", "surrogate_model"]
DESIGN = ["codon_designs"]


# Above this (about 110,000 records of the release layout) each step runs in a process of its own.
LARGE_INPUT_BYTES = int(os.environ.get("CODON_CLI_LARGE_INPUT_BYTES", 200 * 2**20))


def materialize_partition(host: str | None, selection: list[str], files: list[Path] | None = None,
                          run_config: dict | None = None, evo2_backend: str | None = None,
                          measured: Path | None = None):
    """Materialize the selected assets for one host partition (None: the unpartitioned ones) on the
    persistent instance."""
    import dagster as dg
    from filelock import FileLock

    from codon_assets.definitions import build_resources, command_line_job
    from resources.io_manager import release_unused_memory

    # Dagster's own console log is for the UI; the command line prints its own summary lines.
    run_config = {**(run_config or {}), "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    # Small inputs run their steps in this process (a step process costs seconds of imports); large ones
    # one step per process, one at a time, so memory is one step's peak, not what earlier steps left behind.
    large = files is not None and sum(f.stat().st_size for f in files) > LARGE_INPUT_BYTES
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
    from codon_assets import run_guard

    # The process tags let a later command tell that this run's worker is gone (killed) and free its slots.
    tags = {"codon_assets/source": "cli", **({"dagster/partition": host} if host else {}), **run_guard.process_tags()}
    # Two first runs on a new instance would both create its sqlite tables ("table ... already exists"):
    # the first opening of each storage is serialised by a lock file in DAGSTER_HOME.
    with FileLock(str(Path(os.environ["DAGSTER_HOME"]) / ".storage-init.lock"), timeout=300):
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        instance.get_latest_materialization_event(dg.AssetKey("raw_tsv"))
    home = Path(os.environ["DAGSTER_HOME"])
    # Runs of one host partition from the command line take turns (the waiting one names the holder); a
    # signal cancels the run and frees its slots; runs whose worker was killed are failed before waiting.
    with instance, run_guard.interrupt_handling(instance), \
            run_guard.partition_lock(home, host or "unpartitioned", " ".join(sys.argv)):
        run_guard.fail_orphaned_runs(instance)
        with run_guard.slot_wait_reporter(instance):
            result = dg.execute_job(dg.reconstructable(command_line_job), instance, run_config=run_config, tags=tags,
                                    asset_selection=[dg.AssetKey(name) for name in selection], raise_on_error=False)
        step_seconds = _step_seconds(instance, result.run_id)
    release_unused_memory()  # the run's tables are gone; the exports start from a lean process
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
    metadata = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        metadata[materialization.asset_key.to_user_string()] = {
            key: value.value for key, value in materialization.metadata.items()
        }
    return metadata


def run_host(paths: list[Path], host: str, output_dir: Path, limit: int | None, evo2_backend: str | None = None,
             train_surrogate: bool = False, measured: Path | None = None) -> dict:
    """Materialize one host partition from all its input files, then write the seed-format exports of
    exactly what this run materialized (the run's own stored versions) and `pipeline_results.json`."""
    from codon_assets.core.export import (
        converted_records,
        enhanced_records,
        evo2_feature_records,
        table_batches,
        write_json,
        write_json_array,
        write_jsonl,
    )

    started = time.perf_counter()
    # Exports are named after the file; several files of one host are one partition, named after the host.
    stem = paths[0].stem if len(paths) == 1 else host
    run_config = {"ops": {"converted_dataset": {"config": {"limit": limit}}}} if limit else None
    selection = INGEST_AND_FEATURES + (MODEL if train_surrogate else [])
    inputs = ", ".join(map(str, paths))
    print(f"[{host}] materializing {' -> '.join(selection)} for {inputs}", file=sys.stderr)
    result, step_seconds = materialize_partition(host, selection, paths, run_config, evo2_backend, measured)
    results: dict = {"status": "success" if result.success else "failed", "host": host, "input": inputs,
                     "inputs": [str(p) for p in paths], "dagster_run_id": result.run_id, "steps": {}, "outputs": {}}
    meta = _materializations(result)
    if "converted_dataset" in meta:
        converted = meta["converted_dataset"]
        results["steps"]["convert"] = {
            "status": "success",
            "rows_read": converted["rows_read"],
            "data_lines": converted["data_lines"],
            "blank_lines": converted["blank_lines"],
            "valid": converted["valid"],
            "rejected": converted["rejected"],
            "text_replaced_rows": converted["text_replaced_rows"],
            "rejects_by_reason": converted["rejects_by_reason_json"],
            "files": converted["files_json"],
            "seconds": step_seconds.get("converted_dataset"),
        }
        jsonl = output_dir / f"{stem}.jsonl"
        write_jsonl(converted_records(table_batches(converted["path"])), jsonl)
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
        feature_json = output_dir / f"{stem}_evo2_features.json"
        previews = table_batches(meta["converted_dataset"]["path"], ["protein_id", "sequence"])
        write_json_array(evo2_feature_records(table_batches(features["path"]), previews), feature_json)
        results["outputs"] |= {"evo2_features_json": str(feature_json), "evo2_features_parquet": features["path"]}
        print(f"[{host}] {features['success']} records scored ({features['backend']}), {features['error']} errors, "
              f"{features['cache_hits']} from cache -> {feature_json}", file=sys.stderr)
    if "enhanced_dataset" in meta:
        enhanced = meta["enhanced_dataset"]
        results["steps"]["enhance"] = {
            "status": "success",
            "mode": enhanced["mode"],
            "records": enhanced["dagster/row_count"],
            "percent_enhanced": enhanced["percent_enhanced"],
            "mean_abs_delta": enhanced["mean_abs_delta"],
            "measured_records": enhanced["measured_records"],
            "measured_labels": enhanced["measured_labels"],
            "seconds": step_seconds.get("enhanced_dataset"),
        }
        enhanced_jsonl = output_dir / f"{stem}_enhanced.jsonl"
        write_jsonl(enhanced_records(table_batches(enhanced["path"])), enhanced_jsonl)
        results["outputs"]["enhanced_jsonl"] = str(enhanced_jsonl)
    if "surrogate_model" in meta:
        model = meta["surrogate_model"]
        results["steps"]["train_surrogate"] = {
            "status": "success",
            "metrics": {k.removeprefix("cv_"): v for k, v in model.items() if k.startswith("cv_")},
            "baselines": model["baselines"],
            "label_source": model["label_source"],
            "mlflow_run_id": model["mlflow_run_id"],
            "model_name": model["registered_model"],
            "model_version": model["registered_version"],
            "model_uri": model["model_uri"],
            "seconds": step_seconds.get("surrogate_model"),
        }
        pkl = output_dir / "models" / f"{stem}_surrogate.pkl"
        export_pickle(Path(model["path"]), pkl)
        results["outputs"]["surrogate_pkl"] = str(pkl)
        print(f"[{host}] surrogate: held-out Spearman {model['cv_spearman']:.3f} ({model['label_source']} labels), "
              f"registered {model['model_uri']} -> {pkl}", file=sys.stderr)
    if not result.success:
        results["error"] = _failure_message(result)
    results["total_seconds"] = round(time.perf_counter() - started, 3)
    write_json(results, output_dir / "pipeline_results.json")
    if not result.success:
        raise CliError(f"[{host}] {results['error']}")
    return results


def export_pickle(model_dir: Path, path: Path) -> None:
    """The original tool's `models/<stem>_surrogate.pkl`: a joblib dict with feature keys, models, config."""
    import joblib

    from codon_assets.core.surrogate import SurrogateModel

    model = SurrogateModel.load(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    joblib.dump({"feature_keys": model.feature_names, "models": {"mu": model.mu, "hi": model.hi},
                 "config": {"hosts": model.hosts, "backend": model.backend, "label_source": model.label_source,
                            "metrics": model.metrics}, "surrogate": model}, tmp)
    os.replace(tmp, path)


def cmd_run(args: argparse.Namespace) -> int:
    from codon_assets.core.hosts import HOSTS
    from codon_assets.core.tsv import read_header

    source = Path(args.input)
    if not source.exists():
        raise CliError(f"{source}: no such file or directory")
    if source.is_dir():
        # Every host file found there: all files of one host are one partition input (release aliases in
        # any case, and <host>/*.tsv).
        from resources.inputs import InputFiles

        finder = InputFiles(input_dir=str(source))
        runs = [(host.key, files) for host in HOSTS if (files := finder.files_for(host.key))]
        if not runs:
            raise CliError(f"{source}: no host input files found (expected release names such as Sac.tsv)", code=2)
        if args.measured:
            raise CliError("--measured goes with one input file; put <stem>_measured.tsv beside each host file", code=2)
    else:
        runs = [(resolve_host(source, args.host), [source])]
    measured = Path(args.measured) if args.measured else None
    if measured is not None and not measured.is_file():
        raise CliError(f"{measured}: no such measured table")
    # Unusable input or output is refused before any run starts.
    for _, files in runs:
        for file in files:
            read_header(file)
    output_dirs = {host: Path(args.output_dir) / host if source.is_dir() else Path(args.output_dir) for host, _ in runs}
    for directory in output_dirs.values():
        ensure_writable_dir(directory)
    ensure_instance_home()
    failed = []
    for host, files in runs:
        try:
            run_host(files, host, output_dirs[host], args.limit, args.evo2_backend, args.train_surrogate, measured)
        except CliError as exc:
            if len(runs) == 1:
                raise
            failed.append(host)
            print(f"codon-assets: error: {exc}", file=sys.stderr)
    if failed:
        raise CliError(f"the run failed for {', '.join(failed)}")
    return 0


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` if needed and prove a file can be written there, before any work starts."""
    if path.exists() and not path.is_dir():
        raise CliError(f"{path}: exists and is not a directory", code=2)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise CliError(f"{path}: cannot write there ({exc.strerror or exc})", code=2) from None


def ensure_writable_file(path: Path) -> None:
    """An output file the command may create or replace: not a directory, in a writable directory."""
    if path.is_dir():
        raise CliError(f"{path}: is a directory; name an output file", code=2)
    ensure_writable_dir(path.parent)


def cmd_materialize(args: argparse.Namespace) -> int:
    """Materialize every asset for each host that has input (what `make demo` does)."""
    from codon_assets.definitions import build_resources
    from codon_assets.partitions import host_partitions

    home = ensure_instance_home()
    finder = build_resources()["input_files"]
    with_data = finder.hosts_with_data(host_partitions.get_partition_keys())
    hosts = args.host or with_data
    if not hosts:
        raise CliError(f"no host has input in {finder.input_dir}")
    skipped = [h for h in host_partitions.get_partition_keys() if h not in with_data]
    failed = []
    for host in hosts:
        result, _ = materialize_partition(host, INGEST_AND_FEATURES + MODEL + DESIGN)
        if result.success:
            meta = _materializations(result)
            designs = meta["codon_designs"]["summary"]
            print(f"[{host}] materialized: {meta['converted_dataset']['valid']} valid, "
                  f"{meta['converted_dataset']['rejected']} rejected, {meta['evo2_features']['success']} scored, "
                  f"surrogate {meta['surrogate_model']['model_uri']} (held-out Spearman "
                  f"{meta['surrogate_model']['cv_spearman']:.3f}, {meta['surrogate_model']['label_source']} labels), "
                  f"{designs['n_proteins']} designs (mean reward gain over preferred codons "
                  f"{designs['mean_reward_gain_over_preferred']:+.3f})")
        else:
            failed.append(host)
            print(f"[{host}] FAILED: {_failure_message(result)}", file=sys.stderr)
    if len(failed) < len(hosts):
        result, _ = materialize_partition(None, ["surrogate_model_unified"])
        if result.success:
            meta = _materializations(result)["surrogate_model_unified"]
            print(f"[unified] surrogate {meta['model_uri']} (held-out Spearman {meta['cv_spearman']:.3f})")
        else:
            failed.append("unified")
            print(f"[unified] FAILED: {_failure_message(result)}", file=sys.stderr)
    if skipped:
        print(f"hosts without input data (not materialized): {', '.join(skipped)}")
    from resources.mlflow_tracking import MlflowTracking

    print(f"instance: {home}\nopen the UI with `make ui` and browse http://127.0.0.1:3000/assets")
    print(f"models: `make mlflow` serves {MlflowTracking().uri()} on http://127.0.0.1:5000")
    if failed:
        raise CliError(f"materialization failed for {', '.join(failed)}")
    return 0


def load_surrogate(reference: str):
    """A surrogate from a `.pkl` the user names (joblib: only load files you trust), a saved model folder,
    or the MLflow registry (`name`, `name/version`, `models:/...`)."""
    from codon_assets.core.surrogate import SurrogateModel

    path = Path(reference)
    if reference.endswith(".pkl"):
        if not path.is_file():
            raise CliError(f"{path}: no such model file")
        import joblib

        try:
            bundle = joblib.load(path)
        except Exception:  # whatever unpickling a foreign file raises, it is not our model
            bundle = None
        if not isinstance(bundle, dict) or not isinstance(bundle.get("surrogate"), SurrogateModel):
            raise CliError(f"{path}: not a codon-assets surrogate export")
        return bundle["surrogate"]
    if path.is_dir() and (path / "surrogate.json").exists():
        try:
            return SurrogateModel.load(path)
        except Exception as exc:  # a damaged or foreign folder: name the file and the first line
            raise CliError(f"{path}: not a readable saved surrogate ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    if path.exists() and not reference.startswith("models:/"):
        raise CliError(f"{path}: not a surrogate (expected a .pkl export or a saved model folder)")
    from resources.mlflow_tracking import MlflowTracking, load_registered

    try:
        return load_registered(reference, MlflowTracking(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", "")))
    except Exception as exc:  # the registry's own errors are long; the user needs the one line
        raise CliError(f"cannot load model {reference!r} from the MLflow registry: {str(exc).splitlines()[0]}")


def cmd_predict(args: argparse.Namespace) -> int:
    """mu and sigma for every valid record of a table, featurised exactly as in training. A record whose
    language-model features could not be computed gets no prediction, and the reason."""
    import numpy as np
    import pandas as pd

    from codon_assets.core.convert import ConversionSettings, convert_files
    from codon_assets.core.export import atomic_text_writer
    from codon_assets.core.hosts import get_host
    from codon_assets.core.surrogate import predict_frame
    from codon_assets.core.surrogate_features import EVO2_COLUMNS
    from codon_assets.core.tsv import read_release_table

    source, output = Path(args.input), Path(args.output)
    ensure_writable_file(output)
    release = read_release_table(source)
    ensure_instance_home()
    model = load_surrogate(args.model)
    if args.host:
        host = resolve_host(source, args.host)
    elif len(model.hosts) == 1:
        host = model.hosts[0]
    else:
        host = resolve_host(source, None)
    if host not in model.hosts:
        raise CliError(f"the model was trained for {', '.join(model.hosts)}, not {host}", code=2)
    result = convert_files([release], get_host(host), ConversionSettings())
    records = result.valid
    frame = pd.DataFrame({"protein_id": records["protein_id"].to_pylist(), "sequence": records["sequence"].to_pylist(),
                          "seq_sha256": records["seq_sha256"].to_pylist(), "host": host})
    reason = np.full(len(frame), "", dtype=object)
    if model.backend != "markov" and len(frame):
        from codon_assets.core.features import extract_features
        from codon_assets.definitions import evo2_from_env

        evo2 = evo2_from_env(model.backend)
        evo2.setup_for_execution(None)
        scorer = evo2.scorer()
        features, _ = extract_features(records.select(["protein_id", "sequence", "seq_sha256"]), scorer, evo2.cache())
        for name in EVO2_COLUMNS:
            frame[name] = features[name].to_numpy(zero_copy_only=False).astype(float)
        failed = np.array(features["status"].to_pylist()) != "success"
        reason[failed] = [f"features_failed: {e}" for e in np.array(features["error"].to_pylist(), dtype=object)[failed]]
    predicted = reason == ""
    mu, sigma = np.full(len(frame), np.nan), np.full(len(frame), np.nan)
    if predicted.any():
        mu[predicted], sigma[predicted] = predict_frame(model, frame[predicted])
    with atomic_text_writer(output) as handle:
        pd.DataFrame({"protein_id": frame["protein_id"], "mu": mu, "sigma": sigma,
                      "status": np.where(predicted, "predicted", "not_predicted"), "reason": reason}
                     ).to_csv(handle, sep="\t", index=False, na_rep="")
    reasons = ", ".join(f"{k}: {v}" for k, v in result.rejects_by_reason().items()) or "none"
    print(f"[{host}] {result.rows_read} rows: {int(predicted.sum())} predicted, {int((~predicted).sum())} without "
          f"features (no prediction) -> {args.output}; {result.rejects.num_rows} rejected ({reasons})", file=sys.stderr)
    if not predicted.any():
        raise CliError(f"{source}: nothing could be predicted ({len(frame)} valid records, "
                       f"{int((~predicted).sum())} without features, {result.rejects.num_rows} rejected)")
    return 0


def lineage_chain(asset: str, host: str | None) -> list[dict]:
    """The asset and everything upstream of it, each with its latest materialization for the partition."""
    import dagster as dg

    from codon_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    key = dg.AssetKey.from_user_string(asset)
    if key not in graph.get_all_asset_keys():
        names = ", ".join(sorted(k.to_user_string() for k in graph.get_all_asset_keys()))
        raise CliError(f"unknown asset {asset!r}; assets: {names}", code=2)
    order, queue = [], [key]
    while queue:
        current = queue.pop(0)
        if current not in order:
            order.append(current)
            queue.extend(sorted(graph.get(current).parent_keys, key=lambda k: k.to_user_string()))
    chain = []
    with dg.DagsterInstance.get() as instance:
        for current in order:
            node = graph.get(current)
            if node.partitions_def is None:
                partitions = [None]
            elif host is not None:
                partitions = [host]
            else:  # an unpartitioned model over partitioned inputs: every host it could have read
                partitions = sorted(instance.get_materialized_partitions(current)) or [None]
            for partition in partitions:
                chain.append(_lineage_entry(instance, current, node, partition))
    return chain


def _lineage_entry(instance, key, node, partition: str | None) -> dict:
    import dagster as dg

    if partition is None:
        event = instance.get_latest_materialization_event(key)
    else:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
        event = records[0].event_log_entry if records else None
    entry: dict = {"asset": key.to_user_string(), "partition": partition,
                   "upstream": sorted(k.to_user_string() for k in node.parent_keys),
                   "code_version_defined": node.code_version}
    if event is None:
        return entry | {"materialized": False}
    materialization = event.asset_materialization
    tags = materialization.tags or {}
    entry |= {"materialized": True, "run_id": event.run_id, "timestamp": event.timestamp,
              "data_version": tags.get("dagster/data_version"), "code_version": tags.get("dagster/code_version")}
    for name in ("mlflow_run_id", "model_uri", "registered_model", "registered_version"):
        if name in materialization.metadata:
            entry[name] = materialization.metadata[name].value
    return entry


def cmd_lineage(args: argparse.Namespace) -> int:
    import json

    ensure_instance_home()
    chain = lineage_chain(args.asset, args.host)
    if args.json:
        print(json.dumps(chain, indent=2, default=str))
        return 0
    for entry in chain:
        where = f"{entry['asset']}[{entry['partition']}]" if entry["partition"] else entry["asset"]
        if not entry["materialized"]:
            print(f"{where}: not materialized")
            continue
        line = (f"{where}: data version {entry['data_version']}, code version {entry['code_version']}, "
                f"run {entry['run_id']}")
        if "mlflow_run_id" in entry:
            line += f"\n    MLflow run {entry['mlflow_run_id']}, model {entry['model_uri']}"
        print(line + (f"\n    <- {', '.join(entry['upstream'])}" if entry["upstream"] else ""))
    return 0


def cmd_design(args: argparse.Namespace) -> int:
    """Design CDS for target proteins against a surrogate, outside Dagster (the asset does the same)."""
    from codon_assets.core.export import atomic_text_writer
    from codon_assets.core.proteins import read_proteins
    from codon_assets.design import DesignConfig, designs_table, run_design

    ensure_writable_file(Path(args.output))
    ensure_instance_home()
    model = load_surrogate(args.model)
    host = resolve_host(Path(args.input), args.host)
    if host not in model.host_profiles or host not in model.markov_models:
        raise CliError(f"the model has no profile for {host} (trained for {', '.join(model.hosts)})", code=2)
    proteins, rejects = read_proteins(args.input)
    if not proteins:
        raise CliError(f"{args.input}: no usable protein ({len(rejects)} rejected)")
    config = DesignConfig(steps=args.steps, group=args.group, seed=args.seed)
    designs, summary = run_design(model, host, proteins, config)
    with atomic_text_writer(Path(args.output)) as handle:
        designs_table(designs).to_pandas().to_csv(handle, sep="\t", index=False)
    for reject in rejects:
        print(f"rejected {reject.protein_id or '?'} ({reject.source}): {reject.reason} {reject.detail}", file=sys.stderr)
    print(f"[{host}] {len(designs)} designs -> {args.output}; feasible {summary['n_feasible']}/{len(designs)}; "
          f"mean reward gain over preferred codons {summary['mean_reward_gain_over_preferred']:+.3f}, "
          f"over random synonyms {summary['mean_reward_gain_over_random']:+.3f}", file=sys.stderr)
    return 0


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codon-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="materialize the graph for an input table (or a folder of host tables)")
    run.add_argument("--input", required=True, help="a host TSV, or a folder of them")
    run.add_argument("--host", help="host partition (default: from the file name, e.g. Sac.tsv -> S_cerevisiae)")
    run.add_argument("--output-dir", required=True, help="where the seed-compatible files go")
    run.add_argument("--limit", type=positive_int, help="convert only the first N data lines (N >= 1)")
    run.add_argument("--evo2-backend", choices=["markov", "evo2", "nim"],
                     help="feature backend (default: $CODON_EVO2_BACKEND or markov)")
    run.add_argument("--train-surrogate", action="store_true",
                     help="also build the enhanced dataset and train the surrogate (tracked in MLflow)")
    run.add_argument("--measured", help="measured expression table (TSV/CSV: id, value) for this host")
    run.set_defaults(func=cmd_run)

    predict = sub.add_parser("predict", help="predicted expression (mu, sigma) for a table of CDS")
    predict.add_argument("--model", required=True,
                         help="registered name[/version], models:/ URI, saved model folder, or .pkl export")
    predict.add_argument("--input", required=True, help="a host TSV in the release layout")
    predict.add_argument("--output", required=True, help="TSV with protein_id, mu, sigma")
    predict.add_argument("--host", help="host (default: the model's host, or from the file name)")
    predict.set_defaults(func=cmd_predict)

    from codon_assets.core.design_settings import OptimiserSettings

    defaults = OptimiserSettings()
    design = sub.add_parser("design", help="design host-specific CDS for proteins against a surrogate")
    design.add_argument("--host", help="host (default: from the file name, e.g. S_cerevisiae.fasta)")
    design.add_argument("--input", required=True, help="proteins: FASTA, or TSV with an id and a protein column")
    design.add_argument("--model", required=True, help="registered name[/version], models:/ URI, folder or .pkl")
    design.add_argument("--output", required=True, help="designs TSV")
    design.add_argument("--steps", type=positive_int, default=defaults.steps, help="policy-gradient steps (>= 1)")
    design.add_argument("--group", type=positive_int, default=defaults.group,
                        help="CDS sampled per protein and step (>= 1)")
    design.add_argument("--seed", type=int, default=defaults.seed)
    design.set_defaults(func=cmd_design)

    lineage = sub.add_parser("lineage", help="an asset's upstream chain with data versions, code versions, runs")
    lineage.add_argument("--asset", required=True, help="e.g. surrogate_model")
    lineage.add_argument("--host", help="host partition (for partitioned assets)")
    lineage.add_argument("--json", action="store_true", help="print JSON")
    lineage.set_defaults(func=cmd_lineage)

    mat = sub.add_parser("materialize", help="materialize all assets for hosts with input in CODON_INPUT_DIR")
    mat.add_argument("--host", action="append", help="only this host (repeatable)")
    mat.set_defaults(func=cmd_materialize)

    add_history_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    import dagster as dg

    # Beta/preview notices about Dagster's own API are for developers, not for a user at the terminal.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", module=r"mlflow\..*")
    # MLflow and its migrations log at INFO; the command line prints its own summary.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = build_parser().parse_args(argv)
    from codon_assets import run_guard
    from codon_assets.core.tsv import InputError

    try:
        return args.func(args)
    except CliError as exc:
        print(f"codon-assets: error: {exc}", file=sys.stderr)
        return exc.code
    except InputError as exc:
        print(f"codon-assets: error: {exc}", file=sys.stderr)
        return 1
    except run_guard.Interrupted as exc:
        print(f"codon-assets: interrupted ({exc})", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("codon-assets: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
