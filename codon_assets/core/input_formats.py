"""Every format a per-host protein/CDS table may come in, recognised from the content and read into the one
column table the converter takes (``tsv.ReleaseTable``), so conversion downstream is one code path.

Sniffing (``sniff_format``), from the first bytes of the file, never from its name:

- gzip magic ``1f 8b``: the content is decompressed (several gzip members one after another, as bgzip and
  ``cat a.gz b.gz`` write, are one stream) and sniffed again; damaged or truncated gzip data is one
  ``InputError``;
- Parquet magic ``PAR1``: a Parquet table with the release columns;
- first non-empty line starts with ``>``: CDS FASTA (Ensembl ``*.cds.all.fa.gz``, NCBI
  ``*_cds_from_genomic.fna.gz`` or any FASTA whose first word is the record id);
- otherwise text with the release header: tab-separated when the header line holds a tab, else
  comma-separated when it holds a comma (CSV may quote fields, with ``""`` for a quote and line breaks
  inside quotes), else tab-separated (which then names the missing columns);
- other binary data (bzip2, xz, zstd, ZIP, UTF-16, NUL bytes) is refused with one line saying what it is.

Counting, so that valid + rejected + blank == data_lines holds for every format:

- TSV (plain or gzip): physical lines after the header, counted from the (decompressed) bytes, as before;
- CSV: records after the header as the csv module reads them (a quoted field may span lines, so a
  record is not a line); an empty line is a blank record; a record with the wrong number of fields is a
  malformed row; an unclosed quote refuses the file (where the record ends cannot be known);
- Parquet: rows, as the file's footer counts them (the rows decoded must match);
- FASTA: records, counted as ``>`` at the start of a line in the (decompressed) bytes, independently of
  Biopython's parser that reads them; a FASTA record is never blank.

``source_row`` is the data line number (TSV) or the 1-based record number (CSV, Parquet, FASTA).

CDS FASTA headers fill the release columns as ``fasta_headers`` describes (Ensembl, NCBI or any other
FASTA whose first word is the record id).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from Bio.SeqIO.FastaIO import SimpleFastaParser

from codon_assets.core.fasta_headers import FASTA_COLUMNS, cds_header_fields
from codon_assets.core.hosts import ensembl_species
from codon_assets.core.tsv import (
    HEAD_BYTES,
    TABLE_FILE,
    InputError,
    LineCounter,
    MalformedRow,
    ReleaseTable,
    assemble_release,
    check_header,
    file_blocks,
    read_tsv_table,
    refuse_non_file,
    tsv_header,
)

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
BOM = b"\xef\xbb\xbf"
# What a table's content is when it is none of the formats, and what to do about it.
_NOT_A_TABLE: tuple[tuple[bytes, str], ...] = (
    (GZIP_MAGIC, "gzip-compressed twice; decompress it once (gunzip)"),
    (b"BZh", "bzip2-compressed data; decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "xz-compressed data; decompress it first (unxz)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data; decompress it first (unzstd)"),
    (b"PK\x03\x04", "a ZIP archive (an Excel workbook?); export the sheet as tab-separated text"),
    (b"\xff\xfe", "UTF-16 text; save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text; save it as UTF-8"),
)
MAX_HEADER_BYTES = 16 << 20  # a first line longer than this is no table header


@dataclass(frozen=True)
class InputFormat:
    kind: str  # "tsv", "csv", "parquet" or "fasta"
    gzip: bool = False

    def __str__(self) -> str:
        return self.kind + ("+gzip" if self.gzip else "")


# --- gzip ---------------------------------------------------------------------------------------------


class _Gunzip:
    """Decompresses a gzip stream fed in blocks; members one after another are one stream, zero padding
    after the last is ignored. Damage is one InputError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._z = zlib.decompressobj(wbits=31)

    def feed(self, raw: bytes) -> bytes:
        out = []
        try:
            while raw:
                if self._z.eof:  # a member ended: another may follow
                    if not raw.strip(b"\x00"):
                        break
                    self._z = zlib.decompressobj(wbits=31)
                out.append(self._z.decompress(raw))
                raw = self._z.unused_data if self._z.eof else b""
        except zlib.error as exc:
            raise InputError(f"{self.path}: damaged gzip data ({exc}); download or compress the file again") from None
        return b"".join(out)

    def close(self) -> None:
        if not self._z.eof:
            raise InputError(f"{self.path}: the gzip data ends early (a truncated file?); download or compress "
                             "the file again")


def content_blocks(path: Path, gz: bool) -> Iterator[tuple[bytes, bytes]]:
    """(bytes as stored, content) blocks of a file: the content decompressed when it is gzip."""
    if not gz:
        yield from file_blocks(path)
        return
    gunzip = _Gunzip(path)
    for raw, _ in file_blocks(path):
        yield raw, gunzip.feed(raw)
    gunzip.close()


def _is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(2) == GZIP_MAGIC
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _open_content(path: Path, gz: bool) -> io.BufferedIOBase:
    try:
        return gzip.open(path, "rb") if gz else open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _open_text(path: Path, gz: bool, newline: str | None) -> io.TextIOWrapper:
    # Bytes that are not UTF-8 survive as surrogates, so they go back to their bytes for the per-column
    # decoding every format shares (an id or CDS with them is rejected, free text gets U+FFFD).
    return io.TextIOWrapper(_open_content(path, gz), encoding="utf-8-sig", errors="surrogateescape", newline=newline)


def _as_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# --- sniffing -----------------------------------------------------------------------------------------


def _head(path: Path) -> tuple[bytes, bool, bool]:
    """The beginning of a file's content (through its first line ending, when there is one), whether it is
    gzip-compressed, and whether that beginning is the whole content."""
    refuse_non_file(path, TABLE_FILE)
    gz = _is_gzip(path)
    head = b""
    for _, block in content_blocks(path, gz):
        head += block
        if len(head) >= HEAD_BYTES and (re.search(rb"[\r\n]", head) or len(head) >= MAX_HEADER_BYTES):
            return head, gz, False
    return head, gz, True


def _kind(path: Path, head: bytes, gz: bool) -> str:
    content = head.removeprefix(BOM)
    if content.startswith(PARQUET_MAGIC):
        return "parquet"
    inside = " (inside gzip)" if gz else ""
    for magic, what in _NOT_A_TABLE:
        if content.startswith(magic):
            raise InputError(f"{path}: {what}{inside}, not {TABLE_FILE}")
    if b"\x00" in content[:HEAD_BYTES]:
        raise InputError(f"{path}: binary data (NUL bytes){inside}, not {TABLE_FILE}")
    if content.lstrip(b"\r\n").startswith(b">"):
        return "fasta"
    first_line = re.split(rb"\r\n|\r|\n", content, maxsplit=1)[0]
    return "csv" if b"\t" not in first_line and b"," in first_line else "tsv"


def sniff_format(path: str | Path) -> InputFormat:
    """The format of an input file, from its content; or one clear InputError for a folder, an unreadable
    file, damaged gzip data or content that is none of the formats."""
    path = Path(path)
    head, gz, _ = _head(path)
    return InputFormat(_kind(path, head, gz), gz)


# --- reading ------------------------------------------------------------------------------------------


def read_input_header(path: Path) -> list[str]:
    """The column names of an input file, from its beginning (the FASTA columns for a FASTA file), or one
    clear InputError when it cannot be a protein/CDS table."""
    head, gz, whole = _head(path)
    kind = _kind(path, head, gz)
    if kind == "parquet":
        table = _parquet_file(path, gz)
        if table.metadata.num_rows == 0:
            raise InputError(f"{path}: a Parquet table with no data rows")
        return _parquet_header(path, table.schema_arrow.names)
    if kind == "fasta":
        return list(FASTA_COLUMNS)
    if kind == "tsv":
        header = tsv_header(path, head)
    else:
        text = head.removeprefix(BOM).decode("utf-8", "surrogateescape")
        header = _csv_header(path, next(csv.reader(io.StringIO(text, newline="")), []))
    after_header = re.split(rb"\r\n|\r|\n", head.removeprefix(BOM), maxsplit=1)[1:]  # [] or [the rest]
    if whole and not any(re.search(rb"\S", rest) for rest in after_header):
        raise InputError(f"{path}: a header and no data rows")
    return header


def read_input_table(path: Path, limit: int | None = None) -> ReleaseTable:
    """One input file in any supported format as the release table; ``limit`` keeps the first N data lines
    (TSV) or records."""
    fmt = sniff_format(path)
    if fmt.kind == "tsv":
        if not fmt.gzip:
            return read_tsv_table(path, limit)  # the line-based reader, unchanged
        return read_tsv_table(path, limit, content_blocks(path, True), compression="gzip", input_format=str(fmt))
    reader = {"csv": _read_csv, "parquet": _read_parquet, "fasta": _read_fasta}[fmt.kind]
    return reader(path, fmt, limit)


def _digest(path: Path, gz: bool, counter: LineCounter | _RecordCounter | None = None,
            keep: list[bytes] | None = None) -> str:
    """SHA-256 of the file as stored, feeding its content to ``counter`` (and into ``keep``) on the way; the
    whole gzip stream is checked here, before any parser reads it."""
    digest = hashlib.sha256()
    for raw, block in content_blocks(path, gz):
        digest.update(raw)
        if counter is not None:
            counter.feed(block)
        if keep is not None:
            keep.append(block)
    return digest.hexdigest()


def _csv_header(path: Path, names: list[str]) -> list[str]:
    if not any(name.strip() for name in names):
        raise InputError(f"{path}: the file is empty")
    header = [name.strip() for name in names]
    try:
        "".join(header).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{path}: the header is not UTF-8 text; is this a comma-separated table?") from None
    return check_header(path, header)


def _read_csv(path: Path, fmt: InputFormat, limit: int | None) -> ReleaseTable:
    sha256 = _digest(path, fmt.gzip)
    # A CDS is one field: far longer than the csv module's default limit of 128 KiB.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with _open_text(path, fmt.gzip, newline="") as text:
        reader = csv.reader(text, strict=True)
        number = -1  # the header
        try:
            header = _csv_header(path, next(reader, []))
            number = 0
            values: list[list[bytes]] = [[] for _ in header]
            source_rows, malformed = [], []
            for number, fields in enumerate(islice(reader, limit), 1):
                if not fields:  # an empty line: a record with no field content, counted as blank
                    fields = [""] * len(header)
                if len(fields) != len(header):
                    malformed.append(MalformedRow(number, ",".join(fields), len(fields), len(header)))
                    continue
                for column, value in zip(values, fields):
                    column.append(_as_bytes(value))
                source_rows.append(number)
        except csv.Error as exc:
            where = "the CSV header" if number < 0 else f"CSV record {number + 1}"
            raise InputError(f"{path}: {where} (ending on line {reader.line_num}) cannot be read ({exc}); "
                             "check its quotes") from None
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: cannot be read ({exc})") from None
    table = pa.table({name: pa.array(column, pa.binary()) for name, column in zip(header, values)})
    return assemble_release(path, sha256, header, table, np.array(source_rows, dtype=np.int64), number, malformed,
                            input_format=str(fmt))


def _parquet_file(path: Path, gz: bool, content: bytes | None = None) -> pq.ParquetFile:
    try:
        if gz:  # Parquet needs random access: a compressed one is decompressed in memory
            if content is None:
                content = b"".join(block for _, block in content_blocks(path, True))
            return pq.ParquetFile(pa.BufferReader(content))
        return pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable Parquet file ({reason})") from None


def _parquet_header(path: Path, names: list[str]) -> list[str]:
    return check_header(path, [name.strip() for name in names])


def _parquet_bytes(path: Path, name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A Parquet column as bytes, the way it would be written in a table: text as is, numbers and dates as
    text, missing values empty."""
    if pa.types.is_dictionary(column.type):
        column = pa.chunked_array([chunk.dictionary_decode() for chunk in column.chunks], column.type.value_type)
    kind = column.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind) or pa.types.is_null(kind)):
        if pa.types.is_nested(kind):
            raise InputError(f"{path}: the Parquet column {name!r} holds {kind}, not text or numbers")
        column = column.cast(pa.string())
    return column.cast(pa.binary()).fill_null(b"")


def _read_parquet(path: Path, fmt: InputFormat, limit: int | None) -> ReleaseTable:
    kept: list[bytes] | None = [] if fmt.gzip else None
    sha256 = _digest(path, fmt.gzip, keep=kept)
    parquet = _parquet_file(path, fmt.gzip, b"".join(kept) if kept is not None else None)
    header = _parquet_header(path, parquet.schema_arrow.names)
    rows = parquet.metadata.num_rows if limit is None else min(parquet.metadata.num_rows, limit)
    try:
        if limit is None:
            table = parquet.read()
        else:
            batches = []
            for batch in parquet.iter_batches():
                batches.append(batch)
                if sum(b.num_rows for b in batches) >= limit:
                    break
            table = pa.Table.from_batches(batches, parquet.schema_arrow).slice(0, limit)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    table = pa.table({name: _parquet_bytes(path, name, table.column(i)) for i, name in enumerate(header)})
    return assemble_release(path, sha256, header, table, np.arange(1, table.num_rows + 1, dtype=np.int64), rows,
                            [], input_format=str(fmt))


class _RecordCounter:
    """Counts FASTA records in a byte stream fed in blocks: a ``>`` at the start of a line (after LF, CR or
    the start of the stream, past a byte-order mark)."""

    def __init__(self) -> None:
        self.records = 0
        self._line_start = True  # the next byte starts a line
        self._start = b""  # the stream's first bytes, until a byte-order mark can be told apart

    def feed(self, block: bytes) -> None:
        if self._start is not None:
            self._start += block
            if len(self._start) < len(BOM) and BOM.startswith(self._start):
                return
            block, self._start = self._start.removeprefix(BOM), None
        if not block:
            return
        self.records += block.count(b"\n>") + block.count(b"\r>") + (self._line_start and block[:1] == b">")
        self._line_start = block[-1:] in (b"\n", b"\r")


def _read_fasta(path: Path, fmt: InputFormat, limit: int | None) -> ReleaseTable:
    counter = _RecordCounter()
    sha256 = _digest(path, fmt.gzip, counter)
    organism = ensembl_species(path.name) or ""
    values: dict[str, list[bytes]] = {name: [] for name in FASTA_COLUMNS}
    problems: dict[int, dict[str, str]] = {}
    number = 0
    with _open_text(path, fmt.gzip, newline=None) as text:
        try:
            for number, (title, sequence) in enumerate(islice(SimpleFastaParser(text), limit), 1):
                fields, found = cds_header_fields(title, organism)
                fields["RefSeq_nn"] = sequence
                for name in FASTA_COLUMNS:
                    values[name].append(_as_bytes(fields.get(name, "")))
                if found:
                    problems[number] = found
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: cannot be read ({exc})") from None
    records = counter.records if limit is None else min(counter.records, limit)
    table = pa.table({name: pa.array(column, pa.binary()) for name, column in values.items()})
    return assemble_release(path, sha256, list(FASTA_COLUMNS), table, np.arange(1, number + 1, dtype=np.int64),
                            records, [], blank_records=False, input_format=str(fmt), problems=problems)


def input_fingerprint(path: str | Path) -> dict:
    """Content hash (of the file as stored), size and number of data lines (TSV) or records (CSV, Parquet,
    FASTA) of one input file, the way ``read_input_table`` counts them."""
    path = Path(path)
    fmt = sniff_format(path)
    if fmt.kind == "fasta":
        counter = _RecordCounter()
        sha256 = _digest(path, fmt.gzip, counter)
        rows = counter.records
    elif fmt.kind == "parquet":
        kept: list[bytes] | None = [] if fmt.gzip else None
        sha256 = _digest(path, fmt.gzip, keep=kept)
        rows = _parquet_file(path, fmt.gzip, b"".join(kept) if kept is not None else None).metadata.num_rows
    elif fmt.kind == "csv":
        sha256 = _digest(path, fmt.gzip)
        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
        with _open_text(path, fmt.gzip, newline="") as text:
            try:
                rows = max(0, sum(1 for _ in csv.reader(text, strict=True)) - 1)
            except csv.Error as exc:
                raise InputError(f"{path}: CSV cannot be read ({exc}); check its quotes") from None
    else:
        lines = LineCounter()
        sha256 = _digest(path, fmt.gzip, lines)
        rows = max(0, lines.lines - 1)
    return {"path": str(path), "sha256": sha256, "bytes": path.stat().st_size, "rows": rows,
            "format": str(fmt)}

