"""Reading the released per-host protein/CDS table (tab-separated, header row) with pyarrow.

The release has no quoting convention: a line is a row and a tab separates fields, whatever quotes a
free-text field holds, so the table is read exactly line by line (no quote handling, no values spanning
lines). Every physical line is counted from the bytes, independently of the parser, so that the
converter's accounting (rows read = valid + rejected) can never pass if two lines were ever read as one.

A row with the wrong number of fields is not fatal: it is handed back as a malformed row (its line number
and text) so the converter can reject it with a reason. Fields that must be exact (ids, sequences) have to
be UTF-8; a row whose id or sequence is not is flagged for rejection. Free text with a stray byte (a
Windows-1252 quote) is decoded with replacement characters and the row is kept, and counted. A file that
cannot be read as this table at all raises ``InputError`` with one line a person can act on.

The other input formats (gzip, CSV, Parquet, CDS FASTA) are recognised and read in ``input_formats``; they
all end in ``assemble_release`` here, so the converter sees one column table whatever the file was.
``read_release_table`` and ``read_header`` accept every format.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
# Columns whose value must arrive exactly as written: a byte that is not UTF-8 there rejects the row.
EXACT_COLUMNS: tuple[str, ...] = (*ID_COLUMNS, SEQUENCE_COLUMN, "RefSeq_aa")


class InputError(Exception):
    """The input cannot be read as a protein/CDS table; the message is meant for the user as is."""


@dataclass(frozen=True)
class MalformedRow:
    source_row: int  # 1-based data line number (header excluded)
    text: str
    fields: int
    expected_fields: int


@dataclass
class ReleaseTable:
    """A parsed input file: its release columns (missing optional ones filled with ""), malformed rows,
    and the data line number of every parsed row."""

    path: str
    sha256: str
    n_bytes: int
    table: pa.Table
    source_rows: pa.Array
    data_lines: int  # physical lines after the header (within the limit), counted from the bytes
    blank_lines: int = 0  # lines with no field content: not records
    malformed: list[MalformedRow] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    # Row positions in ``table`` whose exact columns were not UTF-8, with those columns' names.
    invalid_text: dict[int, list[str]] = field(default_factory=dict)
    text_replaced_rows: int = 0  # rows kept whose free text had bytes replaced by U+FFFD
    input_format: str = "tsv"  # as recognised from the content: tsv, csv, parquet or fasta, "+gzip" when compressed
    # Row positions in ``table`` that the reader already knows to reject (reason code -> detail), e.g. a CDS
    # FASTA header marking a pseudogene; the converter adds these to the reasons its own checks find.
    record_problems: dict[int, dict[str, str]] = field(default_factory=dict)

    @property
    def rows_read(self) -> int:
        return self.table.num_rows + len(self.malformed)


HEAD_BYTES = 1 << 16  # what is looked at for binary data
# What an input table is expected to be, in refusals.
TABLE_FILE = "a protein/CDS table (TSV, CSV, Parquet or CDS FASTA, optionally gzip-compressed)"
# What a user's file is when it is not text: its first bytes, and what to do about it.
_NOT_TEXT: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed data; decompress it first (gunzip)"),
    (b"BZh", "bzip2-compressed data; decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "xz-compressed data; decompress it first (unxz)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data; decompress it first (unzstd)"),
    (b"PK\x03\x04", "a ZIP archive (an Excel workbook?); export the sheet as tab-separated text"),
    (b"PAR1", "a Parquet file"),
    (b"\xff\xfe", "UTF-16 text; save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text; save it as UTF-8"),
)


def read_input_bytes(path: Path, expected: str, gzip_ok: bool = False) -> bytes:
    """The bytes of a user's input file, or one clear InputError (a folder, unreadable, not text).
    ``gzip_ok``: gzip-compressed content is decompressed (and then checked like any content)."""
    refuse_non_file(path, expected)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if gzip_ok and raw.startswith(b"\x1f\x8b"):
        import gzip
        import zlib

        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: damaged gzip data ({exc}), not {expected}") from None
    _refuse_binary(path, raw[:HEAD_BYTES], expected)
    return raw


def refuse_non_file(path: Path, expected: str) -> None:
    """A folder, pipe, socket or device is refused before it is opened: a pipe would block with no writer,
    and input is read more than once (checked, then read), which a pipe's data cannot be."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected {expected}")
    if path.exists() and not path.is_file():
        raise InputError(f"{path}: not a regular file (a pipe, socket or device), expected {expected}; "
                         "save the table to a file first")


def _refuse_binary(path: Path, head: bytes, expected: str) -> None:
    for magic, what in _NOT_TEXT:
        if head.startswith(magic):
            raise InputError(f"{path}: {what}, not {expected}")
    if b"\x00" in head:
        raise InputError(f"{path}: binary data (NUL bytes), not {expected}")


class LineCounter:
    """Counts physical lines in a byte stream fed in blocks: a line ends at LF, CRLF or a lone CR (the
    endings Arrow's parser knows), and a last line without an ending still counts."""

    def __init__(self) -> None:
        self.endings = 0
        self._pending_cr = False  # the previous block ended with CR: a following LF belongs to it
        self._last = b""

    def feed(self, block: bytes) -> None:
        if not block:
            return
        crlf = block.count(b"\r\n") + (self._pending_cr and block[:1] == b"\n")
        self.endings += block.count(b"\n") + block.count(b"\r") - crlf
        self._pending_cr = block[-1:] == b"\r"
        self._last = block[-1:]

    @property
    def lines(self) -> int:
        return self.endings + (self._last not in (b"", b"\n", b"\r"))


@dataclass(frozen=True)
class FileScan:
    sha256: str
    first_line: bytes  # without its line ending or a UTF-8 byte-order mark
    has_text: bool  # any byte that is not white space
    lines: int  # physical lines, header included
    utf8: bool  # the whole content is valid UTF-8


def file_blocks(path: Path, first: int = HEAD_BYTES, size: int = 1 << 20) -> Iterator[tuple[bytes, bytes]]:
    """A file's bytes in blocks, as (bytes as stored, content) pairs: for a plain file both are the same
    block (a compressed file's reader pairs each stored block with its decompressed content)."""
    try:
        with open(path, "rb") as handle:
            block = handle.read(first)
            while block:
                yield block, block
                block = handle.read(size)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def scan_input_file(path: Path, expected: str, blocks: Iterable[tuple[bytes, bytes]] | None = None) -> FileScan:
    """Hash (of the bytes as stored), first line and physical line count (of the content) of a user's input
    file, read in blocks; or one clear InputError (a folder, unreadable, not text). ``blocks`` are
    (stored, content) pairs, for a compressed file; by default the file's own bytes."""
    refuse_non_file(path, expected)
    digest, first_line, has_text, counter, first = hashlib.sha256(), b"", False, LineCounter(), True
    utf8, decoder = True, codecs.getincrementaldecoder("utf-8")()
    for raw, block in file_blocks(path) if blocks is None else blocks:
        if first:
            _refuse_binary(path, block[:HEAD_BYTES], expected)
            first = False
        digest.update(raw)
        counter.feed(block)
        if utf8:
            try:
                decoder.decode(block)
            except UnicodeDecodeError:
                utf8 = False
        has_text = has_text or re.search(rb"\S", block.removeprefix(b"\xef\xbb\xbf")) is not None
        if not re.search(rb"[\r\n]", first_line):
            first_line += block
    header = re.split(rb"\r\n|\r|\n", first_line.removeprefix(b"\xef\xbb\xbf"), maxsplit=1)[0]
    if utf8:
        try:
            decoder.decode(b"", final=True)  # a file cut inside a character
        except UnicodeDecodeError:
            utf8 = False
    return FileScan(digest.hexdigest(), header, has_text, counter.lines, utf8)


class _Utf8Replacing(io.RawIOBase):
    """A byte stream's content with every invalid UTF-8 sequence replaced by U+FFFD, read in blocks. Arrow
    decodes a malformed row's text before the invalid-row handler sees it, so a row with the wrong number of
    fields and a non-UTF-8 byte would fail the whole file instead of being rejected."""

    def __init__(self, source):
        self._source, self._pending = source, b""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            block = self._source.read(1 << 20)
            self._pending = self._decoder.decode(block, final=not block).encode("utf-8")
            if not block:
                break
        n = min(len(buffer), len(self._pending))
        buffer[:n], self._pending = self._pending[:n], self._pending[n:]
        return n


REPLACEMENT = "\ufffd".encode()


def _parse(path: Path, header: list[str], compression: str | None = None,
           utf8: bool = True) -> tuple[pa.Table, list[MalformedRow]]:
    """The data rows as binary columns and the malformed rows. Content that is not valid UTF-8 (``utf8``
    False) is read with replacement characters, which are then turned back into an invalid byte, so
    ``_decode`` still tells (and counts) the values that were not UTF-8."""
    malformed: list[MalformedRow] = []

    def on_invalid_row(row: pa_csv.InvalidRow) -> str:
        # Line 1 is the header, so line L holds data row L - 1.
        malformed.append(MalformedRow(row.number - 1, row.text, row.actual_columns, row.expected_columns))
        return "skip"

    # Read from disk in blocks (the file is never held whole), decompressed only as the content says
    # (``compression`` comes from its magic bytes), never by its name.
    source = pa.input_stream(str(path), compression=compression)
    table = pa_csv.read_csv(
        source if utf8 else io.BufferedReader(_Utf8Replacing(source), buffer_size=1 << 20),
        # Only single-threaded parsing numbers the rows it skips (and it is about as fast on 2 cores).
        # The header is named by us (stripped), so types apply whatever whitespace or CR the file has.
        read_options=pa_csv.ReadOptions(use_threads=False, block_size=1 << 24, column_names=header, skip_rows=1),
        # One physical line, one row: no quoting, no escapes, and empty lines kept so rows stay numbered
        # by their line.
        parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False, escape_char=False,
                                          newlines_in_values=False, ignore_empty_lines=False,
                                          invalid_row_handler=on_invalid_row),
        # Bytes, decoded per column below: exact columns strictly, free text with replacement.
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.binary() for name in header}, strings_can_be_null=False
        ),
    )
    if not utf8:
        table = pa.table({name: pc.replace_substring(table[name], REPLACEMENT, b"\xff") for name in header})
    return table, malformed


def _decode(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, np.ndarray | None]:
    """The column as UTF-8 strings, and the rows that were not valid UTF-8 (None when all were); those are
    decoded with U+FFFD replacement characters."""
    try:
        return column.cast(pa.string()), None
    except pa.ArrowInvalid:
        pass
    values = column.to_pylist()
    invalid = np.zeros(len(values), dtype=bool)
    decoded = []
    for i, value in enumerate(values):
        try:
            decoded.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            invalid[i] = True
            decoded.append(value.decode("utf-8", errors="replace"))
    return pa.chunked_array([pa.array(decoded, pa.string())]), invalid


def read_header(path: str | Path) -> list[str]:
    """The column names of an input table in any supported format, reading only its beginning (a check
    before work starts; the whole file is read once, by ``read_release_table``), or one clear InputError."""
    from codon_assets.core.input_formats import read_input_header  # the formats build on this module

    return read_input_header(Path(path))


def tsv_header(path: Path, head: bytes) -> list[str]:
    """The column names of a tab-separated table from the beginning of its content (through the first line
    ending when there is one), or one clear InputError."""
    head = head.removeprefix(b"\xef\xbb\xbf")
    return _header_names(path, re.split(rb"\r\n|\r|\n", head, maxsplit=1)[0], re.search(rb"\S", head) is not None)


def _header_names(path: Path, first_line: bytes, has_text: bool) -> list[str]:
    """The stripped column names of a table's first line, or one clear InputError when the file cannot be
    this table (empty, not UTF-8, no CDS or id column, a repeated column)."""
    if not has_text:
        raise InputError(f"{path}: the file is empty")
    try:
        header = [name.strip() for name in first_line.decode("utf-8").split("\t")]
    except UnicodeDecodeError:
        raise InputError(f"{path}: the header is not UTF-8 text; is this a tab-separated table?") from None
    return check_header(path, header)


def header_preview(header: list[str], names: int = 6, width: int = 60) -> str:
    """The first ``names`` column names for a message, each cut to ``width`` characters (a header-less file's
    first line may be a whole sequence)."""
    cut = [name.strip() if len(name.strip()) <= width else name.strip()[:width] + "…" for name in header[:names]]
    return ", ".join(cut) + (" ..." if len(header) > names else "")


def check_header(path: Path, header: list[str]) -> list[str]:
    """The header itself, or one clear InputError when it cannot be the release table's (no CDS or id
    column, a repeated column)."""
    missing = [c for c in (SEQUENCE_COLUMN,) if c not in header]
    if not any(c in header for c in ID_COLUMNS):
        missing.append(" or ".join(ID_COLUMNS))
    if missing:
        raise InputError(
            f"{path}: missing required column(s) {', '.join(missing)} (header has: {header_preview(header)}); "
            "expected the release layout: " + ", ".join(RELEASE_COLUMNS)
        )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(f"{path}: the header repeats the column name(s) {', '.join(map(repr, repeated))}")
    return header


def read_release_table(path: str | Path, limit: int | None = None) -> ReleaseTable:
    """Parse one input file, in any supported format (recognised from its content, see ``input_formats``).
    ``limit`` keeps the first N data lines (TSV) or records (CSV, FASTA, Parquet), malformed ones included."""
    from codon_assets.core.input_formats import read_input_table  # the formats build on this module

    return read_input_table(Path(path), limit)


def read_tsv_table(path: Path, limit: int | None = None, blocks: Iterable[tuple[bytes, bytes]] | None = None,
                   compression: str | None = None, input_format: str = "tsv") -> ReleaseTable:
    """Parse one tab-separated input file, line by line. A gzip-compressed one passes its decompressed
    ``blocks`` (for the line count) and ``compression="gzip"`` (for the parser)."""
    scan = scan_input_file(path, TABLE_FILE, blocks)
    header = _header_names(path, scan.first_line, scan.has_text)
    try:
        table, malformed = _parse(path, header, compression, scan.utf8)
    except (pa.ArrowInvalid, OSError) as exc:  # Arrow reports a damaged compressed stream as OSError
        reason = str(exc).splitlines()[0]
        raise InputError(f"{path}: not a readable tab-separated table ({reason})") from None

    # Data line numbers of parsed rows: all lines 1..n, minus the malformed ones, in order.
    n_lines = table.num_rows + len(malformed)
    lines = np.arange(1, n_lines + 1, dtype=np.int64)
    source_rows = lines[~np.isin(lines, [m.source_row for m in malformed])]
    return assemble_release(path, scan.sha256, header, table, source_rows, max(0, scan.lines - 1), malformed,
                            limit=limit, input_format=input_format)


def assemble_release(path: Path, sha256: str, header: list[str], table: pa.Table, source_rows: np.ndarray,
                     data_lines: int, malformed: list[MalformedRow], *, limit: int | None = None,
                     blank_records: bool = True, input_format: str = "tsv",
                     problems: dict[int, dict[str, str]] | None = None) -> ReleaseTable:
    """The release table of any input format, from its parsed records: ``table`` holds the file's columns
    (named as in ``header``) as bytes, one row per record numbered by ``source_rows``; ``data_lines`` is
    the independent count of what the file holds (lines after the header, or records); ``problems`` are
    reasons the reader found, by source row. A record with no field content is blank (no record) when
    ``blank_records``; ``limit`` keeps records numbered up to N."""
    blank = np.full(table.num_rows, blank_records, dtype=bool)
    if blank_records:
        for name in header:
            blank &= pc.equal(pc.binary_length(table[name]), 0).to_numpy(zero_copy_only=False)
    keep = ~blank
    if limit is not None:
        malformed = [m for m in malformed if m.source_row <= limit]
        keep &= source_rows <= limit
        data_lines = min(data_lines, limit)
    blank_lines = int((blank & ((source_rows <= limit) if limit is not None else True)).sum())
    table = table.filter(pa.array(keep))
    source_rows = source_rows[keep]

    columns, invalid_text, replaced = {}, {}, np.zeros(table.num_rows, dtype=bool)
    for name in RELEASE_COLUMNS:
        if name not in header:
            columns[name] = pa.array([""] * table.num_rows, pa.string())
            continue
        columns[name], invalid = _decode(table[name])
        if invalid is None:
            continue
        if name in EXACT_COLUMNS:
            for i in np.flatnonzero(invalid).tolist():
                invalid_text.setdefault(i, []).append(name)
        else:
            replaced |= invalid
    replaced[list(invalid_text)] = False  # a rejected row is not counted as kept with replacements
    record_problems = {}
    if problems:
        positions = np.searchsorted(source_rows, list(problems))
        for row, position in zip(problems, positions.tolist()):
            if position < len(source_rows) and source_rows[position] == row:
                record_problems[position] = problems[row]
    return ReleaseTable(
        path=str(path),
        sha256=sha256,
        n_bytes=path.stat().st_size,
        table=pa.table(columns),
        source_rows=pa.array(source_rows),
        data_lines=data_lines,
        blank_lines=blank_lines,
        malformed=malformed,
        extra_columns=[c for c in header if c not in RELEASE_COLUMNS],
        invalid_text=invalid_text,
        text_replaced_rows=int(replaced.sum()),
        input_format=input_format,
        record_problems=record_problems,
    )
