"""Normalise and validate release rows into the converted dataset, rejecting bad rows with reasons.

A row is valid when it names a record, its CDS is pure A/C/G/T in whole codons, starts with one of the
host's start codons, ends with its only stop codon, translates to the given protein (when one is given)
and the protein length is within bounds. Stops and translation follow the host's genetic code
(``Host.translation_table``: 11 for bacteria; 12 reads CTG as Ser, for the CTG-clade yeasts). The first
copy of a CDS (and of an id) in a partition is kept; later copies are rejected naming the kept id. Checks
run column-wise over a whole file at once; only the (few) rejected rows are visited one by one, to word
their details.

Every input format arrives as the same release table (``input_formats``). A CDS FASTA record has no given
protein (``RefSeq_aa`` is empty): it is translated here and goes through every other check, since
translation_mismatch is the one check that needs a given protein. Reasons a reader already found
(``ReleaseTable.record_problems``, such as a FASTA header marking a pseudogene) join those the checks find.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codon_assets.core.expression import metadata_expression_estimate
from codon_assets.core.genetic_code import (
    base_codes,
    MET_BYTE,
    STOP_BYTE,
    codon_codes,
    genetic_code,
    records_of,
    codon_index,
    string_buffers,
)
from codon_assets.core.hosts import Host
from codon_assets.core.tsv import ID_COLUMNS, ReleaseTable

# Reason codes, in the order they are reported.
REASONS: dict[str, str] = {
    "malformed_row": "the row has the wrong number of fields (tab- or comma-separated)",
    "not_utf8": "an id or sequence field holds bytes that are not UTF-8 text",
    "pseudogene": "the CDS FASTA header marks the record as a pseudogene ([pseudo=true])",
    "partial": "the CDS FASTA header marks the CDS as incomplete ([partial=5'] or [partial=3'])",
    "missing_id": "no Entry, RefSeq_id or Genome_id (in FASTA: no protein id in the header)",
    "missing_sequence": "empty RefSeq_nn",
    "non_acgt": "the CDS has letters other than A/C/G/T",
    "length_not_multiple_of_3": "the CDS length is not a whole number of codons",
    "no_start_codon": "the CDS does not begin with one of the host's start codons",
    "no_stop_codon": "the CDS does not end with a stop codon",
    "internal_stop": "a stop codon before the last codon",
    "translation_mismatch": "the CDS does not translate to RefSeq_aa",
    "protein_length_out_of_bounds": "the protein is shorter or longer than the configured bounds",
    "duplicate_id": "the protein id was already taken by an earlier valid row",
    "duplicate_sequence": "the exact CDS was already kept for an earlier row",
}
# Reasons only a CDS FASTA header gives (``fasta_headers.cds_header_fields``), never a table row's content.
FASTA_HEADER_REASONS = ("pseudogene", "partial")

# Release column -> converted column, for the metadata fields carried through unchanged.
METADATA_COLUMNS: dict[str, str] = {
    "Entry": "entry",
    "Entry Name": "entry_name",
    "Protein names": "protein_names",
    "Gene Names": "gene_names",
    "Organism": "organism",
    "Length": "length",
    "Subcellular location [CC]": "subcellular_location",
    "RefSeq_id": "refseq_id",
    "Genome_id": "genome_id",
}

CONVERTED_SCHEMA = pa.schema(
    [
        ("protein_id", pa.string()),
        ("sequence", pa.string()),
        ("protein_aa", pa.string()),
        ("host", pa.string()),
        ("length_aa", pa.int32()),
        ("reviewed", pa.bool_()),
        *[(name, pa.string()) for name in METADATA_COLUMNS.values()],
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("seq_sha256", pa.string()),
        ("expression_value", pa.float64()),
        ("expression_unit", pa.string()),
        ("expression_assay", pa.string()),
        ("expression_confidence", pa.string()),
    ]
)
REJECTS_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("protein_id", pa.string()),
        ("reasons", pa.list_(pa.string())),
        ("detail", pa.string()),
    ]
)


@dataclass(frozen=True)
class ConversionSettings:
    min_protein_length: int = 10
    max_protein_length: int = 50_000


@dataclass
class FileCounts:
    """How one input file's lines were accounted for."""

    path: str
    sha256: str
    data_lines: int  # physical lines after the header (TSV) or records (CSV, Parquet, FASTA), counted
    # independently of the rows parsed
    blank_lines: int
    rows_read: int  # data lines that hold a record (valid or rejected)
    valid: int
    rejected: int
    text_replaced_rows: int  # valid or rejected rows whose free text had bytes replaced
    input_format: str = "tsv"  # as recognised from the content: tsv, csv, parquet or fasta ("+gzip")


@dataclass
class ConversionResult:
    valid: pa.Table
    rejects: pa.Table
    files: list[FileCounts]

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def data_lines(self) -> int:
        return sum(f.data_lines for f in self.files)

    @property
    def blank_lines(self) -> int:
        return sum(f.blank_lines for f in self.files)

    @property
    def text_replaced_rows(self) -> int:
        return sum(f.text_replaced_rows for f in self.files)

    def rejects_by_reason(self) -> dict[str, int]:
        return count_reasons(self.rejects)


def count_reasons(rejects: pa.Table) -> dict[str, int]:
    """How many rejected rows carry each reason code (a row with two reasons counts under both)."""
    if rejects.num_rows == 0:
        return {}
    counts = pc.value_counts(pc.list_flatten(rejects["reasons"])).to_pylist()
    by_code = {item["values"]: item["counts"] for item in counts}
    return {code: by_code[code] for code in REASONS if code in by_code}


def _clean(column: pa.ChunkedArray | pa.Array, ascii: bool = False) -> pa.Array:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return pc.ascii_trim_whitespace(arr) if ascii else pc.utf8_trim_whitespace(arr)


def _np_bool(arr: pa.Array) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=False).astype(bool)


@dataclass
class _Checked:
    """One chunk of rows after the row-local checks (everything but deduplication)."""

    table: pa.Table
    source_rows: np.ndarray
    protein_id: pa.Array
    sequence: pa.Array
    translated: pa.Array  # translations of the codable rows, in ``rows`` order
    given: pa.Array  # given proteins of the codable rows
    rows: np.ndarray  # codable rows (pure ACGT, whole codons)
    length_aa: np.ndarray
    reasons: dict[str, np.ndarray]
    candidates: np.ndarray  # rows that passed every row-local check
    seq_sha: list[str]  # CDS hashes of the candidates
    details: dict[str, dict[int, str]] = field(default_factory=lambda: {code: {} for code in REASONS})
    kept: np.ndarray | None = None  # positions in ``candidates`` kept after deduplication


@dataclass
class Converter:
    """Converts the files of one host partition in order, remembering kept ids and CDS across files.

    Each file is cut into chunks; the row-local checks of the chunks run in parallel threads (numpy,
    Arrow and hashlib release the GIL), deduplication runs over the chunks in order, so the first copy in
    file order is always the one kept.
    """

    host: Host
    settings: ConversionSettings = field(default_factory=ConversionSettings)
    chunk_rows: int = 8_192
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    _kept_sequences: dict[str, str] = field(default_factory=dict)  # seq_sha256 -> kept protein_id
    _kept_ids: dict[str, int] = field(default_factory=dict)  # protein_id -> source_row

    def convert(self, release: ReleaseTable) -> ConversionResult:
        source_rows = release.source_rows.to_numpy()
        slices = [
            (release.table.slice(start, self.chunk_rows), source_rows[start : start + self.chunk_rows],
             {i - start: names for i, names in release.invalid_text.items() if start <= i < start + self.chunk_rows},
             {i - start: found for i, found in release.record_problems.items() if start <= i < start + self.chunk_rows})
            for start in range(0, release.table.num_rows, self.chunk_rows)
        ]
        tables = []
        with ThreadPoolExecutor(self.workers) as pool:
            # A window of `workers` chunks at a time: each chunk's intermediates (cleaned and translated
            # copies) are dropped once its tables are built, so memory holds the output, not every stage.
            for start in range(0, len(slices), self.workers):
                checked = list(pool.map(lambda args: self._check(*args), slices[start : start + self.workers]))
                for chunk in checked:
                    self._deduplicate(chunk)
                tables += pool.map(lambda chunk: self._tables(chunk, release.path), checked)
        malformed = pa.Table.from_pylist(
            [
                {"source_file": release.path, "source_row": row.source_row, "protein_id": None,
                 "reasons": ["malformed_row"], "detail": f"{row.fields} fields, expected {row.expected_fields}"}
                for row in release.malformed
            ],
            schema=REJECTS_SCHEMA,
        )
        rejects = pa.concat_tables([malformed] + [rejects for _, rejects in tables]).sort_by("source_row")
        valid = pa.concat_tables([CONVERTED_SCHEMA.empty_table()] + [valid for valid, _ in tables])
        counts = FileCounts(release.path, release.sha256, release.data_lines, release.blank_lines,
                            release.rows_read, valid.num_rows, rejects.num_rows, release.text_replaced_rows,
                            release.input_format)
        return ConversionResult(valid=valid, rejects=rejects, files=[counts])

    def _check(self, table: pa.Table, source_rows: np.ndarray, invalid_text: dict[int, list[str]],
               problems: dict[int, dict[str, str]] | None = None) -> _Checked:
        n = table.num_rows
        protein_id = _clean(table[ID_COLUMNS[0]])
        for name in ID_COLUMNS[1:]:
            protein_id = pc.if_else(pc.equal(protein_id, ""), _clean(table[name]), protein_id)
        # Sequences are ASCII; any other byte survives the ASCII functions and is rejected as non-ACGT.
        sequence = pc.ascii_upper(_clean(table["RefSeq_nn"], ascii=True))
        given_protein = pc.ascii_rtrim(pc.ascii_upper(_clean(table["RefSeq_aa"], ascii=True)), characters="*")

        reasons: dict[str, np.ndarray] = {"not_utf8": np.zeros(n, dtype=bool)}
        reasons["not_utf8"][list(invalid_text)] = True
        reasons["missing_id"] = _np_bool(pc.equal(protein_id, ""))
        seq_len = pc.utf8_length(sequence).to_numpy().astype(np.int64)
        reasons["missing_sequence"] = seq_len == 0
        data, offsets = string_buffers(sequence)
        # Non-ACGT bytes are rare: find them, then the records they fall in.
        base, acgt = base_codes(data)
        reasons["non_acgt"] = np.zeros(n, dtype=bool)
        reasons["non_acgt"][np.searchsorted(offsets, np.flatnonzero(~acgt), side="right") - 1] = True
        reasons["length_not_multiple_of_3"] = (seq_len > 0) & (seq_len % 3 != 0)

        codable = (seq_len >= 3) & ~reasons["non_acgt"] & ~reasons["length_not_multiple_of_3"]
        rows = np.flatnonzero(codable)
        n_codons = seq_len[rows] // 3
        codes = codon_codes(base, offsets[:-1][rows], n_codons)
        code = genetic_code(self.host.translation_table)  # built once per process, a 64-entry lookup
        aa = code.translate(codes)
        first = np.cumsum(n_codons) - n_codons
        last = first + n_codons - 1
        start_ok = np.isin(codes[first], [codon_index(c) for c in self.host.start_codons])
        stop_last = code.stop[codes[last]]  # a codon some tables read as sense inside may still end the CDS
        # Stops are sparse (about one per record): locate them instead of scanning per record.
        stop_at = np.flatnonzero(aa == STOP_BYTE)
        stops = np.bincount(records_of(stop_at, n_codons), minlength=len(rows))
        stops_before_last = stops - (aa[last] == STOP_BYTE)
        aa[first[start_ok]] = MET_BYTE  # an alternative start codon still puts Met first

        # The protein is every codon but a terminal stop.
        keep = np.ones(len(aa), dtype=bool)
        keep[last[stop_last]] = False
        body_len = n_codons - stop_last
        translated = pa.StringArray.from_buffers(
            len(rows),
            pa.py_buffer(np.concatenate([[0], np.cumsum(body_len)]).astype(np.int32)),
            pa.py_buffer(aa[keep].tobytes()),
        )
        given = given_protein.take(pa.array(rows, pa.int64()))
        # The only check that needs a given protein: a row without one (every CDS FASTA record) skips it.
        mismatch = _np_bool(pc.and_(pc.not_equal(given, ""), pc.not_equal(given, translated)))

        def scatter(values: np.ndarray) -> np.ndarray:
            full = np.zeros(n, dtype=bool)
            full[rows] = values
            return full

        reasons["no_start_codon"] = scatter(~start_ok)
        reasons["no_stop_codon"] = scatter(~stop_last)
        reasons["internal_stop"] = scatter(stops_before_last > 0)
        reasons["translation_mismatch"] = scatter(mismatch)

        # Protein length from the translation where there is one, else from the given protein.
        length_aa = pc.utf8_length(given_protein).to_numpy().astype(np.int64)
        length_aa[rows] = body_len
        s = self.settings
        reasons["protein_length_out_of_bounds"] = (length_aa > 0) & (
            (length_aa < s.min_protein_length) | (length_aa > s.max_protein_length)
        )
        found_details: dict[str, dict[int, str]] = {}
        for i, found in (problems or {}).items():
            for code, detail in found.items():
                reasons.setdefault(code, np.zeros(n, dtype=bool))[i] = True
                found_details.setdefault(code, {})[i] = detail
        failed = np.zeros(n, dtype=bool)
        for mask in reasons.values():
            failed |= mask
        candidates = np.flatnonzero(~failed)
        # Hash only the candidates' CDS: the hash names the record's content for deduplication and caching.
        seq_sha = [hashlib.sha256(data[offsets[i] : offsets[i + 1]]).hexdigest() for i in candidates.tolist()]
        checked = _Checked(table, source_rows, protein_id, sequence, translated, given, rows, length_aa, reasons,
                           candidates, seq_sha)
        checked.details["not_utf8"] = {i: "not UTF-8: " + ", ".join(names) for i, names in invalid_text.items()}
        for code, by_row in found_details.items():
            checked.details[code].update(by_row)
        return checked

    def _deduplicate(self, chunk: _Checked) -> None:
        """Keep the first copy of each CDS and of each id, in file order, across chunks and files."""
        n = chunk.table.num_rows
        duplicate_id = np.zeros(n, dtype=bool)
        duplicate_seq = np.zeros(n, dtype=bool)
        ids = chunk.protein_id.take(pa.array(chunk.candidates, pa.int64())).to_pylist()
        rows = chunk.source_rows[chunk.candidates].tolist()
        kept = []
        for pos, (i, pid, sha, row) in enumerate(zip(chunk.candidates.tolist(), ids, chunk.seq_sha, rows)):
            if sha in self._kept_sequences:
                duplicate_seq[i] = True
                chunk.details["duplicate_sequence"][i] = f"same CDS as {self._kept_sequences[sha]}"
            elif pid in self._kept_ids:
                duplicate_id[i] = True
                chunk.details["duplicate_id"][i] = f"id already used by source row {self._kept_ids[pid]}"
            else:
                self._kept_sequences[sha] = pid
                self._kept_ids[pid] = row
                kept.append(pos)
        chunk.reasons["duplicate_id"] = duplicate_id
        chunk.reasons["duplicate_sequence"] = duplicate_seq
        chunk.kept = np.array(kept, dtype=np.int64)

    def _tables(self, chunk: _Checked, source_file: str) -> tuple[pa.Table, pa.Table]:
        self._describe(chunk)
        return self._valid_table(chunk, source_file), self._rejects_table(chunk, source_file)

    def _describe(self, chunk: _Checked) -> None:
        """Word the detail of each rejected row (only rejected rows are visited)."""
        details, reasons, sequence = chunk.details, chunk.reasons, chunk.sequence
        for i in np.flatnonzero(reasons["non_acgt"]).tolist():
            letters = sorted(set(sequence[i].as_py()) - set("ACGT"))
            details["non_acgt"][i] = "letters " + "".join(letters).replace(" ", "␠")
        for i in np.flatnonzero(reasons["translation_mismatch"]).tolist():
            k = int(np.searchsorted(chunk.rows, i))
            have, want = chunk.translated[k].as_py(), chunk.given[k].as_py()
            at = next((j for j, (a, b) in enumerate(zip(have, want)) if a != b), min(len(have), len(want)))
            got = have[at] if at < len(have) else "end"
            expected = want[at] if at < len(want) else "end"
            details["translation_mismatch"][i] = f"residue {at + 1}: CDS gives {got}, RefSeq_aa has {expected}"
        for i in np.flatnonzero(reasons["no_start_codon"]).tolist():
            details["no_start_codon"][i] = f"starts with {sequence[i].as_py()[:3]}"
        for i in np.flatnonzero(reasons["no_stop_codon"]).tolist():
            details["no_stop_codon"][i] = f"ends with {sequence[i].as_py()[-3:]}"
        codon_to_aa = genetic_code(self.host.translation_table).codon_to_aa
        for i in np.flatnonzero(reasons["internal_stop"]).tolist():
            cds = sequence[i].as_py()
            at = next(k for k in range(0, len(cds) - 3, 3) if codon_to_aa[cds[k : k + 3]] == "*")
            details["internal_stop"][i] = f"{cds[at:at + 3]} at codon {at // 3 + 1}"
        s = self.settings
        for i in np.flatnonzero(reasons["protein_length_out_of_bounds"]).tolist():
            details["protein_length_out_of_bounds"][i] = (
                f"{chunk.length_aa[i]} aa outside [{s.min_protein_length}, {s.max_protein_length}]"
            )

    def _valid_table(self, chunk: _Checked, source_file: str) -> pa.Table:
        table = chunk.table
        valid_rows = chunk.candidates[chunk.kept]
        take = pa.array(valid_rows, pa.int64())
        reviewed_text = pc.utf8_lower(_clean(table["Reviewed"])).take(take)
        reviewed = pc.if_else(
            pc.equal(reviewed_text, "reviewed"),
            True,
            pc.if_else(pc.equal(reviewed_text, "unreviewed"), False, pa.scalar(None, pa.bool_())),
        )
        location = _clean(table["Subcellular location [CC]"]).take(take)
        lengths = chunk.length_aa[valid_rows]
        value, confidence = metadata_expression_estimate(
            pc.fill_null(reviewed, False).to_numpy(zero_copy_only=False), location, lengths
        )
        m = len(valid_rows)
        columns = {
            "protein_id": chunk.protein_id.take(take),
            "sequence": chunk.sequence.take(take),
            "protein_aa": chunk.translated.take(pa.array(np.searchsorted(chunk.rows, valid_rows), pa.int64())),
            "host": pa.repeat(self.host.key, m),
            "length_aa": pa.array(lengths, pa.int32()),
            "reviewed": reviewed,
            **{new: _clean(table[old]).take(take) for old, new in METADATA_COLUMNS.items()},
            "source_file": pa.repeat(source_file, m),
            "source_row": pa.array(chunk.source_rows[valid_rows], pa.int64()),
            "seq_sha256": pa.array([chunk.seq_sha[k] for k in chunk.kept.tolist()], pa.string()),
            "expression_value": pa.array(value, pa.float64()),
            "expression_unit": pa.repeat("estimated", m),
            "expression_assay": pa.repeat("metadata_heuristic", m),
            "expression_confidence": pa.array(confidence, pa.string()),
        }
        return pa.table(columns, schema=CONVERTED_SCHEMA)

    def _rejects_table(self, chunk: _Checked, source_file: str) -> pa.Table:
        rejected = np.zeros(chunk.table.num_rows, dtype=bool)
        for mask in chunk.reasons.values():
            rejected |= mask
        records = []
        for i in np.flatnonzero(rejected).tolist():
            codes = [code for code in REASONS if code in chunk.reasons and chunk.reasons[code][i]]
            records.append(
                {
                    "source_file": source_file,
                    "source_row": int(chunk.source_rows[i]),
                    "protein_id": chunk.protein_id[i].as_py() or None,
                    "reasons": codes,
                    "detail": "; ".join(chunk.details[c][i] for c in codes if i in chunk.details[c]),
                }
            )
        return pa.Table.from_pylist(records, schema=REJECTS_SCHEMA)


def convert_files(releases: list[ReleaseTable], host: Host, settings: ConversionSettings) -> ConversionResult:
    """Convert all files of one partition into one valid table and one rejects table."""
    converter = Converter(host, settings)
    results = [converter.convert(release) for release in releases]
    return ConversionResult(
        valid=pa.concat_tables([r.valid for r in results]) if results else CONVERTED_SCHEMA.empty_table(),
        rejects=pa.concat_tables([r.rejects for r in results]) if results else REJECTS_SCHEMA.empty_table(),
        files=[counts for r in results for counts in r.files],
    )
