"""Per-record statistics of a model's per-base log-probabilities, shared by every feature backend.

A backend gives, for each record, the natural-log probability it assigns to the true base at each scored
position. Confidence is that probability; the statistics below summarise it per record.
"""

from __future__ import annotations

import numpy as np

STAT_COLUMNS: tuple[str, ...] = (
    "scored_bases",
    "avg_confidence",
    "max_confidence",
    "min_confidence",
    "std_confidence",
    "avg_loglik",
    "perplexity",
)


def logprob_stats(logprobs: np.ndarray, lengths: np.ndarray, probs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Statistics per record from concatenated per-position log-probabilities.

    ``logprobs`` holds every record's scored positions back to back and ``lengths`` how many belong to each
    record (each at least 1). ``avg_loglik`` is the mean natural log-probability per scored base and
    ``perplexity`` = exp(-avg_loglik). ``probs`` = exp(logprobs) may be passed when the caller has it already.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if (lengths <= 0).any():
        raise ValueError("every record needs at least one scored position")
    logprobs = np.asarray(logprobs, dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    p = np.exp(logprobs) if probs is None else probs
    mean_p = np.add.reduceat(p, starts) / lengths
    mean_p2 = np.add.reduceat(p * p, starts) / lengths
    avg_loglik = np.add.reduceat(logprobs, starts) / lengths
    return {
        "scored_bases": lengths,
        "avg_confidence": mean_p,
        "max_confidence": np.maximum.reduceat(p, starts),
        "min_confidence": np.minimum.reduceat(p, starts),
        "std_confidence": np.sqrt(np.maximum(mean_p2 - mean_p * mean_p, 0.0)),
        "avg_loglik": avg_loglik,
        "perplexity": np.exp(-avg_loglik),
    }
