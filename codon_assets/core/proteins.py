"""Reading target proteins for CDS design from FASTA or tab-separated tables (or a folder of them).

Sequences are upper-cased and must be the 20 standard amino acids; one trailing ``*`` (a stop) is allowed
and dropped. Nothing is dropped silently: every record that cannot be designed comes back as a reject with
its reason. A file that cannot be read at all raises ``InputError`` with one line a person can act on.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from codon_assets.core.tsv import InputError, header_preview, read_input_bytes

AMINO_ACIDS = frozenset("ACDEFGHIKLMNPQRSTVWY")
ID_NAMES = ("id", "protein_id", "entry", "name", "accession", "refseq_id")
# In preference order: the converted layout has both ``protein_aa`` and ``sequence`` (its CDS).
PROTEIN_NAMES = ("protein_aa", "refseq_aa", "protein", "protein_sequence", "sequence", "aa", "seq")
CDS_NAMES = ("refseq_nn", "cds", "native_cds", "dna", "sequence")  # optional native CDS, for comparison
FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas")
TABLE_SUFFIXES = (".tsv", ".tab", ".txt")

REJECT_REASONS = {
    "missing_id": "the record has no identifier",
    "empty_sequence": "the record has no protein sequence",
    "invalid_letters": "letters other than the 20 standard amino acids",
    "internal_stop": "a stop (*) before the end of the protein",
    "duplicate_id": "the identifier was already used by an earlier record",
    "looks_like_dna": "only A/C/G/T letters: a nucleotide sequence, not a protein",
}


@dataclass(frozen=True)
class ProteinRecord:
    protein_id: str
    protein: str  # upper-case, standard amino acids only, no stop
    source: str  # "file:line" of the record
    native_cds: str | None = None  # when the table carries one (upper-case), for comparison only


@dataclass(frozen=True)
class ProteinReject:
    protein_id: str
    source: str
    reason: str  # a key of REJECT_REASONS
    detail: str


def _check(protein_id: str, raw: str, source: str) -> tuple[str | None, ProteinReject | None]:
    seq = re.sub(r"\s+", "", raw).upper()
    if not protein_id:
        return None, ProteinReject("", source, "missing_id", REJECT_REASONS["missing_id"])
    seq = seq.removesuffix("*")
    if not seq:
        return None, ProteinReject(protein_id, source, "empty_sequence", REJECT_REASONS["empty_sequence"])
    if "*" in seq:
        return None, ProteinReject(protein_id, source, "internal_stop", f"stop at residue {seq.index('*') + 1}")
    if len(seq) >= 30 and not set(seq) - set("ACGT"):
        # A, C, G and T are amino-acid letters too: a DNA column would otherwise pass as a protein.
        return None, ProteinReject(protein_id, source, "looks_like_dna", REJECT_REASONS["looks_like_dna"])
    bad = sorted(set(seq) - AMINO_ACIDS)
    if bad:
        first = min(seq.index(b) for b in bad) + 1
        return None, ProteinReject(protein_id, source, "invalid_letters",
                                   f"letters {''.join(bad)} (first at residue {first})")
    return seq, None


def _decode(path: Path) -> str:
    raw = read_input_bytes(path, "a FASTA or tab-separated protein file", gzip_ok=True)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; expected FASTA or a tab-separated table") from None
    if not text.strip():
        raise InputError(f"{path}: the file is empty")
    return text


def _fasta(text: str, path: Path) -> list[tuple[str, str, str, str | None]]:
    entries: list[tuple[str, str, str, str | None]] = []
    header, line_no, chunks = None, 0, []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line.startswith(">"):
            if header is not None:
                entries.append((header, "".join(chunks), f"{path}:{line_no}", None))
            header, line_no, chunks = (line[1:].split() or [""])[0], i, []
        elif line and not line.startswith(";"):
            if header is None:
                raise InputError(f"{path}: sequence before the first '>' header on line {i}; is this FASTA?")
            chunks.append(line)
    if header is not None:
        entries.append((header, "".join(chunks), f"{path}:{line_no}", None))
    return entries


def _pick(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:  # the first name in preference order wins, not the first column
        if name in lowered:
            return lowered.index(name)
    return None


def _table(text: str, path: Path) -> list[tuple[str, str, str, str | None]]:
    # Tab-separated tables have no quoting convention: a line is a row, whatever quotes it holds.
    rows = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows[0]
    id_col, seq_col = _pick(header, ID_NAMES), _pick(header, PROTEIN_NAMES)
    cds_col = _pick(header, tuple(n for n in CDS_NAMES if seq_col is None or header[seq_col].strip().lower() != n))
    if id_col is None or seq_col is None:
        raise InputError(
            f"{path}: needs an id column ({'/'.join(ID_NAMES)}) and a protein column "
            f"({'/'.join(PROTEIN_NAMES)}); header has: {header_preview(header)}"
        )
    def cell(row: list[str], c: int | None) -> str:
        return row[c].strip() if c is not None and c < len(row) else ""

    entries = []
    for line_no, row in enumerate(rows[1:], 2):
        if any(value.strip() for value in row):
            entries.append((cell(row, id_col), cell(row, seq_col), f"{path}:{line_no}", cell(row, cds_col).upper() or None))
    return entries


def read_proteins(path: str | Path) -> tuple[list[ProteinRecord], list[ProteinReject]]:
    """Records and rejects from a FASTA file, a tab-separated table (header row) or a directory of them
    (files read in name order). Format is told by the first character: '>' is FASTA."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FASTA_SUFFIXES + TABLE_SUFFIXES)
        if not files:
            raise InputError(f"{path}: no FASTA ({'/'.join(FASTA_SUFFIXES)}) or table ({'/'.join(TABLE_SUFFIXES)}) files")
    else:
        files = [path]
    records: list[ProteinRecord] = []
    rejects: list[ProteinReject] = []
    seen: set[str] = set()
    for file in files:
        text = _decode(file)
        entries = _fasta(text, file) if text.lstrip().startswith(">") else _table(text, file)
        for protein_id, raw, source, native in entries:
            seq, reject = _check(protein_id, raw, source)
            if reject is None and protein_id in seen:
                reject = ProteinReject(protein_id, source, "duplicate_id", REJECT_REASONS["duplicate_id"])
            if reject is not None:
                rejects.append(reject)
                continue
            seen.add(protein_id)
            records.append(ProteinRecord(protein_id, seq, source, native))
    return records, rejects
