"""Build Human.fa.gz and mouse.fa.gz (real Ensembl CDS, one per gene) from fetched GitHub snapshots.

Run from the repository root, after fetching the three snapshots below into a folder MIRROR (git directories
named owner+name):

    .venv/bin/python examples/data/cds_build.py [MIRROR]

Sources (each read with `git show COMMIT:PATH` from its snapshot; see MEASURED.md):
- santiago1234/iCodon @ ICODON_COMMIT, data/testing.rda: the `testing` data frame (validation set of the
  iCodon mRNA-stability model, Medina-Munoz et al. 2021). Column `coding` = the Ensembl BioMart `coding`
  attribute (longest CDS of the gene, length a multiple of 3, no N), keyed by Ensembl gene id.
- vagarwal87/saluki_paper @ SALUKI_COMMIT, Fig2_S3/all_HLs_{human,mouse}_PC1.txt: Ensembl gene id ->
  Ensembl external_gene_name (used for the mouse symbol and as a cross-check of the human one).
- examples/data/Human_measured.tsv (HPA; its `ensembl_gene` column) and mouse_measured.tsv (MGI symbols).

Output records: Ensembl-style header
    >ENSG... cds gene:ENSG... gene_symbol:SYMBOL description:... [Source:...]
one CDS per gene, kept only when it starts with ATG, ends with a stop, has a length that is a multiple of 3,
no internal stop and only ACGT, and only for genes that have a value in the measured table.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import json
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

from Bio.Seq import Seq

ICODON = ("santiago1234/iCodon", "f3afe2bcf36a6bc0298ef7ec0dc42b68835bcb62", "data/testing.rda")
SALUKI = ("vagarwal87/saluki_paper", "3aa4e56a19bbbf87ac9f5f0a251098cf749ad6bc")
HERE = Path(__file__).resolve().parent
DATA = HERE
STOPS = {"TAA", "TAG", "TGA"}


def git_show(mirror: Path, repo: str, commit: str, path: str) -> bytes:
    gitdir = mirror / repo.replace("/", "+") / "repo"
    return subprocess.run(["git", "--git-dir", str(gitdir), "show", f"{commit}:{path}"],
                          check=True, capture_output=True).stdout


# --- minimal reader for R's XDR serialisation (enough for a data.frame of character/double columns) ---
class _R:
    def __init__(self, b: bytes) -> None:
        self.b, self.p, self.refs = b, 0, []

    def int(self) -> int:
        (v,) = struct.unpack(">i", self.b[self.p:self.p + 4])
        self.p += 4
        return v

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in (254, 242):  # NILVALUE, EMPTYENV
            return None
        if kind == 255:  # REFSXP
            idx = flags >> 8 or self.int()
            return self.refs[idx - 1]
        if kind == 1:  # SYMSXP
            name = self.item()
            self.refs.append(name)
            return name
        if kind == 2:  # LISTSXP (pairlist)
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            car, cdr = self.item(), self.item()
            return [(tag, car)] + (cdr if isinstance(cdr, list) else [])
        if kind == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            s = self.b[self.p:self.p + n].decode("utf-8")
            self.p += n
            return s
        n = self.int()
        if kind in (10, 13):  # LGLSXP, INTSXP
            values = [self.int() for _ in range(n)]
        elif kind == 14:  # REALSXP
            values = list(struct.unpack(f">{n}d", self.b[self.p:self.p + 8 * n]))
            self.p += 8 * n
        elif kind in (16, 19):  # STRSXP, VECSXP
            values = [self.item() for _ in range(n)]
        else:
            raise ValueError(f"unsupported R type {kind}")
        attrs = dict(self.item()) if has_attr else {}
        return {"values": values, "attrs": attrs}


def read_rda_frame(raw: bytes, name: str) -> dict[str, list]:
    raw = bz2.decompress(raw)
    assert raw[:7] in (b"RDX2\nX\n", b"RDX3\nX\n"), raw[:7]
    r = _R(raw)
    r.p = 7
    version = r.int()
    r.int(), r.int()
    if version == 3:
        r.p += r.int()  # native encoding
    frame = dict(r.item())[name]
    return dict(zip(frame["attrs"]["names"]["values"], (col["values"] for col in frame["values"])))


def cds_problem(seq: str) -> str | None:
    if set(seq) - set("ACGT"):
        return "non_acgt"
    if len(seq) % 3:
        return "length_not_multiple_of_3"
    if not seq.startswith("ATG"):
        return "no_atg_start"
    if seq[-3:] not in STOPS:
        return "no_stop"
    if "*" in str(Seq(seq[:-3]).translate()):
        return "internal_stop"
    return None


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def write_fasta(path: Path, records: list[tuple[str, str]]) -> None:
    with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as out:
        for header, seq in records:
            out.write(f">{header}\n".encode())
            for i in range(0, len(seq), 60):
                out.write(seq[i:i + 60].encode() + b"\n")


def main(mirror: Path) -> dict:
    frame = read_rda_frame(git_show(mirror, *ICODON), "testing")
    by_species: dict[str, dict[str, str]] = {"human": {}, "mouse": {}}
    conflicts = Counter()
    for gene, species, coding in zip(frame["gene_id"], frame["specie"], frame["coding"]):
        if species in by_species:
            seen = by_species[species].setdefault(gene, coding)
            conflicts[species] += seen != coding
    ensembl_names = {}
    for sp in ("human", "mouse"):
        text = git_show(mirror, *SALUKI, f"Fig2_S3/all_HLs_{sp}_PC1.txt").decode()
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
        ensembl_names[sp] = {row["ensembl_gene_id"]: row["external_gene_name"] for row in rows}

    human_measured = read_tsv(DATA / "Human_measured.tsv")
    mouse_measured = read_tsv(DATA / "mouse_measured.tsv")
    hpa_by_ensg = {row["ensembl_gene"]: row["gene_id"] for row in human_measured if row["ensembl_gene"]}
    mouse_symbols = {row["gene_id"] for row in mouse_measured}

    stats: dict = {"source_rows": Counter(frame["specie"])}
    for sp, out_name, measured_rows in (("human", "Human.fa.gz", human_measured),
                                        ("mouse", "mouse.fa.gz", mouse_measured)):
        genes = by_species[sp]
        s = Counter(genes_in_source=len(genes), sequence_conflicts=conflicts[sp])
        records = []
        symbols_used = set()
        for gene in sorted(genes):
            ensembl_name = ensembl_names[sp].get(gene, "")
            if sp == "human":  # HPA's own Ensembl id -> symbol, so the symbol is the measured table's key
                symbol = hpa_by_ensg.get(gene, "")
                if symbol and ensembl_name and symbol != ensembl_name:
                    s["human_symbol_differs_from_ensembl83_name"] += 1
            else:
                symbol = ensembl_name if ensembl_name in mouse_symbols else ""
                if not ensembl_name:
                    s["mouse_no_ensembl_name"] += 1
            if not symbol:
                s["dropped_no_measured_value"] += 1
                continue
            if symbol in symbols_used:
                s["dropped_duplicate_symbol"] += 1
                continue
            problem = cds_problem(genes[gene])
            if problem:
                s[f"dropped_{problem}"] += 1
                continue
            symbols_used.add(symbol)
            header = (f"{gene} cds gene:{gene} gene_symbol:{symbol} description:longest Ensembl BioMart CDS of "
                      f"{gene} [Source:iCodon testing.rda;Acc:{gene}]")
            records.append((header, genes[gene]))
        write_fasta(HERE / out_name, records)
        s["written"] = len(records)
        s["bytes_gz"] = (HERE / out_name).stat().st_size
        s["measured_rows"] = len(measured_rows)
        s["measured_rows_covered"] = len(symbols_used)
        stats[sp] = dict(s)
    return stats


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: cds_build.py MIRROR  (a folder of fetched repository snapshots)")
    result = main(Path(sys.argv[1]))
    print(json.dumps(result, indent=2, default=dict))
