"""The standard genetic code, the other NCBI translation tables, and vectorised translation of many CDS at once.

The module-level constants (``CODON_TO_AA``, ``SYNONYMS``, ``SENSE``, ...) are the standard code (table 1);
:func:`genetic_code` gives any NCBI table (``Bio.Data.CodonTable`` ids) in the same layout, built once per
process: a host's CDS are translated with its table (``Host.translation_table``).

Sequences travel as one contiguous byte buffer plus offsets (the layout of an Arrow string array), so a
whole chunk of records is translated with a handful of numpy operations instead of a loop per codon.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

# NCBI translation table 1, written with codons enumerated in TCAG order (TTT, TTC, TTA, TTG, TCT, ...).
_NCBI_BASES = "TCAG"
_NCBI_TABLE_1 = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"

# Internally bases are numbered A=0, C=1, T=2, G=3: exactly what ``(byte >> 1) & 3`` gives for the ASCII
# letters, so a whole buffer is coded with one shift and one mask, no lookup table.
BASES = "ACTG"
_ASCII = np.frombuffer(b"ACGT", dtype=np.uint8)
CODON_TO_AA: dict[str, str] = {
    a + b + c: _NCBI_TABLE_1[16 * _NCBI_BASES.index(a) + 4 * _NCBI_BASES.index(b) + _NCBI_BASES.index(c)]
    for a in _NCBI_BASES
    for b in _NCBI_BASES
    for c in _NCBI_BASES
}
CODONS: tuple[str, ...] = tuple(a + b + c for a in BASES for b in BASES for c in BASES)  # by codon_index
STANDARD_TABLE = "".join(CODON_TO_AA[c] for c in CODONS)
STOP_CODONS: tuple[str, ...] = tuple(c for c in CODONS if CODON_TO_AA[c] == "*")
SENSE_CODONS: tuple[str, ...] = tuple(c for c in CODONS if CODON_TO_AA[c] != "*")
# Per codon, in codon_index order: whether it is a sense codon, and how many of its bases are G or C.
SENSE = np.array([CODON_TO_AA[c] != "*" for c in CODONS])
GC_PER_CODON = np.array([sum(b in "GC" for b in c) for c in CODONS], dtype=np.int64)
# Codon indices of each amino acid's synonymous codons (and of the stops, under "*").
SYNONYMS: dict[str, np.ndarray] = {aa: np.flatnonzero(np.array(list(STANDARD_TABLE)) == aa)
                                   for aa in sorted(set(STANDARD_TABLE))}
_COMPLEMENT = str.maketrans("ACGT", "TGCA")
_AA_BYTES = np.frombuffer(STANDARD_TABLE.encode(), dtype=np.uint8)
STOP_BYTE = ord("*")
MET_BYTE = ord("M")


def base_codes(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(base codes 0..3, whether each byte is an upper-case A/C/G/T) for a uint8 sequence buffer."""
    acgt = (data == _ASCII[0]) | (data == _ASCII[1]) | (data == _ASCII[2]) | (data == _ASCII[3])
    return (data >> 1) & np.uint8(3), acgt


def reverse_complement(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def codon_index(codon: str) -> int:
    return BASES.index(codon[0]) * 16 + BASES.index(codon[1]) * 4 + BASES.index(codon[2])


def string_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Zero-copy (data bytes, int64 offsets of length n+1 starting at 0) of a null-free Arrow string array."""
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[array.offset : array.offset + len(array) + 1]
    offsets = offsets.astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    # A sliced array shares its parent's buffer: cut it to this array's bytes and start offsets at 0.
    return data[offsets[0] : offsets[-1]], offsets - offsets[0]


def record_chunks(lengths: np.ndarray, max_bases: int = 1 << 22) -> list[slice]:
    """Consecutive record ranges of about ``max_bases`` bases each (at least one record per range)."""
    ends = np.cumsum(lengths)
    chunks, start = [], 0
    while start < len(lengths):
        stop = max(start + 1, int(np.searchsorted(ends, (ends[start - 1] if start else 0) + max_bases, "right")))
        chunks.append(slice(start, stop))
        start = stop
    return chunks


def codon_codes(base: np.ndarray, starts: np.ndarray, n_codons: np.ndarray) -> np.ndarray:
    """Codon indices (0..63, see ``codon_index``) of every codon of the selected records, concatenated.

    ``base`` is the sequence buffer's ``base_codes``; ``starts`` are byte offsets of the records
    and ``n_codons`` their codon counts; the records must be pure A/C/G/T. The code of the triplet at every
    byte position is computed once for the whole buffer (a few passes over uint8), and each record's codons
    are a stride-3 view into it.
    """
    triplet = np.zeros(len(base), dtype=np.uint8)
    # Triplets that straddle records or hold non-ACGT bytes are computed too, but never selected.
    triplet[:-2] = base[:-2] * np.uint8(16) + base[1:-1] * np.uint8(4) + base[2:]
    if len(starts) == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.concatenate([triplet[s : s + 3 * n : 3] for s, n in zip(starts.tolist(), n_codons.tolist())])


def records_of(positions: np.ndarray, n_items: np.ndarray) -> np.ndarray:
    """For positions in a concatenation of records with ``n_items`` each, the record each falls in."""
    return np.searchsorted(np.cumsum(n_items), positions, side="right")


def translate(codes: np.ndarray) -> np.ndarray:
    """Amino-acid letters (uint8) for codon indices."""
    return _AA_BYTES[codes]


@dataclass(frozen=True, eq=False)
class GeneticCode:
    """One NCBI translation table in this module's layout (codon-index order)."""

    table_id: int
    name: str
    codon_to_aa: dict[str, str]  # every codon; "*" for a codon that is only a stop
    aa_bytes: np.ndarray  # amino-acid letter (uint8) per codon index, as in codon_to_aa
    stop: np.ndarray  # per codon index: it can end a CDS (tables 27, 28, 31 read some of these as sense inside)
    start_codons: tuple[str, ...]  # the table's initiation codons, ATG first
    synonyms: dict[str, np.ndarray]  # codon indices of each amino acid's codons (stops under "*")

    def translate(self, codes: np.ndarray) -> np.ndarray:
        """Amino-acid letters (uint8) for codon indices."""
        return self.aa_bytes[codes]


def table_ids() -> tuple[int, ...]:
    """The NCBI translation table ids there are (1 standard, 11 bacterial, 12 alternative yeast nuclear, ...)."""
    from Bio.Data import CodonTable  # imported when a table is first asked for, not with this module

    return tuple(sorted(CodonTable.unambiguous_dna_by_id))


@lru_cache(maxsize=None)
def genetic_code(table_id: int) -> GeneticCode:
    """The NCBI translation table ``table_id``, built from ``Bio.Data.CodonTable`` once per process."""
    from Bio.Data import CodonTable

    if table_id not in CodonTable.unambiguous_dna_by_id:
        raise KeyError(f"unknown NCBI translation table {table_id}; tables are {', '.join(map(str, table_ids()))}")
    table = CodonTable.unambiguous_dna_by_id[table_id]
    codon_to_aa = {c: table.forward_table.get(c, "*") for c in CODONS}
    letters = "".join(codon_to_aa[c] for c in CODONS)
    starts = sorted(table.start_codons, key=lambda c: c != "ATG")  # stable: the table's order after ATG
    return GeneticCode(
        table_id=table_id,
        name=table.names[0],
        codon_to_aa=codon_to_aa,
        aa_bytes=np.frombuffer(letters.encode(), dtype=np.uint8),
        stop=np.array([c in table.stop_codons for c in CODONS]),
        start_codons=tuple(starts),
        synonyms={aa: np.flatnonzero(np.array(list(letters)) == aa) for aa in sorted(set(letters))},
    )
