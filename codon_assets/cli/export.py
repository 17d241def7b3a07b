"""Seed-compatible exports: the original tool's file formats, written from the stored tables of a run.

Each export is a job (``JOBS``) that reads stored table versions and writes one file; ``ExportJobs`` runs
each in a process of its own (``python -m codon_assets.cli.export JOB TABLE... OUTPUT``) while the run goes on."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from codon_assets.cli.common import CliError
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


def _rows(batch: pa.RecordBatch) -> Iterator[dict]:
    """The batch's rows as dicts, built column by column (a third faster than ``to_pylist``'s row by row)."""
    names = batch.schema.names
    return (dict(zip(names, values)) for values in zip(*(column.to_pylist() for column in batch.columns)))


def converted_records(batches: Iterable[pa.RecordBatch]) -> Iterator[dict]:
    """Converted rows in the original JSONL schema (release column names under ``metadata``)."""
    for batch in batches:
        yield from map(_converted_record, _rows(batch))


def write_jsonl(records: Iterator[dict], path: Path) -> int:
    count = 0
    with atomic_text_writer(path) as handle:
        for record in records:
            handle.write(json_line(record, newline=True))
            count += 1
    return count


def json_line(record: dict, newline: bool = False) -> str:
    """One record as compact JSON (UTF-8 as is; a NaN, which JSON lacks, is null)."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE if newline else 0).decode()


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
        for row in _rows(batch):
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
            handle.write(json_line(record))
            count += 1
        handle.write("\n]\n")
    return count


def enhanced_records(batches: Iterable[pa.RecordBatch]) -> Iterator[dict]:
    """Enhanced rows in the original `<stem>_enhanced.jsonl` schema (expression with original_value)."""
    for batch in batches:
        for row in _rows(batch):
            record = _converted_record(row)
            record["expression"]["original_value"] = row["original_value"]
            if row["measured_value"] is not None:
                record["expression"]["measured_value"] = row["measured_value"]
            record["extra_features"]["enhancement_status"] = row["enhancement_status"]
            yield record


def export_converted(converted: str, path: Path) -> int:
    """`<stem>.jsonl` from the stored converted table at ``converted``; returns the records written."""
    return write_jsonl(converted_records(table_batches(converted)), path)


def export_features(features: str, converted: str, path: Path) -> int:
    """`<stem>_evo2_features.json` from the stored feature table (previews from the converted one)."""
    previews = table_batches(converted, ["protein_id", "sequence"])
    return write_json_array(evo2_feature_records(table_batches(features), previews), path)


def export_enhanced(enhanced: str, path: Path) -> int:
    """`<stem>_enhanced.jsonl` from the stored enhanced table."""
    return write_jsonl(enhanced_records(table_batches(enhanced)), path)


JOBS: dict[str, Callable[..., int]] = {"converted": export_converted, "features": export_features,
                                       "enhanced": export_enhanced}


class ExportJobs:
    """Export jobs (``JOBS``), each in a process of its own started as soon as its tables are stored, so that
    the exports are written while the run's later steps go on (JSON encoding holds the GIL: threads would not
    overlap). A job's process shares no descriptor with this one's output; should this process be killed,
    its jobs finish their (atomically written) files and end by themselves. ``wait`` raises on a failed job."""

    def __init__(self):
        self._jobs: dict[str, subprocess.Popen] = {}

    def submit(self, job: str, *args: str | Path) -> None:
        if job not in self._jobs:
            self._jobs[job] = subprocess.Popen([sys.executable, "-m", __name__, job, *map(str, args)],
                                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.PIPE, text=True)

    def wait(self) -> None:
        for job, process in self._jobs.items():
            _, error = process.communicate()
            if process.returncode:
                lines = error.strip().splitlines() or [f"exit status {process.returncode}"]
                raise CliError(f"the {job} export failed: {lines[-1]}")

    def __enter__(self) -> ExportJobs:
        return self

    def __exit__(self, *exc) -> None:
        for process in self._jobs.values():
            if exc[0] is not None and process.poll() is None:
                process.terminate()  # an interrupted command stops its exports too (no partial file is left)
            process.wait()
            process.stderr.close()


if __name__ == "__main__":
    # Stopped by its command: end through SystemExit, so the atomic writer removes its temporary file.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    job, *tables, output = sys.argv[1:]
    JOBS[job](*tables, Path(output))
