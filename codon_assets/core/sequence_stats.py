"""Composition statistics of CDS computed over whole buffers: GC content and codon-usage entropy."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from codon_assets.core.genetic_code import GC_PER_CODON, SENSE, base_codes, codon_codes, record_chunks, string_buffers


def gc_content(counts: np.ndarray) -> np.ndarray:
    """Fraction of G+C per record, from its codon counts (exact for whole-codon sequences)."""
    bases = 3 * counts.sum(axis=1)
    return (counts @ GC_PER_CODON) / np.maximum(bases, 1)


def decode_codons(sequences: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(bytes, base codes, offsets, codon codes) of one chunk of whole-codon A/C/G/T records; the codon
    codes of all records are concatenated (record i has ``(offsets[i+1] - offsets[i]) // 3`` of them)."""
    data, offsets = string_buffers(sequences)
    base, acgt = base_codes(data)
    if not acgt.all():
        raise ValueError("sequences must be upper-case A/C/G/T only")
    return data, base, offsets, codon_codes(base, offsets[:-1], np.diff(offsets) // 3)


def counts_per_record(codes: np.ndarray, n_codons: np.ndarray) -> np.ndarray:
    """(records, 64) codon counts from concatenated codon codes and each record's codon count."""
    record = np.repeat(np.arange(len(n_codons)), n_codons)
    return np.bincount(record * 64 + codes, minlength=64 * len(n_codons)).reshape(-1, 64)


def codon_counts(sequences: pa.Array, workers: int = 1) -> np.ndarray:
    """(records, 64) codon counts, columns in ``CODONS`` order; sequences must be whole-codon A/C/G/T.
    Chunks are counted in ``workers`` threads."""
    counts = np.zeros((len(sequences), 64), dtype=np.int64)

    def count(chunk: slice) -> None:
        _, _, offsets, codes = decode_codons(sequences[chunk])
        counts[chunk] = counts_per_record(codes, np.diff(offsets) // 3)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(count, record_chunks(np.diff(string_buffers(sequences)[1]))))
    return counts


def codon_entropy(counts: np.ndarray) -> np.ndarray:
    """Shannon entropy (bits) of each record's sense-codon distribution (stop codons excluded)."""
    sense = counts[:, SENSE].astype(np.float64)
    totals = sense.sum(axis=1, keepdims=True)
    p = np.divide(sense, totals, out=np.zeros_like(sense), where=totals > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(p), 0.0)
    return -terms.sum(axis=1)
