"""Benchmark runner: records/s and peak RSS per stage, at several table sizes.

    python bench/run.py --sizes 1000 10000 52000 [--repeats 3]

Tables come from bench/generate.py (deterministic, cached under bench/results/data/). Each measurement
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


def stage_convert(path: Path) -> tuple[int, float]:
    """Library call: parse the TSV and convert it (what `converted_dataset` does)."""
    started = time.perf_counter()
    result = convert_files([read_release_table(path)], get_host(HOST), ConversionSettings())
    return result.rows_read, time.perf_counter() - started


def stage_features(path: Path) -> tuple[int, float]:
    """Library call: train the Markov backend on the converted records and score them all (what
    `evo2_features` does with backend=markov, without the cache). Conversion is done first, untimed."""
    records = converted(path)
    started = time.perf_counter()
    model = MarkovCdsModel.train(records["sequence"].combine_chunks(), records["seq_sha256"].to_pylist())
    table, _ = extract_features(records, MarkovBatchScorer(model, workers=os.cpu_count() or 1))
    return table.num_rows, time.perf_counter() - started


def converted(path: Path) -> pa.Table:
    """The converted records of a generated table, cached beside it."""
    cached = path.with_suffix(".converted.parquet")
    if not cached.exists():
        result = convert_files([read_release_table(path)], get_host(HOST), ConversionSettings())
        pq.write_table(result.valid.select(["protein_id", "sequence", "seq_sha256"]), cached)
    return pq.read_table(cached)


STAGES = {"convert": stage_convert, "features": stage_features}


def measure(stage: str, path: Path) -> dict:
    """Run one stage in a fresh interpreter; returns seconds, records and peak RSS (MiB)."""
    code = (
        "import json, resource, sys; sys.path.insert(0, %r); import bench.run as b; "
        "n, s = b.STAGES[%r](b.Path(%r)); "
        "print(json.dumps({'seconds': s, 'records': n, "
        "'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
    ) % (str(ROOT), stage, str(path))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def dataset(rows: int) -> Path:
    from bench.generate import generate

    path = RESULTS / "data" / f"{HOST}_{rows}.tsv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate(HOST, rows, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 52000])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rows = []
    for size in args.sizes:
        path = dataset(size)
        for stage in args.stages:
            runs = [measure(stage, path) for _ in range(args.repeats)]
            seconds = [r["seconds"] for r in runs]
            records = runs[0]["records"]
            rows.append({
                "stage": stage, "size": size, "records": records,
                "seconds_min": min(seconds), "seconds_median": statistics.median(seconds),
                "records_per_s_best": records / min(seconds), "records_per_s_median": records / statistics.median(seconds),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            })
            r = rows[-1]
            print(f"{stage:>10} {size:>8} rows  {r['seconds_min']:8.3f} s min  {r['seconds_median']:8.3f} s median  "
                  f"{r['records_per_s_median']:>10,.0f} rec/s median  {r['peak_rss_mib']:8.0f} MiB peak", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"host": HOST, "repeats": args.repeats, "results": rows}, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
