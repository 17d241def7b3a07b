"""The command line under hostile-but-normal use: arguments and outputs checked before work starts,
unusable input never replaces stored data, every file of a host is one partition input, concurrent runs
export their own data, configuration overrides keep the rest of the configuration, and a record without
features gets no prediction."""

import bz2
import json
import os
import subprocess
import sys

import dagster as dg
import pyarrow.parquet as pq
import pytest

from codon_assets.cli import main
from codon_assets.core.tsv import RELEASE_COLUMNS
from codon_assets_tests.conftest import EXAMPLES, ROOT

PIC_LINES = (EXAMPLES / "Pic.tsv").read_text().splitlines()
HEADER = PIC_LINES[0]


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("limit", ["-1", "0", "ten"])
def test_limit_below_one_is_refused_before_work(dagster_home, tmp_path, limit, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", "--input", str(EXAMPLES / "Pic.tsv"), "--output-dir", str(tmp_path / "out"), "--limit", limit])
    assert exited.value.code == 2 and "--limit" in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_input_without_a_valid_record_leaves_the_stored_data_untouched(dagster_home, tmp_path, capsys):
    good = write_lines(tmp_path / "good" / "Pic.tsv", PIC_LINES[1:60])
    assert main(["run", "--input", str(good), "--output-dir", str(tmp_path / "out")]) == 0
    stored = dagster_home / "codon_assets" / "converted_dataset" / "P_pastoris.parquet"
    before = pq.read_table(stored)
    header_only = write_lines(tmp_path / "header" / "Pic.tsv", [])
    all_rejected = write_lines(tmp_path / "bad" / "Pic.tsv", [
        "\t".join(f"BAD{i}" if c == "Entry" else ("ATGNNNTAA" if c == "RefSeq_nn" else "") for c in RELEASE_COLUMNS)
        for i in range(5)])
    capsys.readouterr()
    for source, message in ((header_only, "no data rows"), (all_rejected, "no valid record")):
        assert main(["run", "--input", str(source), "--output-dir", str(tmp_path / "again")]) == 1
        assert message in error_line(capsys) and "unchanged" in message + " unchanged"
        assert pq.read_table(stored).equals(before)


def test_a_folder_with_two_files_of_one_host_is_one_partition(dagster_home, tmp_path):
    data = tmp_path / "in"
    write_lines(data / "Pic.tsv", PIC_LINES[1:100])
    # The second file repeats one record of the first: rejected as a duplicate, naming the kept one.
    write_lines(data / "P_pastoris" / "more.tsv", PIC_LINES[100:] + [PIC_LINES[1]])
    assert main(["run", "--input", str(data), "--output-dir", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "P_pastoris" / "pipeline_results.json").read_text())
    convert = results["steps"]["convert"]
    assert results["inputs"] == [str((data / "Pic.tsv").resolve()), str((data / "P_pastoris" / "more.tsv").resolve())]
    assert [f["data_lines"] for f in convert["files"]] == [99, len(PIC_LINES) - 100 + 1]
    assert convert["rows_read"] == len(PIC_LINES) == convert["valid"] + convert["rejected"]
    assert sum(f["valid"] for f in convert["files"]) == convert["valid"]
    rejects = pq.read_table(results["outputs"]["rejects_parquet"]).to_pylist()
    last = [r for r in rejects if r["source_file"].endswith("more.tsv") and r["source_row"] == len(PIC_LINES) - 99]
    assert last and set(last[0]["reasons"]) & {"duplicate_sequence", "duplicate_id"}
    lines = (tmp_path / "out" / "P_pastoris" / "P_pastoris.jsonl").read_text().splitlines()
    assert len(lines) == convert["valid"]
    assert {json.loads(line)["extra_features"]["source_file"] for line in lines} == {
        str((data / "Pic.tsv").resolve()), str((data / "P_pastoris" / "more.tsv").resolve())}


@pytest.mark.integration
def test_concurrent_runs_of_one_host_export_their_own_data(tmp_path):
    inputs = [write_lines(tmp_path / f"in{i}" / "Pic.tsv", part)
              for i, part in enumerate((PIC_LINES[1:120], PIC_LINES[120:]))]
    expected = [{line.split("\t")[0] for line in path.read_text().splitlines()[1:]} for path in inputs]
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    procs = [subprocess.Popen([sys.executable, "-m", "codon_assets.cli", "run", "--input", str(path),
                               "--output-dir", str(tmp_path / f"out{i}")], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, path in enumerate(inputs)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    for i in range(2):
        results = json.loads((tmp_path / f"out{i}" / "pipeline_results.json").read_text())
        ids = {json.loads(line)["protein_id"] for line in (tmp_path / f"out{i}" / "Pic.jsonl").read_text().splitlines()}
        assert ids and ids <= expected[i] and len(ids) == results["steps"]["convert"]["valid"]
        features = json.loads((tmp_path / f"out{i}" / "Pic_evo2_features.json").read_text())
        assert {f["metadata"]["request_id"] for f in features} == ids
        assert set(pq.read_table(results["outputs"]["converted_parquet"])["protein_id"].to_pylist()) == ids


def test_backend_flag_keeps_the_rest_of_the_configuration(dagster_home, tmp_path, monkeypatch):
    """`--evo2-backend nim` must send the key to CODON_NIM_URL (not the default URL) and use
    CODON_FEATURE_CACHE_DIR."""
    from codon_assets_tests.nim_standin import NimStandin

    marker = "nvapi-CONFIG-KEEP-77"
    monkeypatch.setenv("NVIDIA_API_KEY", marker)
    monkeypatch.setenv("CODON_FEATURE_CACHE_DIR", str(tmp_path / "cache"))
    small = write_lines(tmp_path / "in" / "Pic.tsv", PIC_LINES[1:6])
    with NimStandin(api_key=marker) as nim:
        monkeypatch.setenv("CODON_NIM_URL", nim.url)
        assert main(["run", "--input", str(small), "--output-dir", str(tmp_path / "out"), "--evo2-backend", "nim"]) == 0
        posts = nim.count("POST")
    results = json.loads((tmp_path / "out" / "pipeline_results.json").read_text())
    assert results["steps"]["evo2_features"]["backend"] == "nim"
    assert posts == results["steps"]["evo2_features"]["success"] > 0
    assert list((tmp_path / "cache").rglob("*.parquet"))


def test_predict_gives_no_prediction_to_a_record_without_features(instance, dagster_home, tmp_path, monkeypatch, capsys):
    from codon_assets.definitions import defs
    from codon_assets_tests.nim_standin import NimStandin
    from codon_assets_tests.test_assets import resources_for
    from resources.evo2.resource import Evo2Resource

    monkeypatch.setenv("NVIDIA_API_KEY", "test-key")
    with NimStandin(api_key="test-key") as nim:
        resources = resources_for(EXAMPLES, tmp_path / "s")
        resources["evo2"] = Evo2Resource(backend="nim", nim_base_url=nim.url, requests_per_minute=100_000,
                                         cache_dir=str(tmp_path / "cache"))
        result = dg.materialize(list(defs.assets), partition_key="P_pastoris", instance=instance, resources=resources,
                                selection=["raw_tsv", "converted_dataset", "converted_rejects", "markov_model", "evo2_features",
                                           "enhanced_dataset", "surrogate_model"])
    assert result.success
    model_dir = result.asset_materializations_for_node("surrogate_model")[0].metadata["path"].value
    # The NIM is down now (a closed port), and the records are not in the cache it is given.
    monkeypatch.setenv("CODON_NIM_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CODON_FEATURE_CACHE_DIR", str(tmp_path / "empty-cache"))
    records = write_lines(tmp_path / "in" / "Pic.tsv", PIC_LINES[1:4])
    out = tmp_path / "pred.tsv"
    capsys.readouterr()
    assert main(["predict", "--model", model_dir, "--input", str(records), "--output", str(out)]) == 1
    assert "nothing could be predicted" in error_line(capsys)
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert rows[0] == ["protein_id", "mu", "sigma", "status", "reason"]
    assert rows[1:] and all(r[1] == "" and r[2] == "" and r[3] == "not_predicted" and "features_failed" in r[4]
                            for r in rows[1:])


def test_outputs_and_arguments_are_refused_before_work(dagster_home, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["run", "--input", str(EXAMPLES / "Pic.tsv"), "--output-dir", str(a_file)]) == 2
    assert "not a directory" in error_line(capsys)
    with dg.DagsterInstance.get() as instance:
        assert not instance.get_runs()  # refused before any run started
    garbage_model = tmp_path / "model.pkl"
    garbage_model.write_bytes(b"\x80\x04not a pickle at all")
    proteins = EXAMPLES.parent / "proteins" / "P_pastoris.fasta"
    assert main(["predict", "--model", str(garbage_model), "--input", str(EXAMPLES / "Pic.tsv"),
                 "--output", str(tmp_path / "p.tsv")]) == 1
    assert "not a codon-assets surrogate" in error_line(capsys)
    assert main(["predict", "--model", str(garbage_model), "--input", str(EXAMPLES / "Pic.tsv"),
                 "--output", str(tmp_path)]) == 2
    assert "is a directory" in error_line(capsys)
    assert not list(tmp_path.glob(".*.tmp"))
    bz = tmp_path / "Pic.tsv"  # gzip is read by content; a format that is not is refused before the model loads
    bz.write_bytes(bz2.compress((EXAMPLES / "Pic.tsv").read_bytes()))
    assert main(["predict", "--model", str(garbage_model), "--input", str(bz), "--output", str(tmp_path / "p.tsv")]) == 1
    assert "bzip2" in error_line(capsys)
    empty = tmp_path / "P_pastoris.fasta"
    empty.write_text("")
    assert main(["design", "--model", str(garbage_model), "--input", str(empty), "--output", str(tmp_path / "d.tsv")]) == 1
    error_line(capsys)
    for flag in ("--steps", "--group"):
        with pytest.raises(SystemExit) as exited:
            main(["design", "--model", "x", "--input", str(proteins), "--output", str(tmp_path / "d.tsv"), flag, "-5"])
        assert exited.value.code == 2 and flag in error_line(capsys)


def test_a_pipe_as_input_is_refused_before_work_and_never_blocks(tmp_path):
    fifo = tmp_path / "Pic.tsv"
    os.mkfifo(fifo)  # nobody writes to it: opening it would block for ever
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    for command in (["run", "--input", str(fifo), "--output-dir", str(tmp_path / "out")],
                    ["predict", "--model", "codon-surrogate-P_pastoris", "--input", str(fifo),
                     "--output", str(tmp_path / "p.tsv")],
                    ["design", "--model", "codon-surrogate-P_pastoris", "--input", str(fifo),
                     "--output", str(tmp_path / "d.tsv")]):
        done = subprocess.run([sys.executable, "-m", "codon_assets.cli", *command], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and "not a regular file" in done.stderr.strip().splitlines()[-1], done.stderr
    assert not (tmp_path / "home" / "codon_assets").exists() and not (tmp_path / "out").exists()


def _start_slow_nim_run(tmp_path, nim, name):
    """A CLI run whose evo2_features step holds the gpu slot while a slow NIM answers."""
    import time

    source = write_lines(tmp_path / name / "Pic.tsv", PIC_LINES[1:6])
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "CODON_NIM_URL": nim.url,
           "NVIDIA_API_KEY": "test-key", "CODON_FEATURE_CACHE_DIR": str(tmp_path / name / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "codon_assets.cli", "run", "--input", str(source),
                             "--output-dir", str(tmp_path / name / "out"), "--evo2-backend", "nim"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while nim.count("POST") == 0:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.1)
    return proc, env


@pytest.mark.integration
def test_a_killed_run_does_not_block_the_next_one(tmp_path, monkeypatch):
    """SIGKILL inside evo2_features leaves the run STARTED with the gpu slot; the next command fails that run,
    frees the slot and completes instead of waiting forever."""
    import signal

    from codon_assets_tests.nim_standin import NimStandin

    with NimStandin(api_key="test-key", latency=lambda sequence: 30.0) as nim:
        killed, env = _start_slow_nim_run(tmp_path, nim, "killed")
        killed.send_signal(signal.SIGKILL)
        killed.communicate()
    env = {**os.environ, "DAGSTER_HOME": env["DAGSTER_HOME"]}
    nxt = subprocess.run([sys.executable, "-m", "codon_assets.cli", "run", "--input", str(EXAMPLES / "Pic.tsv"),
                          "--output-dir", str(tmp_path / "next")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert nxt.returncode == 0, nxt.stderr[-2000:]
    assert "is gone" in nxt.stderr and "pool slots freed" in nxt.stderr
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as instance:
        statuses = sorted(run.status.value for run in instance.get_runs())
        assert statuses == ["FAILURE", "SUCCESS"]
        assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots


@pytest.mark.integration
@pytest.mark.parametrize("signum, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_stops_the_command_and_frees_the_slot(tmp_path, monkeypatch, signum, code):
    import signal
    import time

    from codon_assets_tests.nim_standin import NimStandin

    with NimStandin(api_key="test-key", latency=lambda sequence: 30.0) as nim:
        proc, env = _start_slow_nim_run(tmp_path, nim, "stopped")
        sent = time.monotonic()
        proc.send_signal(getattr(signal, signum))
        _, stderr = proc.communicate(timeout=30)
        elapsed = time.monotonic() - sent
    assert proc.returncode == code and elapsed < 10, (elapsed, stderr[-2000:])
    assert "Traceback" not in stderr
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        assert run.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE)
        assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots


def test_two_commands_starting_on_one_new_home_both_set_it_up(tmp_path, monkeypatch):
    from pathlib import Path

    from codon_assets.cli.common import ensure_instance_home

    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_instance_home()  # the other command, which linked dagster.yaml first
    config = home / "dagster.yaml"
    exists = Path.exists
    # This command checked before the other linked it: it finds no config, then the link already there.
    monkeypatch.setattr(Path, "exists", lambda self: False if self == config else exists(self))
    assert ensure_instance_home() == home and config.resolve() == (ROOT / "dagster.yaml").resolve()
