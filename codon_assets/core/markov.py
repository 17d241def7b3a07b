"""A codon-phase-aware (3-periodic) interpolated Markov model of protein-coding DNA: the CPU feature backend.

The probability of base x at CDS position i, given the k bases before it and the codon phase i % 3, is
smoothed recursively towards the next-shorter context, the classic interpolated Markov chain with a
Dirichlet prior:

    P_k(x | ctx_k, phase) = (C_k(ctx_k, x, phase) + a * P_{k-1}(x | ctx_{k-1}, phase)) / (N_k(ctx_k, phase) + a)
    P_{-1}(x) = 1/4

with counts C_k from training CDS and pseudo-count a. Positions near the start of a CDS use the longest
context available. Cross-fitting: records are split into K folds by their CDS hash, and a record is scored
with counts from the other folds only, so no record is ever scored by counts that include itself. A
sequence outside the training set is scored with all counts.

Everything runs on whole buffers: contexts are rolling 2-bit codes (the nearest base in the lowest bits,
so the order-k context is ``ctx & (4**k - 1)``), counting is one ``bincount`` per fold, and scoring is one
table lookup per base. Lower-order counts are exact marginals of the order-K counts plus the few
positions within K bases of a CDS start.
"""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from codon_assets.core.genetic_code import base_codes, record_chunks, string_buffers
from codon_assets.core.likelihood import STAT_COLUMNS, logprob_stats

DEFAULT_ORDER = 5
DEFAULT_FOLDS = 5
DEFAULT_PSEUDOCOUNT = 64.0  # tuned on real yeast and Pichia partitions (best cross-fitted likelihood)
MAX_ORDER = 8  # orders 0..MAX_ORDER are accepted; the order-K table has 3 * 4**(K + 1) cells
# Contexts and flat (phase, context, base) indices share one unsigned dtype: the smallest that holds the
# largest flat index of the largest allowed table (uint32 for MAX_ORDER = 8). An order-8 context alone fits
# 16 bits, but ``ctx << 2`` and the phase above it need 2 * K + 4 bits, which overflowed uint16 from order 7.
_INDEX_DTYPE = np.min_scalar_type(3 * 4 ** (MAX_ORDER + 1) - 1)


def _contexts(base: np.ndarray, order: int) -> np.ndarray:
    """Order-``order`` context code (``_INDEX_DTYPE``, 2 bits a base) before every position of a base-code
    buffer (meaningless where the context would reach before the record start; callers treat those apart)."""
    n = len(base)
    ctx = np.zeros(n, dtype=_INDEX_DTYPE)
    shifted = np.empty(n, dtype=_INDEX_DTYPE)
    for j in range(1, min(order, n) + 1):
        np.left_shift(base[:-j], 2 * (j - 1), out=shifted[: n - j], dtype=_INDEX_DTYPE)
        np.bitwise_or(ctx[j:], shifted[: n - j], out=ctx[j:])
    return ctx


def _start_positions(offsets: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions within ``order`` bases of each record start: (buffer position, distance j from the start)."""
    starts, lengths = offsets[:-1], np.diff(offsets)
    j = np.tile(np.arange(order), len(starts))
    position = np.repeat(starts, order) + j
    inside = j < np.repeat(lengths, order)
    return position[inside], j[inside]


def _coded(sequences: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Base codes and offsets of whole-codon A/C/G/T sequences. Whole codons put every record start at a
    multiple of 3 in the buffer, so the codon phase of a position is simply its buffer index mod 3."""
    data, offsets = string_buffers(sequences)
    base, acgt = base_codes(data)
    if not acgt.all():
        raise ValueError("sequences must be upper-case A/C/G/T only")
    if (np.diff(offsets) % 3).any():
        raise ValueError("sequences must be whole codons (length a multiple of 3)")
    return base, offsets


def _phase_index(base: np.ndarray, ctx: np.ndarray, order: int) -> np.ndarray:
    """Flat index (phase, order-K context, base) of every position into a (3, 4**K, 4) table."""
    phase = np.tile((np.arange(3, dtype=_INDEX_DTYPE) << (2 * order + 2)), len(base) // 3)
    return phase | (ctx << 2) | base


def _low_index(j: np.ndarray, ctx: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
    """Flat index into an order-k (3, 4**k, 4) table for positions j bases into their CDS."""
    return ((j % 3) << (2 * k + 2)) | ((ctx & ((1 << (2 * k)) - 1)) << 2) | base


def _groups(sequences: pa.Array, group: np.ndarray, n_groups: int):
    """(group, its sequences in input order) for every non-empty group."""
    for g in range(n_groups):
        members = np.flatnonzero(group == g)
        if len(members):
            yield g, sequences.take(pa.array(members, pa.int64()))


def _keys(seq_sha256: list[str]) -> np.ndarray:
    return np.array([int(h[:16], 16) for h in seq_sha256], dtype=np.uint64)


def fold_of(seq_sha256: list[str], folds: int) -> np.ndarray:
    """Deterministic fold of each record from its CDS hash (independent of row order)."""
    return np.array([int(h[:8], 16) % folds for h in seq_sha256], dtype=np.int64)


@dataclass
class MarkovCdsModel:
    """Counts of a trained model. ``full[f]`` holds order-K counts (phase, context, base) from positions at
    least K bases into a CDS of fold f; ``near_start[k][f]`` the order-k counts from positions j with
    k <= j < K, which the marginals of the order-K table do not see."""

    order: int
    folds: int
    pseudocount: float
    training_hash: str  # names the training set: hash of its sorted CDS hashes
    full: np.ndarray  # (folds, 3, 4**order, 4) int64
    near_start: list[np.ndarray]  # per order k < K: (folds, 3, 4**k, 4) int64
    training_keys: np.ndarray  # sorted uint64 prefixes of the training CDS hashes (membership test)

    @property
    def version(self) -> str:
        return f"markov-o{self.order}-k{self.folds}-a{self.pseudocount:g}-{self.training_hash[:12]}"

    @classmethod
    def train(
        cls,
        sequences: pa.Array,
        seq_sha256: list[str],
        order: int = DEFAULT_ORDER,
        folds: int = DEFAULT_FOLDS,
        pseudocount: float = DEFAULT_PSEUDOCOUNT,
        workers: int = 1,
    ) -> MarkovCdsModel:
        """Count contexts in the CDS (upper-case A/C/G/T, whole codons), per fold; chunks are counted in
        ``workers`` threads (numpy releases the GIL for most of the work)."""
        if not 0 <= order <= MAX_ORDER:
            raise ValueError(f"order must be between 0 and {MAX_ORDER}")
        fold = fold_of(seq_sha256, folds)
        full = np.zeros((folds, 3 * 4**order * 4), dtype=np.int64)
        near = [np.zeros((folds, 3 * 4**k * 4), dtype=np.int64) for k in range(order)]

        def count(job: tuple[int, pa.Array]) -> tuple[int, np.ndarray, list[np.ndarray]]:
            f, chunk = job
            base, offsets = _coded(chunk)
            ctx = _contexts(base, order)
            index = _phase_index(base, ctx, order)
            position, j = _start_positions(offsets, order)
            deep = np.ones(len(base), dtype=bool)
            deep[position] = False  # too close to a CDS start for a full context: counted below
            near_counts = []
            for k in range(order):
                sel = j >= k
                at = position[sel]
                near_counts.append(np.bincount(_low_index(j[sel], ctx[at], base[at], k), minlength=near[k].shape[1]))
            return f, np.bincount(index[deep], minlength=full.shape[1]), near_counts

        jobs = [(f, subset[chunk]) for f, subset in _groups(sequences, fold, folds)
                for chunk in record_chunks(np.diff(string_buffers(subset)[1]))]
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for f, full_counts, near_counts in pool.map(count, jobs):
                full[f] += full_counts
                for k, counts in enumerate(near_counts):
                    near[k][f] += counts
        training_hash = hashlib.sha256("".join(sorted(seq_sha256)).encode()).hexdigest()
        return cls(
            order, folds, pseudocount, training_hash, full.reshape(folds, 3, 4**order, 4),
            [n.reshape(folds, 3, 4**k, 4) for k, n in enumerate(near)], np.unique(_keys(seq_sha256)),
        )

    def _log_tables(self, counts_full: np.ndarray, counts_near: list[np.ndarray]) -> list[np.ndarray]:
        """Smoothed log P_k(x | ctx, phase) tables for k = 0..K, each shaped (3, 4**k, 4)."""
        tables = []
        parent = np.full((3, 1, 4), 0.25)  # P_{-1}: uniform
        for k in range(self.order + 1):
            # Order-k counts: the order-K table summed over its K-k oldest context bases, plus near-start ones.
            counts = counts_full.reshape(3, 4 ** (self.order - k), 4**k, 4).sum(axis=1)
            if k < self.order:
                counts = counts + counts_near[k]
            prob = (counts + self.pseudocount * parent) / (counts.sum(axis=2, keepdims=True) + self.pseudocount)
            tables.append(np.log(prob))
            # The order-k context of an order-(k+1) context drops its oldest base (the highest bits).
            parent = prob[:, np.arange(4 ** (k + 1)) & (4**k - 1), :]
        return tables

    def _tables_for(self, fold: int | None) -> list[np.ndarray]:
        """Log tables from every fold but ``fold`` (all folds when None)."""
        full = self.full.sum(axis=0)
        near = [n.sum(axis=0) for n in self.near_start]
        if fold is not None:
            full = full - self.full[fold]
            near = [n - self.near_start[k][fold] for k, n in enumerate(near)]
        return self._log_tables(full, near)

    def score_stats(self, sequences: pa.Array, seq_sha256: list[str], workers: int = 1) -> dict[str, np.ndarray]:
        """Per-record log-likelihood statistics (see ``logprob_stats``), in input order.

        A record from the training set is scored by the model of the other folds (cross-fitting); any
        other sequence by the model of all folds. Per-base values exist one chunk at a time only.
        """
        # Group g < folds: the model without fold g; group ``folds``: the full model.
        trained = np.isin(_keys(seq_sha256), self.training_keys)
        group = np.where(trained, fold_of(seq_sha256, self.folds), self.folds)
        jobs = []
        for g, subset in _groups(sequences, group, self.folds + 1):
            log_tables = self._tables_for(None if g == self.folds else g)
            prob_tables = [np.exp(t).reshape(-1) for t in log_tables]
            log_tables = [t.reshape(-1) for t in log_tables]
            lengths = np.diff(string_buffers(subset)[1])
            jobs += [(g, subset[c], log_tables, prob_tables) for c in record_chunks(lengths)]

        def score_chunk(job) -> dict[str, np.ndarray]:
            _, chunk, log_tables, prob_tables = job
            base, offsets = _coded(chunk)
            ctx = _contexts(base, self.order)
            index = _phase_index(base, ctx, self.order)
            logp, p = log_tables[self.order][index], prob_tables[self.order][index]
            position, j = _start_positions(offsets, self.order)
            for k in range(self.order):
                at = position[j == k]
                low = _low_index(j[j == k], ctx[at], base[at], k)
                logp[at], p[at] = log_tables[k][low], prob_tables[k][low]
            return logprob_stats(logp, np.diff(offsets), p)

        if workers > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(score_chunk, jobs))
        else:
            parts = [score_chunk(job) for job in jobs]
        stats = {name: np.zeros(len(sequences)) for name in STAT_COLUMNS}
        stats["scored_bases"] = np.zeros(len(sequences), dtype=np.int64)
        # Jobs are grouped; put each record's statistics back at its input position.
        order_in_jobs = np.concatenate([np.flatnonzero(group == g) for g in range(self.folds + 1)])
        for name in STAT_COLUMNS:
            if parts:
                stats[name][order_in_jobs] = np.concatenate([part[name] for part in parts])
        return stats

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            meta=np.array([self.order, self.folds], dtype=np.int64),
            pseudocount=np.array(self.pseudocount),
            training_hash=np.array(self.training_hash),
            full=self.full,
            training_keys=self.training_keys,
            **{f"near_{k}": n for k, n in enumerate(self.near_start)},
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> MarkovCdsModel:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            order, folds = (int(v) for v in z["meta"])
            return cls(order, folds, float(z["pseudocount"]), str(z["training_hash"]), z["full"],
                       [z[f"near_{k}"] for k in range(order)], z["training_keys"])
