"""BASELINE, for comparison only: a faithful re-implementation of the ORIGINAL tool's approach.

This is how the scripts this project replaces worked, reproduced so `make bench` can measure the speed-up
on this machine in one run rather than quote a remembered number. It is not used by the platform.

- conversion: `csv.DictReader`, one Python dict per row, per-row validation and translation codon by
  codon, records accumulated as dicts and written as JSONL;
- features: per record, a per-base Python list of "confidence" values (the original drew them around a
  GC-content score; here they are the same per-base probabilities our Markov model gives, computed one
  base at a time in Python), statistics with the `statistics` module, and a JSON document per record that
  carries the per-base list, as the original's did.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from pathlib import Path

from codon_assets.core.genetic_code import CODON_TO_AA

csv.field_size_limit(sys.maxsize)


def convert_rows(path: Path, out: Path, start_codons=("ATG",)) -> tuple[int, int]:
    """Per-row conversion; returns (rows read, valid)."""
    valid, rows = 0, 0
    seen: set[str] = set()
    # errors="replace": the generated tables plant ids that are not UTF-8, which a strict read would refuse whole.
    with open(path, newline="", errors="replace") as handle, open(out, "w") as sink:
        for row in csv.DictReader(handle, delimiter="\t"):
            rows += 1
            seq = (row.get("RefSeq_nn") or "").strip().upper()
            protein = (row.get("RefSeq_aa") or "").strip().upper().rstrip("*")
            pid = (row.get("Entry") or row.get("RefSeq_id") or row.get("Genome_id") or "").strip()
            if not pid or not seq or set(seq) - set("ACGT") or len(seq) % 3 or seq[:3] not in start_codons:
                continue
            translated = "".join(CODON_TO_AA[seq[i : i + 3]] for i in range(0, len(seq), 3))
            if not translated.endswith("*") or "*" in translated[:-1] or (protein and translated[:-1] != protein):
                continue
            if seq in seen:
                continue
            seen.add(seq)
            value = 50.0 + (20 if row.get("Reviewed") == "reviewed" else 0)
            sink.write(json.dumps({"sequence": seq, "protein_aa": translated[:-1], "protein_id": pid,
                                   "expression": {"value": value, "unit": "estimated"}}) + "\n")
            valid += 1
    return rows, valid


def features_per_record(jsonl: Path, out: Path, model) -> int:
    """Per-record, per-base Python loop (the original's shape), with the per-base list kept in the output."""
    log_tables = model._tables_for(None)
    code = {"A": 0, "C": 1, "T": 2, "G": 3}
    results = []
    with open(jsonl) as handle:
        for line in handle:
            record = json.loads(line)
            seq = record["sequence"]
            confidences = []
            for i, base in enumerate(seq):
                k = min(i, model.order)
                ctx = 0
                for j in range(1, k + 1):
                    ctx |= code[seq[i - j]] << (2 * (j - 1))
                confidences.append(math.exp(log_tables[k][i % 3, ctx, code[base]]))
            results.append({
                "task": "extract_features", "status": "success",
                "output": {"sequence": seq[:50] + "...", "sequence_length": len(seq),
                           "avg_confidence": statistics.fmean(confidences), "max_confidence": max(confidences),
                           "min_confidence": min(confidences), "std_confidence": statistics.pstdev(confidences),
                           "per_base_confidence": confidences},
            })
    out.write_text(json.dumps(results))
    return len(results)
