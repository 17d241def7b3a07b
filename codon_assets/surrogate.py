"""Model stage: `enhanced_dataset` (records + features + enhanced estimate + measured labels), the per-host
`surrogate_model` and the all-host `surrogate_model_unified`, tracked in MLflow with lineage."""

import shutil
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from codon_assets.core import plots
from codon_assets.core.enhance import Mode, enhance
from codon_assets.core.features import markov_model_of
from codon_assets.core.labels import join_measured, read_measured
from codon_assets.core.surrogate import (
    ALPHA_HI,
    ALPHA_MU,
    LGB_PARAMS,
    TRAINING_COLUMNS,
    cross_validate,
    fit_surrogate,
    sigma_calibration,
    top_importances,
    training_set,
)
from codon_assets.core.surrogate_features import sequence_features
from codon_assets.core.tsv import InputError
from codon_assets.ingest import OWNERS
from codon_assets.metadata import counts_table, markdown_table, table_metadata
from codon_assets.partitions import host_partitions
from resources.inputs import InputFiles
from resources.mlflow_tracking import (
    BOOSTER_REQUIREMENTS,
    PYFUNC_CODE,
    PYFUNC_REQUIREMENTS,
    MlflowTracking,
    pinned_requirements,
    pyfunc_signature,
)
from resources.paths import storage_root

# The model stage follows its inputs: whenever a host's features (or its enhanced dataset) are updated and
# their blocking checks passed, the next stage is requested.
FOLLOWS_UPSTREAM = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
# The unified model follows any host's update once no host run is in progress; hosts without data (never
# materialized) do not hold it back, and nothing is requested before some host has data.
FOLLOWS_HOSTS = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after host updates")

FEATURE_COLUMNS = ("avg_confidence", "max_confidence", "min_confidence", "std_confidence", "avg_loglik",
                   "perplexity", "gc_content", "codon_entropy", "scored_bases")


class EnhanceConfig(dg.Config):
    mode: str = "model_enhanced"  # metadata_only | model_enhanced | full


def build_enhanced(converted: pa.Table, features: pa.Table, mode: Mode, measured_path: Path | None,
                   value_column: str | None) -> tuple[pa.Table, dict]:
    """Join records and features by protein_id (never by position), enhance, attach measured labels."""
    # Each record's feature row, found by protein_id (never by position); only the small feature columns
    # are gathered, the records (with their sequences) stay where they are.
    row_of = pc.index_in(converted["protein_id"], value_set=features["protein_id"])
    feats = features.select(["status", "error", "backend", *FEATURE_COLUMNS]).take(row_of)
    joined = converted
    for name, column in zip(["feature_status", "feature_error", "feature_backend", *FEATURE_COLUMNS], feats.columns):
        joined = joined.append_column(name, column)
    ok = pc.fill_null(pc.equal(joined["feature_status"], "success"), False).to_numpy(zero_copy_only=False)
    sequences = joined["sequence"].combine_chunks()
    homopolymer = sequence_features(sequences)["longest_homopolymer"] if mode == "full" else np.zeros(len(ok))
    original = joined["expression_value"].to_numpy()
    result = enhance(
        original, joined["expression_confidence"].to_numpy(zero_copy_only=False),
        {name: joined[name].to_numpy(zero_copy_only=False).astype(float) for name in FEATURE_COLUMNS},
        ok, mode, joined["gc_content"].to_numpy(zero_copy_only=False).astype(float), homopolymer,
    )
    backend = features["backend"][0].as_py() if features.num_rows else "none"
    enhanced_mode = mode != "metadata_only"
    table = (
        joined.drop_columns(["expression_value", "expression_unit", "expression_assay", "expression_confidence"])
        .append_column("expression_value", pa.array(result.value))
        .append_column("original_value", pa.array(original))
        .append_column("expression_unit", pa.repeat("estimated_enhanced" if enhanced_mode else "estimated", len(ok)))
        .append_column("expression_assay", pa.repeat(f"model_enhanced_{backend}" if enhanced_mode else "metadata_heuristic", len(ok)))
        .append_column("expression_confidence", pa.array(result.confidence, pa.string()))
        .append_column("enhancement_score", pa.array(result.score, mask=~np.isfinite(result.score)))
        .append_column("enhancement_status", pa.array(result.status, pa.string()))
    )
    label_report: dict = {"measured_table": None}
    measured = np.full(len(ok), np.nan)
    matched_by: list = [None] * len(ok)
    if measured_path is not None:
        labels = read_measured(measured_path, value_column)
        join = join_measured(table, labels)
        measured, matched_by = join.measured_value, join.matched_by
        label_report = {"measured_table": labels.path, "value_column": labels.value_column, **join.report}
    table = (
        table.append_column("measured_value", pa.array(measured, mask=~np.isfinite(measured)))
        .append_column("measured_log10", pa.array(np.log10(measured), mask=~np.isfinite(measured)))
        .append_column("measured_matched_by", pa.array(matched_by, pa.string()))
    )
    return table, label_report


def delta_summary(table: pa.Table) -> dict:
    delta = (table["expression_value"].to_numpy() - table["original_value"].to_numpy())
    changed = np.abs(delta) > 1e-9
    counts, edges = np.histogram(delta, bins=10)
    histogram = [{"delta_from": round(float(a), 2), "delta_to": round(float(b), 2), "records": int(c)}
                 for a, b, c in zip(edges[:-1], edges[1:], counts)]
    return {
        "percent_enhanced": round(100 * float(changed.mean()), 2) if len(delta) else 0.0,
        "mean_abs_delta": round(float(np.abs(delta).mean()), 4) if len(delta) else 0.0,
        "median_abs_delta": round(float(np.median(np.abs(delta))), 4) if len(delta) else 0.0,
        "max_abs_delta": round(float(np.abs(delta).max()), 4) if len(delta) else 0.0,
        "delta_histogram": dg.MetadataValue.md(markdown_table(histogram)),
    }


@dg.asset(
    partitions_def=host_partitions,
    group_name="model",
    code_version="1",
    kinds={"parquet"},
    owners=OWNERS,
    ins={"converted_dataset": dg.AssetIn(), "evo2_features": dg.AssetIn()},
    automation_condition=FOLLOWS_UPSTREAM,
    description=(
        "Converted records joined (by protein_id) to their features, with the metadata estimate adjusted by "
        "sequence-model evidence (bounded to +-25 %, documented weights), the original value kept, and "
        "measured expression (with its log10) where a measured table is supplied."
    ),
)
def enhanced_dataset(context: dg.AssetExecutionContext, config: EnhanceConfig, input_files: InputFiles,
                     converted_dataset: pa.Table, evo2_features: pa.Table) -> dg.Output[pa.Table]:
    if config.mode not in ("metadata_only", "model_enhanced", "full"):
        raise dg.Failure(f"unknown enhancement mode {config.mode!r}: metadata_only, model_enhanced or full")
    measured_path = input_files.measured_for(context.partition_key)
    try:
        table, label_report = build_enhanced(converted_dataset, evo2_features, config.mode, measured_path,
                                             input_files.measured_value_column)
    except InputError as exc:
        raise dg.Failure(str(exc)) from None
    status_counts = dict(zip(*np.unique(np.array(table["enhancement_status"].to_pylist()), return_counts=True)))
    return dg.Output(
        table,
        metadata={
            **table_metadata(table.drop_columns(["sequence", "protein_aa"])),
            "mode": config.mode,
            **delta_summary(table),
            "enhancement_status": dg.MetadataValue.md(counts_table({k: int(v) for k, v in status_counts.items()}, "status")),
            "measured_labels": dg.MetadataValue.json(label_report),
            "measured_records": int(np.isfinite(table["measured_log10"].to_numpy(zero_copy_only=False).astype(float)).sum()),
        },
    )


def _upstream_versions(context: dg.AssetExecutionContext, keys: list[str], partition: str | None) -> dict[str, str]:
    """Data versions of the upstream materializations this model is trained on (for lineage tags)."""
    versions = {}
    for key in keys:
        record = context.instance.get_latest_data_version_record(dg.AssetKey(key), partition_key=partition)
        if record is not None:
            versions[key] = record.asset_materialization.tags.get("dagster/data_version", "")
    return versions


def train_and_track(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking, enhanced: pa.Table,
                    markov_models: dict, model_name: str, partition: str | None,
                    upstream: dict[str, str]) -> dg.MaterializeResult:
    """Cross-validate, refit, save (native formats) and log one MLflow run with a registered version."""
    import mlflow

    data = training_set(enhanced)
    if len(data.target) < 20:
        raise dg.Failure(f"only {len(data.target)} records to train on; need at least 20")
    backend = enhanced["feature_backend"].drop_null()[0].as_py() if enhanced["feature_backend"].null_count < enhanced.num_rows else "markov"
    context.log.info(f"cross-validating on {len(data.target)} records ({data.label_source} labels)")
    metrics, oof = cross_validate(data, backend)
    model = fit_surrogate(data, np.arange(len(data.target)), backend)
    model.markov_models = markov_models
    held_out = data.target[oof["rows"]]
    model.sigma_scale = sigma_calibration(held_out, oof["mu"], oof["sigma"])
    metrics["surrogate"]["sigma_scale"] = model.sigma_scale
    model.metrics = {f"cv_{k}": v for k, v in metrics["surrogate"].items()}
    importances = top_importances(model)

    key_path = context.asset_key.path
    # One folder per run: a concurrent run of the same partition never replaces the model this run reports.
    final_dir = storage_root().joinpath(*key_path, partition or "all", context.run.run_id)
    work = Path(tempfile.mkdtemp(prefix="surrogate-"))
    try:
        model.save(work / "model")
        plot_dir = work / "plots"
        plot_dir.mkdir()
        label_name = "log10 measured" if data.label_source == "measured" else "log10 enhanced estimate"
        plots.predicted_vs_label(held_out, oof["mu"], oof["sigma"] * model.sigma_scale, f"{model_name}: held-out ({label_name})",
                                 plot_dir / "predicted_vs_label.png")
        plots.importances(importances, f"{model_name}: top features (gain)", plot_dir / "feature_importances.png")
        plots.histogram(data.target, f"{model_name}: labels", label_name, plot_dir / "label_distribution.png")

        experiment_id = mlflow_tracking.activate()
        tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": context.asset_key.to_user_string(),
            "dagster.partition": partition or "",
            "dagster.code_version": context.assets_def.code_versions_by_key[context.asset_key] or "",
            **{f"dagster.upstream.{k}.data_version": v for k, v in upstream.items()},
        }
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{model_name}-{context.run.run_id[:8]}",
                              tags=tags) as run:
            mlflow.log_params({"alpha_mu": ALPHA_MU, "alpha_hi": ALPHA_HI, "feature_backend": backend,
                               "label_source": data.label_source, "records": len(data.target), "cv_folds": 5,
                               "cv_records": len(held_out),
                               "cv_grouping": "identical protein", "cai_reference": "; ".join(
                                   f"{h}: {b.cai_reference}" for h, b in model.builders.items()),
                               **{f"lgb_{k}": v for k, v in LGB_PARAMS.items()}})
            for name, values in metrics.items():
                mlflow.log_metrics({f"{name}.{k}": v for k, v in values.items()})
            # The training records by id (sequences stay in the enhanced dataset, linked by data version).
            dataset_frame = pd.DataFrame({"host": data.host, "protein_id": data.protein_id.to_numpy(zero_copy_only=False),
                                          "target": data.target})
            mlflow.log_input(mlflow.data.from_pandas(dataset_frame, name=f"{model_name}-training", targets="target"),
                             context="training")
            mlflow.log_artifacts(str(plot_dir), artifact_path="plots")
            booster_requirements = pinned_requirements(*BOOSTER_REQUIREMENTS)
            mlflow.lightgbm.log_model(model.mu, name="lightgbm_mu", pip_requirements=booster_requirements)
            mlflow.lightgbm.log_model(model.hi, name="lightgbm_hi", pip_requirements=booster_requirements)
            info = mlflow.pyfunc.log_model(name="surrogate", python_model=str(PYFUNC_CODE),
                                           artifacts={"surrogate": str(work / "model")}, signature=pyfunc_signature(),
                                           pip_requirements=pinned_requirements(*PYFUNC_REQUIREMENTS),
                                           registered_model_name=model_name)
            version = info.registered_model_version
            mlflow.MlflowClient().update_model_version(
                model_name, str(version),
                description=f"Trained by Dagster run {context.run.run_id} ({context.asset_key.to_user_string()}"
                            f"{', partition ' + partition if partition else ''}).")
        if final_dir.exists():
            shutil.rmtree(final_dir)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(work / "model"), final_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    label_counts = {data.label_source: len(data.target)}
    return dg.MaterializeResult(
        metadata={
            "mlflow_run_id": run.info.run_id,
            "mlflow_run_url": dg.MetadataValue.url(mlflow_tracking.run_url(experiment_id, run.info.run_id)),
            "mlflow_tracking_uri": mlflow_tracking.uri(),
            "model_uri": f"models:/{model_name}/{version}",
            "registered_model": model_name,
            "registered_version": int(version),
            "model_path": dg.MetadataValue.path(str(final_dir)),
            "label_source": data.label_source,
            "records_by_label_source": dg.MetadataValue.json(label_counts),
            "feature_backend": backend,
            "cv_records": len(held_out),
            **{f"cv_{k}": round(v, 4) for k, v in metrics["surrogate"].items()},
            "baselines": dg.MetadataValue.json(metrics),
            "top_feature_importances": dg.MetadataValue.md(
                markdown_table([{"feature": n, "gain_share": round(g, 4)} for n, g in importances])),
        }
    )


@dg.asset(
    partitions_def=host_partitions,
    group_name="model",
    code_version="1",
    kinds={"lightgbm", "mlflow"},
    owners=OWNERS,
    # Training reads these columns of the enhanced records, and of the features only the Markov model stored
    # in their schema (one small column comes along).
    ins={"enhanced_dataset": dg.AssetIn(metadata={"columns": TRAINING_COLUMNS}),
         "evo2_features": dg.AssetIn(metadata={"columns": ["protein_id"]})},
    automation_condition=FOLLOWS_UPSTREAM,
    description=(
        "Per-host LightGBM quantile surrogate (mu at alpha 0.5, sigma = q0.84 - mu) on measured log10 "
        "expression where available, else the enhanced estimate; grouped 5-fold CV with CAI and ridge "
        "baselines; one MLflow run per materialization, registered as codon-surrogate-<host>."
    ),
)
def surrogate_model(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking,
                    enhanced_dataset: pa.Table, evo2_features: pa.Table) -> dg.MaterializeResult:
    host = context.partition_key
    markov = markov_model_of(evo2_features)
    upstream = _upstream_versions(context, ["enhanced_dataset", "evo2_features"], host)
    return train_and_track(context, mlflow_tracking, enhanced_dataset, {host: markov} if markov else {},
                           f"codon-surrogate-{host}", host, upstream)


@dg.asset(
    group_name="model",
    code_version="1",
    kinds={"lightgbm", "mlflow"},
    owners=OWNERS,
    ins={
        "enhanced_dataset": dg.AssetIn(partition_mapping=dg.AllPartitionMapping(), metadata={"columns": TRAINING_COLUMNS}),
        "evo2_features": dg.AssetIn(partition_mapping=dg.AllPartitionMapping(), metadata={"columns": ["protein_id"]}),
    },
    automation_condition=FOLLOWS_HOSTS,
    description=(
        "One surrogate over every host with an enhanced dataset (host as a categorical feature, CAI and tAI "
        "fitted per host), tracked and registered like the per-host models as codon-surrogate-unified."
    ),
)
def surrogate_model_unified(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking,
                            enhanced_dataset: dict[str, pa.Table], evo2_features: dict[str, pa.Table]) -> dg.MaterializeResult:
    if not enhanced_dataset:
        raise dg.Failure("no host has an enhanced dataset yet: materialize the host partitions first")
    hosts = sorted(enhanced_dataset)
    context.log.info(f"training the unified surrogate on hosts {hosts}")
    # Each host trains on its own label source; the unified target must be one scale, so it uses the
    # measured labels only when every host has them, else every host's enhanced estimate.
    sources = {h: training_set(t).label_source for h, t in enhanced_dataset.items()}
    tables = [enhanced_dataset[h] for h in hosts]
    if set(sources.values()) != {"measured"}:
        tables = [t.set_column(t.schema.get_field_index("measured_log10"), "measured_log10",
                               pa.nulls(t.num_rows, pa.float64())) for t in tables]
    combined = pa.concat_tables(tables, promote_options="default")
    markov = {h: m for h in hosts if h in evo2_features and (m := markov_model_of(evo2_features[h])) is not None}
    upstream = {f"enhanced_dataset.{h}": v for h in hosts
                for v in _upstream_versions(context, ["enhanced_dataset"], h).values()}
    return train_and_track(context, mlflow_tracking, combined, markov, "codon-surrogate-unified", None, upstream)
