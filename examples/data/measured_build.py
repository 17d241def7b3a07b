"""Rebuild the measured-expression tables in this folder from fetched GitHub snapshots.

Provenance script (nothing in the package imports it). Every source is read straight
out of a git snapshot with ``git show <commit>:<path>``, pinned to the commit recorded below, so the output
is reproducible as long as the snapshots are present.

Sources (see README.md for citations, licences and caveats):

    Pichia (K. phaffii CBS 7435) mRNA, STAR gene counts, 72 RNA-seq samples
        github.com/giulimastro/kphaffiiRNASeq @ 1a84607c7b2d27b236891828cd58d9eef458d459 : counts.rdata
    CBS 7435 (PP7435_*) -> GS115 (PAS_*) locus map and CBS 7435 gene names
        github.com/bcoltman/Kphaffii_lncRNA_NearZero @ 1d7dc8c2cb256b9e17c553a4329da4f78b131cf5 :
        data/cbs7435_gs115.tsv, data/kphaffi_annotation_info.tsv
    Pichia (K. phaffii SuperMan5) LC-MS/MS intensities of cell-free lysate fractions
        github.com/TejShiv/Pichia-CFPS-proteomics @ 60e8d11da25e9c928539d42601a10f1b17650e78 :
        Proteomics_raw_data.xlsx
    Mouse NIH3T3 protein and mRNA copies per cell, Schwanhaeusser et al. 2011, Supplementary Table S3
        github.com/corbergm/energyDeterminesMolecules-code @ b593a69d131dd6aed93c8140a0d51facf1524f4d :
        experimentalData/mRNAData_Schwanhaeusser_2011.xls
    Human Protein Atlas RNA (cell lines + consensus tissues; values appear to be HPA NX), Ensembl gene ids only
        github.com/kircherlab/cfDNA @ 8891e408593e9adff52ce90ec0ca63c19aecd833 :
        resources/protein_atlas/RNAtableExtended.tsv.gz, resources/protein_atlas/RNAtableTissue.tsv.gz
    Ensembl gene id -> HGNC symbol (HPA-derived annotation exports)
        github.com/llniu/Human_Liver_Proteome @ 83238f9f0754b4ef01f2cd704ff75e1af19cc90b :
        LiverAtlas_PA/annotations/HPA/subcellular_location.csv,
        LiverAtlas_PA/annotations/HPA/Protein class/protein_class_Enzymes.csv

Run (needs xlrd, openpyxl and pyreadr, which the project venv does not carry):

    .venv/bin/pip install openpyxl xlrd pyreadr
    .venv/bin/python examples/data/measured_build.py --mirror MIRROR

It writes the *_measured*.tsv files next to itself and prints row counts and the overlap with
examples/data/Pic.tsv.
"""

from __future__ import annotations

import argparse
import gzip
import io
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
PIC_RELEASE = HERE / "Pic.tsv"

SOURCES = {
    "pic_counts": ("giulimastro+kphaffiiRNASeq", "1a84607c7b2d27b236891828cd58d9eef458d459", "counts.rdata"),
    "pic_map": ("bcoltman+Kphaffii_lncRNA_NearZero", "1d7dc8c2cb256b9e17c553a4329da4f78b131cf5",
                "data/cbs7435_gs115.tsv"),
    "pic_annot": ("bcoltman+Kphaffii_lncRNA_NearZero", "1d7dc8c2cb256b9e17c553a4329da4f78b131cf5",
                  "data/kphaffi_annotation_info.tsv"),
    "pic_prot": ("TejShiv+Pichia-CFPS-proteomics", "60e8d11da25e9c928539d42601a10f1b17650e78",
                 "Proteomics_raw_data.xlsx"),
    "mouse": ("corbergm+energyDeterminesMolecules-code", "b593a69d131dd6aed93c8140a0d51facf1524f4d",
              "experimentalData/mRNAData_Schwanhaeusser_2011.xls"),
    "hpa_ext": ("kircherlab+cfDNA", "8891e408593e9adff52ce90ec0ca63c19aecd833",
                "resources/protein_atlas/RNAtableExtended.tsv.gz"),
    "hpa_tissue": ("kircherlab+cfDNA", "8891e408593e9adff52ce90ec0ca63c19aecd833",
                   "resources/protein_atlas/RNAtableTissue.tsv.gz"),
    "hgnc_a": ("llniu+Human_Liver_Proteome", "83238f9f0754b4ef01f2cd704ff75e1af19cc90b",
               "LiverAtlas_PA/annotations/HPA/subcellular_location.csv"),
    "hgnc_b": ("llniu+Human_Liver_Proteome", "83238f9f0754b4ef01f2cd704ff75e1af19cc90b",
               "LiverAtlas_PA/annotations/HPA/Protein class/protein_class_Enzymes.csv"),
}


def blob(mirror: Path, key: str) -> bytes:
    repo, commit, path = SOURCES[key]
    return subprocess.run(["git", "-C", str(mirror / repo / "repo"), "show", f"{commit}:{path}"],
                          check=True, capture_output=True).stdout


def write(frame: pd.DataFrame, name: str, comment: str) -> None:
    # No comment lines: labels.read_measured reads the first line as the header.
    out = HERE / name
    frame.to_csv(out, sep="\t", index=False, float_format="%.6g")
    print(f"wrote {out.name}: {len(frame)} rows ({comment})")


# --------------------------------------------------------------------------------------------- Pichia
def pichia_mrna(mirror: Path) -> pd.DataFrame:
    import pyreadr

    with tempfile.NamedTemporaryFile(suffix=".rdata") as tmp:
        tmp.write(blob(mirror, "pic_counts"))
        tmp.flush()
        counts = pyreadr.read_r(tmp.name)["counts"]
    counts = counts[counts.index.str.startswith("PP7435_")]  # drops the plasmid/transgene rows at the end
    cpm = counts / counts.sum(axis=0) * 1e6
    wt0 = [c for c in cpm.columns if c.startswith("WT-0-")]
    wt72 = [c for c in cpm.columns if c.startswith("WT-72-")]
    res = pd.DataFrame({
        "mrna_cpm_mean_all72": cpm.mean(axis=1),
        "mrna_cpm_wt_0h": cpm[wt0].mean(axis=1),
        "mrna_cpm_wt_72h": cpm[wt72].mean(axis=1),
    })
    gmap = pd.read_csv(io.BytesIO(blob(mirror, "pic_map")), sep="\t", header=None, names=["pp", "pas"])
    gmap = gmap[gmap.pas.str.startswith("PAS_", na=False)].drop_duplicates("pp")
    annot = pd.read_csv(io.BytesIO(blob(mirror, "pic_annot")), sep="\t")
    names = dict(zip(annot["id"], annot["name"]))
    res["cbs7435_locus"] = res.index
    res["gene_name"] = [names.get(i, i) for i in res.index]
    res = res.merge(gmap, left_on="cbs7435_locus", right_on="pp", how="left")
    return res


def pichia_tables(mirror: Path) -> None:
    res = pichia_mrna(mirror)
    cols = ["mrna_cpm_mean_all72", "mrna_cpm_wt_0h", "mrna_cpm_wt_72h", "cbs7435_locus"]
    # (a) keyed by GS115 locus tag (PAS_...): the Pic release table lists these in Gene Names for GS115 entries.
    by_pas = res[res.pas.notna()].rename(columns={"pas": "gene_id"})
    by_pas = by_pas.drop_duplicates("gene_id")[["gene_id", "gene_name", *cols]]
    write(by_pas, "Pic_measured.tsv", "K. phaffii mRNA CPM keyed by GS115 PAS_ locus tag")
    # (b) keyed by gene symbol where CBS 7435 has one (not a bare PP7435_ locus), unique symbols only.
    named = res[~res.gene_name.str.startswith("PP7435_") & res.gene_name.notna()].copy()
    named = named[~named.gene_name.duplicated(keep=False)]
    by_sym = named.assign(gene_id=named.gene_name)[["gene_id", "gene_name", *cols]]
    write(by_sym, "Pic_measured_by_symbol.tsv", "same values keyed by CBS 7435 gene symbol")
    # (c) lysate proteomics (label-free LC-MS/MS intensity), keyed by UniProt accession
    raw = pd.read_excel(io.BytesIO(blob(mirror, "pic_prot")))
    raw.columns = raw.columns.str.strip()
    raw["gene_name"] = raw["protein.Description"].str.extract(r"GN=(\S+)", expand=False)
    raw["taxon"] = raw["protein.Description"].str.extract(r"OX=(\d+)", expand=False)
    prot = raw.rename(columns={"protein.Accession": "gene_id", "lysate": "lysate_intensity",
                               "supernatant": "supernatant_intensity", "microsomes": "microsome_intensity"})
    prot = prot[["gene_id", "gene_name", "lysate_intensity", "supernatant_intensity", "microsome_intensity",
                 "taxon"]].drop_duplicates("gene_id")
    prot["gene_name"] = prot["gene_name"].fillna("")
    write(prot, "Pic_measured_proteomics.tsv", "K. phaffii cell-free lysate LC-MS intensities, UniProt keyed")


def pic_overlap() -> None:
    """Overlap with examples/data/Pic.tsv, by the rule of codon_assets/core/labels.py."""
    rel = pd.read_csv(PIC_RELEASE, sep="\t", dtype=str, keep_default_na=False)
    kp = rel.Organism.str.contains("Komagataella")
    for name in ["Pic_measured.tsv", "Pic_measured_by_symbol.tsv", "Pic_measured_proteomics.tsv"]:
        table = pd.read_csv(HERE / name, sep="\t", dtype=str, keep_default_na=False)
        ids = set(table.iloc[:, 0])
        by_pid = rel.Entry.isin(ids)
        by_name = ~by_pid & rel["Gene Names"].apply(lambda s: any(t in ids for t in s.split()))
        hit = by_pid | by_name
        print(f"{name}: {hit.sum()}/{len(rel)} records matched (protein_id {by_pid.sum()}, gene_name "
              f"{by_name.sum()}); Komagataella records {(hit & kp).sum()}/{kp.sum()}; "
              f"other species {(hit & ~kp).sum()}")


# ---------------------------------------------------------------------------------------------- Mouse
def mouse_table(mirror: Path) -> None:
    s3 = pd.read_excel(io.BytesIO(blob(mirror, "mouse")), sheet_name="Supplemental Table S3", engine="xlrd")
    first = lambda v: str(v).split(";")[0].strip() if pd.notna(v) and str(v).strip() else ""
    out = pd.DataFrame({
        "gene_id": s3["Gene Names"].map(first),
        "protein_copies_per_cell": pd.to_numeric(s3["Protein copy number average [molecules/cell]"],
                                                 errors="coerce"),
        "mrna_copies_per_cell": pd.to_numeric(s3["mRNA copy number average [molecules/cell]"], errors="coerce"),
        "uniprot_ids": s3["Uniprot IDs"].fillna("").astype(str),
    })
    out.insert(1, "gene_name", out.gene_id)
    out = out[out.gene_id != ""]
    # Protein groups sharing a first gene name: keep the most abundant group (labels.py keeps first occurrence).
    out = out.sort_values("protein_copies_per_cell", ascending=False).drop_duplicates("gene_id")
    write(out.sort_values("gene_id"), "mouse_measured.tsv", "NIH3T3 copies/cell, MGI symbol keyed")


# ---------------------------------------------------------------------------------------------- Human
def human_table(mirror: Path) -> None:
    ext = pd.read_csv(io.BytesIO(gzip.decompress(blob(mirror, "hpa_ext"))), sep="\t", index_col=0)
    tissue = pd.read_csv(io.BytesIO(gzip.decompress(blob(mirror, "hpa_tissue"))), sep="\t", index_col=0)
    a = pd.read_csv(io.BytesIO(blob(mirror, "hgnc_a")))[["Gene", "Gene name"]]
    b = pd.read_csv(io.BytesIO(blob(mirror, "hgnc_b")))[["Ensembl", "Gene"]].rename(
        columns={"Ensembl": "Gene", "Gene": "Gene name"})
    sym = pd.concat([a, b]).dropna().drop_duplicates("Gene")
    # The HPA exports passed through a spreadsheet: SEPT1 -> "1-Sep", MARCH10 -> "10-Mar". Drop those.
    excel_date = sym["Gene name"].str.match(r"^\d{1,2}-(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)$")
    print(f"human symbol map: {len(sym)} Ensembl genes, {int(excel_date.sum())} spreadsheet-mangled symbols dropped")
    sym = sym[~excel_date]
    sym = dict(zip(sym["Gene"], sym["Gene name"]))
    out = pd.DataFrame({
        "ensembl_gene": ext.index,
        "hek293_nx": ext["HEK 293"].to_numpy(),
        "hela_nx": ext["HeLa"].to_numpy(),
    }).set_index("ensembl_gene")
    out["tissue_consensus_median_nx"] = tissue.median(axis=1)
    out["tissue_consensus_max_nx"] = tissue.max(axis=1)
    out["gene_id"] = [sym.get(g, "") for g in out.index]
    out = out[out.gene_id != ""].reset_index()
    dup = out.gene_id.duplicated(keep=False)
    out = out[~dup]  # a symbol claimed by two Ensembl genes is ambiguous; drop both
    out.insert(1, "gene_name", out.gene_id)
    out = out[["gene_id", "gene_name", "hek293_nx", "hela_nx", "tissue_consensus_median_nx",
               "tissue_consensus_max_nx", "ensembl_gene"]]
    write(out.sort_values("gene_id"), "Human_measured.tsv",
          f"HPA NX (see README), HGNC symbol keyed; {len(ext)} HPA genes, {dup.sum()} ambiguous-symbol rows dropped")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror", type=Path, required=True, help="folder of fetched snapshots (owner+name git dirs)")
    args = ap.parse_args()
    pichia_tables(args.mirror)
    pic_overlap()
    mouse_table(args.mirror)
    human_table(args.mirror)


if __name__ == "__main__":
    main()
