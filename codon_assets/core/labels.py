"""Measured expression labels: a per-host table of measured values joined to the converted records.

The table is TSV or CSV with a header; its first column is the protein id, the value column is chosen by
name, by default the second column (or, when that column is not numeric, e.g. a gene name, the first
numeric column after the id). Values must be positive numbers (they are log10-transformed); a record is
matched by ``protein_id`` first, then by any identifier listed in its ``Gene Names``. Every row that is
not used is counted by reason.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from codon_assets.core.tsv import InputError, read_input_bytes


@dataclass
class MeasuredTable:
    path: str
    id_column: str
    value_column: str
    values: dict[str, float]  # id -> positive finite value (first occurrence of an id wins)
    problems: dict[str, int] = field(default_factory=dict)  # reason -> rows
    rows: int = 0  # data rows in the table: usable ones plus every row counted under a reason


@dataclass
class LabelJoin:
    measured_value: np.ndarray  # NaN where unmatched
    matched_by: list[str | None]  # "protein_id" | "gene_name" | None
    report: dict[str, int]


IMPLAUSIBLE_DECADES = 8.0
MEASURED_FILE = "a measured table (TSV or CSV with a header: id, value; optionally gzip-compressed)"


def read_measured(path: str | Path, value_column: str | None = None) -> MeasuredTable:
    """The usable values of a measured table, every other data row counted under one reason; a file that is
    no such table is one InputError. A row with the wrong number of fields is ``malformed_row``, one whose id
    or value is not UTF-8 ``not_utf8``: the rest of the table is still used."""
    path = Path(path)
    text = read_input_bytes(path, MEASURED_FILE, gzip_ok=True).decode("utf-8-sig", errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{path}: the measured table is empty")
    delimiter = "\t" if "\t" in lines[0] else ","
    # CSV quotes fields; tab-separated tables have no quoting convention (a line is a row as written).
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter,
                                      quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
            if "".join(row).strip()]
    header, body = [name.strip() for name in rows[0]], rows[1:]
    if len(header) < 2:
        raise InputError(f"{path}: the measured table needs an id column and a value column (header: {lines[0][:200]!r})")
    if len(set(header)) < len(header):
        raise InputError(f"{path}: repeated column names in the header: {', '.join(sorted(n for n in set(header) if header.count(n) > 1))}")
    if not body:
        raise InputError(f"{path}: the measured table has a header and no rows")
    frame = pd.DataFrame([row for row in body if len(row) == len(header)], columns=header, dtype=str)
    if frame.empty:
        raise InputError(f"{path}: no row has the header's {len(header)} fields ({len(body)} rows)")
    id_column = header[0]
    numeric = frame.apply(lambda col: pd.to_numeric(col.str.strip(), errors="coerce"))
    if value_column is None:
        # A value column is mostly numbers; a name column may hold a few that look like one ("1", "Inf").
        filled = (frame != "").sum()
        candidates = [c for c in header[1:] if filled[c] and numeric[c].notna().sum() > filled[c] / 2]
        if not candidates:
            raise InputError(f"{path}: no numeric value column (columns: {', '.join(header)})")
        value_column = header[1] if header[1] in candidates else candidates[0]
    elif value_column not in frame.columns:
        raise InputError(f"{path}: no column {value_column!r} (columns: {', '.join(header)})")

    ids = frame[id_column].str.strip()
    value = numeric[value_column]
    replaced = ids.str.contains("\ufffd", regex=False) | frame[value_column].str.contains("\ufffd", regex=False)
    named = (ids != "") & ~replaced
    finite = np.isfinite(value.to_numpy(dtype=float))
    # Each row lands under exactly one reason, in this order, or is usable.
    problems = {
        "malformed_row": len(body) - len(frame),
        "not_utf8": int(replaced.sum()),
        "missing_id": int(((ids == "") & ~replaced).sum()),
        "not_a_number": int((named & value.isna()).sum()),
        "non_finite": int((named & value.notna() & ~finite).sum()),  # inf, or a number beyond float range
        "not_positive": int((named & finite & (value <= 0)).sum()),
    }
    positive = named & finite & (value > 0)
    # A value this many decades from the table's median is a typo or a unit slip (1e308, 1e-300), not a level:
    # expression spans about six decades within a host, and log10 labels would let it dominate training.
    logs = np.log10(value.where(positive).to_numpy(dtype=float))
    centre = float(np.nanmedian(logs)) if positive.any() else 0.0
    implausible = positive & (np.abs(logs - centre) > IMPLAUSIBLE_DECADES)
    problems["implausible_value"] = int(implausible.sum())
    usable = positive & ~implausible
    # The first usable row of an id wins; an unusable row before it (a 0, a blank) does not hide it.
    duplicated = usable & ids.where(usable).duplicated(keep="first") & ids.where(usable).notna()
    problems["duplicate_id"] = int(duplicated.sum())
    keep = usable & ~duplicated
    values = dict(zip(ids[keep], value[keep].astype(float)))
    return MeasuredTable(str(path), id_column, value_column, values, {k: v for k, v in problems.items() if v},
                         rows=len(body))


def join_measured(records: pa.Table, measured: MeasuredTable) -> LabelJoin:
    """Measured value per record: by protein_id, else by the first Gene Names identifier that matches."""
    ids = records["protein_id"].to_pylist()
    gene_names = records["gene_names"].to_pylist()
    value = np.full(len(ids), np.nan)
    matched_by: list[str | None] = [None] * len(ids)
    used: set[str] = set()
    for i, (pid, names) in enumerate(zip(ids, gene_names)):
        if pid in measured.values:
            value[i], matched_by[i] = measured.values[pid], "protein_id"
            used.add(pid)
            continue
        for name in (names or "").split():
            if name in measured.values:
                value[i], matched_by[i] = measured.values[name], "gene_name"
                used.add(name)
                break
    report = {
        "measured_rows": measured.rows,
        "records": len(ids),
        "matched_by_protein_id": matched_by.count("protein_id"),
        "matched_by_gene_name": matched_by.count("gene_name"),
        "records_without_measurement": matched_by.count(None),
        "measured_rows_usable": len(measured.values),
        "measured_rows_used": len(used),
        "measured_rows_unmatched": len(set(measured.values) - used),
        **{f"measured_rows_{reason}": count for reason, count in measured.problems.items()},
    }
    return LabelJoin(value, matched_by, report)
