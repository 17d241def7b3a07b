"""Per-record language-model features of a partition: one row per converted record, never fewer.

A backend scores batches of sequences; this module caches, times, reports progress and assembles the
table. Two kinds of backend fit the same ``BatchScorer`` shape: the Markov model, which scores whole
buffers at once, and token models (Evo 2 locally or through NIM), which give per-base log-probabilities
per record and may fail record by record.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codon_assets.core.likelihood import STAT_COLUMNS, logprob_stats
from codon_assets.core.markov import MarkovCdsModel
from codon_assets.core.sequence_stats import codon_counts, codon_entropy, gc_content

FEATURES_SCHEMA = pa.schema(
    [
        ("protein_id", pa.string()),
        ("seq_sha256", pa.string()),
        ("status", pa.string()),  # success | error
        ("error", pa.string()),
        ("backend", pa.string()),
        ("model_version", pa.string()),
        ("sequence_length", pa.int64()),
        ("scored_bases", pa.int64()),
        ("avg_confidence", pa.float64()),
        ("max_confidence", pa.float64()),
        ("min_confidence", pa.float64()),
        ("std_confidence", pa.float64()),
        ("avg_loglik", pa.float64()),
        ("perplexity", pa.float64()),
        ("gc_content", pa.float64()),
        ("codon_entropy", pa.float64()),
        ("processing_time_ms", pa.float64()),
        ("cached", pa.bool_()),
    ]
)
CACHE_SCHEMA = pa.schema(
    [("seq_sha256", pa.string())]
    + [(name, FEATURES_SCHEMA.field(name).type) for name in STAT_COLUMNS]
    + [("processing_time_ms", pa.float64())]
)


class TokenLogprobScorer(Protocol):
    """A model that scores DNA base by base (the `evo2` and `nim` backends).

    ``logprobs`` returns, per input sequence and in input order, a 1-D float64 array of the natural-log
    probability the model gives the true base at each scored position, or the exception that made that
    record fail (the others still succeed). It never drops or reorders records.
    """

    backend: str
    model_version: str

    def logprobs(self, sequences: list[str]) -> list[np.ndarray | Exception]: ...


@dataclass
class BatchScores:
    stats: dict[str, np.ndarray]  # STAT_COLUMNS, NaN (0 for scored_bases) where the record failed
    errors: list[str | None]


class BatchScorer(Protocol):
    backend: str
    model_version: str

    def score_batch(self, sequences: pa.Array, seq_sha256: list[str]) -> BatchScores: ...


@dataclass
class MarkovBatchScorer:
    model: MarkovCdsModel
    workers: int = 1
    backend: str = "markov"

    @property
    def model_version(self) -> str:
        return self.model.version

    def score_batch(self, sequences: pa.Array, seq_sha256: list[str]) -> BatchScores:
        return BatchScores(self.model.score_stats(sequences, seq_sha256, self.workers), [None] * len(sequences))


@dataclass
class TokenBatchScorer:
    """Adapts a per-record token scorer: statistics for the records that were scored, errors for the rest."""

    scorer: TokenLogprobScorer

    @property
    def backend(self) -> str:
        return self.scorer.backend

    @property
    def model_version(self) -> str:
        return self.scorer.model_version

    def score_batch(self, sequences: pa.Array, seq_sha256: list[str]) -> BatchScores:
        results = self.scorer.logprobs(sequences.to_pylist())
        errors: list[str | None] = []
        for r in results:
            if isinstance(r, Exception):
                errors.append(f"{type(r).__name__}: {r}")
            elif len(r) == 0 or not np.isfinite(r).all() or (r > 1e-9).any():
                errors.append("the model returned no scored positions or invalid log-probabilities")
            else:
                errors.append(None)
        ok = [i for i, e in enumerate(errors) if e is None]
        stats = {name: np.full(len(results), np.nan) for name in STAT_COLUMNS}
        stats["scored_bases"] = np.zeros(len(results), dtype=np.int64)
        if ok:
            good = logprob_stats(np.concatenate([results[i] for i in ok]), np.array([len(results[i]) for i in ok]))
            for name in STAT_COLUMNS:
                stats[name][ok] = good[name]
        return BatchScores(stats, errors)


class FeatureCacheLike(Protocol):
    def get(self, backend: str, model_version: str, seq_sha256: list[str]) -> pa.Table | None: ...
    def put(self, backend: str, model_version: str, rows: pa.Table) -> None: ...
    def compact(self, backend: str, model_version: str) -> None: ...


@dataclass
class FeatureSummary:
    records: int = 0
    success: int = 0
    error: int = 0
    cache_hits: int = 0
    scored: int = 0
    seconds: float = 0.0
    errors_by_message: dict[str, int] = field(default_factory=dict)

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("inf")


ProgressCallback = Callable[[int, int, float], None]  # (records done, records to score, seconds so far)


def extract_features(
    records: pa.Table,
    scorer: BatchScorer,
    cache: FeatureCacheLike | None = None,
    batch_records: int = 50_000,
    progress: ProgressCallback | None = None,
) -> tuple[pa.Table, FeatureSummary]:
    """Score every record of a converted table (``protein_id``, ``sequence``, ``seq_sha256``)."""
    started = time.perf_counter()
    n = records.num_rows
    sequences = records["sequence"].combine_chunks()
    shas = records["seq_sha256"].to_pylist()
    lengths = pc.binary_length(sequences).to_numpy().astype(np.int64)
    stats = {name: np.full(n, np.nan) for name in STAT_COLUMNS}
    stats["scored_bases"] = np.zeros(n, dtype=np.int64)
    errors: list[str | None] = [None] * n
    millis = np.zeros(n)
    cached = np.zeros(n, dtype=bool)

    hits = cache.get(scorer.backend, scorer.model_version, shas) if cache is not None and n else None
    if hits is not None and hits.num_rows:
        position = {sha: i for i, sha in enumerate(shas)}
        at = np.array([position[sha] for sha in hits["seq_sha256"].to_pylist()], dtype=np.int64)
        for name in STAT_COLUMNS:
            stats[name][at] = hits[name].to_numpy()
        millis[at] = hits["processing_time_ms"].to_numpy()
        cached[at] = True

    todo = np.flatnonzero(~cached)
    done = 0
    for start in range(0, len(todo), batch_records):
        batch = todo[start : start + batch_records]
        t0 = time.perf_counter()
        scores = scorer.score_batch(sequences.take(pa.array(batch, pa.int64())), [shas[i] for i in batch])
        elapsed_ms = (time.perf_counter() - t0) * 1000
        # One timer per batch: each record is charged its share of the batch's bases.
        millis[batch] = elapsed_ms * lengths[batch] / max(int(lengths[batch].sum()), 1)
        for name in STAT_COLUMNS:
            stats[name][batch] = scores.stats[name]
        for i, message in zip(batch.tolist(), scores.errors):
            errors[i] = message
        if cache is not None:
            ok = np.array([m is None for m in scores.errors], dtype=bool)
            rows = {"seq_sha256": [shas[i] for i in batch[ok]]}
            rows |= {name: stats[name][batch[ok]] for name in STAT_COLUMNS}
            rows["processing_time_ms"] = millis[batch[ok]]
            cache.put(scorer.backend, scorer.model_version, pa.table(rows, schema=CACHE_SCHEMA))
        done += len(batch)
        if progress is not None:
            progress(done, len(todo), time.perf_counter() - started)
    if cache is not None and len(todo):
        cache.compact(scorer.backend, scorer.model_version)

    failed = np.array([e is not None for e in errors], dtype=bool)
    counts = codon_counts(sequences, workers=os.cpu_count() or 1)
    gc = gc_content(counts)
    entropy = codon_entropy(counts)
    table = pa.table(
        {
            "protein_id": records["protein_id"],
            "seq_sha256": records["seq_sha256"],
            "status": np.where(failed, "error", "success"),
            "error": pa.array(errors, pa.string()),
            "backend": pa.repeat(scorer.backend, n),
            "model_version": pa.repeat(scorer.model_version, n),
            "sequence_length": lengths,
            **{name: pa.array(stats[name], mask=failed if name != "scored_bases" else None) for name in STAT_COLUMNS},
            "gc_content": gc,
            "codon_entropy": entropy,
            "processing_time_ms": millis,
            "cached": cached,
        },
        schema=FEATURES_SCHEMA,
    )
    summary = FeatureSummary(
        records=n, success=int((~failed).sum()), error=int(failed.sum()), cache_hits=int(cached.sum()),
        scored=len(todo), seconds=time.perf_counter() - started,
    )
    for message in (e for e in errors if e is not None):
        summary.errors_by_message[message] = summary.errors_by_message.get(message, 0) + 1
    return table, summary

