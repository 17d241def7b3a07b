"""Enhancement, measured labels, surrogate features and training: formulas, joins, leakage, quality."""

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest

from codon_assets.core.codon_metrics import geometric_mean_index, read_trna_copy_numbers, relative_adaptiveness, tai_weights
from codon_assets.core.convert import ConversionSettings, convert_files
from codon_assets.core.enhance import MAX_ADJUST, enhance, robust_z
from codon_assets.core.features import MarkovBatchScorer, extract_features
from codon_assets.core.genetic_code import CODONS
from codon_assets.core.hosts import get_host
from codon_assets.core.labels import join_measured, read_measured
from codon_assets.core.markov import MarkovCdsModel
from codon_assets.core.sequence_stats import codon_counts
from codon_assets.core.calibration import calibration_splits, sigma_calibration, sigma_from_spread
from codon_assets.core.surrogate import _fit_builders, cross_validate, cv_rows, grouped_folds, training_set
from codon_assets.core.surrogate_features import EVO2_COLUMNS, FeatureBuilder, rare_codon_runs, sequence_features
from codon_assets.core.training import train_surrogate
from codon_assets.core.tsv import read_release_table
from codon_assets.core.enhance import build_enhanced
from codon_assets.asset_specs import ASSET_STAMPS
from codon_assets_tests.conftest import EXAMPLES, ROOT


@pytest.fixture(scope="module")
def yeast():
    converted = convert_files([read_release_table(EXAMPLES / "Sac.tsv")], get_host("S_cerevisiae"), ConversionSettings()).valid
    model = MarkovCdsModel.train(converted["sequence"].combine_chunks(), converted["seq_sha256"].to_pylist())
    features, _ = extract_features(converted.select(["protein_id", "sequence", "seq_sha256"]), MarkovBatchScorer(model))
    return converted, features


def test_robust_z_is_clipped_and_ignores_nan():
    z = robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0, np.nan]))
    assert z[2] == 0.0 and z[4] == 3.0 and np.isnan(z[5])


def test_enhancement_is_bounded_symmetric_and_keeps_errored_records():
    rng = np.random.default_rng(0)
    n = 200
    original = rng.uniform(10, 100, n)
    features = {"avg_loglik": rng.normal(-1.3, 0.05, n), "avg_confidence": rng.normal(0.28, 0.01, n),
                "codon_entropy": rng.normal(5, 0.3, n)}
    ok = np.ones(n, dtype=bool)
    ok[:5] = False
    result = enhance(original, np.array(["low"] * n, dtype=object), features, ok)
    ratio = result.value / original
    assert (np.abs(ratio - 1) <= MAX_ADJUST).all()
    assert (ratio[5:] > 1).any() and (ratio[5:] < 1).any()  # it can raise as well as lower
    assert np.array_equal(result.value[:5], original[:5]) and set(result.status[:5]) == {"kept_original_features_error"}
    # The highest-evidence record (best loglik, confidence, lowest entropy) is raised the most.
    features["avg_loglik"][10], features["avg_confidence"][10], features["codon_entropy"][10] = -1.0, 0.4, 3.0
    best = enhance(original, np.array(["low"] * n, dtype=object), features, ok)
    assert np.argmax(best.value / original) == 10
    assert best.value[10] / original[10] == pytest.approx(1 + MAX_ADJUST * np.tanh(best.score[10] / 2))


def test_modes():
    n = 50
    rng = np.random.default_rng(1)
    original = rng.uniform(10, 100, n)
    features = {k: rng.normal(size=n) for k in ("avg_loglik", "avg_confidence", "codon_entropy")}
    ok = np.ones(n, dtype=bool)
    conf = np.array(["medium"] * n, dtype=object)
    same = enhance(original, conf, features, ok, mode="metadata_only")
    assert np.array_equal(same.value, original) and set(same.confidence) == {"medium"}
    gc = np.full(n, 0.4)
    gc[0] = 0.9  # far outside the host's GC range
    homopolymer = np.zeros(n)
    homopolymer[1] = 12
    plain = enhance(original, conf, features, ok, mode="model_enhanced")
    full = enhance(original, conf, features, ok, mode="full", gc_content=gc, longest_homopolymer=homopolymer)
    assert full.score[0] < plain.score[0] and full.score[1] < plain.score[1]
    assert np.allclose(full.score[2:], plain.score[2:])


def test_confidence_follows_agreement():
    original = np.array([10.0, 20, 30, 40, 50, 60, 70, 80])
    features = {"avg_loglik": np.array([1.0, 2, 3, 4, 5, 6, 7, 8]), "avg_confidence": np.array([1.0, 2, 3, 4, 5, 6, 7, 8]),
                "codon_entropy": -np.array([1.0, 2, 3, 4, 5, 6, 7, 8])}
    agree = enhance(original, np.array(["low"] * 8, dtype=object), features, np.ones(8, bool))
    assert set(agree.confidence) == {"medium"}
    disagree = enhance(original[::-1].copy(), np.array(["medium"] * 8, dtype=object), features, np.ones(8, bool))
    assert disagree.confidence[0] == "low" and disagree.confidence[-1] == "low"


def test_enhanced_join_is_by_id_not_position(yeast, tmp_path):
    converted, features = yeast
    straight, _ = build_enhanced(converted, features, "model_enhanced", None, None)
    perm = np.random.default_rng(0).permutation(features.num_rows)
    shuffled, _ = build_enhanced(converted, features.take(pa.array(perm)), "model_enhanced", None, None)
    assert straight.equals(shuffled)
    assert straight["protein_id"].equals(converted["protein_id"])
    row = straight.to_pylist()[3]
    feature_row = features.to_pylist()[3]
    assert row["avg_loglik"] == feature_row["avg_loglik"] and row["original_value"] == converted["expression_value"][3].as_py()
    assert row["expression_unit"] == "estimated_enhanced" and row["expression_assay"] == "model_enhanced_markov"


def test_measured_labels_default_column_and_gene_name_fallback(tmp_path):
    table = tmp_path / "m.tsv"
    table.write_text("gene_id\tgene_name\tfpkm\tother\nP1\tABC1\t10\t1\nG2\tX\t0\t1\nG3\tY\tnan\t1\nP1\tZ\t5\t1\nQ9\tQ\t7\t1\n")
    labels = read_measured(table)
    assert labels.value_column == "fpkm"  # the second column is a name, so the first numeric one is used
    assert labels.values == {"P1": 10.0, "Q9": 7.0}
    assert labels.problems == {"not_a_number": 1, "not_positive": 1, "duplicate_id": 1}
    records = pa.table({"protein_id": ["P1", "P2", "P3"], "gene_names": ["abc", "GENE2 Q9", ""]})
    join = join_measured(records, labels)
    assert join.measured_value[0] == 10.0 and join.measured_value[1] == 7.0 and np.isnan(join.measured_value[2])
    assert join.matched_by == ["protein_id", "gene_name", None]
    assert join.report["records_without_measurement"] == 1 and join.report["measured_rows_unmatched"] == 0
    csv = tmp_path / "m.csv"
    csv.write_text("id,level\nP3,4.5\n")
    assert join_measured(records, read_measured(csv)).measured_value[2] == 4.5
    with pytest.raises(Exception, match="no column"):
        read_measured(table, "missing")


def test_cai_and_tai_exclude_stops_and_single_codon_amino_acids():
    counts = codon_counts(pa.array(["ATGGCTGCTTGGTAA", "ATGGCCGCCTAG"]))
    w = relative_adaptiveness(counts.sum(axis=0) * 0 + np.where(np.array(CODONS) == "GCT", 10, 1))
    assert np.isnan(w[CODONS.index("TAA")]) and np.isnan(w[CODONS.index("ATG")]) and np.isnan(w[CODONS.index("TGG")])
    cai = geometric_mean_index(counts, w)
    assert cai[0] == pytest.approx(1.0) and 0 < cai[1] < 1  # the stop does not make CAI 0
    copies = read_trna_copy_numbers(ROOT / "codon_assets" / "data" / "trna" / "S_cerevisiae.csv")
    assert copies["AGC"] == 11  # Ala-AGC
    tw = tai_weights(copies)
    assert np.nanmax(tw) == 1.0 and np.nanmin(tw) > 0 and np.isnan(tw[CODONS.index("TGA")])
    # GCT is read by the I34-edited Ala-AGC tRNA (11 genes): better adapted than GCG (Ala-CGC, none).
    assert tw[CODONS.index("GCT")] > tw[CODONS.index("GCG")]


def test_sequence_features_against_plain_python():
    import itertools
    import random

    rng = random.Random(3)
    seqs = ["ATG" + "AAAAAAAAA" + "GCC" * 30 + "TAA", "ATGCCCGGGTTTTAG"]
    seqs += ["ATG" + "".join(rng.choice(["GCT", "GCG", "AAA", "TTT", "CGA"]) for _ in range(rng.randint(5, 80))) + "TAA"
             for _ in range(30)]
    rare = np.zeros(64, dtype=bool)
    rare[[CODONS.index("GCG"), CODONS.index("CGA")]] = True
    f = {**sequence_features(pa.array(seqs)), **rare_codon_runs(pa.array(seqs), rare)}
    # A chunked column (as read from Parquet) gives the same features, chunk by chunk.
    chunked = pa.chunked_array([pa.array(seqs[:7]), pa.array(seqs[7:])])
    for name, values in {**sequence_features(chunked), **rare_codon_runs(chunked, rare)}.items():
        assert np.array_equal(values, f[name]), name
    # The feature matrix is the same whether built in blocks of 5 records, from a chunked column, or at once.
    builder = FeatureBuilder.fit(f["counts"], "S_cerevisiae")
    evo2 = {name: np.linspace(0.1, 0.9, len(seqs)) for name in EVO2_COLUMNS}
    whole = builder.transform(pa.array(seqs), evo2)
    assert whole.shape == (len(seqs), len(builder.names))
    assert np.allclose(builder.transform(chunked, evo2, block_rows=5), whole, rtol=1e-12, atol=0, equal_nan=True)
    for i, s in enumerate(seqs):
        runs = [len(list(g)) for _, g in itertools.groupby(s)]
        assert f["longest_homopolymer"][i] == max(runs)
        assert f["homopolymers_ge6"][i] == sum(r >= 6 for r in runs)
        codons = [s[k : k + 3] for k in range(0, len(s), 3)]
        rare_runs = [len(list(g)) for is_rare, g in itertools.groupby(c in ("GCG", "CGA") for c in codons) if is_rare]
        assert f["longest_rare_codon_run"][i] == max(rare_runs, default=0)
        assert f["rare_codon_runs"][i] == sum(r >= 2 for r in rare_runs)
        assert f["gc_5prime"][i] == pytest.approx(sum(b in "GC" for b in s[:48]) / len(s[:48]))
        windows = [s[k : k + 60] for k in range(0, len(s) - 60 + 1, 30)] or [s]
        gc = [sum(b in "GC" for b in w) / len(w) for w in windows]
        assert f["gc_window_mean"][i] == pytest.approx(np.mean(gc))
        assert f["gc_window_std"][i] == pytest.approx(np.std(gc), abs=1e-9)
        assert f["gc_window_min"][i] == pytest.approx(min(gc)) and f["gc_window_max"][i] == pytest.approx(max(gc))


def test_builders_are_fitted_on_training_rows_only(yeast):
    converted, features = yeast
    enhanced, _ = build_enhanced(converted, features, "model_enhanced", EXAMPLES / "Sac_measured.tsv", None)
    data = training_set(enhanced)
    folds = grouped_folds(data.protein)
    train, test = folds[0]
    before = _fit_builders(data, train)["S_cerevisiae"].cai_weights
    data.measured[test] = 99.0  # the test fold's labels change ...
    data.target[test] = 99.0
    after = _fit_builders(data, train)["S_cerevisiae"].cai_weights
    assert np.array_equal(before, after, equal_nan=True)  # ... and the fitted preprocessing does not


def test_identical_proteins_never_straddle_folds():
    protein = [f"P{i % 30}" for i in range(120)]  # every protein four times
    for train, test in grouped_folds(protein, 5):
        assert not set(np.array(protein)[train]) & set(np.array(protein)[test])


def test_cross_validation_subset_keeps_whole_protein_groups():
    protein = [f"P{i % 700}" for i in range(2100)]  # every protein three times
    rows = cv_rows(protein, 600, seed=1)
    assert 540 <= len(rows) <= 600 and len(rows) % 3 == 0 and np.all(np.diff(rows) > 0)
    picked = {protein[i] for i in rows}
    assert sum(p in picked for p in protein) == len(rows)  # every copy of a picked protein, no other record
    assert np.array_equal(rows, cv_rows(protein, 600, seed=1)) and not np.array_equal(rows, cv_rows(protein, 600, seed=2))
    assert np.array_equal(cv_rows(protein, 5000), np.arange(2100)) and np.array_equal(cv_rows(protein, 0), np.arange(2100))


def test_surrogate_beats_trivial_and_codon_baselines_on_real_yeast(yeast):
    converted, features = yeast
    enhanced, report = build_enhanced(converted, features, "model_enhanced", EXAMPLES / "Sac_measured.tsv", None)
    assert report["matched_by_protein_id"] > 700
    data = training_set(enhanced)
    assert data.label_source == "measured"
    metrics, oof = cross_validate(data, "markov")
    y = data.target
    trivial = np.zeros(len(y))
    for train, test in grouped_folds(data.protein):
        trivial[test] = np.median(y[train])
    assert metrics["surrogate"]["mae"] < np.abs(y - trivial).mean()
    assert metrics["surrogate"]["spearman"] > 0.5
    assert metrics["surrogate"]["spearman"] >= metrics["baseline_cai"]["spearman"]
    # The fitting-free baselines on the same records: tAI (yeast has a tRNA table) and ENC (negated).
    assert metrics["surrogate"]["spearman"] >= max(metrics["baseline_tai"]["spearman"], metrics["baseline_enc"]["spearman"])
    assert metrics["baseline_enc"]["spearman"] > 0 and np.all(-oof["enc"][np.isfinite(oof["enc"])] <= 61)


def test_ridge_baseline_is_standardised_ridge_in_closed_form():
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from codon_assets.core.surrogate import ridge_predict

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.random((300, 8)), np.full(300, 0.25)])  # a constant column is left unscaled
    y = x[:, :8] @ rng.normal(size=8) + rng.normal(0, 0.1, 300)
    expected = make_pipeline(StandardScaler(), Ridge(alpha=10.0)).fit(x[:200], y[:200]).predict(x[200:])
    assert np.allclose(ridge_predict(x[:200], y[:200], x[200:]), expected)


def test_training_reports_coverage_of_calibrated_sigma_on_held_out_yeast_records(yeast):
    converted, features = yeast
    enhanced, _ = build_enhanced(converted, features, "model_enhanced", EXAMPLES / "Sac_measured.tsv", None)
    result = train_surrogate(enhanced, {})
    oof, metrics, model = result.out_of_fold, result.metrics["surrogate"], result.model
    y, mu, sigma, fold = result.held_out, oof["mu"], oof["sigma"], oof["fold"]
    spread, floor = np.abs(oof["hi"] - mu), oof["sigma_floor"]
    assert np.all(sigma > 0) and np.all(floor > 0)
    # Every record's sigma is scaled by the factor fitted on the other (grouped) folds' records only.
    protein = np.array(result.data.protein.to_pylist())[oof["rows"]]
    for k, (calibrate, evaluate) in enumerate(calibration_splits(fold)):
        assert not set(protein[calibrate]) & set(protein[evaluate])
        scale = sigma_calibration(y[calibrate], mu[calibrate], spread[calibrate], floor[calibrate])
        assert metrics["sigma_scale_fold_min"] <= scale <= metrics["sigma_scale_fold_max"]
        assert np.allclose(sigma[evaluate], sigma_from_spread(spread[evaluate], scale, floor[evaluate]))
    # The reported coverage is that of the cross-fitted sigma; the refitted model gets the factor fitted on
    # every out-of-fold record.
    assert metrics["coverage_1sigma"] == np.mean(np.abs(y - mu) <= sigma)
    assert metrics["coverage_2sigma"] == np.mean(np.abs(y - mu) <= 2 * sigma)
    assert 0.6 < metrics["coverage_1sigma"] < 0.77 and metrics["coverage_2sigma"] > metrics["coverage_1sigma"]
    assert model.sigma_scale == metrics["sigma_scale"] == sigma_calibration(y, mu, spread, floor)
    assert metrics["coverage_1sigma_uncalibrated"] < metrics["coverage_1sigma"]  # quantile boosters under-cover
    assert 0 <= metrics["quantile_crossing_rate"] < 0.5 and metrics["sigma_floor"] == model.sigma_floor > 0
    assert model.metrics["cv_coverage_2sigma"] == metrics["coverage_2sigma"]
    curve = result.reliability
    assert len(curve["nominal"]) == len(curve["observed"]) and np.all(np.diff(curve["observed"]) >= 0)
    assert result.reliability_plot("m").startswith(b"\x89PNG")
    # The refitted model's predictions (what predict and the designs use) are > 0 too.
    data = result.data
    assert np.all(model.predict(data.sequences, data.evo2, data.host)[1] > 0)


def test_surrogate_asset_tracks_lineage_in_mlflow(instance, tmp_path):
    """enhanced_dataset -> surrogate_model on a temporary instance and a temporary sqlite MLflow store."""
    import dagster as dg
    import mlflow

    from codon_assets.definitions import defs
    from codon_assets_tests.test_assets import resources_for

    resources = resources_for(EXAMPLES, tmp_path / "s")
    result = dg.materialize(list(defs.assets), partition_key="S_cerevisiae", instance=instance, resources=resources)
    assert result.success
    meta = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
            for e in result.get_asset_materialization_events()}
    # Every column of every stored table is described in the UI's column schema.
    for name, values in meta.items():
        if "dagster/column_schema" in values:
            assert all(c.description for c in values["dagster/column_schema"].schema.columns), name
    enhanced = meta["enhanced_dataset"]
    assert enhanced["measured_records"].value > 700 and 0 < enhanced["percent_enhanced"].value <= 100
    assert enhanced["measured_labels"].value["value_column"] == "mrna_fpkm"
    model = meta["surrogate_model"]
    assert model["registered_model"].value == "codon-surrogate-S_cerevisiae" and model["registered_version"].value == 1
    assert model["label_source"].value == "measured" and model["cv_spearman"].value > 0.45
    assert model["mlflow_run_url"].value.endswith(model["mlflow_run_id"].value)
    # The figures MLflow keeps are in the materialization too (calibration, importance, predicted vs measured).
    assert {"plot_reliability", "plot_predicted_vs_label", "plot_feature_importances"} <= set(model)
    assert model["plot_reliability"].value.startswith("![reliability](data:image/png;base64,iVBOR")

    # Both stores named: the logging ran in its own process, and an earlier test may have left this one's
    # registry URI pointing at its own store.
    mlflow.set_tracking_uri(resources["mlflow_tracking"].uri())
    mlflow.set_registry_uri(resources["mlflow_tracking"].uri())
    client = mlflow.MlflowClient()
    run = client.get_run(model["mlflow_run_id"].value)
    assert run.data.tags["dagster.run_id"] == result.run_id
    assert run.data.tags["dagster.partition"] == "S_cerevisiae"
    assert run.data.tags["dagster.asset_key"] == "surrogate_model"
    assert run.data.tags["dagster.code_version"] == ASSET_STAMPS["surrogate_model"].code_version
    assert run.data.tags["dagster.upstream.enhanced_dataset.data_version"]
    assert run.data.params["label_source"] == "measured"
    assert run.data.metrics["surrogate.spearman"] == pytest.approx(model["cv_spearman"].value, abs=1e-4)
    assert "baseline_ridge_codon_freq.spearman" in run.data.metrics
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest and inputs[0].dataset.name == "codon-surrogate-S_cerevisiae-training"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/predicted_vs_label.png", "plots/feature_importances.png", "plots/label_distribution.png",
                         "plots/reliability.png"}
    version = client.get_model_version("codon-surrogate-S_cerevisiae", "1")
    assert result.run_id in version.description and version.run_id == run.info.run_id
    # The served model's environment pins what loading it imports, at the versions trained with.
    requirements = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/surrogate/requirements.txt"))
    pins = dict(line.split("==") for line in requirements.read_text().split() if "==" in line)
    assert pins["lightgbm"] == lgb.__version__ and "codon-assets" not in pins and pins["numpy"] == np.__version__

    # A second materialization is a second run and a new registered version.
    again = dg.materialize(list(defs.assets), partition_key="S_cerevisiae", instance=instance, resources=resources,
                           selection=["surrogate_model"])
    assert again.success
    assert {str(v.version) for v in client.search_model_versions("name = 'codon-surrogate-S_cerevisiae'")} == {"1", "2"}
