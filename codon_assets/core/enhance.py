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
from typing import Literal

import numpy as np
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
