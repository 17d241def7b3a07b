"""Seed-compatible exports: the original tool's file formats, written from the converted tables."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from codon_assets.core.convert import METADATA_COLUMNS
from codon_assets.core.files import atomic_text_writer


def write_json(data: object, path: Path) -> None:
    with atomic_text_writer(path) as handle:
        json.dump(data, handle, indent=2)


def table_batches(path: str, columns: list[str] | None = None, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
    """The stored table version at ``path`` (the materialization's own: a local path or an object-store URL,
    read through the store's filesystem), in batches."""
    from upath import UPath

    with UPath(path).open("rb") as handle:
        yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=columns)


def _converted_record(row: dict) -> dict:
    return {
        "sequence": row["sequence"],
        "protein_aa": row["protein_aa"],
        "host": row["host"],
        "expression": {
            "value": row["expression_value"],
            "unit": row["expression_unit"],
            "assay": row["expression_assay"],
            "confidence": row["expression_confidence"],
        },
        "extra_features": {
            "length": row["length_aa"],
            "reviewed": row["reviewed"],
            "source_file": row["source_file"],
        },
        "metadata": {
            **{release: row[column] for release, column in METADATA_COLUMNS.items()},
            "source_row": row["source_row"],
            "seq_sha256": row["seq_sha256"],
        },
        "protein_id": row["protein_id"],
    }


def converted_records(batches: Iterable[pa.RecordBatch]) -> Iterator[dict]:
    """Converted rows in the original JSONL schema (release column names under ``metadata``)."""
    for batch in batches:
        yield from map(_converted_record, batch.to_pylist())


def write_jsonl(records: Iterator[dict], path: Path) -> int:
    count = 0
    with atomic_text_writer(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False))
            handle.write("\n")
            count += 1
    return count


def evo2_feature_records(batches: Iterable[pa.RecordBatch], converted: Iterable[pa.RecordBatch]) -> Iterator[dict]:
    """Feature rows in the original tool's `<stem>_evo2_features.json` layout (no per-base arrays); the
    sequence preview comes from the converted record (``protein_id``, ``sequence`` batches) with the same
    ``protein_id``."""
    service = {"markov": "codon-assets-markov", "evo2": "evo2-local", "nim": "nvidia-nim"}
    preview = {}
    for batch in converted:
        preview.update(zip(batch["protein_id"].to_pylist(),
                           pc.utf8_slice_codeunits(batch["sequence"], 0, 50).to_pylist()))
    for batch in batches:
        for row in batch.to_pylist():
            output = {
                "sequence": preview[row["protein_id"]] + "...",
                "sequence_length": row["sequence_length"],
                **{name: row[name] for name in ("avg_confidence", "max_confidence", "min_confidence",
                                                "std_confidence", "avg_loglik", "perplexity", "gc_content",
                                                "codon_entropy")},
                "backend": row["backend"],
                "model_version": row["model_version"],
            }
            if row["error"]:
                output["error"] = row["error"]
            yield {
                "task": "extract_features",
                "status": row["status"],
                "output": output,
                "metadata": {"request_id": row["protein_id"], "processing_time_ms": row["processing_time_ms"],
                             "service": service.get(row["backend"], row["backend"])},
            }


def write_json_array(records: Iterator[dict], path: Path) -> int:
    """A JSON array written one element at a time (never the whole document in memory)."""
    count = 0
    with atomic_text_writer(path) as handle:
        handle.write("[")
        for record in records:
            handle.write(",\n" if count else "\n")
            handle.write(json.dumps(record))
            count += 1
        handle.write("\n]\n")
    return count


def enhanced_records(batches: Iterable[pa.RecordBatch]) -> Iterator[dict]:
    """Enhanced rows in the original `<stem>_enhanced.jsonl` schema (expression with original_value)."""
    for batch in batches:
        for row in batch.to_pylist():
            record = _converted_record(row)
            record["expression"]["original_value"] = row["original_value"]
            if row["measured_value"] is not None:
                record["expression"]["measured_value"] = row["measured_value"]
            record["extra_features"]["enhancement_status"] = row["enhancement_status"]
            yield record
