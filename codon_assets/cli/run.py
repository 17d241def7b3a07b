"""`run` and `materialize`: the graph for input tables, and the seed-format files written from exactly what
the run stored."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from codon_assets.cli.common import (CliError, bare_name, ensure_instance_home, ensure_writable_dir,
                                     refuse_overwriting_inputs, resolve_host, transfer_quality)
from codon_assets.cli.launch import (DESIGN, INGEST_AND_FEATURES, MODEL, _failure_message, _materializations,
                                     materialize_partition)


def output_files(paths: list[Path], host: str, output_dir: Path) -> dict[str, Path]:
    """What `run` writes for one host partition: the seed-format exports, named after the file (several files
    of one host are one partition, named after the host), the model export and `pipeline_results.json`."""
    stem = bare_name(paths[0]) if len(paths) == 1 else host
    return {"jsonl": output_dir / f"{stem}.jsonl", "evo2_features_json": output_dir / f"{stem}_evo2_features.json",
            "enhanced_jsonl": output_dir / f"{stem}_enhanced.jsonl",
            "surrogate_pkl": output_dir / "models" / f"{stem}_surrogate.pkl",
            "results": output_dir / "pipeline_results.json"}


def run_host(paths: list[Path], host: str, output_dir: Path, limit: int | None, evo2_backend: str | None = None,
             train_surrogate: bool = False, measured: Path | None = None) -> dict:
    """Materialize one host partition from all its input files, then write the seed-format exports of
    exactly what this run materialized (the run's own stored versions) and `pipeline_results.json`."""
    from codon_assets.cli.export import ExportJobs, write_json

    started = time.perf_counter()
    outputs = output_files(paths, host, output_dir)
    jsonl, feature_json, enhanced_jsonl = outputs["jsonl"], outputs["evo2_features_json"], outputs["enhanced_jsonl"]
    run_config = {"ops": {"converted_dataset": {"config": {"limit": limit}}}} if limit else None
    selection = INGEST_AND_FEATURES + (MODEL if train_surrogate else [])
    inputs = ", ".join(map(str, paths))
    print(f"[{host}] materializing {' -> '.join(selection)} for {inputs}", file=sys.stderr)
    if train_surrogate:
        from resources.mlflow_tracking import MlflowTracking

        MlflowTracking.from_settings().start_logging_early()
    with ExportJobs() as exports:
        stored: dict[str, str] = {}

        def export_when_stored(asset: str, metadata: dict) -> None:
            """Each export starts as soon as the tables it is written from are stored (the run's versions)."""
            if asset in ("converted_dataset", "evo2_features", "enhanced_dataset"):
                stored[asset] = metadata["path"]
            if "converted_dataset" in stored:
                exports.submit("converted", stored["converted_dataset"], jsonl)
            if {"converted_dataset", "evo2_features"} <= stored.keys():
                exports.submit("features", stored["evo2_features"], stored["converted_dataset"], feature_json)
            if "enhanced_dataset" in stored:
                exports.submit("enhanced", stored["enhanced_dataset"], enhanced_jsonl)

        result, step_seconds = materialize_partition(host, selection, paths, run_config, evo2_backend, measured,
                                                     on_materialized=export_when_stored)
        exports.wait()
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
        results["outputs"]["enhanced_jsonl"] = str(enhanced_jsonl)
    if "surrogate_model" in meta:
        model = meta["surrogate_model"]
        results["steps"]["train_surrogate"] = {
            "status": "success",
            # A transferred model has no training of its own: the figures are its source model's.
            "metrics": {k.removeprefix("cv_").removeprefix("source_cv_"): v for k, v in model.items()
                        if k.startswith(("cv_", "source_cv_"))},
            "baselines": model.get("baselines", {}),
            "label_source": model["label_source"],
            "label_scale": model["label_scale"],
            "source_hosts": model["source_hosts"],
            "mlflow_run_id": model["mlflow_run_id"],
            "model_name": model["registered_model"],
            "model_version": model["registered_version"],
            "model_uri": model["model_uri"],
            "seconds": step_seconds.get("surrogate_model"),
        }
        pkl = outputs["surrogate_pkl"]
        export_pickle(Path(model["path"]), pkl)
        results["outputs"]["surrogate_pkl"] = str(pkl)
        if model["label_source"] == "measured":
            quality = f"held-out Spearman {model['cv_spearman']:.3f} (measured labels)"
        else:
            quality = (f"transferred: no measured labels for {host}; the unified model of "
                       f"{', '.join(model['source_hosts'])} (held-out Spearman {model['source_cv_spearman']:.3f} there) "
                       f"through its own profile, mu on the per-host relative scale; "
                       f"{transfer_quality(model, prefix='source_')}")
        print(f"[{host}] surrogate: {quality}, registered {model['model_uri']} -> {pkl}", file=sys.stderr)
    for line in warnings_of(result, meta):
        print(f"[{host}] warning: {line}", file=sys.stderr)
    if not result.success:
        results["error"] = _failure_message(result)
    results["total_seconds"] = round(time.perf_counter() - started, 3)
    write_json(results, outputs["results"])
    if not result.success:
        raise CliError(f"[{host}] {results['error']}")
    return results


def warnings_of(result, meta: dict[str, dict]) -> list[str]:
    """What the run found that a user should not miss although it succeeded: failed checks (e.g. records of
    another organism than the host) and measured-table rows that are not labels."""
    lines = [f"check {check.check_name} on {check.asset_key.to_user_string()} failed"
             + (f": {check.description}" if check.description else "")
             for check in result.get_asset_check_evaluations() if not check.passed]
    labels = meta.get("enhanced_dataset", {}).get("measured_labels") or {}
    if labels.get("measured_table"):
        unused = {k.removeprefix("measured_rows_"): v for k, v in labels.items() if k.startswith("measured_rows_")
                  and k not in ("measured_rows_usable", "measured_rows_used") and v}
        if unused:
            lines.append(f"{labels['measured_table']}: {labels.get('measured_rows_used', 0)} of "
                         f"{labels.get('measured_rows', 0)} rows are labels; not used: "
                         + ", ".join(f"{reason} {count}" for reason, count in unused.items()))
    return lines


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
    from resources.inputs import InputFiles

    if source.is_dir():
        # Every host file found there: all files of one host are one partition input (release aliases in
        # any case, and <host>/*.tsv).
        finder = InputFiles(input_dir=str(source))
        if args.measured or args.host:
            raise CliError(f"{'--measured' if args.measured else '--host'} goes with one input file; in a folder each "
                           "file names its host, and <stem>_measured.tsv beside it its measurements", code=2)
        refuse_unclaimed(finder)
        runs = [(host.key, files) for host in HOSTS if (files := finder.files_for(host.key))]
        if not runs:
            raise CliError(f"{source}: no host input files found (expected release names such as Sac.tsv)", code=2)
    else:
        runs = [(resolve_host(source, args.host), [source])]
    measured = Path(args.measured) if args.measured else None
    if measured is not None and not measured.is_file():
        raise CliError(f"{measured}: no such measured table")
    if measured is not None and not args.train_surrogate:
        raise CliError("--measured labels the surrogate's training: add --train-surrogate", code=2)
    # Unusable input or output is refused before any run starts.
    for _, files in runs:
        for file in files:
            read_header(file)
    output_dirs = {host: Path(args.output_dir) / host if source.is_dir() else Path(args.output_dir) for host, _ in runs}
    for directory in output_dirs.values():
        ensure_writable_dir(directory)
    if args.train_surrogate:
        finder = finder if source.is_dir() else InputFiles(input_dir=str(source.parent))
        check_measured_tables([measured] if measured else [t for host, _ in runs if (t := finder.measured_for(host))])
    inputs = tuple(file for _, files in runs for file in files) + ((measured,) if measured else ())
    for host, files in runs:
        refuse_overwriting_inputs(list(output_files(files, host, output_dirs[host]).values()), inputs)
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


def cmd_materialize(args: argparse.Namespace) -> int:
    """Materialize every asset for each host that has input (what `make demo` does)."""
    from codon_assets.asset_specs import host_partitions
    from codon_assets.core.tsv import InputError
    from codon_assets.defs.resources import build_resources

    home = ensure_instance_home()
    finder = build_resources()["input_files"]
    refuse_unclaimed(finder)
    with_data = finder.hosts_with_data(host_partitions.get_partition_keys())
    if missing := [h for h in args.host or [] if h not in with_data]:
        raise CliError(f"no input for host {', '.join(missing)} in {finder.input_dir} (hosts with input: "
                       f"{', '.join(with_data) or 'none'})", code=2)
    hosts = list(args.host or with_data)
    if not hosts:
        raise CliError(f"no host has input in {finder.input_dir}")
    skipped = [h for h in host_partitions.get_partition_keys() if h not in with_data]
    failed = []
    for host in list(hosts):  # unusable measured table or target proteins: that host fails alone, before any run
        try:
            check_measured_tables([t for t in [finder.measured_for(host)] if t], finder.measured_value_column)
            finder.proteins_for(host)
        except InputError as exc:
            print(f"[{host}] FAILED: {exc}", file=sys.stderr)
            failed.append(host)
            hosts.remove(host)
    # Hosts with measurements first, then the unified model of them, then the hosts without: their models are
    # transferred from the unified one.
    measured = [h for h in hosts if finder.measured_for(h) is not None]
    measured_failed = [h for host in measured for h in _materialize_host(host, finder)]
    failed += measured_failed
    if len(measured_failed) < len(measured) or not measured:
        result, _ = materialize_partition(None, ["surrogate_model_unified"])
        if result.success:
            meta = _materializations(result)["surrogate_model_unified"]
            print(f"[unified] surrogate {meta['model_uri']} (held-out Spearman {meta['cv_spearman']:.3f}, "
                  f"measured labels of {', '.join(meta['source_hosts'])}; {transfer_quality(meta)})")
        else:
            failed.append("unified")
            print(f"[unified] FAILED: {_failure_message(result)}", file=sys.stderr)
    for host in hosts:
        if host not in measured:
            failed += _materialize_host(host, finder)
    if skipped:
        print(f"hosts without input data (not materialized): {', '.join(skipped)}")
    from resources.mlflow_tracking import MlflowTracking

    print(f"instance: {home}\nopen the UI with `make ui` and browse http://127.0.0.1:3000/assets")
    print(f"models: `make mlflow` serves {MlflowTracking().uri()} on http://127.0.0.1:5000")
    if failed:
        raise CliError(f"materialization failed for {', '.join(failed)}")
    return 0


def check_measured_tables(tables: list[Path], value_column: str | None = None) -> None:
    """Every measured table the run will read, read once before any work: a file that is no such table is
    one line now, not a failed step after conversion and features."""
    from codon_assets.core.labels import read_measured

    for table in tables:
        read_measured(table, value_column)


def refuse_unclaimed(finder) -> None:
    """One line before any work when the input folder holds input that no host would read."""
    if unclaimed := finder.unclaimed():
        raise CliError(f"{finder.input_dir}: no host reads {', '.join(unclaimed)}: name each input file for its host "
                       "(e.g. Sac.tsv or S_cerevisiae.tsv), put it in a <host>/ folder, or move it out", code=2)


def _materialize_host(host: str, finder) -> list[str]:
    """Every asset of one host; designs when it has target proteins. Returns [host] when it failed."""
    # Designs need target proteins (CODON_PROTEINS_DIR/<host>.fasta); a host without them stops at its model.
    design = DESIGN if finder.proteins_for(host) is not None else []
    result, _ = materialize_partition(host, INGEST_AND_FEATURES + MODEL + design)
    if not result.success:
        print(f"[{host}] FAILED: {_failure_message(result)}", file=sys.stderr)
        return [host]
    meta = _materializations(result)
    model = meta["surrogate_model"]
    kind = ("measured labels" if model["label_source"] == "measured"
            else f"transferred from {', '.join(model['source_hosts'])}; {transfer_quality(model, prefix='source_')}")
    spearman = model.get("cv_spearman", model.get("source_cv_spearman"))
    designs = (f"{meta['codon_designs']['summary']['n_proteins']} designs (mean reward gain over preferred codons "
               f"{meta['codon_designs']['summary']['mean_reward_gain_over_preferred']:+.3f})" if design
               else f"no designs (no target proteins for {host} in {finder.proteins_dir})")
    print(f"[{host}] materialized: {meta['converted_dataset']['valid']} valid, {meta['converted_dataset']['rejected']} "
          f"rejected, {meta['evo2_features']['success']} scored, surrogate {model['model_uri']} (held-out Spearman "
          f"{spearman:.3f}, {kind}), {designs}")
    return []
