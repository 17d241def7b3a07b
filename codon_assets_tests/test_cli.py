"""The command line: materializes through Dagster on the persistent instance and writes the seed files."""

import json
import os
import subprocess
import sys

import dagster as dg
import pyarrow.parquet as pq
import pytest

from codon_assets.cli import main
from codon_assets_tests.conftest import EXAMPLES, ROOT, shared_file, write_tsv


def run_cli(*args, env_home=None, extra_env=None):
    """The installed entry point in a subprocess, as a user would run it."""
    env = {**os.environ, "DAGSTER_HOME": str(env_home)} if env_home else dict(os.environ)
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "codon_assets.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=900)


def test_run_writes_jsonl_and_results_and_shows_in_the_instance(dagster_home, tmp_path, capsys):
    assert main(["run", "--input", str(EXAMPLES / "Sac.tsv"), "--output-dir", str(tmp_path), "--limit", "120"]) == 0
    results = json.loads((tmp_path / "pipeline_results.json").read_text())
    convert = results["steps"]["convert"]
    assert results["status"] == "success" and results["host"] == "S_cerevisiae"
    assert convert["rows_read"] == 120 == convert["valid"] + convert["rejected"]
    assert sum(convert["rejects_by_reason"].values()) >= convert["rejected"]
    assert convert["seconds"] > 0 and results["total_seconds"] >= convert["seconds"]
    lines = (tmp_path / "Sac.jsonl").read_text().splitlines()
    assert len(lines) == convert["valid"]
    record = json.loads(lines[0])
    assert list(record) == ["sequence", "protein_aa", "host", "expression", "extra_features", "metadata", "protein_id"]
    assert record["expression"]["unit"] == "estimated" and record["expression"]["assay"] == "metadata_heuristic"
    assert set(record["extra_features"]) == {"length", "reviewed", "source_file"}
    assert record["metadata"]["Entry"] == record["protein_id"]
    # Every JSONL record is a converted row, unchanged.
    converted = pq.read_table(results["outputs"]["converted_parquet"]).to_pylist()
    assert [json.loads(line)["sequence"] for line in lines] == [r["sequence"] for r in converted]

    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(results["dagster_run_id"])
        assert run is not None and run.is_success
        assert instance.get_latest_materialization_event(dg.AssetKey("converted_dataset")) is not None


def test_run_on_the_whole_yeast_table(dagster_home, tmp_path):
    source = shared_file("yeast/Sac_ensembl.tsv")
    assert main(["run", "--input", str(source), "--host", "S_cerevisiae", "--output-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "pipeline_results.json").read_text())
    convert = results["steps"]["convert"]
    assert convert["valid"] + convert["rejected"] == 6600 == convert["rows_read"]
    rejects = pq.read_table(results["outputs"]["rejects_parquet"]).to_pylist()
    assert len(rejects) == convert["rejected"] and all(r["reasons"] for r in rejects)
    assert sum(1 for _ in open(tmp_path / "Sac_ensembl.jsonl")) == convert["valid"]


def test_run_over_a_folder_runs_each_host(dagster_home, tmp_path):
    assert main(["run", "--input", str(EXAMPLES), "--output-dir", str(tmp_path), "--limit", "30"]) == 0
    for host, stem in [("S_cerevisiae", "Sac"), ("P_pastoris", "Pic")]:
        results = json.loads((tmp_path / host / "pipeline_results.json").read_text())
        assert results["steps"]["convert"]["rows_read"] == 30
        assert (tmp_path / host / f"{stem}.jsonl").exists()


@pytest.mark.integration
def test_bad_inputs_give_one_line_and_an_exit_code(tmp_path):
    home = tmp_path / "home"
    garbage = tmp_path / "Ec.tsv"
    garbage.write_bytes(bytes(range(256)) * 40)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    latin1 = tmp_path / "Human.tsv"
    latin1.write_bytes("Entry\tRefSeq_nn\tNote ü\n".encode("latin-1"))
    cases = [
        (["--input", tmp_path / "missing.tsv"], 1, "no such file"),
        (["--input", garbage], 1, "binary data"),
        (["--input", latin1], 1, "not UTF-8"),
        (["--input", empty_dir], 2, "no host input files"),
        (["--input", write_tsv(tmp_path / "x.tsv", [], ["Name", "Seq"])], 2, "cannot tell the host"),
        (["--input", write_tsv(tmp_path / "x.tsv", [], ["Name", "Seq"]), "--host", "E_coli"], 1, "missing required column"),
        (["--input", EXAMPLES / "Sac.tsv", "--host", "Zebrafish"], 2, "unknown host"),
    ]
    for args, code, message in cases:
        proc = run_cli("run", *args, "--output-dir", tmp_path / "out", env_home=home)
        assert proc.returncode == code, (args, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("codon-assets: error")]
        assert len(lines) == 1 and message in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_materialize_command_reports_hosts(tmp_path):
    proc = run_cli("materialize", "--host", "P_pastoris", env_home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert "[P_pastoris] materialized" in proc.stdout and "models:/codon-surrogate-P_pastoris/1" in proc.stdout
    assert "[unified] surrogate models:/codon-surrogate-unified/1" in proc.stdout
    assert "hosts without input data (not materialized): E_coli" in proc.stdout
    assert (tmp_path / "home" / "codon_assets" / "converted_dataset" / "P_pastoris.parquet").exists()


def test_run_writes_features_in_the_original_format(dagster_home, tmp_path):
    assert main(["run", "--input", str(EXAMPLES / "Pic.tsv"), "--output-dir", str(tmp_path), "--evo2-backend", "markov"]) == 0
    results = json.loads((tmp_path / "pipeline_results.json").read_text())
    step = results["steps"]["evo2_features"]
    assert step["records"] == step["success"] == results["steps"]["convert"]["valid"] and step["error"] == 0
    assert step["backend"] == "markov" and step["model_version"].startswith("markov-o5-k5")
    assert step["records_per_s"] > 0 and step["cache_hits"] == 0
    features = json.loads((tmp_path / "Pic_evo2_features.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "Pic.jsonl").read_text().splitlines()]
    assert len(features) == len(records)
    first = features[0]
    assert first["task"] == "extract_features" and first["status"] == "success"
    assert first["output"]["sequence"] == records[0]["sequence"][:50] + "..."
    assert first["output"]["sequence_length"] == len(records[0]["sequence"])
    assert set(first["metadata"]) == {"request_id", "processing_time_ms", "service"}
    assert first["metadata"]["request_id"] == records[0]["protein_id"]
    assert 0 < first["output"]["avg_confidence"] < 1 and first["output"]["perplexity"] > 1

    # A second run over the same input takes every score from the cache.
    assert main(["run", "--input", str(EXAMPLES / "Pic.tsv"), "--output-dir", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "pipeline_results.json").read_text())["steps"]["evo2_features"]
    assert again["cache_hits"] == step["records"]


def test_train_then_predict_from_pkl_and_registry(dagster_home, tmp_path):
    """run --train-surrogate (measured labels beside the input), then predict a held-out table three ways."""
    import csv

    rows = list(csv.reader(open(EXAMPLES / "Sac.tsv"), delimiter="\t"))
    train, heldout = tmp_path / "in" / "Sac.tsv", tmp_path / "heldout.tsv"
    train.parent.mkdir()
    train.write_text("\n".join("\t".join(r) for r in rows[:601]) + "\n")
    heldout.write_text("\n".join("\t".join(r) for r in [rows[0]] + rows[601:]) + "\n")
    (tmp_path / "in" / "Sac_measured.tsv").write_bytes((EXAMPLES / "Sac_measured.tsv").read_bytes())
    out = tmp_path / "out"
    assert main(["run", "--input", str(train), "--output-dir", str(out), "--train-surrogate"]) == 0
    results = json.loads((out / "pipeline_results.json").read_text())
    step = results["steps"]["train_surrogate"]
    assert step["label_source"] == "measured" and step["model_name"] == "codon-surrogate-S_cerevisiae"
    assert step["metrics"]["spearman"] > 0.3 and step["mlflow_run_id"]
    assert results["steps"]["enhance"]["measured_records"] > 500
    enhanced = [json.loads(line) for line in (out / "Sac_enhanced.jsonl").read_text().splitlines()]
    assert len(enhanced) == results["steps"]["convert"]["valid"]
    assert {"value", "unit", "assay", "confidence", "original_value"} <= set(enhanced[0]["expression"])
    assert enhanced[0]["expression"]["unit"] == "estimated_enhanced"

    predictions = {}
    for name, reference in [("pkl", str(out / "models" / "Sac_surrogate.pkl")),
                            ("registry", "codon-surrogate-S_cerevisiae"),
                            ("uri", step["model_uri"])]:
        target = tmp_path / f"pred_{name}.tsv"
        assert main(["predict", "--model", reference, "--input", str(heldout), "--output", str(target)]) == 0
        predictions[name] = target.read_text()
    assert predictions["pkl"] == predictions["registry"] == predictions["uri"]
    lines = predictions["pkl"].splitlines()
    assert lines[0] == "protein_id\tmu\tsigma\tstatus\treason" and len(lines) > 150
    mu = [float(line.split("\t")[1]) for line in lines[1:]]
    assert len(set(mu)) > 50  # real per-record predictions, not a constant
    assert main(["predict", "--model", "no-such-model", "--input", str(heldout), "--output", str(tmp_path / "x.tsv")]) == 1


def test_large_inputs_run_each_step_in_its_own_process(dagster_home, tmp_path):
    """Above the size threshold the run uses Dagster's multiprocess executor, one step at a time."""
    proc = run_cli("run", "--input", EXAMPLES / "Pic.tsv", "--output-dir", tmp_path / "out",
                   extra_env={"CODON_CLI_LARGE_INPUT_BYTES": "0"})
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "out" / "pipeline_results.json").read_text())
    assert results["status"] == "success" and results["steps"]["evo2_features"]["error"] == 0
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(results["dagster_run_id"])
        assert run.run_config["execution"]["config"] == {"multiprocess": {"max_concurrent": 1}}
        workers = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTED)
        assert len(workers) >= 3  # one process per step


def test_version_and_help_for_every_option(capsys):
    import argparse
    from importlib.metadata import version

    from codon_assets.cli import build_parser

    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out.strip() == f"codon-assets {version('codon-assets')}"
    parser = build_parser()
    assert "examples:" in parser.format_help()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, command in {"": parser, **commands}.items():
        for action in command._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, (name, action.option_strings)


def test_a_terminal_shows_step_progress_and_a_pipe_does_not(dagster_home, tmp_path, capsys, monkeypatch):
    args = ["run", "--input", str(EXAMPLES / "Pic.tsv"), "--limit", "60"]
    assert main([*args, "--output-dir", str(tmp_path / "pipe")]) == 0
    assert "step/s" not in capsys.readouterr().err  # not a terminal: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main([*args, "--output-dir", str(tmp_path / "tty")]) == 0
    err = capsys.readouterr().err
    assert "/4 [" in err and "step" in err  # tqdm's n/total [elapsed<remaining, rate]
