"""Benchmark runner: records/s and peak RSS per stage, at several table sizes.

    python bench/run.py --sizes 1000 10000 52000 [--repeats 3]

Tables come from bench/generate.py (deterministic, cached under bench/results/data/), each with its
SYNTHETIC measured table beside it (``<stem>_measured.tsv``: values from a hidden function of the sequence,
not measurements), which the enhance, train and graph stages take as the measured labels (training uses
measured labels only). Each measurement
runs in a fresh Python process, so its peak RSS is that stage's alone. Results are printed as a table and
written to bench/results/bench-<timestamp>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Imported here, outside the timed calls, so a measurement is the stage's work, not interpreter start-up
# (pyarrow's CSV reader imports pandas on first use).
import pandas  # noqa: E402,F401

from codon_assets.core.convert import ConversionSettings, convert_files  # noqa: E402
from codon_assets.core.hosts import get_host  # noqa: E402
from codon_assets.core.features import MarkovBatchScorer, extract_features  # noqa: E402
from codon_assets.core.markov import MarkovCdsModel  # noqa: E402
from codon_assets.core.tsv import read_release_table  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

RESULTS = ROOT / "bench" / "results"
HOST = "S_cerevisiae"
WORKERS = os.cpu_count() or 1  # what Evo2Resource gives the Markov backend


def stage_convert(path: Path) -> tuple[int, float]:
    """Library call: parse the TSV and convert it (what `converted_dataset` does)."""
    started = time.perf_counter()
    result = convert_files([read_release_table(path)], get_host(HOST), ConversionSettings())
    return result.rows_read, time.perf_counter() - started


def stage_features(path: Path) -> tuple[int, float]:
    """Library call: train the Markov backend on the converted records and score them all (what
    `evo2_features` does with backend=markov, without the cache). Conversion is done first, untimed."""
    records = featured(path)[0].select(["protein_id", "sequence", "seq_sha256"])
    started = time.perf_counter()
    table = markov_features(records)
    return table.num_rows, time.perf_counter() - started


def markov_features(records: pa.Table) -> pa.Table:
    """The Markov backend trained on the records, then scoring them all."""
    model = MarkovCdsModel.train(records["sequence"].combine_chunks(), records["seq_sha256"].to_pylist(),
                                 workers=WORKERS)
    return extract_features(records, MarkovBatchScorer(model, workers=WORKERS))[0]


def featured(path: Path) -> tuple[pa.Table, pa.Table]:
    """Converted records (full) and their Markov features, cached beside the generated table."""
    converted_file, features_file = path.with_suffix(".valid.parquet"), path.with_suffix(".features.parquet")
    if not features_file.exists():
        result = convert_files([read_release_table(path)], get_host(HOST), ConversionSettings())
        pq.write_table(result.valid, converted_file)
        pq.write_table(markov_features(result.valid), features_file)
    return pq.read_table(converted_file), pq.read_table(features_file)


def stage_enhance(path: Path) -> tuple[int, float]:
    """Library call: join records and features by id and enhance (what `enhanced_dataset` does)."""
    from codon_assets.core.enhance import build_enhanced

    valid, features = featured(path)
    started = time.perf_counter()
    table, _ = build_enhanced(valid, features, "model_enhanced", synthetic_measured(path), None)
    return table.num_rows, time.perf_counter() - started


def stage_train(path: Path) -> tuple[int, float]:
    """Library call: grouped 5-fold CV with baselines and the final refit, calibration and importances
    (``train_surrogate``: what `surrogate_model` does, without MLflow)."""
    from codon_assets.core.enhance import build_enhanced
    from codon_assets.core.training import train_surrogate

    valid, features = featured(path)
    enhanced, _ = build_enhanced(valid, features, "model_enhanced", synthetic_measured(path), None)
    started = time.perf_counter()
    result = train_surrogate(enhanced, {})
    return len(result.data.target), time.perf_counter() - started


def synthetic_measured(path: Path) -> Path:
    """The generated table's synthetic measured table (bench/generate.py), the labels of every good row."""
    from bench.generate import measured_path

    labels = measured_path(path)
    if not labels.exists():
        raise FileNotFoundError(f"{labels}: no synthetic measured table; delete {path} to generate both again")
    return labels


def stage_graph(path: Path) -> tuple[int, float]:
    """The whole graph for one partition through Dagster: `codon-assets run --train-surrogate` on a fresh
    instance (conversion -> features -> enhancement -> surrogate with MLflow)."""
    import tempfile

    with tempfile.TemporaryDirectory() as home:
        # A fresh instance with its own MLflow store (DAGSTER_HOME/mlflow), whatever the caller's environment.
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, "DAGSTER_HOME": home}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "codon_assets.cli", "run", "--input", str(path), "--host", HOST,
                               "--output-dir", str(Path(home) / "out"), "--train-surrogate",
                               "--measured", str(synthetic_measured(path))],
                              env=env, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode:
            raise RuntimeError(f"the graph failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        results = json.loads((Path(home) / "out" / "pipeline_results.json").read_text())
    # Each step's own seconds (as the run recorded them), beside the whole command's.
    GRAPH_STEPS.update({name: step["seconds"] for name, step in results["steps"].items() if step.get("seconds")})
    return results["steps"]["convert"]["rows_read"], seconds


GRAPH_STEPS: dict[str, float] = {}  # filled by stage_graph: seconds per step of the last graph run


def stage_baseline_convert(path: Path) -> tuple[int, float]:
    """BASELINE (the original tool's approach): csv.DictReader row by row, JSONL out."""
    import tempfile

    from bench.baseline_original import convert_rows

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        rows, _ = convert_rows(path, Path(folder) / "out.jsonl")
        return rows, time.perf_counter() - started


BASELINE_FEATURE_RECORDS = 3_000


def stage_baseline_features(path: Path) -> tuple[int, float]:
    """BASELINE (the original tool's approach): per-record, per-base Python loop, JSON with per-base lists.
    Its cost is linear in records, so it runs on the first BASELINE_FEATURE_RECORDS records and reports
    that rate (a full 52k run takes many minutes and says nothing more)."""
    import tempfile

    from bench.baseline_original import convert_rows, features_per_record

    valid, _ = featured(path)
    model = MarkovCdsModel.train(valid["sequence"].combine_chunks(), valid["seq_sha256"].to_pylist())
    with tempfile.TemporaryDirectory() as folder:
        jsonl = Path(folder) / "in.jsonl"
        convert_rows(path, jsonl)
        lines = jsonl.read_text().splitlines(keepends=True)[:BASELINE_FEATURE_RECORDS]
        jsonl.write_text("".join(lines))
        started = time.perf_counter()
        n = features_per_record(jsonl, Path(folder) / "features.json", model)
        return n, time.perf_counter() - started


STAGES = {
    "convert": stage_convert,
    "features": stage_features,
    "enhance": stage_enhance,
    "train": stage_train,
    "graph": stage_graph,
    "baseline_convert": stage_baseline_convert,
    "baseline_features": stage_baseline_features,
}
BASELINE_OF = {"convert": "baseline_convert", "features": "baseline_features"}


def measure(stage: str, path: Path) -> dict:
    """Run one stage in a fresh interpreter; returns seconds, records and peak RSS (MiB; of the largest
    process: the stage's interpreter or, for the whole graph, the `codon-assets` process it starts)."""
    code = (
        "import json, resource, sys; sys.path.insert(0, %r); import bench.run as b; "
        "n, s = b.STAGES[%r](b.Path(%r)); "
        "print(json.dumps({'seconds': s, 'records': n, 'steps': b.GRAPH_STEPS, "
        "'peak_rss_mib': max(resource.getrusage(who).ru_maxrss for who in "
        "(resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024}))"
    ) % (str(ROOT), stage, str(path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"stage {stage} failed on {path.name} (exit {out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def dataset(rows: int, results: Path = RESULTS) -> Path:
    from bench.generate import generate, measured_path

    path = results / "data" / f"{HOST}_{rows}.tsv"
    if not path.exists() or not measured_path(path).exists():  # tables cached before the labels existed too
        path.parent.mkdir(parents=True, exist_ok=True)
        generate(HOST, rows, path)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 52000])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--baseline-max", type=int, default=52_000,
                        help="skip the (slow) original-approach baselines above this size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=RESULTS,
                        help="where the JSON results and the generated tables (data/) go")
    args = parser.parse_args(argv)

    rows = []
    for size in args.sizes:
        path = dataset(size, args.results_dir)
        for stage in args.stages:
            if stage.startswith("baseline") and size > args.baseline_max:
                continue
            runs = [measure(stage, path) for _ in range(args.repeats)]
            seconds = [r["seconds"] for r in runs]
            records = runs[0]["records"]
            rows.append({
                "stage": stage, "size": size, "records": records,
                "seconds_min": min(seconds), "seconds_median": statistics.median(seconds),
                "records_per_s_best": records / min(seconds), "records_per_s_median": records / statistics.median(seconds),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            })
            if runs[0].get("steps"):  # the graph: median seconds of each of its steps
                rows[-1]["step_seconds_median"] = {name: statistics.median(r["steps"].get(name, 0.0) for r in runs)
                                                   for name in runs[0]["steps"]}
            r = rows[-1]
            print(f"{stage:>10} {size:>8} rows  {r['seconds_min']:8.3f} s min  {r['seconds_median']:8.3f} s median  "
                  f"{r['records_per_s_median']:>10,.0f} rec/s median  {r['peak_rss_mib']:8.0f} MiB peak", flush=True)
            if "step_seconds_median" in r:
                print(" " * 11 + "steps (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["step_seconds_median"].items()),
                      flush=True)
    by_key = {(r["stage"], r["size"]): r for r in rows}
    for (stage, size), row in by_key.items():
        baseline = by_key.get((BASELINE_OF.get(stage), size))
        if baseline:
            row["speedup_vs_original"] = row["records_per_s_median"] / baseline["records_per_s_median"]
            print(f"speed-up over the original approach, {stage} at {size} rows: {row['speedup_vs_original']:.1f}x")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"host": HOST, "repeats": args.repeats, "cpus": os.cpu_count(), "results": rows}, indent=2))
    print(f"results: {out}")
    return out


if __name__ == "__main__":
    main()
