"""The release columns a CDS FASTA header (the ``>`` line) fills; ``input_formats`` reads the records.
FASTA has no protein: ``RefSeq_aa`` stays empty, so the converter translates the CDS and applies every
check that needs no given protein.

- Ensembl (``>ENST00000632684.1 cds chromosome:... gene:ENSG00000282431.1 ... gene_symbol:TRBD1
  description:... [Source:...]``): ``Entry`` = the record's stable id without its version
  (ENST00000632684), the id as written goes to ``Entry Name``; ``Gene Names`` = gene_symbol and the
  version-less gene id ("TRBD1 ENSG00000282431", as the release writes "COF1 YLL050C", so measured values
  keyed by either join); ``Protein names`` = description without its ``[Source:...]`` note; ``Organism`` =
  the species in an Ensembl file name (``Homo_sapiens.GRCh38.cds.all.fa.gz``), else empty. Only ids of
  Ensembl's own ``ENS...`` form lose their version (other ids, such as AT1G01010.1, are kept whole).
- NCBI (``>lcl|NC_000913.3_cds_NP_414542.1_1 [gene=thrL] [locus_tag=b0001] [db_xref=UniProtKB/Swiss-
  Prot:P0AD86] [protein=...] [protein_id=NP_414542.1] ...``): ``Entry`` = the UniProt accession of
  db_xref when there is one (``Reviewed`` = reviewed for Swiss-Prot, unreviewed for TrEMBL),
  ``RefSeq_id`` = protein_id, ``Genome_id`` = the sequence accession of the id (NC_000913.3), ``Gene
  Names`` = gene and locus_tag, ``Protein names`` = protein, ``Entry Name`` = the id as written. The
  protein id is then the UniProt accession, else the RefSeq protein id (the release's precedence). A
  ``[pseudo=true]`` record is rejected as ``pseudogene``, a ``[partial=5']``/``[partial=3']``/``[partial=5',3']``
  one as ``partial``; a record with neither protein_id nor UniProt
  as ``missing_id``.
- Any other FASTA: ``Entry`` and ``Entry Name`` = the first word of the header, ``Protein names`` = the rest.
"""

from __future__ import annotations

import re

# The columns a CDS FASTA file fills (the other release columns stay empty).
FASTA_COLUMNS: tuple[str, ...] = (
    "Entry", "Reviewed", "Entry Name", "Protein names", "Gene Names", "Organism", "RefSeq_id", "Genome_id",
    "RefSeq_nn",
)


_NCBI_TAG = re.compile(r"\[(\w+)=(.*?)\](?=\s*(?:\[\w+=|$))")
_ENSEMBL_TAG = re.compile(r"(?:^|\s)(\w+):(\S+)")
_ENSEMBL_ID = re.compile(r"^(ENS[A-Z]*\d{11})\.\d+$")  # a stable id with its version: ENST00000632684.1
_NCBI_GENOME = re.compile(r"^lcl\|(.+?)_cds_")


def _unique(*names: str) -> str:
    return " ".join(dict.fromkeys(name for name in names if name))


def _ensembl_version_less(identifier: str) -> str:
    match = _ENSEMBL_ID.match(identifier)
    return match.group(1) if match else identifier


def cds_header_fields(title: str, organism: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """Release columns from one CDS FASTA header (without ``>``), and the reasons (code -> detail) it already
    gives to reject the record. See the module's description for what goes where."""
    identifier, _, rest = title.strip().partition(" ")
    fields = {"Entry": identifier, "Entry Name": identifier}
    tags = dict(_NCBI_TAG.findall(rest))
    if identifier.startswith("lcl|") or {"protein_id", "gbkey"} & tags.keys():  # NCBI
        uniprot, reviewed = "", ""
        for xref in tags.get("db_xref", "").split(","):
            database, _, accession = xref.strip().partition(":")
            if database in ("UniProtKB/Swiss-Prot", "UniProtKB/TrEMBL") and accession and not uniprot:
                uniprot, reviewed = accession, "reviewed" if database.endswith("Swiss-Prot") else "unreviewed"
        genome = _NCBI_GENOME.match(identifier)
        fields |= {"Entry": uniprot, "Reviewed": reviewed, "Protein names": tags.get("protein", ""),
                   "Gene Names": _unique(tags.get("gene", ""), tags.get("locus_tag", "")),
                   "RefSeq_id": tags.get("protein_id", ""), "Genome_id": genome.group(1) if genome else ""}
        if tags.get("pseudo") == "true":
            return fields, {"pseudogene": f"[pseudo=true] in the header of {identifier}"}
        if "partial" in tags:  # a CDS cut by the end of its contig: it may begin or end with any codon
            return fields, {"partial": f"[partial={tags['partial']}] in the header of {identifier}"}
        if not uniprot and not fields["RefSeq_id"]:
            return fields, {"missing_id": f"no protein_id in the header of {identifier}"}
        return fields, {}
    before, _, description = f" {rest}".partition(" description:")
    ensembl = dict(_ENSEMBL_TAG.findall(before))
    if rest.split(" ", 1)[0] == "cds" or {"gene", "gene_symbol", "transcript_biotype"} & ensembl.keys():
        fields |= {"Entry": _ensembl_version_less(identifier),
                   "Gene Names": _unique(ensembl.get("gene_symbol", ""),
                                         _ensembl_version_less(ensembl.get("gene", ""))),
                   "Protein names": re.sub(r"\s*\[Source:[^\]]*\]\s*$", "", description.strip()),
                   "Organism": organism}
        return fields, {}
    fields["Protein names"] = rest.strip()
    return fields, {}
