"""Designs written by the output file's extension: the designs TSV (one row per protein, the columns of the
``codon_designs`` table), FASTA (.fa/.fasta/.fna: the CDS, a header with the design id, source protein,
host and key scores) or GenBank (.gb/.gbk: one record per design, a CDS feature with its translation, the
scores and the constraint report). FASTA and GenBank are written by Bio.SeqIO.

GenBank LOCUS names hold at most 16 characters (a longer one shifts the LOCUS columns and Biopython
warns): a design is named by its protein id where that fits, else by the id's start and a short hash of
its design id, unique within the file; the full ids are in ACCESSION, the CDS qualifiers and the COMMENT.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa

from codon_assets.core.design import Design
from codon_assets.core.files import atomic_text_writer

FORMATS_BY_SUFFIX: dict[str, str] = {
    ".tsv": "tsv",
    ".fa": "fasta",
    ".fasta": "fasta",
    ".fna": "fasta",
    ".gb": "genbank",
    ".gbk": "genbank",
}
LOCUS_NAME_MAX = 16
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:+-]")


class OutputFormatError(ValueError):
    """An output path whose extension names no design format; the message is meant for the user as is."""


def design_output_format(path: str | Path) -> str:
    """"tsv", "fasta" or "genbank" from the extension of ``path`` (any case), or one OutputFormatError:
    call it before any work to refuse an output that cannot be written."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS_BY_SUFFIX:
        known = ", ".join(FORMATS_BY_SUFFIX)
        raise OutputFormatError(f"{path}: unknown designs format {suffix or '(no extension)'!r}; "
                                f"use one of {known} (TSV, FASTA, GenBank)")
    return FORMATS_BY_SUFFIX[suffix]


def _token(text: str) -> str:
    """``text`` usable as one FASTA/GenBank identifier: whitespace and odd characters become '_'."""
    return _UNSAFE.sub("_", text.strip()) or "design"


def design_ids(designs: Sequence[Design]) -> list[str]:
    """The id of each design in FASTA and GenBank output, '<protein_id>_<host>' made a token, unique within
    the file: two ids that become the same token (``x*`` and ``x_``) get a hash of their own id appended."""
    ids, used = [], set()
    for d in designs:
        ident = _token(f"{d.protein_id}_{d.run.host}")
        if ident in used:
            ident = f"{ident}_{hashlib.sha256(d.protein_id.encode()).hexdigest()[:8]}"
        used.add(ident)
        ids.append(ident)
    return ids


# Printable ASCII that ids keep as they are; anything else (and '%') is percent-encoded.
_ID_SAFE = "".join(chr(c) for c in range(33, 127) if chr(c) not in "%=")


def _given_id(protein_id: str, spaces: bool = True) -> str:
    """The protein id as given, in ASCII (non-ASCII characters percent-encoded: ``%C3%A91`` for ``é1``), so
    that a FASTA header or GenBank record joins back to the input and the TSV; ``spaces=False`` also encodes
    spaces and '=' (a FASTA header's ``key=value`` fields)."""
    return quote(protein_id, safe=_ID_SAFE + (" =" if spaces else ""))


def designs_table(designs: Sequence[Design]) -> pa.Table:
    """One row per protein: the best CDS and its scores, the constraint report and both baselines (the
    columns of the ``codon_designs`` asset and of the designs TSV)."""
    rows = []
    for d in designs:
        rows.append({
            "protein_id": d.protein_id, "protein": d.protein, "cds": d.cds, "mu": d.mu,
            "sigma": d.sigma, "reward": d.reward, "cai": d.cai, "gc": d.gc,
            "markov_avg_loglik": d.avg_loglik, "feasible": d.feasible,
            "constraint_report": json.dumps(d.constraints.as_dict()),
            "reward_initial_mean": d.reward_initial_mean, "reward_final_mean": d.reward_final_mean,
            "preferred_mu": d.baseline_preferred.mu, "preferred_reward": d.baseline_preferred.reward,
            "random_mu": d.baseline_random.mu, "random_reward": d.baseline_random.reward,
            "native_mu": d.native.mu if d.native is not None else None,
            "native_reward": d.native.reward if d.native is not None else None,
        })
    return pa.Table.from_pylist(rows)


def _scores(d: Design) -> dict[str, str]:
    return {"mu": f"{d.mu:.4f}", "sigma": f"{d.sigma:.4f}", "reward": f"{d.reward:.4f}", "cai": f"{d.cai:.4f}",
            "gc": f"{d.gc:.4f}", "markov_avg_loglik": f"{d.avg_loglik:.4f}",
            "feasible": "true" if d.feasible else "false"}


def fasta_records(designs: Sequence[Design]) -> list:
    """One SeqRecord per design: id the design id, description 'protein_id=... host=... mu=... ...'."""
    from Bio.Seq import Seq
    from Bio.SeqRecord import SeqRecord

    records = []
    for d, ident in zip(designs, design_ids(list(designs))):
        fields = {"protein_id": _given_id(d.protein_id, spaces=False), "host": d.run.host, **_scores(d), "source": d.source}
        records.append(SeqRecord(Seq(d.cds), id=ident, name=ident,
                                 description=" ".join(f"{k}={v}" for k, v in fields.items())))
    return records


def _locus_names(designs: Sequence[Design], ids: list[str]) -> list[str]:
    """A LOCUS name (at most 16 characters, no whitespace) per design, unique within the file: its protein
    id where that fits, else the id's start and a hash of the design id."""
    names, used = [], set()
    for d, ident in zip(designs, ids):
        name = re.sub(r"[^A-Za-z0-9_-]", "_", d.protein_id.strip()) or "design"
        if len(name) > LOCUS_NAME_MAX or name in used:
            digest = hashlib.sha256(ident.encode()).hexdigest().upper()
            name = f"{name[:LOCUS_NAME_MAX - 6]}_{digest[:5]}"
            n = 0
            while name in used:  # two ids sharing a prefix and a hash prefix: practically never
                n += 1
                name = f"{name[:LOCUS_NAME_MAX - 6]}_{digest[n:n + 5]}"
        used.add(name)
        names.append(name)
    return names


def _comment(d: Design) -> str:
    s = d.run.settings
    lines = [
        f"Designed CDS of {_given_id(d.protein_id)} for {d.run.host} by codon-assets ({d.source}).",
        "Scores: " + "; ".join(f"{k}={v}" for k, v in _scores(d).items()) + ".",
        f"Baselines: preferred codons mu={d.baseline_preferred.mu:.4f} reward={d.baseline_preferred.reward:.4f}; "
        f"random synonyms mu={d.baseline_random.mu:.4f} reward={d.baseline_random.reward:.4f}"
        + (f"; native mu={d.native.mu:.4f} reward={d.native.reward:.4f}" if d.native is not None else "") + ".",
        "Avoided sites (both strands): "
        + (", ".join(f"{name} {motif}" for name, motif in d.run.forbidden_motifs) or "none") + ".",
        f"Run: seed={s.seed} steps={s.steps} group={s.group} lam={s.lam} eta={s.eta}.",
        f"Constraints: {'all met' if d.feasible else 'NOT all met'}.",
    ]
    if d.met_added:
        lines.append("The given protein lacked an initial Met; one was added.")
    lines += [f"{name}: {'pass' if c.passed else 'FAIL'} ({c.detail})." for name, c in d.constraints.checks.items()]
    return "\n".join(lines)


def genbank_records(designs: Sequence[Design]) -> list:
    """One SeqRecord per design, ready for Bio.SeqIO's GenBank writer: linear DNA of a synthetic
    construct, a source feature and a CDS feature over the whole sequence with /translation (the protein),
    /product (the protein id), /note (design id, host, scores, constraints), and the scores and constraint
    report in the COMMENT (the scores also as a structured comment)."""
    from Bio.Seq import Seq
    from Bio.SeqFeature import FeatureLocation, SeqFeature
    from Bio.SeqRecord import SeqRecord

    ids = design_ids(designs)
    records = []
    for d, ident, locus in zip(designs, ids, _locus_names(designs, ids)):
        scores = _scores(d)
        failed = [name for name, c in d.constraints.checks.items() if not c.passed]
        cds = SeqFeature(FeatureLocation(0, len(d.cds), strand=1), type="CDS", qualifiers={
            "codon_start": ["1"],
            "transl_table": ["1"],
            "product": [_given_id(d.protein_id)],
            "note": [
                f"design_id={ident}; host={d.run.host}; source={d.source}",
                "; ".join(f"{k}={v}" for k, v in scores.items()),
                "constraints: " + ("all met" if not failed else "failed " + ", ".join(failed)),
            ],
            "translation": [d.protein],
        })
        source = SeqFeature(FeatureLocation(0, len(d.cds), strand=1), type="source",
                            qualifiers={"organism": ["synthetic construct"], "mol_type": ["other DNA"]})
        records.append(SeqRecord(
            Seq(d.cds), id=ident, name=locus,
            description=f"{_given_id(d.protein_id)} CDS designed for {d.run.host}",
            features=[source, cds],
            annotations={
                "molecule_type": "DNA",
                "topology": "linear",
                "data_file_division": "SYN",
                "source": "synthetic construct",
                "organism": "synthetic construct",
                "taxonomy": ["other sequences", "artificial sequences"],
                "structured_comment": {"codon-assets-Design": {
                    "design_id": ident, "protein_id": _given_id(d.protein_id, spaces=False), "host": d.run.host, **scores}},
                "comment": _comment(d),
            },
        ))
    return records


def write_designs(designs: Sequence[Design], path: str | Path) -> int:
    """Write ``designs`` to ``path`` in the format its extension names (see ``design_output_format``:
    .tsv, .fa/.fasta/.fna, .gb/.gbk), atomically; returns the number of designs written. An unknown
    extension raises OutputFormatError before anything is written."""
    path = Path(path)
    fmt = design_output_format(path)
    designs = list(designs)
    if fmt == "tsv":
        table = designs_table(designs)
        with atomic_text_writer(path) as handle:
            table.to_pandas().to_csv(handle, sep="\t", index=False)
        return len(designs)
    from Bio import SeqIO

    records = fasta_records(designs) if fmt == "fasta" else genbank_records(designs)
    with atomic_text_writer(path) as handle:
        SeqIO.write(records, handle, fmt)
    return len(records)
