"""Materialization metadata shared by every asset: row count, column schema and a short preview."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pyarrow as pa

PREVIEW_ROWS = 5
PREVIEW_CHARS = 40


def _cell(value: Any, max_chars: int | None) -> str:
    text = "" if value is None else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if max_chars is None or len(text) <= max_chars else text[: max_chars - 1] + "…"


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None,
                   max_chars: int | None = PREVIEW_CHARS) -> str:
    """A markdown table; cells longer than ``max_chars`` (None: no limit) are cut with an ellipsis."""
    if not rows:
        return "_none_"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c), max_chars) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def table_metadata(table: pa.Table) -> dict[str, Any]:
    """Row count, column schema and the first rows (long strings such as sequences are cut)."""
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in table.schema]
    )
    return {
        "dagster/row_count": table.num_rows,
        "dagster/column_schema": schema,
        "preview": dg.MetadataValue.md(markdown_table(table.slice(0, PREVIEW_ROWS).to_pylist())),
    }


def counts_table(counts: dict[str, int], key: str, descriptions: dict[str, str] | None = None) -> str:
    rows = [
        {key: name, "rows": count, **({"meaning": descriptions.get(name, "")} if descriptions else {})}
        for name, count in counts.items()
    ]
    return markdown_table(rows)
