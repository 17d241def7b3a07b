"""Versioned asset storage: every run's version of a partition is kept (up to keep_versions), `history` lists
them, `rollback` makes one current again and records it; the same on an S3-compatible object store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from codon_assets.cli import main
from codon_assets.definitions import defs
from codon_assets_tests.conftest import EXAMPLES
from codon_assets_tests.test_assets import INGEST_AND_FEATURES, materialize, resources_for
from resources.io_manager import ParquetIOManager

HOST = "P_pastoris"
CONVERTED = dg.AssetKey("converted_dataset")


@pytest.fixture(autouse=True)
def local_asset_store(monkeypatch):
    monkeypatch.delenv("CODON_ASSET_STORE", raising=False)


def limited(n: int) -> dict:
    return {"ops": {"converted_dataset": {"config": {"limit": n}}}}


def cli_json(capsys, *argv: str) -> list[dict]:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# --- a small asset graph, to exercise the manager itself -------------------------------------------------

PARTS = dg.StaticPartitionsDefinition(["a", "b", "c"])
VALUES = {"x": 0}


@dg.asset(partitions_def=PARTS)
def numbers() -> pa.Table:
    return pa.table({"x": [VALUES["x"]] * 3, "label": ["n"] * 3})


@dg.asset(partitions_def=PARTS, ins={"numbers": dg.AssetIn(metadata={"columns": ["x"]})})
def projected(numbers: pa.Table) -> pa.Table:
    assert numbers.column_names == ["x"]  # only the columns the input asks for are read
    return numbers


@dg.asset(ins={"numbers": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())})
def every_partition(numbers: dict[str, pa.Table]) -> pa.Table:
    return pa.table({"partition": sorted(numbers), "x": [numbers[k]["x"][0].as_py() for k in sorted(numbers)]})


def write_versions(manager: ParquetIOManager, instance, values: list[int], partition: str = "a") -> list[str]:
    """Materialize `numbers` and `projected` once per value; the run ids, oldest first."""
    run_ids = []
    for value in values:
        VALUES["x"] = value
        result = dg.materialize([numbers, projected], partition_key=partition, instance=instance,
                                resources={"io_manager": manager})
        assert result.success
        run_ids.append(result.run_id)
    return run_ids


def check_manager(manager: ParquetIOManager, instance) -> None:
    """Versions, pruning, the current table, many-partition loads: the same on every backend."""
    run_ids = write_versions(manager, instance, [1, 2, 3])
    store = manager.partition(dg.AssetKey("numbers"), "a")
    assert [v.run_id for v in store.versions()] == run_ids[:0:-1]  # keep_versions=2, newest first
    assert store.current_run() == run_ids[-1]
    assert store.read(None)["x"].to_pylist() == [3, 3, 3]
    assert store.read(run_ids[1])["x"].to_pylist() == [2, 2, 2]  # a run reads its own version
    store.make_current(run_ids[1])
    assert store.current_run() == run_ids[1] and store.read(None)["x"][0].as_py() == 2
    write_versions(manager, instance, [7], partition="c")
    result = dg.materialize([numbers, every_partition], selection=[every_partition], instance=instance,
                            resources={"io_manager": manager})
    loaded = result.output_for_node("every_partition")
    assert loaded.to_pydict() == {"partition": ["a", "c"], "x": [2, 7]}  # b was never materialized


def test_local_versions_are_kept_pruned_and_linked(instance, tmp_path):
    manager = ParquetIOManager(base_dir=str(tmp_path), keep_versions=2)
    check_manager(manager, instance)
    folder = tmp_path / "numbers" / "a"
    kept = sorted(p.name for p in folder.iterdir())
    assert len(kept) == 2 and all(name.endswith(".parquet") for name in kept)
    # The current table is a hard link to the version that is current: same file, no copy.
    current = manager.partition(dg.AssetKey("numbers"), "a").current_run()
    assert os.path.samefile(tmp_path / "numbers" / "a.parquet", folder / f"{current}.parquet")
    assert (tmp_path / "every_partition" / "data.parquet").exists()  # unpartitioned: <asset>/data.parquet


def test_object_store_layout_without_links(instance):
    """An fsspec store without links (in memory here, S3 below): CURRENT names the current version."""
    manager = ParquetIOManager(base_dir=f"memory://codon-{os.getpid()}-{time.time_ns()}/assets", keep_versions=2)
    check_manager(manager, instance)
    store = manager.partition(dg.AssetKey("numbers"), "a")
    assert store.fs.cat_file(store.pointer.path).decode() == store.current_run()
    assert not store.current.exists()  # no copy of the current table


def test_metadata_path_names_the_runs_version(instance, tmp_path):
    result = materialize(instance, HOST, EXAMPLES, tmp_path, selection=["raw_tsv", "converted_dataset", "converted_rejects"])
    meta = next(e.step_materialization_data.materialization.metadata for e in result.get_asset_materialization_events()
                if e.asset_key == CONVERTED)
    assert meta["path"].value == str(tmp_path / "converted_dataset" / HOST / f"{result.run_id}.parquet")
    assert meta["bytes"].value == os.path.getsize(meta["path"].value)


# --- history and rollback on the project's assets ----------------------------------------------------------

def test_history_and_rollback_after_a_bad_run(instance, dagster_home, tmp_path, capsys):
    """A good run, then a bad one (a truncated input file): history lists both, rollback restores the good
    table, the next load reads it, the rollback is the partition's latest materialization, and what was built
    from the bad data is stale."""
    storage = dagster_home / "codon_assets"  # where the code location's io_manager writes by default
    inputs = tmp_path / "in"
    inputs.mkdir()
    release = (EXAMPLES / "Pic.tsv").read_text().splitlines(keepends=True)
    (inputs / "Pic.tsv").write_text("".join(release))
    good = materialize(instance, HOST, inputs, storage)
    (inputs / "Pic.tsv").write_text("".join(release[:21]))
    bad = materialize(instance, HOST, inputs, storage)
    assert good.success and bad.success
    current = storage / "converted_dataset" / f"{HOST}.parquet"
    good_version = storage / "converted_dataset" / HOST / f"{good.run_id}.parquet"
    good_rows = pq.read_table(good_version).num_rows
    assert pq.read_table(current).num_rows < good_rows
    # History orders by the runs, not by the store's clock (an object store keeps whole seconds, so two runs
    # within a second tie; writers' clocks differ): the older version gets the later modification time.
    later = (storage / "converted_dataset" / HOST / f"{bad.run_id}.parquet").stat().st_mtime + 5
    os.utime(good_version, (later, later))

    entries = cli_json(capsys, "history", "--asset", "converted_dataset", "--host", HOST)
    assert [e["run_id"] for e in entries] == [bad.run_id, good.run_id]
    assert [e["current"] for e in entries] == [True, False]
    assert entries[1]["rows"] == good_rows and entries[1]["run_status"] == "SUCCESS" and entries[1]["data_version"]

    assert main(["rollback", "--asset", "converted_dataset", "--host", HOST, "--run", good.run_id[:8]]) == 0
    out = capsys.readouterr().out
    assert f"run {good.run_id} is current again" in out and "rollback --asset converted_rejects" in out
    assert pq.read_table(current).num_rows == good_rows
    entries = cli_json(capsys, "history", "--asset", "converted_dataset", "--host", HOST)
    assert [e["current"] for e in entries] == [False, True] and "rolled_back_at" in entries[1]

    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CONVERTED, asset_partitions=[HOST]), limit=1).records[0]
    metadata = latest.asset_materialization.metadata
    assert metadata["rolled_back_to_run"].value == good.run_id and metadata["rolled_back_from_run"].value == bad.run_id
    assert metadata["path"].value == entries[1]["path"]
    assert latest.asset_materialization.tags["dagster/data_version"] == entries[1]["data_version"]
    stale = get_stale_status_resolver(instance, list(defs.assets))
    assert stale.get_status(dg.AssetKey("evo2_features"), HOST) == StaleStatus.STALE
    causes = stale.get_stale_root_causes(dg.AssetKey("evo2_features"), HOST)
    assert any(c.asset_key == CONVERTED for c in causes)

    # The next run of the downstream asset reads the restored table.
    again = materialize(instance, HOST, inputs, storage, selection=["evo2_features"])
    assert again.success
    assert pq.read_table(storage / "evo2_features" / f"{HOST}.parquet").num_rows == good_rows

    capsys.readouterr()
    assert main(["history", "--asset", "converted_dataset", "--host", HOST]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"converted_dataset[{HOST}]: 2 stored versions")
    assert lines[2].startswith(f"* {good.run_id}") and "rolled back at" in lines[2]


@pytest.mark.parametrize(("argv", "message", "code"), [
    (["history", "--asset", "nope", "--host", HOST], "unknown asset 'nope'", 2),
    (["history", "--asset", "surrogate_model", "--host", HOST], "surrogate_model is not stored as Parquet tables", 2),
    (["history", "--asset", "converted_dataset", "--host", "Mars"], "unknown host 'Mars'", 2),
    (["history", "--asset", "converted_dataset"], "--host is required", 2),
    (["history", "--asset", "converted_dataset", "--host", HOST], "has no stored versions", 1),
    (["rollback", "--asset", "converted_dataset", "--host", HOST, "--run", "0000"], "no stored version", 2),
])
def test_history_errors_are_one_line(dagster_home, capsys, argv, message, code):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_rollback_to_a_pruned_version_says_so(instance, dagster_home, capsys):
    storage = dagster_home / "codon_assets"
    selection = ["raw_tsv", "converted_dataset", "converted_rejects"]
    manager = ParquetIOManager(base_dir=str(storage), keep_versions=1)
    runs = [dg.materialize(list(defs.assets), partition_key=HOST, instance=instance, selection=selection, run_config=limited(n),
                           resources=resources_for(EXAMPLES, storage) | {"io_manager": manager}).run_id
            for n in (30, 40)]
    assert main(["rollback", "--asset", "converted_dataset", "--host", HOST, "--run", runs[0]]) == 1
    assert "was pruned: only the newest 5 versions are kept" in capsys.readouterr().err
    assert main(["rollback", "--asset", "converted_dataset", "--host", HOST, "--run", runs[1]]) == 0
    assert "already current; nothing changed" in capsys.readouterr().out


# --- S3 ------------------------------------------------------------------------------------------------

@pytest.fixture
def s3_bucket(monkeypatch):
    """A moto S3 server on a free loopback port, one bucket, and AWS_* variables pointing at it."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[dev]')")
    boto3 = pytest.importorskip("boto3")
    s3fs = pytest.importorskip("s3fs")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on {endpoint}") from None
                time.sleep(0.1)
        boto3.client("s3").create_bucket(Bucket="codon-assets-test")
        yield "codon-assets-test"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()  # cached clients hold connections to this server
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.integration
def test_versions_history_and_rollback_on_s3(instance, dagster_home, s3_bucket, tmp_path, capsys):
    url = f"s3://{s3_bucket}/codon"
    manager = ParquetIOManager(base_dir=url)

    def run(config: dict, selection: list[str] = INGEST_AND_FEATURES) -> dg.ExecuteInProcessResult:
        result = dg.materialize(list(defs.assets), partition_key=HOST, instance=instance, selection=selection,
                                run_config=config, resources=resources_for(EXAMPLES, tmp_path) | {"io_manager": manager})
        assert result.success
        return result

    good, bad = run(limited(60)), run(limited(15))
    meta = {e.asset_key: e.step_materialization_data.materialization.metadata for e in good.get_asset_materialization_events()}
    assert meta[CONVERTED]["path"].value == f"{url}/converted_dataset/{HOST}/{good.run_id}.parquet"
    store = manager.partition(CONVERTED, HOST)
    good_rows = store.rows(store.version(good.run_id))
    assert store.read(None).num_rows < good_rows and store.current_run() == bad.run_id

    entries = cli_json(capsys, "history", "--asset", "converted_dataset", "--host", HOST, "--storage", url)
    assert [(e["run_id"], e["current"]) for e in entries] == [(bad.run_id, True), (good.run_id, False)]
    assert main(["rollback", "--asset", "converted_dataset", "--host", HOST, "--run", good.run_id,
                 "--storage", url]) == 0
    assert store.current_run() == good.run_id
    assert store.read(None, columns=["protein_id"]).num_rows == good_rows
    evo2 = run({}, selection=["evo2_features"])  # the next load reads the restored table from S3
    features = manager.partition(dg.AssetKey("evo2_features"), HOST)
    assert features.current_run() == evo2.run_id and features.read(None).num_rows == good_rows


@pytest.mark.integration
def test_the_command_line_exports_read_the_runs_version_from_s3(dagster_home, s3_bucket, tmp_path, monkeypatch):
    """With the asset tables on an object store, `run` writes its exports from the run's own stored versions."""
    url = f"s3://{s3_bucket}/cli"
    monkeypatch.setenv("CODON_ASSET_STORE", url)
    out = tmp_path / "out"
    assert main(["run", "--input", str(EXAMPLES / "Pic.tsv"), "--output-dir", str(out), "--limit", "40"]) == 0
    results = json.loads((out / "pipeline_results.json").read_text())
    assert results["outputs"]["converted_parquet"].startswith(f"{url}/converted_dataset/{HOST}/")
    lines = (out / "Pic.jsonl").read_text().splitlines()
    assert len(lines) == results["steps"]["convert"]["valid"] > 0
    features = json.loads((out / "Pic_evo2_features.json").read_text())
    assert len(features) == len(lines)
