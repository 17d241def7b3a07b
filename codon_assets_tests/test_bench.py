"""Smoke test of `make bench`: every stage, the baseline ratio and the JSON, on a tiny generated table.
Figures are printed, never asserted: timings belong to `make bench` on a quiet machine."""

import json
import subprocess
import sys

import pytest

from bench.run import STAGES, main


def test_bench_runs_every_stage_and_reports_the_baseline_ratio(tmp_path, capsys):
    out = main(["--sizes", "400", "--repeats", "1", "--results-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    rows = {row["stage"]: row for row in report["results"]}
    assert set(rows) == set(STAGES)
    assert rows["convert"]["records"] == 400 and rows["graph"]["records"] == 400  # rows read, bad ones included
    assert 300 < rows["features"]["records"] < 400  # the generator plants rejected rows
    for row in rows.values():
        assert row["seconds_min"] > 0 and row["peak_rss_mib"] > 50, row
    for stage in ("convert", "features"):
        assert rows[stage]["speedup_vs_original"] > 0
        assert f"speed-up over the original approach, {stage} at 400 rows" in printed
    assert (tmp_path / "data" / "S_cerevisiae_400.tsv").exists()
    # The graph trains on the generated table's synthetic measured labels, and its steps are timed too.
    assert (tmp_path / "data" / "S_cerevisiae_400_measured.tsv").exists()
    assert rows["graph"]["step_seconds_median"]["train_surrogate"] > 0


def test_generated_measured_table_is_synthetic_and_learnable_from_the_sequence(tmp_path):
    """The bench's labels: one per good row, labelled synthetic, and a function of the CDS that a model on
    codon frequencies recovers out of sample."""
    import numpy as np
    from scipy import stats

    from bench.generate import generate, measured_path
    from codon_assets.core.convert import ConversionSettings, convert_files
    from codon_assets.core.hosts import get_host
    from codon_assets.core.labels import join_measured, read_measured
    from codon_assets.core.sequence_stats import codon_counts
    from codon_assets.core.surrogate import ridge_predict
    from codon_assets.core.tsv import read_release_table

    path = tmp_path / "Sac.tsv"
    planted = generate("S_cerevisiae", 1500, path, seed=2)
    labels = measured_path(path)
    assert labels.name == "Sac_measured.tsv"  # found beside a release file named for the host
    assert labels.read_text().splitlines()[0] == "protein_id\tsynthetic_level_not_measured"
    table = read_measured(labels)
    assert len(table.values) == 1500 - sum(planted.values()) and min(table.values.values()) > 0
    records = convert_files([read_release_table(path)], get_host("S_cerevisiae"), ConversionSettings()).valid
    level = np.log10(join_measured(records, table).measured_value)
    counts = np.asarray(codon_counts(records["sequence"].combine_chunks()), dtype=float)
    freq = counts / counts.sum(axis=1, keepdims=True)
    known = np.isfinite(level)
    freq, level = freq[known], level[known]
    half = len(level) // 2
    predicted = ridge_predict(freq[:half], level[:half], freq[half:])
    assert stats.spearmanr(predicted, level[half:]).statistic > 0.4


def test_gpu_throughput_script_times_the_scorer_and_labels_a_stand_in(tmp_path, capsys, monkeypatch):
    """On this CPU machine, where evo2 cannot be imported (its CUDA extensions), the script must say it timed a
    stand-in, not Evo 2."""
    pytest.importorskip("torch")
    # In a scratch directory: importing vortex (even when evo2's import then fails) writes an
    # activations_debug.log into the working directory.
    monkeypatch.chdir(tmp_path)
    if subprocess.run([sys.executable, "-c", "import evo2"], capture_output=True).returncode == 0:
        pytest.skip("evo2 imports here: the script would build the real network, not the stand-in")
    from bench.gpu_evo2_throughput import main as gpu_main

    out = gpu_main(["--device", "cpu", "--records", "6", "--length", "150", "--batch-sizes", "1", "4",
                    "--max-context", "64", "--allow-stand-in", "--results-dir", str(tmp_path)])
    report = json.loads(out.read_text())
    assert report["model"].startswith("STAND-IN") and "STAND-IN" in capsys.readouterr().out
    assert [r["batch_size"] for r in report["results"]] == [1, 4]
    for row in report["results"]:
        assert row["records"] == 6 and row["errors"] == 0 and row["tokens_per_s"] > 0


def test_quality_reports_every_measured_host_and_each_host_left_out(tmp_path, capsys):
    """`make quality` on two example hosts: each one's grouped CV beside the baselines, then each predicted by a
    model of the other host's measurements only."""
    from bench.yeast_quality import main as quality

    results = quality(["--only", "P_pastoris", "Mouse", "--results-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert [r["host"] for r in results] == ["P_pastoris", "Mouse"]
    assert all({"surrogate", "CAI", "ridge"} <= r["spearman"].keys() for r in results)
    report = json.loads(next(tmp_path.glob("quality-*.json")).read_text())
    transfer = report["leave_one_host_out"]
    assert transfer["hosts"] == 2 and {"spearman.Mouse", "spearman.P_pastoris"} <= transfer.keys()
    assert 0 < transfer["coverage_1sigma"] < transfer["coverage_2sigma"] <= 1
    assert "host left out" in printed and "Mouse" in printed.split("host left out")[1]
