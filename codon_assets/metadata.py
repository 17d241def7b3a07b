"""Materialization metadata shared by every asset: row count, column schema, a short preview and a content
version."""

from __future__ import annotations

import hashlib
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


# What each column of the stored tables means, shown in the UI's column schema (one definition for all).
COLUMN_DESCRIPTIONS: dict[str, str] = {
    # raw_tsv
    "path": "input file as found", "sha256": "SHA-256 of the file as stored (the data version's source)",
    "bytes": "file size in bytes", "rows": "data lines (TSV) or records (CSV, Parquet, FASTA) in the file",
    # converted_dataset / enhanced_dataset
    "protein_id": "record id: UniProt accession, else RefSeq/Ensembl protein id", "sequence": "CDS, upper case, with stop",
    "protein_aa": "translation of the CDS with the host's genetic code (no stop)", "host": "host partition key",
    "length_aa": "protein length in residues", "reviewed": "UniProt reviewed (Swiss-Prot) entry",
    "entry": "UniProt Entry as released", "entry_name": "UniProt Entry Name", "protein_names": "protein names as released",
    "gene_names": "gene names as released (first: the primary name)", "organism": "organism as released",
    "length": "length as released", "subcellular_location": "subcellular location as released",
    "refseq_id": "RefSeq protein id", "genome_id": "genome/assembly id", "source_file": "input file of the record",
    "source_row": "line (TSV) or record number in that file", "seq_sha256": "SHA-256 of the CDS (feature cache key)",
    "expression_value": "metadata expression estimate (heuristic; reported, never a training label)",
    "expression_unit": "unit of expression_value", "expression_assay": "how expression_value was obtained",
    "expression_confidence": "confidence of expression_value (0-1)",
    "original_value": "expression_value before the bounded model enhancement",
    "enhancement_score": "robust z-score that moved the estimate", "enhancement_status": "enhanced, unchanged or why not",
    "measured_value": "measured expression joined from the host's measured table (NaN: none)",
    "measured_log10": "log10 of measured_value: the training label", "measured_matched_by": "protein_id or gene_name",
    "feature_status": "success or error of the feature step", "feature_error": "why the features failed",
    "feature_backend": "markov, evo2 or nim",
    # converted_rejects
    "reasons": "reject reason codes (see the reasons table)", "detail": "what exactly failed",
    # evo2_features
    "status": "success or error", "error": "cause when status is error", "backend": "markov, evo2 or nim",
    "model_version": "the scoring model (identifies the feature cache)", "sequence_length": "CDS length in bases",
    "scored_bases": "bases the model scored", "avg_confidence": "mean probability the model gives the true base",
    "max_confidence": "largest per-base probability", "min_confidence": "smallest per-base probability",
    "std_confidence": "standard deviation of the per-base probabilities",
    "avg_loglik": "mean natural-log likelihood per base", "perplexity": "exp(-avg_loglik)",
    "gc_content": "GC fraction of the CDS", "codon_entropy": "Shannon entropy of the codon usage (bits)",
    "processing_time_ms": "scoring time of the record", "cached": "served from the feature cache",
    # codon_designs
    "protein": "target protein", "cds": "designed CDS", "mu": "predicted log10 expression (surrogate median)",
    "sigma": "calibrated uncertainty of mu (> 0)", "reward": "mu - lam*sigma + eta*Markov log-likelihood",
    "cai": "codon adaptation index for the host", "gc": "GC fraction of the design",
    "markov_avg_loglik": "mean log-likelihood under the host's Markov model", "feasible": "all hard constraints met",
    "constraint_report": "JSON: each constraint and its result", "reward_initial_mean": "policy's mean reward at start",
    "reward_final_mean": "policy's mean reward at the end", "preferred_mu": "mu of the preferred-codon baseline",
    "preferred_reward": "reward of the preferred-codon baseline", "random_mu": "mu of the random-synonym baseline",
    "random_reward": "reward of the random-synonym baseline", "native_mu": "mu of the native CDS, when given",
    "native_reward": "reward of the native CDS, when given",
}


def table_metadata(table: pa.Table) -> dict[str, Any]:
    """Row count, column schema (with each column's description) and the first rows (long strings cut)."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name=f.name, type=str(f.type),
                                                    description=COLUMN_DESCRIPTIONS.get(f.name))
                                     for f in table.schema])
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


def records_version(records: pa.Table) -> str:
    """A content version of a records table: SHA-256 of every column as Arrow IPC, the sequences through
    their ``seq_sha256`` (two tables differ in version exactly when their contents differ, whatever the
    configuration that made them, e.g. ``--limit``)."""
    content = records.drop_columns([c for c in ("sequence", "protein_aa") if c in records.column_names])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, content.schema) as writer:
        writer.write_table(content.combine_chunks())
    return hashlib.sha256(sink.getvalue()).hexdigest()[:16]

