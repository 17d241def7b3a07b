"""Model stage: `enhanced_dataset` (records + features + enhanced estimate + measured labels), the per-host
`surrogate_model` and the all-host `surrogate_model_unified`, tracked in MLflow with lineage."""

import base64

import dagster as dg
import numpy as np
import pyarrow as pa

from codon_assets.core.enhance import build_enhanced
from codon_assets.core.markov import MarkovCdsModel
from codon_assets.core.surrogate import MIN_MEASURED, TRAINING_COLUMNS, SurrogateModel, measured_hosts
from codon_assets.core.training import train_surrogate, transfer_model
from codon_assets.core.tsv import InputError
from codon_assets.metadata import counts_table, markdown_table, table_metadata
from codon_assets.asset_specs import host_partitions
from resources.inputs import InputFiles
from resources.mlflow_tracking import MlflowTracking

# The model stage follows its inputs: whenever a host's features (or its enhanced dataset) are updated and
# their blocking checks passed, the next stage is requested.
# The unified model is ignored: it is the source of transferred hosts only, and it follows the hosts itself.
FOLLOWS_UPSTREAM = (dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets("surrogate_model_unified"))
                    & dg.AutomationCondition.all_deps_blocking_checks_passed())
# The unified model follows any host's update once no host run is in progress; hosts without data (never
# materialized) do not hold it back, and nothing is requested before some host has data.
FOLLOWS_HOSTS = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after host updates")

class EnhanceConfig(dg.Config):
    mode: str = "model_enhanced"  # metadata_only | model_enhanced | full


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


def image_metadata(name: str, png: bytes) -> dg.MetadataValue:
    """A PNG shown in the materialization's metadata (the UI renders markdown images from data URIs)."""
    return dg.MetadataValue.md(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})")


def _upstream_versions(context: dg.AssetExecutionContext, keys: list[str], partition: str | None) -> dict[str, str]:
    """Data versions of the upstream materializations this model is trained on (for lineage tags)."""
    versions = {}
    for key in keys:
        record = context.instance.get_latest_data_version_record(dg.AssetKey(key), partition_key=partition)
        if record is not None:
            versions[key] = record.asset_materialization.tags.get("dagster/data_version", "")
    return versions


def lineage_tags(context: dg.AssetExecutionContext, model: SurrogateModel, partition: str | None,
                 upstream: dict[str, str]) -> dict[str, str]:
    """The MLflow run's tags: what the model learnt from, and the Dagster run, asset and inputs it came from."""
    return {
        "label_source": model.label_source,
        "label_scale": model.label_scale,
        "source_hosts": ",".join(model.source_hosts),
        "transferred_hosts": ",".join(h for h in model.hosts if h not in model.source_hosts),
        "dagster.run_id": context.run.run_id,
        "dagster.asset_key": context.asset_key.to_user_string(),
        "dagster.partition": partition or "",
        "dagster.code_version": context.assets_def.code_versions_by_key[context.asset_key] or "",
        **{f"dagster.upstream.{k}.data_version": v for k, v in upstream.items()},
    }


def model_output(model: SurrogateModel, logged, mlflow_tracking: MlflowTracking, model_name: str,
                 metadata: dict) -> dg.Output[SurrogateModel]:
    """The model, with where it is registered, for the model store and the assets built on it."""
    model.registry = {"model_uri": logged.model_uri, "mlflow_run_id": logged.run_id}
    return dg.Output(model, metadata={
        "mlflow_run_id": logged.run_id,
        "mlflow_run_url": dg.MetadataValue.url(logged.run_url),
        "mlflow_tracking_uri": mlflow_tracking.uri(),
        "model_uri": logged.model_uri,
        "registered_model": model_name,
        "registered_version": logged.version,
        "label_source": model.label_source,
        "label_scale": model.label_scale,
        "source_hosts": dg.MetadataValue.json(model.source_hosts),
        "transferred_hosts": dg.MetadataValue.json([h for h in model.hosts if h not in model.source_hosts]),
        "feature_backend": model.backend,
        **metadata,
    })


def train_and_log(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking, enhanced: pa.Table,
                  markov_models: dict, model_name: str, partition: str | None, upstream: dict[str, str],
                  transfer_to: dict[str, pa.Table] | None = None) -> dg.Output[SurrogateModel]:
    """Train (core), log and register (the MLflow resource), and hand the model to the model store."""
    context.log.info(f"training {model_name} on the measured records of {enhanced.num_rows} enhanced records")
    try:
        result = train_surrogate(enhanced, markov_models, transfer_to)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from None
    logged = mlflow_tracking.log_training(result, model_name, lineage_tags(context, result.model, partition, upstream))
    return model_output(result.model, logged, mlflow_tracking, model_name, {
        "measured_training_records": len(result.data.target),
        "cv_records": len(result.held_out),
        **{f"cv_{k}": round(v, 4) for k, v in result.metrics["surrogate"].items()},
        # A transfer model: each measured host predicted by the other hosts' model (core.transfer).
        **{f"transfer_{k}": round(v, 4) for k, v in result.metrics.get("transfer", {}).items()},
        "baselines": dg.MetadataValue.json(result.metrics),
        **{f"plot_{name}": image_metadata(name, png) for name, png in logged.figures.items()},
        "top_feature_importances": dg.MetadataValue.md(
            markdown_table([{"feature": n, "gain_share": round(g, 4)} for n, g in result.importances])),
    })


def log_transferred(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking, model: SurrogateModel,
                    records: pa.Table, model_name: str, upstream: dict[str, str],
                    source_uri: str) -> dg.Output[SurrogateModel]:
    """Log and register a transferred model; its figures of merit are the source model's, on the measured hosts."""
    host = context.partition_key
    tags = {**lineage_tags(context, model, host, upstream), "source_model_uri": source_uri}
    logged = mlflow_tracking.log_transferred(model, records, model_name, tags)
    return model_output(model, logged, mlflow_tracking, model_name, {
        "records": records.num_rows,
        "source_model_uri": source_uri,
        **{f"source_{k}": round(v, 4) for k, v in model.metrics.items()},
    })


@dg.asset(
    partitions_def=host_partitions,
    io_manager_key="model_io_manager",
    ins={"enhanced_dataset": dg.AssetIn(metadata={"columns": TRAINING_COLUMNS}),
         # The model a host without measurements is transferred from; a measured host does without it.
         "surrogate_model_unified": dg.AssetIn(metadata={"allow_missing": True})},
    automation_condition=FOLLOWS_UPSTREAM,
    description=(
        "Per-host LightGBM quantile surrogate (mu at alpha 0.5; sigma from |q0.84 - mu|, calibrated on held-out "
        "folds, never below a floor) on the host's measured log10 expression. A host with fewer than 50 "
        "measured values gets the unified model (trained on the measured hosts, host descriptors instead of a "
        "host id) applied through its own profile: label_source=transferred, mu on the per-host relative "
        "scale; the metadata estimate is never a label. Grouped 5-fold CV with CAI and ridge baselines; one "
        "MLflow run per materialization, registered as codon-surrogate-<host>."
    ),
)
def surrogate_model(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking, enhanced_dataset: pa.Table,
                    markov_model: MarkovCdsModel,
                    surrogate_model_unified: SurrogateModel | None) -> dg.Output[SurrogateModel]:
    host = context.partition_key
    upstream = _upstream_versions(context, ["enhanced_dataset", "markov_model"], host)
    if host in measured_hosts(enhanced_dataset):
        return train_and_log(context, mlflow_tracking, enhanced_dataset, {host: markov_model},
                             f"codon-surrogate-{host}", host, upstream)
    if surrogate_model_unified is None or not surrogate_model_unified.source_hosts:
        raise dg.Failure(f"{host} has fewer than {MIN_MEASURED} measured values and there is no model of the measured "
                         "hosts to transfer from: give its measured table (<alias>_measured.tsv beside its input), or "
                         "materialize hosts with measurements and surrogate_model_unified first")
    try:
        model = transfer_model(surrogate_model_unified, enhanced_dataset, host, markov_model)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from None
    context.log.info(f"{host} has no measured labels: transferred from {', '.join(model.source_hosts)}")
    upstream |= _upstream_versions(context, ["surrogate_model_unified"], None)
    return log_transferred(context, mlflow_tracking, model, enhanced_dataset, f"codon-surrogate-{host}", upstream,
                           surrogate_model_unified.registry.get("model_uri", ""))


@dg.asset(
    io_manager_key="model_io_manager",
    ins={
        "enhanced_dataset": dg.AssetIn(partition_mapping=dg.AllPartitionMapping(), metadata={"columns": TRAINING_COLUMNS}),
        "markov_model": dg.AssetIn(partition_mapping=dg.AllPartitionMapping()),
    },
    automation_condition=FOLLOWS_HOSTS,
    description=(
        "One surrogate over every host with an enhanced dataset, trained on the measured hosts' labels with "
        "host descriptors (codon usage, GC, tRNA-based tAI, host-relative CAI) instead of a host id, so it also "
        "predicts the hosts without measurements (transferred); registered as codon-surrogate-unified."
    ),
)
def surrogate_model_unified(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking,
                            enhanced_dataset: dict[str, pa.Table],
                            markov_model: dict[str, MarkovCdsModel]) -> dg.Output[SurrogateModel]:
    if not enhanced_dataset:
        raise dg.Failure("no host has an enhanced dataset yet: materialize the host partitions first")
    hosts = sorted(enhanced_dataset)
    context.log.info(f"training the unified surrogate on hosts {hosts}")
    combined = pa.concat_tables([enhanced_dataset[h] for h in hosts], promote_options="default")
    markov = {h: markov_model[h] for h in hosts if h in markov_model}
    upstream = {f"enhanced_dataset.{h}": v for h in hosts
                for v in _upstream_versions(context, ["enhanced_dataset"], h).values()}
    return train_and_log(context, mlflow_tracking, combined, markov, "codon-surrogate-unified", None, upstream,
                         dict(enhanced_dataset))
