"""Hosts without measurements: no circular labels, a model transferred from the measured hosts."""

import numpy as np
import pyarrow as pa
import pytest

from codon_assets.core.convert import ConversionSettings, convert_files
from codon_assets.core.enhance import build_enhanced
from codon_assets.core.features import MarkovBatchScorer, extract_features
from codon_assets.core.hosts import get_host
from codon_assets.core.markov import MarkovCdsModel
from codon_assets.core.surrogate import MIN_MEASURED, SurrogateModel, measured_hosts, per_host_standardised, training_set
from codon_assets.core.surrogate_features import EVO2_COLUMNS, HOST_DESCRIPTORS
from codon_assets.core.training import train_surrogate
from codon_assets.core.tsv import read_release_table
from codon_assets_tests.conftest import EXAMPLES


def enhanced_for(release: str, host: str, measured: str | None) -> tuple[pa.Table, MarkovCdsModel]:
    converted = convert_files([read_release_table(EXAMPLES / release)], get_host(host), ConversionSettings()).valid
    markov = MarkovCdsModel.train(converted["sequence"].combine_chunks(), converted["seq_sha256"].to_pylist())
    features, _ = extract_features(converted.select(["protein_id", "sequence", "seq_sha256"]), MarkovBatchScorer(markov))
    enhanced, _ = build_enhanced(converted, features, "model_enhanced", EXAMPLES / measured if measured else None, None)
    return enhanced, markov


@pytest.fixture(scope="module")
def hosts():
    return {"S_cerevisiae": enhanced_for("Sac.tsv", "S_cerevisiae", "Sac_measured.tsv"),
            "P_pastoris": enhanced_for("Pic.tsv", "P_pastoris", None)}  # Pichia without its measurements


def test_a_host_without_measurements_has_no_training_labels(hosts):
    pichia, _ = hosts["P_pastoris"]
    assert measured_hosts(pichia) == []
    with pytest.raises(ValueError, match=f"no host has {MIN_MEASURED} or more measured values"):
        training_set(pichia)
    # The metadata estimate is there (reported), but it is never a label.
    assert pichia["expression_value"].null_count < pichia.num_rows


def test_a_host_without_measurements_gets_a_model_transferred_from_measured_hosts(hosts):
    (yeast, _), (pichia, pichia_markov) = hosts["S_cerevisiae"], hosts["P_pastoris"]
    result = train_surrogate(yeast, {"P_pastoris": pichia_markov}, transfer_to={"P_pastoris": pichia})
    model = result.model
    assert model.label_source == "transferred" and model.source_hosts == ["S_cerevisiae"]
    assert model.label_source_for("P_pastoris") == "transferred" and model.label_source_for("S_cerevisiae") == "measured"
    # Provenance: every label is a yeast measurement; no Pichia record and no estimate is among them.
    measured = yeast["measured_log10"].to_numpy(zero_copy_only=False)
    assert set(result.data.host.tolist()) == {"S_cerevisiae"}
    finite = measured[np.isfinite(measured)]
    assert np.allclose(np.sort(result.data.measured), np.sort(finite))
    # On the per-host relative scale: the hosts' units differ, their ranks carry over.
    assert np.allclose(np.sort(result.data.target), np.sort(per_host_standardised(finite, np.zeros(len(finite)))))
    # Hosts differ by descriptors, not by an id; the Pichia profile comes from its own CDS without labels.
    assert "host" not in model.feature_names and set(HOST_DESCRIPTORS) <= set(model.feature_names)
    # CAI means the same for every host of a transfer model: no reference is chosen by measured labels.
    assert not any("measured" in b.cai_reference for b in model.builders.values())
    assert not np.allclose(model.builders["P_pastoris"].descriptors, model.builders["S_cerevisiae"].descriptors)
    mu, sigma = model.predict(pichia["sequence"], {n: pichia[n].to_numpy(zero_copy_only=False) for n in EVO2_COLUMNS},
                              np.array(["P_pastoris"] * pichia.num_rows))
    assert np.isfinite(mu).all() and (sigma > 0).all() and np.std(mu) > 0
    assert "P_pastoris" in model.host_profiles


def test_the_transfer_survives_save_and_load(hosts, tmp_path):
    (yeast, _), (pichia, pichia_markov) = hosts["S_cerevisiae"], hosts["P_pastoris"]
    model = train_surrogate(yeast, {"P_pastoris": pichia_markov}, transfer_to={"P_pastoris": pichia}).model
    loaded = SurrogateModel.load(model.save(tmp_path / "m"))
    assert loaded.source_hosts == ["S_cerevisiae"] and loaded.label_source == "transferred"
    evo2 = {n: pichia[n].to_numpy(zero_copy_only=False) for n in EVO2_COLUMNS}
    host = np.array(["P_pastoris"] * pichia.num_rows)
    assert np.allclose(loaded.predict(pichia["sequence"], evo2, host)[0], model.predict(pichia["sequence"], evo2, host)[0])


def test_a_model_refuses_a_host_it_has_no_profile_for(hosts):
    yeast, _ = hosts["S_cerevisiae"]
    model = train_surrogate(yeast, {}).model
    with pytest.raises(ValueError, match="no profile for host P_pastoris"):
        model.matrix(yeast["sequence"], {n: yeast[n].to_numpy(zero_copy_only=False) for n in EVO2_COLUMNS},
                     np.array(["P_pastoris"] * yeast.num_rows))


@pytest.fixture(scope="module")
def measured():
    """Every bundled host with its measurements: enhanced records and Markov model."""
    return {host: enhanced_for(release, host, labels) for release, host, labels in [
        ("Sac.tsv", "S_cerevisiae", "Sac_measured.tsv"), ("Pic.tsv", "P_pastoris", "Pic_measured.tsv"),
        ("Human.fa.gz", "Human", "Human_measured.tsv"), ("mouse.fa.gz", "Mouse", "mouse_measured.tsv")]}


def test_yeast_predicted_from_the_other_hosts_only_ranks_its_measurements(measured, tmp_path):
    """Leave yeast out: a model from the Pichia, human and mouse measurements ranks yeast's measured mRNA levels
    (the held-out check of an unseen host), on the per-host relative scale, with honest sigma calibrated on
    measured hosts left out of training."""
    from scipy.stats import spearmanr

    from codon_assets.core.calibration import sigma_from_spread
    from codon_assets.core.surrogate import PER_HOST_Z, per_host_standardised

    others = [measured[host][0] for host in ("P_pastoris", "Human", "Mouse")]
    yeast, markov = measured["S_cerevisiae"]
    hidden = yeast.set_column(yeast.schema.get_field_index("measured_log10"), "measured_log10",
                              pa.nulls(yeast.num_rows, pa.float64()))
    result = train_surrogate(pa.concat_tables(others, promote_options="default"), {"S_cerevisiae": markov},
                             transfer_to={"S_cerevisiae": hidden})
    model = result.model
    assert model.label_source == "transferred" and model.label_scale == PER_HOST_Z
    assert "S_cerevisiae" not in model.source_hosts
    evo2 = {n: yeast[n].to_numpy(zero_copy_only=False) for n in EVO2_COLUMNS}
    mu, sigma = model.predict(yeast["sequence"], evo2, np.array(["S_cerevisiae"] * yeast.num_rows))
    y = yeast["measured_log10"].to_numpy(zero_copy_only=False).astype(float)
    ok = np.isfinite(y)
    assert spearmanr(mu[ok], y[ok])[0] > 0.4
    z = per_host_standardised(y[ok], np.array(["S_cerevisiae"] * ok.sum()))
    assert 0.55 <= np.mean(np.abs(z - mu[ok]) <= sigma[ok]) <= 0.9
    # A host it has no labels of gets the factor fitted on hosts left out of training; its own hosts the CV one.
    assert model.transfer_sigma_scale == result.metrics["transfer"]["sigma_scale"] != model.sigma_scale
    x = model.matrix(yeast["sequence"], evo2, np.array(["S_cerevisiae"] * yeast.num_rows))
    low, high = model.quantiles_matrix(x)
    assert np.allclose(sigma, sigma_from_spread(high - low, model.transfer_sigma_scale, model.sigma_floor))
    pichia = measured["P_pastoris"][0]
    own = model.predict(pichia["sequence"], {n: pichia[n].to_numpy(zero_copy_only=False) for n in EVO2_COLUMNS},
                        np.array(["P_pastoris"] * pichia.num_rows))[1]
    x = model.matrix(pichia["sequence"], {n: pichia[n].to_numpy(zero_copy_only=False) for n in EVO2_COLUMNS},
                     np.array(["P_pastoris"] * pichia.num_rows))
    low, high = model.quantiles_matrix(x)
    assert np.allclose(own, sigma_from_spread(high - low, model.sigma_scale, model.sigma_floor))
    assert SurrogateModel.load(model.save(tmp_path / "m")).transfer_sigma_scale == model.transfer_sigma_scale


def test_each_measured_host_is_predicted_by_a_model_of_the_other_hosts_only(measured):
    """Leave-one-host-out: what a host without measurements can expect. A host's predictions come from a model
    that never saw its labels (shuffling them changes its predictions not at all, every other host's), and
    the coverage of the transfer sigma is counted on hosts its factor was not fitted on."""
    from dataclasses import replace

    from codon_assets.core.transfer import leave_one_host_out

    data = training_set(pa.concat_tables([t for t, _ in measured.values()], promote_options="default"),
                        standardise_per_host=True)
    metrics, predicted = leave_one_host_out(data, "markov")
    hosts = sorted(measured)
    assert metrics["hosts"] == 4 and {f"spearman.{h}" for h in hosts} <= metrics.keys()
    assert metrics["spearman"] == pytest.approx(np.mean([metrics[f"spearman.{h}"] for h in hosts]))
    assert metrics["spearman_min"] == min(metrics[f"spearman.{h}"] for h in hosts)
    assert metrics["spearman"] > 0.3 and metrics["spearman_min"] > 0.1  # 0.41 and 0.26 on the bundled data
    assert 0.55 <= metrics["coverage_1sigma"] <= 0.85 and metrics["coverage_2sigma"] > metrics["coverage_1sigma"]
    assert (predicted["sigma"] > 0).all() and metrics["sigma_scale"] > 0

    yeast = data.host == "S_cerevisiae"
    shuffled = data.target.copy()
    shuffled[yeast] = np.random.default_rng(1).permutation(shuffled[yeast])
    _, again = leave_one_host_out(replace(data, target=shuffled), "markov")
    held = data.host[predicted["rows"]] == "S_cerevisiae"
    assert np.array_equal(again["mu"][held], predicted["mu"][held])
    assert not np.allclose(again["mu"][~held], predicted["mu"][~held])


def test_a_transfer_model_of_one_measured_host_says_its_transfer_is_not_measured(hosts):
    from codon_assets.cli.common import transfer_quality

    (yeast, _), (pichia, pichia_markov) = hosts["S_cerevisiae"], hosts["P_pastoris"]
    result = train_surrogate(yeast, {"P_pastoris": pichia_markov}, transfer_to={"P_pastoris": pichia})
    assert "transfer" not in result.metrics and result.model.transfer_sigma_scale is None
    assert "not measured" in transfer_quality(result.model.metrics)


def test_the_asset_of_a_host_without_measurements_is_transferred_from_the_unified_model(instance, tmp_path):
    """Yeast has measurements, Pichia (here) none: Pichia's surrogate_model is the unified model of the measured
    hosts applied through Pichia's profile, and says so in its metadata and MLflow run."""
    import shutil

    import dagster as dg
    import mlflow

    from codon_assets.definitions import defs
    from codon_assets_tests.test_assets import resources_for

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("Sac.tsv", "Sac_measured.tsv", "Pic.tsv"):
        shutil.copy(EXAMPLES / name, inputs / name)
    resources = resources_for(inputs, tmp_path / "s")
    host_graph = ["raw_tsv", "converted_dataset", "converted_rejects", "markov_model", "evo2_features",
                  "enhanced_dataset", "surrogate_model"]

    def materialize(selection, partition):
        return dg.materialize(list(defs.assets), partition_key=partition, instance=instance, resources=resources,
                              selection=selection, raise_on_error=False)

    # Without a model of measured hosts there is nothing to transfer from: one clear failure.
    first = materialize(host_graph, "P_pastoris")
    assert not first.success
    failure = next(e for e in first.all_events if e.event_type_value == "STEP_FAILURE")
    assert "no model of the measured hosts to transfer from" in failure.step_failure_data.error.message

    assert materialize(host_graph, "S_cerevisiae").success
    assert materialize(["surrogate_model_unified"], None).success
    result = materialize(["surrogate_model"], "P_pastoris")
    assert result.success
    meta = next(e.step_materialization_data.materialization.metadata for e in result.get_asset_materialization_events())
    assert meta["label_source"].value == "transferred" and meta["source_hosts"].value == ["S_cerevisiae"]
    assert meta["label_scale"].value == "per-host z of log10"
    assert meta["source_model_uri"].value.startswith("models:/codon-surrogate-unified/")
    assert "source_cv_spearman" in meta and not any(k.startswith("cv_") for k in meta)  # no CV of its own
    mlflow.set_tracking_uri(resources["mlflow_tracking"].uri())
    run = mlflow.get_run(meta["mlflow_run_id"].value)
    assert run.data.tags["label_source"] == "transferred" and run.data.tags["source_hosts"] == "S_cerevisiae"
    assert run.data.params["label_source"] == "transferred"
