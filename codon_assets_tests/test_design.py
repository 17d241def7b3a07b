"""CDS design: constraints, repair, the GRPO-style optimiser against a real surrogate, and the protein reader."""

import re
from dataclasses import replace

import numpy as np
import pytest

from codon_assets.core.convert import ConversionSettings, convert_files
from codon_assets.core.design import design_proteins, design_summary, unavoidable_sites
from codon_assets.core.design_constraints import (
    DEFAULT_MOTIFS,
    DesignConstraints,
    constraint_report,
    is_feasible,
    repair_cds,
)
from codon_assets.core.design_policy import penalised_rewards
from codon_assets.core.design_settings import OptimiserSettings
from codon_assets.core.features import MarkovBatchScorer, extract_features
from codon_assets.core.genetic_code import CODON_TO_AA, reverse_complement
from codon_assets.core.hosts import get_host
from codon_assets.core.markov import MarkovCdsModel
from codon_assets.core.proteins import read_proteins
from codon_assets.core.sequence_stats import codon_counts
from codon_assets.core.surrogate import fit_surrogates, training_set
from codon_assets.core.tsv import InputError, read_release_table
from codon_assets.core.enhance import build_enhanced
from codon_assets_tests.conftest import EXAMPLES, ROOT

PROTEINS = ROOT / "examples" / "proteins"


@pytest.fixture(scope="module")
def yeast():
    """A real surrogate (trained on the bundled yeast sample), the host's counts and its native CDS."""
    converted = convert_files([read_release_table(EXAMPLES / "Sac.tsv")], get_host("S_cerevisiae"), ConversionSettings()).valid
    sequences = converted["sequence"].combine_chunks()
    markov = MarkovCdsModel.train(sequences, converted["seq_sha256"].to_pylist())
    features, _ = extract_features(converted.select(["protein_id", "sequence", "seq_sha256"]), MarkovBatchScorer(markov))
    enhanced, _ = build_enhanced(converted, features, "model_enhanced", EXAMPLES / "Sac_measured.tsv", None)
    data = training_set(enhanced)
    model = fit_surrogates(data, [np.arange(len(data.target))], "markov")[0]
    model.markov_models = {"S_cerevisiae": markov}
    counts = codon_counts(sequences)
    natives = dict(zip(converted["protein_id"].to_pylist(), converted["sequence"].to_pylist()))
    return model, markov, counts, natives


@pytest.fixture(scope="module")
def targets():
    records, rejects = read_proteins(PROTEINS / "S_cerevisiae.fasta")
    assert not rejects
    return records


@pytest.fixture(scope="module")
def run(yeast, targets):
    model, markov, counts, natives = yeast
    constraints = DesignConstraints.for_host(counts)
    designs = design_proteins(targets[:12], "S_cerevisiae", model, markov, counts, constraints,
                              OptimiserSettings(steps=25, group=16, seed=0), natives=natives)
    return designs, constraints


def _longest_run(seq: str) -> int:
    return max(len(m.group()) for m in re.finditer(r"A+|C+|G+|T+", seq))


def _assert_meets_everything(cds: str, protein: str, c: DesignConstraints) -> None:
    codons = [cds[i:i + 3] for i in range(0, len(cds), 3)]
    assert len(cds) % 3 == 0 and not set(cds) - set("ACGT")
    assert codons[0] == "ATG" and codons[-1] == c.stop_codon
    assert "".join(CODON_TO_AA[x] for x in codons) == protein + "*"  # exact, and no internal stop
    for name, motif in DEFAULT_MOTIFS.items():
        assert motif not in cds and reverse_complement(motif) not in cds, name
        assert motif not in reverse_complement(cds), name
    gc = (cds.count("G") + cds.count("C")) / len(cds)
    assert c.gc_min <= gc <= c.gc_max
    assert _longest_run(cds) < 8


def test_every_design_and_baseline_back_translates_and_meets_every_constraint(run, targets):
    designs, c = run
    assert c.stop_codon == "TAA" and 0.3 < c.gc_min < c.gc_max < 0.55  # the yeast host's own stop and window
    for d, record in zip(designs, targets):
        assert d.protein_id == record.protein_id and d.protein == record.protein
        _assert_meets_everything(d.cds, d.protein, c)
        assert d.feasible and d.constraints.feasible and is_feasible(d.cds, d.protein, c)
        for baseline in (d.baseline_preferred, d.baseline_random):
            assert baseline.feasible
            _assert_meets_everything(baseline.cds, d.protein, c)
        assert 0 < d.cai <= 1 and np.isfinite([d.mu, d.sigma, d.avg_loglik, d.reward]).all()
        assert d.reward == pytest.approx(d.mu - 0.5 * d.sigma + d.avg_loglik)


def test_optimiser_improves_its_policy_and_beats_both_baselines(run):
    designs, _ = run
    s = design_summary(designs)
    print("design summary:", {k: round(v, 3) if isinstance(v, float) else v for k, v in s.items()})
    # The policy learns: its mean reward rises well above the host-usage policy it starts from.
    assert s["mean_final_policy_reward"] > s["mean_initial_policy_reward"] + 0.3
    assert np.mean([d.reward_final_mean > d.reward_initial_mean for d in designs]) >= 0.75
    # Its best designs score at least the preferred-codon baseline, and well above random synonyms.
    assert s["mean_reward_gain_over_preferred"] >= 0
    assert s["mean_reward_gain_over_random"] > 0.5 and s["mean_mu_gain_over_random"] > 0.5
    assert s["mean_mu_gain_over_preferred"] > -0.1  # the reward trades a little mu for sigma and likelihood
    # The natives (the real yeast CDS) are scored too.
    assert s["n_with_native"] == len(designs)
    assert all(d.native.cds and np.isfinite(d.improvement_over_native.reward) for d in designs)
    assert designs[0].run.surrogate_calls == 25 + 2  # one batched call per step, the final policy, the rest


def test_same_seed_same_designs_other_seed_differs(yeast, targets):
    model, markov, counts, _ = yeast
    c = DesignConstraints.for_host(counts)

    def go(seed):
        # Designs compare without their run record (it holds the wall time).
        return design_proteins(targets[:3], "S_cerevisiae", model, markov, counts, c,
                               OptimiserSettings(steps=5, group=8, seed=seed))

    first = go(1)
    assert go(1) == first
    other = go(2)
    assert [d.cds for d in other] != [d.cds for d in first]
    assert [d.reward_curve for d in other] != [d.reward_curve for d in first]


def test_infeasible_samples_get_finite_graded_penalties(yeast, targets):
    raw = np.array([[1.0, 2.0, np.nan, 3.0], [0.5, np.inf, -1.0, 2.0], [np.nan] * 4])
    viol = np.array([[0, 0, 0, 2], [1, 0, 3, 1], [0, 1, 2, 0]], dtype=float)
    r = penalised_rewards(raw, viol, margin=0.5)
    assert np.isfinite(r).all()
    assert r[0, 0] == 1.0 and r[0, 1] == 2.0 and r[0, 3] < r[0, 2] < 1.0  # below the worst feasible, graded
    assert r[1, 1] < -1.0 and r[1, 0] > r[1, 2]  # no feasible one: still ordered by violations

    # A forbidden motif that nearly every sample contains, and no on-policy repair: the rewards stay finite.
    model, markov, counts, _ = yeast
    base = DesignConstraints.for_host(counts)
    c = DesignConstraints(base.forbidden_motifs + (("test", "AAGA"),), base.gc_min, base.gc_max, stop_codon="TAA")
    designs = design_proteins(targets[:3], "S_cerevisiae", model, markov, counts, c,
                              OptimiserSettings(steps=4, group=8, seed=0, repair_samples=False))
    for d in designs:
        assert d.infeasible_fraction_initial >= 0.75
        assert np.isfinite(d.reward_curve).all() and np.isfinite(d.reward)
        report = constraint_report(d.cds, d.protein, c)
        assert d.feasible == report.feasible
        assert report.checks["back_translation"].passed and report.checks["no_internal_stop"].passed
    # An unreachable GC window: nothing is feasible, every number is still finite and the report says why.
    c = DesignConstraints(gc_min=0.8, gc_max=0.9, stop_codon="TAA")
    d = design_proteins(targets[:1], "S_cerevisiae", model, markov, counts, c,
                        OptimiserSettings(steps=3, group=8, seed=0))[0]
    assert not d.feasible and not d.constraints.checks["gc_window"].passed
    assert np.isfinite(d.reward_curve).all()


def test_constraint_report_names_each_violation():
    c = DesignConstraints(forbidden_motifs=(("BsaI", "GGTCTC"),), gc_min=0.3, gc_max=0.7, stop_codon="TAA")
    protein = "MSETKLLRNF"
    good = "ATG" + "TCT GAA ACT AAG TTG CTG AGA AAC TTC".replace(" ", "") + "TAA"
    assert constraint_report(good, protein, c).feasible

    def failed(cds, prot=protein):
        report = constraint_report(cds, prot, c)
        return {k for k, v in report.checks.items() if not v.passed}

    # BsaI only on the minus strand: GAGACC = reverse complement of GGTCTC (E T -> GAG ACC).
    minus = "ATG" + "TCT GAG ACC AAG TTG CTG AGA AAC TTC".replace(" ", "") + "TAA"
    assert failed(minus) == {"forbidden_motifs"}
    assert "(-)" in constraint_report(minus, protein, c).checks["forbidden_motifs"].detail
    assert failed(good[:-3] + "TAG") == {"stop_codon"}
    assert failed("GTG" + good[3:]) == {"start_codon"}
    assert failed(good[:6] + "TAA" + good[9:]) == {"no_internal_stop", "back_translation"}
    assert failed(good, "MSETKLLRNY") == {"back_translation"}
    poly = "ATG" + "AAA" * 3 + "TAA"
    assert failed(poly, "MKKK") >= {"homopolymer"}
    assert "GC" in constraint_report(poly, "MKKK", c).checks["gc_window"].detail


def test_a_site_within_the_start_or_stop_codon_or_every_codon_of_a_used_amino_acid_is_refused(yeast, targets):
    """`--avoid-motif ATG` used to give N designs, none feasible: every CDS starts with ATG."""
    c = DesignConstraints(forbidden_motifs=(("ATG", "ATG"), ("BsaI", "GGTCTC"), ("CCA", "CCA"), ("TAA", "TAA"),
                                            ("GG", "GG"), ("RTG", "RTG")), stop_codon="TGA")
    assert unavoidable_sites(c, ["MKWL", "MAK"]) == [
        "ATG: it lies within the start codon ATG",
        "CCA: it lies within every codon of W (TGG)",  # the reverse strand of TGG
        "GG: it lies within every codon of W (TGG)",
        "RTG: it lies within the start codon ATG",
    ]
    assert unavoidable_sites(c, ["MKL"])[1:] == ["RTG: it lies within the start codon ATG"]
    assert unavoidable_sites(replace(c, forbidden_motifs=(("BsaI", "GGTCTC"),)), ["MKWL"]) == []
    model, markov, counts, _ = yeast
    with pytest.raises(ValueError, match="no design can avoid the forbidden site ATG: it lies within the start codon"):
        design_proteins(targets[:2], "S_cerevisiae", model, markov, counts, DesignConstraints.for_host(counts),
                        OptimiserSettings(steps=2, group=4, avoid_motifs=("ATG",)))


def test_repair_breaks_sites_and_runs_and_moves_gc_synonymously():
    c = DesignConstraints(gc_min=0.40, gc_max=0.60, stop_codon="TAA")
    protein = "MEFGSKKKKFEFLEGSDSRLGIPWAVLAEF"
    # GAA TTC (EcoRI), GGA TCC (BamHI), AAA AAA AAA AAA (a run of 12), low GC.
    codons = ["ATG", "GAA", "TTC", "GGA", "TCC", "AAA", "AAA", "AAA", "AAA", "TTT", "GAA", "TTT", "TTA", "GAA",
              "GGA", "TCC", "GAT", "TCT", "AGA", "TTA", "GGT", "ATT", "CCA", "TGG", "GCT", "GTT", "TTA", "GCT",
              "GAA", "TTC", "TAA"]
    cds = "".join(codons)
    assert not is_feasible(cds, protein, c)
    fixed = repair_cds(cds, c)
    report = constraint_report(fixed, protein, c)
    assert report.feasible, report
    assert fixed[:3] == "ATG" and fixed[-3:] == "TAA"


def test_proteins_from_fasta_tsv_and_folders(tmp_path):
    fasta = tmp_path / "a.fasta"
    fasta.write_text(">P1 first\nmkv\nLLA*\n>P2\nMKXB\n>P3\nMK*LL\n>P1\nMAAA\n>P4\n\n")
    records, rejects = read_proteins(fasta)
    assert [(r.protein_id, r.protein) for r in records] == [("P1", "MKVLLA")]
    reasons = {r.protein_id: (r.reason, r.detail) for r in rejects}
    assert reasons["P2"][0] == "invalid_letters" and "BX" in reasons["P2"][1]
    assert reasons["P3"][0] == "internal_stop" and reasons["P4"][0] == "empty_sequence"
    assert [r.reason for r in rejects if r.protein_id == "P1"] == ["duplicate_id"]

    table = tmp_path / "b.tsv"
    table.write_text("Entry\tGene\tRefSeq_aa\tRefSeq_nn\nQ1\tg\tMSTOP*\t\nQ2\tg\tmwv*\tATGTGGGTGTAA\n")
    records, rejects = read_proteins(table)
    assert [(r.protein_id, r.protein, r.native_cds) for r in records] == [("Q2", "MWV", "ATGTGGGTGTAA")]
    assert rejects[0].protein_id == "Q1" and rejects[0].reason == "invalid_letters" and "O" in rejects[0].detail

    (tmp_path / "c.tsv").write_text("id\tprotein\nR1\tMAC\n")
    records, _ = read_proteins(tmp_path)  # a folder: every FASTA/TSV file in name order
    assert [r.protein_id for r in records] == ["P1", "Q2", "R1"]

    for text, message in (("", "empty"), ("name\tvalue\nx\t1\n", "id column")):
        bad = tmp_path / "bad.tsv"
        bad.write_text(text)
        with pytest.raises(InputError, match=message):
            read_proteins(bad)
    with pytest.raises(InputError, match="cannot be read"):
        read_proteins(tmp_path / "missing.fasta")


def test_example_proteins_are_the_translations_of_real_records():
    records, rejects = read_proteins(PROTEINS)
    assert not rejects and len(records) == 35
    assert all(80 <= len(r.protein) <= 600 for r in records)
    by_host = {"S_cerevisiae": "Sac.tsv", "P_pastoris": "Pic.tsv"}
    for host, name in by_host.items():
        converted = convert_files([read_release_table(EXAMPLES / name)], get_host(host), ConversionSettings()).valid
        cds = dict(zip(converted["entry"].to_pylist(), converted["sequence"].to_pylist()))
        mine, _ = read_proteins(PROTEINS / f"{host}.fasta")
        for r in mine:
            seq = cds[r.protein_id]
            assert "".join(CODON_TO_AA[seq[i:i + 3]] for i in range(0, len(seq) - 3, 3)) == r.protein


def test_design_command_and_asset_end_to_end(dagster_home, tmp_path):
    """codon_designs materialized on a temporary instance, then `codon-assets design` from the registry."""
    import dagster as dg

    from codon_assets.cli import main
    from codon_assets.definitions import defs
    from codon_assets.defs.resources import build_resources
    from codon_assets_tests.conftest import EXAMPLES as DATA

    resources = build_resources()
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(list(defs.assets), partition_key="P_pastoris", instance=instance, resources=resources,
                                selection=["raw_tsv", "converted_dataset", "converted_rejects", "markov_model", "evo2_features",
                                           "enhanced_dataset", "surrogate_model", "codon_designs"],
                                run_config={"ops": {"codon_designs": {"config": {"steps": 8, "group": 8}}}})
    assert result.success
    meta = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
            for e in result.get_asset_materialization_events()}["codon_designs"]
    assert meta["feasible"].value == meta["dagster/row_count"].value == 15
    assert meta["surrogate_model_uri"].value == "models:/codon-surrogate-P_pastoris/1"
    out = tmp_path / "designs.tsv"
    proteins = DATA.parent / "proteins" / "P_pastoris.fasta"
    assert main(["design", "--input", str(proteins), "--model", "codon-surrogate-P_pastoris", "--output", str(out),
                 "--steps", "8", "--group", "8"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("protein_id\tprotein\tcds\tmu\tsigma") and len(lines) == 16
