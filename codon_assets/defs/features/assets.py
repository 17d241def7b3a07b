"""Features stage: `evo2_features`, per-record DNA language-model statistics of the converted dataset."""

from collections.abc import Callable

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codon_assets.core.features import FeatureSummary, extract_features
from codon_assets.core.markov import MarkovCdsModel
from codon_assets.deployment import evo2_op_tags
from codon_assets.metadata import counts_table, markdown_table, table_metadata
from codon_assets.asset_specs import host_check, host_partitions
from resources.evo2.resource import Evo2Resource

FEATURES = dg.AssetKey("evo2_features")
SCORED_COLUMNS = ["protein_id", "sequence", "seq_sha256"]  # what extract_features reads of a converted record
PROBABILITY_COLUMNS = ("avg_confidence", "max_confidence", "min_confidence", "std_confidence")


def distribution(values: np.ndarray) -> dict[str, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return {}
    q = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"mean": float(values.mean()), "p05": float(q[0]), "p25": float(q[1]), "median": float(q[2]),
            "p75": float(q[3]), "p95": float(q[4])}


class FeatureCheckConfig(dg.Config):
    warn_error_rate: float = 0.01  # the error-rate check warns above this share


@dg.asset(
    partitions_def=host_partitions,
    io_manager_key="model_io_manager",
    ins={"converted_dataset": dg.AssetIn(metadata={"columns": SCORED_COLUMNS})},
    description=(
        "The host's codon-phased Markov model of its converted CDS (order, folds and pseudocount from the evo2 "
        "resource), cross-fitted so no record is scored by counts that include itself: the markov backend's "
        "scorer, the likelihood term of codon design, and the features of new sequences at prediction."
    ),
)
def markov_model(evo2: Evo2Resource, converted_dataset: pa.Table) -> dg.Output[MarkovCdsModel]:
    model = evo2.fit_markov(converted_dataset)
    return dg.Output(model, metadata={"model_version": model.version, "records": converted_dataset.num_rows})


@dg.asset(
    partitions_def=host_partitions,
    pool="gpu",
    tags={"compute": "gpu"},
    # Where the step runs: the GPU container (docker profile) or GPU pod (k8s profile), in any job.
    op_tags=evo2_op_tags(),
    # A lost GPU worker or a flaky endpoint is worth two more tries, a minute apart and then two; scores
    # already cached are not recomputed on retry.
    retry_policy=dg.RetryPolicy(max_retries=2, delay=60, backoff=dg.Backoff.EXPONENTIAL),
    # Only what scoring reads: the other columns of 500,000 records would double the step's memory.
    ins={"converted_dataset": dg.AssetIn(metadata={"columns": SCORED_COLUMNS})},
    description=(
        "Per-record DNA language-model features of the converted CDS: statistics of the probability the "
        "model gives each true base (confidence), mean log-likelihood per base and perplexity, with GC "
        "content and codon entropy. Backend: markov (CPU, default), evo2 (GPU) or nim (HTTP). One row per "
        "converted record; a record the model could not score has status=error and its cause."
    ),
    check_specs=[
        host_check("one_row_per_record", asset=FEATURES, blocking=True,
                   description="exactly one feature row per converted record, same ids and hashes"),
        host_check("error_rate", asset=FEATURES,
                   description="warns when the share of records in error exceeds warn_error_rate"),
        host_check("values_in_range", asset=FEATURES, blocking=True,
                   description="probabilities in [0, 1], perplexity >= 1, avg_loglik <= 0"),
    ],
)
def evo2_features(context: dg.AssetExecutionContext, config: FeatureCheckConfig, evo2: Evo2Resource,
                  converted_dataset: pa.Table, markov_model: MarkovCdsModel):
    records = converted_dataset.select(SCORED_COLUMNS)
    scorer = evo2.scorer(markov_model)
    context.log.info(f"scoring {records.num_rows} records with {scorer.backend} ({scorer.model_version})")
    table, summary = extract_features(records, scorer, evo2.cache(), evo2.batch_records,
                                      progress_logger(context.log, evo2.progress_every))
    fail_on_error_rate(summary, evo2.max_error_rate)
    yield dg.Output(table, metadata=features_metadata(table, summary, scorer))
    yield from feature_checks(converted_dataset, table, config.warn_error_rate)


def progress_logger(log, every: int) -> Callable[[int, int, float], None]:
    """A progress callback that logs records done, rate and ETA every ``every`` records and at the end."""
    next_report = [every]

    def progress(done: int, total: int, seconds: float) -> None:
        if done >= next_report[0] or done == total:
            rate = done / seconds if seconds > 0 else float("inf")
            eta = (total - done) / rate if rate > 0 else 0.0
            log.info(f"scored {done}/{total} records, {rate:,.0f} records/s, ETA {eta:,.0f} s")
            next_report[0] = done + every

    return progress


def fail_on_error_rate(summary: FeatureSummary, max_error_rate: float) -> None:
    """Fail the step (without retries: the same records would fail again) above ``max_error_rate``."""
    error_rate = summary.error / summary.records if summary.records else 0.0
    if error_rate > max_error_rate:
        worst = sorted(summary.errors_by_message.items(), key=lambda kv: -kv[1])[:3]
        raise dg.Failure(
            f"{summary.error} of {summary.records} records could not be scored ({error_rate:.1%} > "
            f"max_error_rate {max_error_rate:.1%}); most common causes: "
            + "; ".join(f"{m} (x{c})" for m, c in worst),
            metadata={"error": summary.error, "records": summary.records},
            allow_retries=False,
        )


def features_metadata(table: pa.Table, summary: FeatureSummary, scorer) -> dict:
    loglik = table["avg_loglik"].to_numpy(zero_copy_only=False).astype(float)
    perplexity = table["perplexity"].to_numpy(zero_copy_only=False).astype(float)
    return {
        **table_metadata(table.drop_columns(["seq_sha256"])),
        "backend": scorer.backend,
        "model_version": scorer.model_version,
        "records": summary.records,
        "success": summary.success,
        "error": summary.error,
        "cache_hits": summary.cache_hits,
        "scored": summary.scored,
        "records_per_s": round(summary.records_per_s, 1),
        "seconds": round(summary.seconds, 3),
        "avg_loglik": dg.MetadataValue.json(distribution(loglik)),
        "perplexity": dg.MetadataValue.json(distribution(perplexity)),
        "errors_by_cause": dg.MetadataValue.md(counts_table(summary.errors_by_message, "cause")),
    }


def feature_checks(converted: pa.Table, features: pa.Table, warn_error_rate: float):
    """The checks of a features partition, from the tables as written."""
    same = (features.num_rows == converted.num_rows
            and features["protein_id"].equals(converted["protein_id"])
            and features["seq_sha256"].equals(converted["seq_sha256"]))
    yield dg.AssetCheckResult(
        asset_key=FEATURES, check_name="one_row_per_record", passed=bool(same),
        metadata={"converted_rows": converted.num_rows, "feature_rows": features.num_rows},
    )
    errors = pc.sum(pc.equal(features["status"], "error")).as_py() or 0
    rate = errors / features.num_rows if features.num_rows else 0.0
    yield dg.AssetCheckResult(
        asset_key=FEATURES, check_name="error_rate", passed=rate <= warn_error_rate,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"error_rate": round(rate, 4), "errors": errors, "warn_error_rate": warn_error_rate},
    )
    ok = features.filter(pc.equal(features["status"], "success"))
    problems = {}
    for name in PROBABILITY_COLUMNS:
        values = ok[name]
        problems[name] = pc.sum(pc.or_(pc.less(values, 0.0), pc.greater(values, 1.0))).as_py() or 0
    problems["perplexity"] = pc.sum(pc.less(ok["perplexity"], 1.0)).as_py() or 0
    problems["avg_loglik"] = pc.sum(pc.greater(ok["avg_loglik"], 0.0)).as_py() or 0
    problems["missing"] = sum(ok[name].null_count for name in (*PROBABILITY_COLUMNS, "avg_loglik", "perplexity"))
    bad = {k: v for k, v in problems.items() if v}
    yield dg.AssetCheckResult(
        asset_key=FEATURES, check_name="values_in_range", passed=not bad,
        metadata={"out_of_range": dg.MetadataValue.md(markdown_table([{"column": k, "rows": v} for k, v in bad.items()]))},
    )
