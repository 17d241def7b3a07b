"""Feature extraction: one row per record, the cache (reuse, resume, corruption), per-record errors, and the
evo2_features asset on every backend that runs on a CPU."""

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codon_assets.core.convert import ConversionSettings, convert_files
from codon_assets.core.features import (
    FEATURES_SCHEMA,
    MarkovBatchScorer,
    TokenBatchScorer,
    extract_features,
)
from codon_assets.core.hosts import get_host
from codon_assets.core.markov import MarkovCdsModel
from codon_assets.core.tsv import read_release_table
from codon_assets_tests.conftest import EXAMPLES
from codon_assets.definitions import defs
from codon_assets_tests.test_assets import materialize
from resources.evo2.resource import Evo2Resource
from resources.evo2.cache import FeatureCache
from resources.model_store import load_model


@pytest.fixture(scope="module")
def records():
    result = convert_files([read_release_table(EXAMPLES / "Pic.tsv")], get_host("P_pastoris"), ConversionSettings())
    return result.valid.select(["protein_id", "sequence", "seq_sha256"])


def markov_scorer(records):
    return MarkovBatchScorer(MarkovCdsModel.train(records["sequence"].combine_chunks(), records["seq_sha256"].to_pylist()))


class CountingScorer:
    """Wraps a batch scorer and counts the records it was asked to score."""

    def __init__(self, inner):
        self.inner, self.scored = inner, 0
        self.backend, self.model_version = inner.backend, inner.model_version

    def score_batch(self, sequences, shas):
        self.scored += len(sequences)
        return self.inner.score_batch(sequences, shas)


def test_one_row_per_record_in_order(records):
    table, summary = extract_features(records, markov_scorer(records))
    assert table.schema == FEATURES_SCHEMA
    assert table["protein_id"].equals(records["protein_id"]) and table["seq_sha256"].equals(records["seq_sha256"])
    assert summary.success == records.num_rows and summary.error == 0
    assert set(table["status"].to_pylist()) == {"success"}
    lengths = np.array([len(s) for s in records["sequence"].to_pylist()])
    assert np.array_equal(table["sequence_length"].to_numpy(), lengths)
    assert np.array_equal(table["scored_bases"].to_numpy(), lengths)
    perplexity, loglik = table["perplexity"].to_numpy(), table["avg_loglik"].to_numpy()
    assert np.allclose(perplexity, np.exp(-loglik)) and (perplexity > 1).all()
    assert np.median(perplexity) < 4  # better than a uniform guess for the typical gene
    expected_gc = [(s.count("G") + s.count("C")) / len(s) for s in records["sequence"].to_pylist()]
    assert np.allclose(table["gc_content"].to_numpy(), expected_gc, rtol=0, atol=1e-12)


def test_cache_reuses_and_resumes(records, tmp_path):
    cache = FeatureCache(tmp_path)
    base = markov_scorer(records)
    first_scorer = CountingScorer(base)
    first, _ = extract_features(records, first_scorer, cache, batch_records=50)
    assert first_scorer.scored == records.num_rows

    again = CountingScorer(base)
    second, summary = extract_features(records, again, cache, batch_records=50)
    assert again.scored == 0 and summary.cache_hits == records.num_rows
    assert second.drop_columns(["cached", "processing_time_ms"]).equals(first.drop_columns(["cached", "processing_time_ms"]))

    # Losing shards (a run killed part-way) means scoring only what is missing, with the same results.
    shards = sorted((tmp_path / "markov").rglob("part-*.parquet"))
    kept = pa.concat_tables([pq.read_table(s) for s in shards])
    for shard in shards:
        shard.unlink()
    cache.put(base.backend, base.model_version, kept.slice(0, 100))
    resumed_scorer = CountingScorer(base)
    resumed, summary = extract_features(records, resumed_scorer, cache, batch_records=50)
    assert resumed_scorer.scored == records.num_rows - 100 and summary.cache_hits == 100
    assert resumed["avg_loglik"].equals(first["avg_loglik"])


def test_corrupt_cache_shard_is_set_aside_and_recomputed(records, tmp_path):
    cache = FeatureCache(tmp_path)
    scorer = markov_scorer(records)
    first, _ = extract_features(records, scorer, cache)
    shard = next((tmp_path / "markov").rglob("part-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:200])  # truncated, as by a crash or a bad disk
    again = CountingScorer(scorer)
    second, summary = extract_features(records, again, cache)
    assert again.scored == records.num_rows and summary.cache_hits == 0
    assert second["avg_loglik"].equals(first["avg_loglik"])
    assert list((tmp_path / "markov").rglob("*.corrupt"))


class FlakyTokenScorer:
    """A token scorer that fails every third record and gives log(0.5) everywhere else."""

    backend, model_version = "evo2", "evo2:stand-in"

    def logprobs(self, sequences):
        return [RuntimeError(f"cannot score record {i}") if i % 3 == 0 else np.full(len(s), np.log(0.5))
                for i, s in enumerate(sequences)]


def test_token_backend_errors_mark_records_without_dropping_them(records, tmp_path):
    table, summary = extract_features(records.slice(0, 10), TokenBatchScorer(FlakyTokenScorer()), FeatureCache(tmp_path))
    assert table.num_rows == 10 and summary.error == 4 and summary.success == 6
    rows = table.to_pylist()
    assert rows[0]["status"] == "error" and rows[0]["error"] == "RuntimeError: cannot score record 0"
    assert rows[0]["avg_loglik"] is None and rows[0]["gc_content"] is not None
    assert rows[1]["status"] == "success" and rows[1]["avg_confidence"] == pytest.approx(0.5)
    assert rows[1]["perplexity"] == pytest.approx(2.0)
    # Errors are not cached: a rerun tries those records again.
    cached = FeatureCache(tmp_path).get("evo2", "evo2:stand-in", records["seq_sha256"].to_pylist()[:10])
    assert cached.num_rows == 6


def features_of(storage, host):
    return pq.read_table(storage / "evo2_features" / f"{host}.parquet")


def test_asset_markov_is_identical_across_runs(instance, tmp_path):
    for run in ("a", "b"):
        result = materialize(instance, "P_pastoris", EXAMPLES, tmp_path / run)
        assert result.success
        checks = {c.check_name: c for c in result.get_asset_check_evaluations() if c.asset_key.path == ["evo2_features"]}
        assert set(checks) == {"one_row_per_record", "error_rate", "values_in_range"}
        assert all(c.passed for c in checks.values())
    a, b = features_of(tmp_path / "a", "P_pastoris"), features_of(tmp_path / "b", "P_pastoris")
    assert a.drop_columns(["processing_time_ms"]).equals(b.drop_columns(["processing_time_ms"]))
    converted = pq.read_table(tmp_path / "a" / "converted_dataset" / "P_pastoris.parquet")
    assert a.num_rows == converted.num_rows
    # The host's Markov model is an asset value of its own, in the model store, the one that scored the records.
    stored = load_model(tmp_path / "a" / "markov_model" / "P_pastoris" / (tmp_path / "a" / "markov_model" / "P_pastoris" / "CURRENT").read_text())
    assert set(a["model_version"].to_pylist()) == {stored.version}
    materialization = instance.get_latest_materialization_event(dg.AssetKey("evo2_features")).asset_materialization
    assert materialization.metadata["backend"].value == "markov"
    assert materialization.metadata["success"].value == a.num_rows


def test_asset_evo2_backend_with_a_stand_in_model(instance, tmp_path, monkeypatch):
    """The `evo2` path end to end, with a tiny torch model in place of the weights nobody can download here."""
    torch = pytest.importorskip("torch")
    from resources.evo2 import resource as resource_module
    from resources.evo2.torch_backend import Evo2TorchScorer

    class UniformModel(torch.nn.Module):
        def forward(self, ids):
            logits = torch.full((*ids.shape, 512), -1e4)
            logits[..., [65, 67, 71, 84]] = 0.0  # the four bases, equally likely
            return (logits, None), None  # the shape evo2.Evo2 returns

    def fake_load(name, local_path, device, batch_size, max_context):
        return Evo2TorchScorer(UniformModel(), device="cpu", batch_size=batch_size, max_context=max_context,
                               model_version=f"evo2:{name}")

    monkeypatch.setattr(resource_module, "_load_evo2", fake_load)
    evo2 = Evo2Resource(backend="evo2", device="cpu", max_context=256, cache_dir=str(tmp_path / "cache"))
    result = materialize(instance, "P_pastoris", EXAMPLES, tmp_path / "s", evo2=evo2)
    assert result.success
    table = features_of(tmp_path / "s", "P_pastoris")
    assert set(table["backend"].to_pylist()) == {"evo2"} and set(table["status"].to_pylist()) == {"success"}
    assert np.allclose(table["perplexity"].to_numpy(), 4.0) and np.allclose(table["avg_confidence"].to_numpy(), 0.25)


def test_asset_fails_above_the_error_rate(instance, tmp_path, monkeypatch):
    from resources.evo2 import resource as resource_module

    monkeypatch.setattr(resource_module, "_load_evo2", lambda *args: FlakyTokenScorer())
    evo2 = Evo2Resource(backend="evo2", cache_dir=str(tmp_path / "cache"), max_error_rate=0.2)
    result = materialize(instance, "P_pastoris", EXAMPLES, tmp_path / "s", evo2=evo2)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "could not be scored" in failure.step_failure_data.user_failure_data.description


def test_asset_nim_backend_against_a_loopback_stand_in(instance, tmp_path, monkeypatch):
    """The `nim` path end to end: HTTP to a stand-in NIM on 127.0.0.1 with a marker key, one rate-limited
    failure retried; every record scored with the log-probabilities the stand-in model implies."""
    from codon_assets_tests.nim_standin import NimStandin, expected_logprobs, fail

    marker = "nvapi-MARKER-7f3a91c2"
    monkeypatch.setenv("CODON_TEST_NIM_KEY", marker)
    with NimStandin(api_key=marker) as nim:
        nim.script(fail(429, retry_after="0"))
        evo2 = Evo2Resource(backend="nim", nim_base_url=nim.url, nim_api_key_env="CODON_TEST_NIM_KEY",
                            requests_per_minute=100_000, nim_max_concurrency=4, cache_dir=str(tmp_path / "cache"))
        result = materialize(instance, "P_pastoris", EXAMPLES, tmp_path / "s", evo2=evo2)
        assert result.success
        posts = nim.count("POST")
    table = features_of(tmp_path / "s", "P_pastoris")
    converted = pq.read_table(tmp_path / "s" / "converted_dataset" / "P_pastoris.parquet")
    assert set(table["status"].to_pylist()) == {"success"} and posts == table.num_rows + 1
    first = converted["sequence"][0].as_py()
    assert table["avg_loglik"][0].as_py() == pytest.approx(expected_logprobs(first).mean())
    assert table["scored_bases"][0].as_py() == len(first) - 1  # the API gets no BOS: the first base is context
    assert set(table["model_version"].to_pylist()) == {"nim:evo2-40b:output_layer"}
    # The key reaches the server only: not the features, not the event log.
    assert marker.encode() not in (tmp_path / "s" / "evo2_features" / "P_pastoris.parquet").read_bytes()
    records = instance.fetch_materializations(dg.AssetKey("evo2_features"), limit=100).records
    assert records and all(marker not in str(r.event_log_entry) for r in records)


def test_nim_key_leaks_nowhere(instance, dagster_home, tmp_path, monkeypatch):
    """A NIM-backed materialization through the surrogate, then every byte the run left behind is searched
    for the marker key: Dagster's event log and compute logs, asset files, the feature cache, MLflow's
    database (params, tags, metrics) and artifacts, and the CLI-style exports."""
    from codon_assets_tests.nim_standin import NimStandin
    from codon_assets_tests.test_assets import resources_for

    marker = "nvapi-LEAK-CHECK-5e1d"
    monkeypatch.setenv("CODON_TEST_NIM_KEY", marker)
    with NimStandin(api_key=marker) as nim:
        resources = resources_for(EXAMPLES, tmp_path / "s")
        resources["evo2"] = Evo2Resource(backend="nim", nim_base_url=nim.url, nim_api_key_env="CODON_TEST_NIM_KEY",
                                         requests_per_minute=100_000, cache_dir=str(tmp_path / "s" / "cache"))
        result = dg.materialize(list(defs.assets), partition_key="P_pastoris", instance=instance, resources=resources,
                                selection=["raw_tsv", "converted_dataset", "converted_rejects", "markov_model", "evo2_features",
                                           "enhanced_dataset", "surrogate_model"])
        assert result.success
    searched = 0
    for root in (tmp_path / "s", dagster_home):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                searched += 1
                assert marker.encode() not in path.read_bytes(), path
    assert searched > 20
    assert all(marker not in str(e) for e in instance.all_logs(result.run_id))
