"""Measured expression labels: a per-host table of measured values joined to the converted records.

The table is TSV or CSV with a header; its first column is the protein id, the value column is chosen by
name, by default the second column (or, when that column is not numeric, e.g. a gene name, the first
numeric column after the id). Values must be positive numbers (they are log10-transformed); a record is
matched by ``protein_id`` first, then by any identifier listed in its ``Gene Names``. Every row that is
not used is counted by reason.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from codon_assets.core.tsv import InputError


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


def read_measured(path: str | Path, value_column: str | None = None) -> MeasuredTable:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the measured table ({exc})") from None
    if not text.strip():
        raise InputError(f"{path}: the measured table is empty")
    first_line = text.splitlines()[0]
    delimiter = "\t" if "\t" in first_line else ","
    # CSV quotes fields; tab-separated tables have no quoting convention (a line is a row as written).
    frame = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
    if frame.shape[1] < 2:
        raise InputError(f"{path}: the measured table needs an id column and a value column")
    id_column = frame.columns[0]
    numeric = frame.apply(lambda col: pd.to_numeric(col.str.strip(), errors="coerce"))
    if value_column is None:
        candidates = [c for c in frame.columns[1:] if numeric[c].notna().any()]
        if not candidates:
            raise InputError(f"{path}: no numeric value column")
        value_column = frame.columns[1] if frame.columns[1] in candidates else candidates[0]
    elif value_column not in frame.columns:
        raise InputError(f"{path}: no column {value_column!r} (columns: {', '.join(frame.columns)})")

    ids = frame[id_column].str.strip()
    value = numeric[value_column]
    named = ids != ""
    finite = np.isfinite(value.to_numpy(dtype=float))
    # Each row lands under exactly one reason, in this order, or is usable.
    problems = {
        "missing_id": int((~named).sum()),
        "not_a_number": int((named & value.isna()).sum()),
        "non_finite": int((named & value.notna() & ~finite).sum()),  # inf, or a number beyond float range
        "not_positive": int((named & finite & (value <= 0)).sum()),
    }
    usable = named & finite & (value > 0)
    duplicated = ids.duplicated() & usable
    problems["duplicate_id"] = int(duplicated.sum())
    keep = usable & ~duplicated
    values = dict(zip(ids[keep], value[keep].astype(float)))
    return MeasuredTable(str(path), id_column, value_column, values, {k: v for k, v in problems.items() if v},
                         rows=len(frame))


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
