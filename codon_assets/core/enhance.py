"""The enhanced expression estimate: the metadata estimate adjusted by sequence-model evidence.

Every feature is put on a common scale within the partition with a robust z-score
``(x - median) / (1.4826 * MAD)``, clipped to [-3, 3], so the same weights work for every backend. The
evidence score combines them with fixed, documented weights:

    score = 0.5 * z(avg_loglik) + 0.2 * z(avg_confidence) - 0.3 * z(codon_entropy)

(sequences that the host's own model finds typical, and with a sharper codon preference, are the
expression-favoured ones: codon bias is the classic correlate of expression level). Mode ``full`` adds

    - 0.2 * gc_outside      (how far GC lies outside the host's own 10th-90th percentile GC range, in
                             units of that range's width, capped at 3)
    - 0.1 * homopolymer     (1 when the CDS has a single-base run of 8 or more)

The adjustment is bounded and symmetric: ``value = original * (1 + MAX_ADJUST * tanh(score / 2))`` with
MAX_ADJUST = 0.25, so an estimate moves by at most 25 % either way. Mode ``metadata_only`` keeps the
original. A record whose features errored keeps its original value and says so.

Confidence: the metadata estimate and the evidence score are compared as percentile ranks within the
partition; agreement (ranks within 0.25) raises the original confidence one level (low -> medium ->
high), strong disagreement (ranks 0.75 or more apart) lowers it one level, anything else keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codon_assets.core.labels import join_measured, read_measured
from codon_assets.core.surrogate_features import sequence_features
import pandas as pd

Mode = Literal["metadata_only", "model_enhanced", "full"]
WEIGHTS = {"avg_loglik": 0.5, "avg_confidence": 0.2, "codon_entropy": -0.3}
GC_WEIGHT = -0.2
HOMOPOLYMER_WEIGHT = -0.1
HOMOPOLYMER_RUN = 8
MAX_ADJUST = 0.25
LEVELS = ("low", "medium", "high")


def robust_z(values: np.ndarray) -> np.ndarray:
    """Robust z-score within the given values (NaN stays NaN), clipped to [-3, 3]."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return np.full(len(values), np.nan)
    median = np.median(finite)
    scale = 1.4826 * np.median(np.abs(finite - median))
    if scale == 0:
        scale = finite.std() or 1.0
    return np.clip((values - median) / scale, -3.0, 3.0)


def percentile_rank(values: np.ndarray) -> np.ndarray:
    return pd.Series(values).rank(pct=True).to_numpy()


@dataclass
class Enhancement:
    value: np.ndarray
    confidence: np.ndarray
    score: np.ndarray  # evidence score (NaN where features errored)
    status: np.ndarray  # enhanced | kept_original_features_error | metadata_only


def enhance(
    original: np.ndarray,
    original_confidence: np.ndarray,
    features: dict[str, np.ndarray],
    features_ok: np.ndarray,
    mode: Mode = "model_enhanced",
    gc_content: np.ndarray | None = None,
    longest_homopolymer: np.ndarray | None = None,
) -> Enhancement:
    n = len(original)
    if mode == "metadata_only":
        return Enhancement(original.copy(), original_confidence.copy(), np.full(n, np.nan),
                           np.full(n, "metadata_only", dtype=object))
    score = np.zeros(n)
    for name, weight in WEIGHTS.items():
        values = np.where(features_ok, features[name], np.nan)
        score += weight * np.nan_to_num(robust_z(values))
    if mode == "full":
        gc_ok = gc_content[features_ok]
        low, high = np.quantile(gc_ok, [0.1, 0.9]) if len(gc_ok) else (0.0, 1.0)
        width = max(high - low, 1e-6)
        outside = np.clip(np.maximum(low - gc_content, gc_content - high) / width, 0.0, 3.0)
        score += GC_WEIGHT * outside + HOMOPOLYMER_WEIGHT * (longest_homopolymer >= HOMOPOLYMER_RUN)
    score = np.where(features_ok, score, np.nan)

    value = np.where(features_ok, original * (1 + MAX_ADJUST * np.tanh(np.nan_to_num(score) / 2)), original)
    gap = np.abs(percentile_rank(original) - percentile_rank(np.where(features_ok, score, np.nan)))
    level = pd.Series(original_confidence).map({name: i for i, name in enumerate(LEVELS)}).fillna(0).to_numpy(int)
    shift = np.where(gap <= 0.25, 1, np.where(gap >= 0.75, -1, 0))
    level = np.where(features_ok, np.clip(level + shift, 0, len(LEVELS) - 1), level)
    confidence = np.where(features_ok, np.array(LEVELS, dtype=object)[level], original_confidence)
    status = np.where(features_ok, "enhanced", "kept_original_features_error").astype(object)
    return Enhancement(value, confidence, score, status)


# The feature columns an enhanced record carries, next to the feature status, error and backend.
FEATURE_COLUMNS = ("avg_confidence", "max_confidence", "min_confidence", "std_confidence", "avg_loglik",
                   "perplexity", "gc_content", "codon_entropy", "scored_bases")


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
