"""Design outputs by extension (TSV, FASTA, GenBank, read back with Bio.SeqIO), restriction enzymes avoided
by name (checked with Bio.Restriction's own search), IUPAC motifs (checked with Bio.SeqUtils.nt_search),
and the default motif set unchanged."""

import dataclasses
import hashlib
import json
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from Bio import BiopythonWarning, SeqIO
from Bio.Restriction import RestrictionBatch
from Bio.Seq import Seq
from Bio.SeqUtils import nt_search

from codon_assets.core.design import design_proteins
from codon_assets.core.design_constraints import (
    DEFAULT_MOTIFS,
    DesignConstraints,
    compile_constraints,
    constraint_report,
    iupac_reverse_complement,
    repair_cds,
    scan_batch,
    violation_score,
)
from codon_assets.core.design_formats import (
    OutputFormatError,
    design_ids,
    design_output_format,
    write_designs,
)
from codon_assets.core.design_policy import BatchScores, codon_batch, optimise, random_synonyms
from codon_assets.core.design_settings import OptimiserSettings, SettingsError
from codon_assets.core.proteins import ProteinRecord
from codon_assets_tests.test_design import targets, yeast  # noqa: F401  (module fixtures: a real yeast surrogate)

HOST = "S_cerevisiae"
# The eight motifs every design avoided before enzymes could be named, frozen here.
OLD_DEFAULT_MOTIFS = (("EcoRI", "GAATTC"), ("BamHI", "GGATCC"), ("HindIII", "AAGCTT"), ("XhoI", "CTCGAG"),
                      ("NotI", "GCGGCCGC"), ("NdeI", "CATATG"), ("BsaI", "GGTCTC"), ("BsaI_rc", "GAGACC"))
# Proteins whose common yeast codons make restriction sites: W-S-Q/P/H is TGG TCT CAA/CCA/CAT with the
# host's preferred codons, which holds GGTCTC (BsaI); T/A-S-P (ACG/GCG TCT CCA) can make CGTCTC (BsmBI);
# E-T (GAG ACC) GAGACC; Q/H-K/L-K/N (CAA/CAT AAG/TTG AAA/AAT) the IUPAC motif CAWNNGAW below.
SITE_PROTEINS = [
    ProteinRecord("sites_1", "MKWSQLNEWSPAGTWSHDLRGWSQKFETWSPNVLTSPEWSQQKKDHLNWSHETASPWSQ", None),
    ProteinRecord("sites_2", "MSTWSQAETPQKKWSPLTSPHLNDWSQETGASQWSHRETWSPQKNELWSQAFTSPKD", None),
    ProteinRecord("sites_3", "MAEWSHKLQKKETWSQNPASPDWSPGETRWSQHLNKLQKNWSHETTSPEEWSQLK", None),
]
IUPAC_MOTIF = "CAWNNGAW"  # W = A/T, N = any base


def _bio_restriction_sites(cds: str, enzymes: list[str]) -> dict[str, list[int]]:
    """Bio.Restriction's own search (linear; N flanks so that a site at either end still has its cut)."""
    found = RestrictionBatch(enzymes).search(Seq("N" * 20 + cds + "N" * 20), linear=True)
    return {str(enzyme): positions for enzyme, positions in found.items() if positions}


def _iupac_hits(cds: str, motif: str) -> list[int]:
    """Bio.SeqUtils.nt_search on both strands."""
    return nt_search(cds, motif)[1:] + nt_search(str(Seq(cds).reverse_complement()), motif)[1:]


def _all_cds(designs) -> list[str]:
    return [x for d in designs for x in (d.cds, d.baseline_preferred.cds, d.baseline_random.cds)]


@pytest.fixture(scope="module")
def designs(yeast, targets):  # noqa: F811
    model, markov, counts, natives = yeast
    return design_proteins(targets[:3], HOST, model, markov, counts, DesignConstraints.for_host(counts),
                           OptimiserSettings(steps=3, group=8, seed=0), natives=natives)


def _design_sites(yeast, settings):  # noqa: F811
    model, markov, counts, _ = yeast
    return design_proteins(SITE_PROTEINS, HOST, model, markov, counts, None, settings)


# ---------------------------------------------------------------------------------------------------------
# Output formats.


def test_fasta_output_reads_back_with_ids_host_and_scores(designs, tmp_path):
    path = tmp_path / "designs.fasta"
    assert write_designs(designs, path) == len(designs)
    records = list(SeqIO.parse(path, "fasta"))
    assert len(records) == len(designs)
    for d, r, ident in zip(designs, records, design_ids(designs)):
        assert r.id == ident == f"{d.protein_id}_{HOST}"
        assert str(r.seq) == d.cds
        assert str(r.seq.translate(to_stop=True)) == d.protein
        fields = dict(item.split("=", 1) for item in r.description.split()[1:])
        assert fields["protein_id"] == d.protein_id and fields["host"] == HOST
        assert float(fields["mu"]) == pytest.approx(d.mu, abs=1e-4)
        assert float(fields["reward"]) == pytest.approx(d.reward, abs=1e-4)
        assert float(fields["cai"]) == pytest.approx(d.cai, abs=1e-4)
        assert fields["feasible"] == "true" and fields["source"] == d.source
    for suffix in (".fa", ".fna", ".FASTA"):
        write_designs(designs, tmp_path / f"d{suffix}")
        assert [str(r.seq) for r in SeqIO.parse(tmp_path / f"d{suffix}", "fasta")] == [d.cds for d in designs]


def test_genbank_output_has_a_cds_feature_with_translation_scores_and_report(designs, tmp_path):
    path = tmp_path / "designs.gbk"
    with warnings.catch_warnings():
        warnings.simplefilter("error", BiopythonWarning)
        write_designs(designs, path)
        records = list(SeqIO.parse(path, "genbank"))
    assert len(records) == len(designs)
    for d, r, ident in zip(designs, records, design_ids(designs)):
        assert str(r.seq) == d.cds
        assert r.annotations["molecule_type"] == "DNA" and r.annotations["topology"] == "linear"
        assert r.name == d.protein_id  # short enough for a LOCUS name
        cds = [f for f in r.features if f.type == "CDS"]
        assert len(cds) == 1
        feature = cds[0]
        assert int(feature.location.start) == 0 and int(feature.location.end) == len(d.cds)
        assert feature.location.strand == 1
        q = feature.qualifiers
        assert q["translation"] == [d.protein]
        assert str(feature.extract(r.seq).translate(table=1)) == d.protein + "*"
        assert q["product"] == [d.protein_id]
        notes = " ".join(q["note"])
        assert f"design_id={ident}" in notes and f"host={HOST}" in notes
        assert f"mu={d.mu:.4f}" in notes and f"reward={d.reward:.4f}" in notes and "all met" in notes
        structured = r.annotations["structured_comment"]["codon-assets-Design"]
        assert structured["design_id"] == ident and structured["host"] == HOST
        assert float(structured["sigma"]) == pytest.approx(d.sigma, abs=1e-4)
        comment = " ".join(r.annotations["comment"].split())
        for name in d.constraints.checks:
            assert f"{name}: pass" in comment
        assert "Avoided sites (both strands): EcoRI GAATTC, BamHI GGATCC," in comment


def test_genbank_locus_names_stay_short_and_unique_for_long_ids(designs, tmp_path):
    long_ids = [dataclasses.replace(designs[0], protein_id="sp|P00330|ADH1_YEAST Alcohol dehydrogenase 1"),
                dataclasses.replace(designs[1], protein_id="sp|P00330|ADH1_YEAST Alcohol dehydrogenase 2"),
                dataclasses.replace(designs[2], protein_id="Q" * 40)]
    path = tmp_path / "long.gb"
    with warnings.catch_warnings():
        warnings.simplefilter("error", BiopythonWarning)  # Biopython warns on a LOCUS name over 16
        write_designs(long_ids, path)
        records = list(SeqIO.parse(path, "genbank"))
    names = [r.name for r in records]
    assert all(len(n) <= 16 and " " not in n for n in names) and len(set(names)) == 3
    assert [r.seq for r in records] == [Seq(d.cds) for d in long_ids]
    first = path.read_text().splitlines()[0]
    assert first.startswith("LOCUS") and len(first) == 79  # the standard column layout
    products = [f.qualifiers["product"][0] for r in records for f in r.features if f.type == "CDS"]
    assert products == [d.protein_id for d in long_ids]  # the full id survives, spaces and all
    fasta = tmp_path / "long.fa"
    write_designs(long_ids, fasta)
    assert [r.id for r in SeqIO.parse(fasta, "fasta")][0] == f"sp_P00330_ADH1_YEAST_Alcohol_dehydrogenase_1_{HOST}"


def test_tsv_output_is_the_designs_table(designs, tmp_path):
    path = tmp_path / "designs.tsv"
    write_designs(designs, path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("protein_id\tprotein\tcds\tmu\tsigma") and len(lines) == len(designs) + 1
    table = pd.read_csv(path, sep="\t")
    assert table["cds"].tolist() == [d.cds for d in designs]
    assert [json.loads(x) for x in table["constraint_report"]] == [d.constraints.as_dict() for d in designs]


def test_unknown_extension_is_one_clear_error_before_any_work(designs, tmp_path):
    assert design_output_format("x.GBK") == "genbank" and design_output_format("x.fna") == "fasta"
    for name in ("designs.xlsx", "designs", "designs.fasta.gz"):
        with pytest.raises(OutputFormatError, match=r"unknown designs format .*\.tsv, \.fa, \.fasta"):
            write_designs(designs, tmp_path / name)
        assert not (tmp_path / name).exists()
    assert list(tmp_path.iterdir()) == []
    assert issubclass(OutputFormatError, ValueError)


# ---------------------------------------------------------------------------------------------------------
# Enzymes by name and IUPAC motifs.


def test_enzymes_by_name_are_avoided_on_both_strands_as_bio_restriction_sees_it(yeast):  # noqa: F811
    enzymes = ["BsaI", "BsmBI"]
    # Without any forbidden site the optimiser and the preferred codons make BsaI sites in these proteins.
    free = _design_sites(yeast, OptimiserSettings(steps=3, group=8, seed=0, avoid_motifs=()))
    found = [_bio_restriction_sites(x, enzymes) for x in _all_cds(free)]
    assert sum("BsaI" in f for f in found) >= 3, found
    # BsaI's site is not a palindrome: its reverse complement GAGACC is forbidden as well.
    settings = OptimiserSettings(steps=3, group=8, seed=0, avoid_motifs=(), avoid_enzymes=("bsai", "BsmBI"))
    assert settings.avoid_enzymes == ("BsaI", "BsmBI")
    assert settings.forbidden_sites() == (("BsaI", "GGTCTC"), ("BsmBI", "CGTCTC"))
    designs = _design_sites(yeast, settings)
    for d in designs:
        assert d.feasible, d.constraints.checks["forbidden_motifs"]
        for cds in (d.cds, d.baseline_preferred.cds, d.baseline_random.cds):
            assert _bio_restriction_sites(cds, enzymes) == {}
            assert str(Seq(cds).translate(to_stop=True)) == d.protein
        assert d.run.settings.avoid_enzymes == ("BsaI", "BsmBI")
        assert d.run.forbidden_motifs == (("BsaI", "GGTCTC"), ("BsmBI", "CGTCTC"))


def test_enzyme_sites_are_reported_on_both_strands():
    sites = OptimiserSettings(avoid_motifs=(), avoid_enzymes=("BsaI",)).forbidden_sites()
    c = DesignConstraints(forbidden_motifs=sites, stop_codon="TAA")
    protein = "MSETKLLRNF"
    minus = "ATG" + "TCTGAGACCAAGTTGCTGAGAAACTTC" + "TAA"  # E T -> GAG ACC, BsaI on the minus strand
    detail = constraint_report(minus, protein, c).checks["forbidden_motifs"].detail
    assert detail == "BsaI GAGACC (-) at 7"
    assert RestrictionBatch(["BsaI"]).search(Seq("N" * 20 + minus + "N" * 20), linear=True)


def test_iupac_user_motif_is_avoided(yeast):  # noqa: F811
    free = _design_sites(yeast, OptimiserSettings(steps=3, group=8, seed=0, avoid_motifs=()))
    assert sum(bool(_iupac_hits(x, IUPAC_MOTIF)) for x in _all_cds(free)) >= 3
    settings = OptimiserSettings(steps=3, group=8, seed=0, avoid_motifs=(f"myMotif={IUPAC_MOTIF}", "GGTNACC"))
    assert settings.forbidden_sites() == (("myMotif", "CAWNNGAW"), ("GGTNACC", "GGTNACC"))
    designs = _design_sites(yeast, settings)
    for d in designs:
        assert d.feasible, d.constraints.checks["forbidden_motifs"]
        for cds in (d.cds, d.baseline_preferred.cds, d.baseline_random.cds):
            assert _iupac_hits(cds, IUPAC_MOTIF) == [] and _iupac_hits(cds, "GGTNACC") == []


def test_iupac_motifs_in_the_batch_scan_agree_with_the_single_cds_check():
    """Degenerate motifs (N masked, other codes expanded) in the vectorised scan find what the regular
    expressions of the report find, which find what nt_search finds."""
    motifs = (("a", "CAWNNGAW"), ("b", "GCCNNNNNGGC"), ("c", "RAATTY"), ("d", "GGTCTC"), ("e", "ACNNNNGTAYC"),
              ("f", "CCANNNNNNNNNTGG"), ("g", "BDHVK"), ("h", "GATC"), ("i", "GATC"), ("j", "GNTC"),
              ("k", "GCCNNNNNGGS"))  # g and its reverse complement share k-mers, and so do b and k
    c = DesignConstraints(forbidden_motifs=motifs, max_homopolymer=50)
    cc = compile_constraints(c)
    assert {p for _, p, _ in cc.patterns} == {m for _, m in motifs} | {iupac_reverse_complement(m) for _, m in motifs}
    assert iupac_reverse_complement("BDHVK") == "MBDHV" and iupac_reverse_complement("CAWNNGAW") == "WTCNNWTG"
    assert [p for _, p, _ in cc.patterns].count("GATC") == 1  # a palindrome (and a repeated motif) once
    rng = np.random.default_rng(5)
    seqs = ["".join("ACGT"[i] for i in rng.integers(0, 4, n)) for n in rng.integers(20, 300, 300)]
    data = np.frombuffer("".join(seqs).encode(), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in seqs])])
    count, _, mask = scan_batch(data, offsets, cc)
    for i, x in enumerate(seqs):
        # Every pattern (each strand's) hit at every position, overlapping ones too: a site per hit.
        expected = sum(len(nt_search(x, pattern)[1:]) for _, pattern, _ in cc.patterns)
        assert count[i] == violation_score(x, cc) == expected, (i, x)
        covered = np.zeros(len(x), dtype=bool)
        for _, pattern, _ in cc.patterns:
            for hit in nt_search(x, pattern)[1:]:
                covered[hit:hit + len(pattern)] = True
        assert (mask[offsets[i]:offsets[i + 1]] == covered).all()


def test_unknown_enzyme_names_are_one_clear_error():
    with pytest.raises(SettingsError, match=r"unknown restriction enzymes 'BsaJ' \(did you mean .*BsaI.*\); 'NoSuchI'"):
        OptimiserSettings(avoid_enzymes=("BsaI", "BsaJ", "NoSuchI"))
    assert issubclass(SettingsError, ValueError)
    with pytest.raises(SettingsError, match="not IUPAC"):
        OptimiserSettings(avoid_motifs=("GGUCUC",))
    with pytest.raises(SettingsError, match="only N"):
        OptimiserSettings(avoid_motifs=("NNNN",))
    assert OptimiserSettings(avoid_enzymes="EcoRI").avoid_enzymes == ("EcoRI",)  # a name, not its letters
    assert OptimiserSettings(avoid_enzymes=["HpyUM037X"]).forbidden_sites()[-2:] == (
        ("HpyUM037X", "TNGGNAG"), ("HpyUM037X", "GTGGNAG"))  # REBASE's alternative sites, both kept


def test_redraw_and_repair_break_degenerate_sites():
    protein = "MKWSQLNEWSPAGTWSHDLRGWSQKFETWSPNVLTSPEWSQ"
    c = DesignConstraints(forbidden_motifs=(("BsaI", "GGTCTC"), ("m", "CAWNNGAW")), stop_codon="TAA")
    preferred = "ATG" + "".join({"K": "AAG", "W": "TGG", "S": "TCT", "Q": "CAA", "L": "TTG", "N": "AAT", "E": "GAA",
                                 "P": "CCA", "A": "GCT", "G": "GGT", "T": "ACT", "H": "CAT", "D": "GAT", "R": "AGA",
                                 "F": "TTT", "V": "GTT"}[a] for a in protein[1:]) + "TAA"
    assert not constraint_report(preferred, protein, c).checks["forbidden_motifs"].passed
    fixed = repair_cds(preferred, c)
    assert constraint_report(fixed, protein, c).checks["forbidden_motifs"].passed
    assert _iupac_hits(fixed, "CAWNNGAW") == [] and _bio_restriction_sites(fixed, ["BsaI"]) == {}


# ---------------------------------------------------------------------------------------------------------
# Defaults unchanged.


def _toy_score(seqs: pa.Array) -> BatchScores:
    s = seqs.to_pylist()
    gc = np.array([(x.count("G") + x.count("C")) / len(x) for x in s])
    ta = np.array([x.count("TA") / len(x) for x in s])
    mu = -np.abs(gc - 0.42) * 10 - ta * 5
    return BatchScores(mu, np.full(len(s), 0.1), ta, mu - 0.05)


def _motif_machinery_digest() -> str:
    """Everything the default motifs decide without a surrogate: the optimiser's samples and curves (a toy
    reward), random synonyms, repairs, reports, and the batch scan of random DNA."""
    rng = np.random.default_rng(7)
    aas = "ACDEFGHIKLMNPQRSTVWY"
    proteins = ["M" + "".join(aas[i] for i in rng.integers(0, 20, n)) for n in (60, 90, 120, 45)]
    logfreq = np.log((np.arange(64) * 7) % 11 + 1.0)
    c = DesignConstraints(gc_min=0.35, gc_max=0.50, stop_codon="TAA")
    cc = compile_constraints(c)
    b = codon_batch(proteins, logfreq, "ATG", "TAA")
    settings = OptimiserSettings(steps=4, group=8, seed=3)
    opt_rng = np.random.default_rng(settings.seed)
    run = optimise(b, cc, _toy_score, settings, opt_rng)
    rand = random_synonyms(b, cc, settings, opt_rng)
    greedy = b.most_likely_cds(run.final_logp)
    repaired = [repair_cds(x, c, logfreq) for x in greedy + rand]
    dna = ["".join("ACGT"[i] for i in rng.integers(0, 4, n)) for n in rng.integers(30, 400, 200)]
    data = np.frombuffer("".join(dna).encode(), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in dna])])
    count, _, mask = scan_batch(data, offsets, cc)
    out = {
        "patterns": cc.patterns,
        "best": [x.cds if x else None for x in run.best],
        "curve": np.round(run.reward_curve, 10).tolist(),
        "infeasible": np.round(run.infeasible_fraction, 10).tolist(),
        "random": rand,
        "repaired": repaired,
        "reports": [constraint_report(x, p, c).as_dict() for x, p in zip(repaired, proteins + proteins * 8)],
        "scan_count": np.round(count, 8).tolist(),
        "scan_mask": np.flatnonzero(mask).tolist(),
        "violations": [violation_score(x, cc) for x in dna],
        "sites": [constraint_report(x[:len(x) - len(x) % 3], "", c).checks["forbidden_motifs"].detail for x in dna],
    }
    return hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()


def test_defaults_are_the_old_eight_motifs_and_give_the_same_designs():
    assert tuple(DEFAULT_MOTIFS.items()) == OLD_DEFAULT_MOTIFS
    s = OptimiserSettings()
    assert s.avoid_enzymes == () and s.forbidden_sites() == OLD_DEFAULT_MOTIFS
    assert DesignConstraints().forbidden_motifs == OLD_DEFAULT_MOTIFS
    assert DesignConstraints().with_settings(s) == DesignConstraints()  # nothing added twice
    assert compile_constraints(DesignConstraints()).patterns == [
        ("EcoRI", "GAATTC", "+"), ("BamHI", "GGATCC", "+"), ("HindIII", "AAGCTT", "+"), ("XhoI", "CTCGAG", "+"),
        ("NotI", "GCGGCCGC", "+"), ("NdeI", "CATATG", "+"), ("BsaI", "GGTCTC", "+"), ("BsaI", "GAGACC", "-")]
    # Computed with the code before enzymes and IUPAC motifs existed (same seeds, same inputs).
    assert _motif_machinery_digest() == "b9213741f344ac687e6269526735093e671b464cbf6f02473ecfb84e10c6391c"


def test_default_settings_design_as_the_default_constraints(yeast, targets):  # noqa: F811
    """design_proteins with no constraints takes its sites from the settings: the same designs as the
    explicit default constraints, as before."""
    model, markov, counts, _ = yeast
    go = lambda c: design_proteins(targets[:2], HOST, model, markov, counts, c,  # noqa: E731
                                   OptimiserSettings(steps=2, group=8, seed=4))
    assert go(None) == go(DesignConstraints.for_host(counts))


def test_ids_that_clean_to_the_same_token_stay_unique_and_join_back(designs, tmp_path):
    """``x*`` and ``x_`` (or two non-ASCII ids) are one token once cleaned: each file still names every design
    once, in ASCII, and keeps the id as given (percent-encoded) so it joins back to the input and the TSV."""
    from dataclasses import replace
    from urllib.parse import unquote

    given = ["x*", "x_", "é1", "ü1"]
    odd = [replace(d, protein_id=name) for d, name in zip(designs * 4, given)]
    fasta, genbank = tmp_path / "d.fasta", tmp_path / "d.gb"
    write_designs(odd, fasta)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BiopythonWarning)
        write_designs(odd, genbank)
    for records in (list(SeqIO.parse(fasta, "fasta")), list(SeqIO.parse(genbank, "genbank"))):
        assert len({r.id for r in records}) == len(odd) and all(r.id.isascii() for r in records)
    headers = [dict(item.split("=", 1) for item in r.description.split()[1:]) for r in SeqIO.parse(fasta, "fasta")]
    assert [unquote(h["protein_id"]) for h in headers] == given
    assert [unquote(r.features[1].qualifiers["product"][0]) for r in SeqIO.parse(genbank, "genbank")] == given
    assert genbank.read_bytes().isascii()
