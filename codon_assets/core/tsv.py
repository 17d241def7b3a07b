"""Reading the released per-host protein/CDS table (tab-separated, header row) with pyarrow.

Every column is read as text. A row with the wrong number of fields is not fatal: it is handed back as a
malformed row (its line number and text) so the converter can reject it with a reason. A file that cannot
be read as this table at all raises ``InputError`` with one line a person can act on.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

# Columns of the original data release, in order.
RELEASE_COLUMNS: tuple[str, ...] = (
    "Entry",
    "Reviewed",
    "Entry Name",
    "Protein names",
    "Gene Names",
    "Organism",
    "Length",
    "Subcellular location [CC]",
    "RefSeq_id",
    "Genome_id",
    "RefSeq_nn",
    "RefSeq_aa",
)
# Without a CDS column there is nothing to convert, and without any identifier column no record can be named.
SEQUENCE_COLUMN = "RefSeq_nn"
ID_COLUMNS: tuple[str, ...] = ("Entry", "RefSeq_id", "Genome_id")


class InputError(Exception):
    """The input cannot be read as a protein/CDS table; the message is meant for the user as is."""


@dataclass(frozen=True)
class MalformedRow:
    source_row: int  # 1-based data row number (header excluded)
    text: str
    fields: int
    expected_fields: int


@dataclass
class ReleaseTable:
    """A parsed input file: its release columns (missing optional ones filled with ""), malformed rows,
    and the data row number of every parsed row."""

    path: str
    sha256: str
    n_bytes: int
    table: pa.Table
    source_rows: pa.Array
    malformed: list[MalformedRow] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return self.table.num_rows + len(self.malformed)


HEAD_BYTES = 1 << 16  # what is looked at for binary data


def read_input_bytes(path: Path, expected: str) -> bytes:
    """The bytes of a user's input file, or one clear InputError (a folder, unreadable, binary data)."""
    _refuse_folder(path, expected)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    _refuse_binary(path, raw[:HEAD_BYTES], expected)
    return raw


def _refuse_folder(path: Path, expected: str) -> None:
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected {expected}")


def _refuse_binary(path: Path, head: bytes, expected: str) -> None:
    if b"\x00" in head:
        raise InputError(f"{path}: binary data (NUL bytes), not {expected}")


def scan_input_file(path: Path, expected: str) -> tuple[str, bytes, bool]:
    """(sha256, first line without line end, whether any byte is not whitespace) of a user's input
    file, read in blocks; or one clear InputError (a folder, unreadable, binary data)."""
    _refuse_folder(path, expected)
    digest, first_line, has_text = hashlib.sha256(), b"", False
    try:
        with open(path, "rb") as handle:
            block = handle.read(HEAD_BYTES)
            _refuse_binary(path, block, expected)
            digest.update(block)
            block = block.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is not content
            while block:
                has_text = has_text or re.search(rb"\S", block) is not None
                if b"\n" not in first_line:
                    first_line += block
                block = handle.read(1 << 20)
                digest.update(block)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return digest.hexdigest(), first_line.split(b"\n", 1)[0].rstrip(b"\r"), has_text


def _parse(path: Path, header: list[str]) -> tuple[pa.Table, list[MalformedRow]]:
    malformed: list[MalformedRow] = []

    def on_invalid_row(row: pa_csv.InvalidRow) -> str:
        # Line 1 is the header, so line L holds data row L - 1.
        malformed.append(MalformedRow(row.number - 1, row.text, row.actual_columns, row.expected_columns))
        return "skip"

    table = pa_csv.read_csv(
        # Read from disk in blocks (the file is never held whole), never decompressed by its name.
        pa.input_stream(str(path), compression=None),
        # Only single-threaded parsing numbers the rows it skips (and it is about as fast on 2 cores).
        # The header is named by us (stripped), so types apply whatever whitespace or CR the file has.
        read_options=pa_csv.ReadOptions(use_threads=False, block_size=1 << 24, column_names=header, skip_rows=1),
        parse_options=pa_csv.ParseOptions(delimiter="\t", invalid_row_handler=on_invalid_row),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in header}, strings_can_be_null=False
        ),
    )
    return table, malformed


def read_release_table(path: str | Path, limit: int | None = None) -> ReleaseTable:
    """Parse one input file. ``limit`` keeps the first N data rows (malformed ones included)."""
    path = Path(path)
    digest, header_line, has_text = scan_input_file(path, "a tab-separated table file")
    if not has_text:
        raise InputError(f"{path}: the file is empty")
    try:
        header = [name.strip() for name in header_line.decode("utf-8").split("\t")]
    except UnicodeDecodeError:
        raise InputError(f"{path}: the header is not UTF-8 text; is this a tab-separated table?") from None
    missing = [c for c in (SEQUENCE_COLUMN,) if c not in header]
    if not any(c in header for c in ID_COLUMNS):
        missing.append(" or ".join(ID_COLUMNS))
    if missing:
        shown = ", ".join(header[:6]) + (" ..." if len(header) > 6 else "")
        raise InputError(
            f"{path}: missing required column(s) {', '.join(missing)} (header has: {shown}); "
            "expected the release layout: " + ", ".join(RELEASE_COLUMNS)
        )
    if len(set(header)) != len(header):
        raise InputError(f"{path}: the header repeats a column name")

    try:
        table, malformed = _parse(path, header)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0]
        raise InputError(f"{path}: not a readable tab-separated table ({reason})") from None

    if limit is not None:
        malformed = [m for m in malformed if m.source_row <= limit]
        table = table.slice(0, max(0, limit - len(malformed)))
    # Data row numbers of parsed rows: all rows 1..n, minus the malformed ones, in order.
    n_rows = table.num_rows + len(malformed)
    rows = np.arange(1, n_rows + 1, dtype=np.int64)
    source_rows = pa.array(rows[~np.isin(rows, [m.source_row for m in malformed])])

    columns = {}
    for name in RELEASE_COLUMNS:
        columns[name] = table[name] if name in header else pa.array([""] * table.num_rows, pa.string())
    return ReleaseTable(
        path=str(path),
        sha256=digest,
        n_bytes=path.stat().st_size,
        table=pa.table(columns),
        source_rows=source_rows,
        malformed=malformed,
        extra_columns=[c for c in header if c not in RELEASE_COLUMNS],
    )
