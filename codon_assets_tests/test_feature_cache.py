"""The feature cache key names the model that produced the scores: the local checkpoint (path and content),
the context window, its overlap and the precision for the evo2 backend, the model version a NIM reports
for the nim backend. Change any of them and nothing cached under the old key is reused; keep them and
everything is."""

import hashlib
import os
import shutil

import pyarrow as pa
import pytest

from codon_assets.core.features import CACHE_SCHEMA, extract_features
from resources.evo2 import cache as cache_module
from resources.evo2 import resource as resource_module
from resources.evo2.cache import FeatureCache, checkpoint_identity
from resources.evo2.resource import Evo2Resource
from codon_assets_tests.test_features import CountingScorer

SEQUENCES = ["ATGGCTGAAAAGCTGTAA", "ATGAAACCCGGGTTTTAA", "ATGTGGTGCTAA", "ATGGATGAATTCCAGTAA"]
SETTINGS = {"local_path": "/weights/evo2_7b.pt", "checkpoint": "stat-sha256:0123456789abcdef",
            "max_context": 8192, "window_overlap": 2048, "precision": "autocast-bf16;params=bfloat16+float32"}


@pytest.fixture(autouse=True)
def fresh_process():
    """Checkpoint identities are computed once per process: each test starts as a new process would."""
    cache_module._stat_identity.cache_clear()
    yield
    cache_module._stat_identity.cache_clear()


def records_of(sequences=SEQUENCES) -> pa.Table:
    return pa.table({"protein_id": [f"p{i}" for i in range(len(sequences))], "sequence": sequences,
                     "seq_sha256": [hashlib.sha256(s.encode()).hexdigest() for s in sequences]})


def rows(shas: list[str]) -> pa.Table:
    """Cache rows for these hashes (the values do not matter here)."""
    values = {f.name: shas if f.name == "seq_sha256" else [3 if f.name == "scored_bases" else 0.5] * len(shas)
              for f in CACHE_SCHEMA}
    return pa.table(values, schema=CACHE_SCHEMA)


# ---------------------------------------------------------------- the key itself


@pytest.mark.parametrize("name, other", [
    ("local_path", "/weights/elsewhere/evo2_7b.pt"),
    ("checkpoint", "stat-sha256:fedcba9876543210"),
    ("max_context", 4096),
    ("window_overlap", 1024),
    ("precision", "no-autocast;params=float32"),
])
def test_each_setting_changes_the_key_and_hides_the_old_entries(tmp_path, name, other):
    shas = records_of()["seq_sha256"].to_pylist()
    old = FeatureCache(tmp_path, SETTINGS)
    old.put("evo2", "evo2:evo2_7b", rows(shas))
    changed = FeatureCache(tmp_path, {**SETTINGS, name: other})
    assert changed.key("evo2", "evo2:evo2_7b") != old.key("evo2", "evo2:evo2_7b")
    assert changed.get("evo2", "evo2:evo2_7b", shas) is None
    # The same settings (in any order, in a new cache object) find every entry again.
    same = FeatureCache(tmp_path, dict(reversed(list(SETTINGS.items()))))
    assert same.key("evo2", "evo2:evo2_7b") == old.key("evo2", "evo2:evo2_7b")
    assert sorted(same.get("evo2", "evo2:evo2_7b", shas)["seq_sha256"].to_pylist()) == sorted(shas)


def test_settings_are_described_beside_their_shards(tmp_path):
    cache = FeatureCache(tmp_path, SETTINGS)
    cache.put("evo2", "evo2:evo2_7b", rows(["a" * 64]))
    described = list(tmp_path.rglob("settings.json"))
    assert len(described) == 1 and '"window_overlap": 2048' in described[0].read_text()


def test_without_settings_the_layout_is_unchanged(tmp_path):
    """The markov backend's version names its whole model: its key (and existing caches) stay as they were."""
    assert FeatureCache(tmp_path).key("markov", "markov-o5-k5-a64-abc") == "markov/markov-o5-k5-a64-abc"


def test_the_served_version_is_part_of_the_key(tmp_path):
    served = {"version": "2.1.0"}
    cache = FeatureCache(tmp_path, {"endpoint_path": "/f"}, lambda probe: served["version"])
    shas = ["b" * 64]
    cache.put("nim", "nim:evo2-40b:output_layer", rows(shas))
    first = cache.key("nim", "nim:evo2-40b:output_layer")
    assert first.endswith("/v-2.1.0") and cache.get("nim", "nim:evo2-40b:output_layer", shas).num_rows == 1
    served["version"] = "2.2.0"
    assert cache.key("nim", "nim:evo2-40b:output_layer") != first
    assert cache.get("nim", "nim:evo2-40b:output_layer", shas) is None
    served["version"] = "build 7/rc 1"  # not a safe folder name: made safe, and told apart by a hash
    assert "/" not in cache.key("nim", "nim:evo2-40b:output_layer").split("/v-")[1]
    served["version"] = None  # unknown: nothing is read, nothing is written
    assert cache.key("nim", "nim:evo2-40b:output_layer") is None
    assert cache.get("nim", "nim:evo2-40b:output_layer", shas) is None
    cache.put("nim", "nim:evo2-40b:output_layer", rows(["c" * 64]))
    assert len(list(tmp_path.rglob("part-*.parquet"))) == 1


def test_no_probe_when_nothing_is_cached(tmp_path):
    asked = []
    cache = FeatureCache(tmp_path, {"endpoint_path": "/f"}, lambda probe: asked.append(probe) or "1")
    assert cache.get("nim", "nim:m:l", ["d" * 64]) is None and asked == []
    cache.put("nim", "nim:m:l", rows(["d" * 64]))  # a reply was seen: no probe needed to file it
    assert asked == [False]
    assert cache.get("nim", "nim:m:l", ["d" * 64]).num_rows == 1 and asked == [False, True]


# ---------------------------------------------------------------- checkpoint identity


def test_checkpoint_identity_follows_the_file_and_is_computed_once_per_process(tmp_path):
    weights = tmp_path / "evo2.pt"
    weights.write_bytes(b"w" * 100)
    first = checkpoint_identity(weights)
    assert checkpoint_identity(str(weights)) == first and checkpoint_identity(None) is None
    weights.write_bytes(b"v" * 101)  # replaced while this process holds the old weights: still the old identity
    assert checkpoint_identity(weights) == first
    cache_module._stat_identity.cache_clear()  # a new process
    second = checkpoint_identity(weights)
    assert second != first
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))  # same size, rewritten
    cache_module._stat_identity.cache_clear()
    assert checkpoint_identity(weights) not in (first, second)
    with pytest.raises(FileNotFoundError):
        checkpoint_identity(tmp_path / "missing.pt")


def test_checkpoint_identity_of_a_folder_covers_every_file(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "a.bin").write_bytes(b"a")
    first = checkpoint_identity(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "sub").mkdir()
    (tmp_path / "ckpt" / "sub" / "b.bin").write_bytes(b"b")
    cache_module._stat_identity.cache_clear()
    assert checkpoint_identity(tmp_path / "ckpt") != first


# ---------------------------------------------------------------- the evo2 resource end to end (CPU)


@pytest.fixture
def evo2_stand_in(monkeypatch):
    """``_load_evo2`` replaced by a tiny uniform model; ``loaded`` sets the overlap and parameter dtype the
    next load uses (what a real checkpoint and scorer would decide)."""
    torch = pytest.importorskip("torch")
    from resources.evo2.torch_backend import Evo2TorchScorer

    class Uniform(torch.nn.Module):
        def __init__(self, dtype):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1, dtype=dtype))

        def forward(self, ids):
            logits = torch.full((*ids.shape, 512), -1e4)
            logits[..., [65, 67, 71, 84]] = 0.0
            return logits * self.scale.float()

    loaded = {"window_overlap": None, "dtype": torch.float32}

    def fake_load(name, local_path, device, batch_size, max_context):
        return Evo2TorchScorer(Uniform(loaded["dtype"]), device="cpu", batch_size=batch_size, max_context=max_context,
                               window_overlap=loaded["window_overlap"], model_version=f"evo2:{name}")

    monkeypatch.setattr(resource_module, "_load_evo2", fake_load)
    return loaded, torch


def score(evo2: Evo2Resource, records: pa.Table) -> tuple[int, str]:
    """(records scored rather than read from the cache, the cache key) of one run in a fresh resource."""
    evo2.setup_for_execution(None)
    scorer = CountingScorer(evo2.scorer())
    cache = evo2.cache()
    table, summary = extract_features(records, scorer, cache)
    assert summary.success == records.num_rows
    return scorer.scored, cache.key(scorer.backend, scorer.model_version)


def test_evo2_key_follows_checkpoint_context_overlap_and_precision(tmp_path, evo2_stand_in):
    loaded, torch = evo2_stand_in
    records = records_of()
    n = records.num_rows
    weights = tmp_path / "evo2_7b.pt"
    weights.write_bytes(b"weights" * 10)

    def resource(**kw):
        args = dict(backend="evo2", device="cpu", max_context=64, local_path=str(weights),
                    cache_dir=str(tmp_path / "c"))
        return Evo2Resource(**{**args, **kw})

    scored, key = score(resource(), records)
    assert scored == n
    keys = {key}
    assert score(resource(), records) == (0, key)  # identical settings: everything reused

    def changed(**kw):  # scored afresh under a key never seen before
        scored, new_key = score(resource(**kw), records)
        assert scored == n and new_key not in keys
        keys.add(new_key)

    changed(max_context=128)  # the context length (every sequence here fits either window)
    loaded["window_overlap"] = 8
    changed()  # the window overlap
    loaded["window_overlap"] = None
    loaded["dtype"] = torch.float64
    changed()  # the precision: the model's parameter dtype
    loaded["dtype"] = torch.float32
    moved = tmp_path / "moved" / "evo2_7b.pt"
    moved.parent.mkdir()
    shutil.copy2(weights, moved)
    changed(local_path=str(moved))  # the same bytes at another path
    weights.write_bytes(b"fine-tuned" * 10)
    cache_module._stat_identity.cache_clear()  # the next process sees the new weights
    changed()  # the checkpoint's content at the same path
    assert score(resource(local_path=str(moved)), records)[0] == 0  # the untouched copy's entries still count


def test_evo2_key_follows_autocast(tmp_path, evo2_stand_in, monkeypatch):
    """bf16 autocast (a GPU that supports it) is part of the key; checked on the key, no GPU needed."""
    from resources.evo2.torch_backend import Evo2TorchScorer

    evo2 = Evo2Resource(backend="evo2", device="cpu", cache_dir=str(tmp_path))
    evo2.setup_for_execution(None)
    plain = evo2.cache().key("evo2", "evo2:evo2_7b")
    monkeypatch.setattr(Evo2TorchScorer, "_bf16_autocast", lambda self: True)
    assert evo2._token_scorer.precision.startswith("autocast-bf16")
    assert evo2.cache().key("evo2", "evo2:evo2_7b") != plain


# ---------------------------------------------------------------- the nim resource against the stand-in


@pytest.mark.parametrize("where", ["header", "body"])
def test_nim_key_names_the_version_the_server_reports(tmp_path, where):
    from codon_assets_tests.nim_standin import NimStandin

    records = records_of()
    n = records.num_rows
    with NimStandin(api_key=None, model_version="2.1.0", model_version_in=where) as nim:
        def run() -> tuple[int, int, str]:
            evo2 = Evo2Resource(backend="nim", nim_base_url=nim.url, nim_api_key_env="CODON_TEST_NO_KEY",
                                requests_per_minute=100_000, cache_dir=str(tmp_path))
            posts = nim.count("POST")
            scored, key = score(evo2, records)
            evo2._token_scorer.close()
            return scored, nim.count("POST") - posts, key

        scored, posts, key = run()
        assert (scored, posts) == (n, n) and key.endswith("/v-2.1.0")  # nothing cached yet: no probe
        assert run() == (0, 1, key)  # one short probe names the served model; every record reused
        nim.model_version = "2.2.0"  # the server now serves another model
        scored, posts, new_key = run()
        assert (scored, posts) == (n, n + 1) and new_key.endswith("/v-2.2.0")
        assert run() == (0, 1, new_key)


def test_nim_without_a_reported_version_still_reuses_its_cache(tmp_path):
    from codon_assets_tests.nim_standin import NimStandin

    records = records_of()
    with NimStandin(api_key=None) as nim:
        def run():
            evo2 = Evo2Resource(backend="nim", nim_base_url=nim.url, nim_api_key_env="CODON_TEST_NO_KEY",
                                requests_per_minute=100_000, cache_dir=str(tmp_path))
            scored, key = score(evo2, records)
            evo2._token_scorer.close()
            return scored, key

        scored, key = run()
        assert scored == records.num_rows and key.endswith("/v-unreported")
        assert run() == (0, key)
        nim.model_version = "3.0"  # the server starts naming its model: the unversioned entries are not its
        scored, new_key = run()
        assert scored == records.num_rows and new_key != key


def test_nim_versions_seen_mid_run_make_a_key_no_single_version_run_reuses(tmp_path):
    """If the served model changes during a run, later rows go under "old+new", never read back by a run
    that is served one version; with no reply yet and no probe allowed, the version is unknown."""

    class Seen:
        versions: frozenset = frozenset()

        def served_versions(self):
            return self.versions

    evo2 = Evo2Resource(backend="nim", cache_dir=str(tmp_path))
    evo2._token_scorer = Seen()
    assert evo2._served_version(False) is None
    Seen.versions = frozenset({"2.2.0", "2.1.0"})
    assert evo2._served_version(False) == "2.1.0+2.2.0"
    assert evo2.cache().key("nim", "nim:evo2-40b:output_layer").endswith("/v-2.1.0_2.2.0-" + hashlib.sha256(
        b"2.1.0+2.2.0").hexdigest()[:8])


def test_nim_version_never_carries_the_api_key_to_disk(tmp_path, monkeypatch):
    from codon_assets_tests.nim_standin import NimStandin

    marker = "nvapi-VERSION-ECHO-91b2"
    monkeypatch.setenv("CODON_TEST_NIM_KEY", marker)
    with NimStandin(api_key=marker, model_version=f"2.1.0 Bearer {marker}") as nim:
        evo2 = Evo2Resource(backend="nim", nim_base_url=nim.url, nim_api_key_env="CODON_TEST_NIM_KEY",
                            requests_per_minute=100_000, cache_dir=str(tmp_path))
        scored, key = score(evo2, records_of())
        evo2._token_scorer.close()
    assert scored == 4 and marker not in key
    for path in tmp_path.rglob("*"):
        assert marker not in str(path) and (path.is_dir() or marker.encode() not in path.read_bytes())
