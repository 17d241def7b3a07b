"""Surrogate quality on real measurements, for every host with a measured table, beside external baselines.

    python bench/yeast_quality.py [--only S_cerevisiae ...] [--cds C.tsv --measured M.tsv] [--mlflow-uri URI]

Each dataset's CDS are converted, scored by the Markov backend (cross-fitted) and enhanced with its measured
table exactly as the pipeline does (``build_enhanced`` then ``training_set``: measured records only, target
log10 measured level). On the same grouped 5-fold split (``cross_validate``), it reports held-out Spearman
rho of the surrogate beside the baselines: CAI (reference fitted on the training folds), tAI (hosts with a
tRNA table), ENC (Wright's effective number of codons, negated: a stronger bias goes with a higher level)
and ridge regression on codon frequencies (fitted on the training folds), and the held-out coverage of the
surrogate's calibrated sigma at 1 and 2 sigma (nominal 0.683 and 0.954).

Datasets (those whose files exist): S. cerevisiae genome CDS (shared/data/yeast: Ensembl CDS, Presnyak et al.
2015 mRNA FPKM), the S. cerevisiae and P. pastoris examples (examples/data; see examples/data/MEASURED.md:
Pic.tsv has 73 records with a PAS-keyed mRNA level, so its figures are noisy). The table is printed and
written to bench/results/quality-<timestamp>.json (git-ignored); with --mlflow-uri each dataset is one run of
the MLflow experiment `codon-surrogate-quality`. Exits non-zero when, on a dataset of at least
GATE_MIN_RECORDS records, the surrogate ranks worse than the best baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codon_assets.core.convert import ConversionSettings, convert_files  # noqa: E402
from codon_assets.core.enhance import build_enhanced  # noqa: E402
from codon_assets.core.features import MarkovBatchScorer, extract_features  # noqa: E402
from codon_assets.core.hosts import get_host  # noqa: E402
from codon_assets.core.markov import MarkovCdsModel  # noqa: E402
from codon_assets.core.surrogate import LGB_PARAMS, LGB_PARAMS_HI, TrainingSet, cross_validate, training_set  # noqa: E402
from codon_assets.core.tsv import read_release_table  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "yeast"
EXAMPLES = ROOT / "examples" / "data"
RESULTS = ROOT / "bench" / "results"
GATE_MIN_RECORDS = 1000  # smaller sets are reported, not gated: their rho moves by several hundredths by chance
# Baselines in table order: (metrics key, column title).
BASELINES = (("baseline_cai", "CAI"), ("baseline_tai", "tAI"), ("baseline_enc", "-ENC"),
             ("baseline_ridge_codon_freq", "ridge"))


@dataclass(frozen=True)
class Dataset:
    name: str
    host: str
    cds: Path
    measured: Path
    run_name: str  # of its MLflow run

    def available(self) -> bool:
        return self.cds.is_file() and self.measured.is_file()


DATASETS = (
    Dataset("S_cerevisiae genome", "S_cerevisiae", SHARED / "Sac_ensembl.tsv", SHARED / "Sac_measured.tsv",
            "yeast-measured-mrna"),
    Dataset("S_cerevisiae examples", "S_cerevisiae", EXAMPLES / "Sac.tsv", EXAMPLES / "Sac_measured.tsv",
            "yeast-examples-measured-mrna"),
    Dataset("P_pastoris examples", "P_pastoris", EXAMPLES / "Pic.tsv", EXAMPLES / "Pic_measured.tsv",
            "pichia-examples-measured-mrna"),
)


def measured_training_set(dataset: Dataset) -> tuple[TrainingSet, dict]:
    """The dataset's measured records as the pipeline trains on them, and the label join report."""
    records = convert_files([read_release_table(dataset.cds)], get_host(dataset.host), ConversionSettings()).valid
    model = MarkovCdsModel.train(records["sequence"].combine_chunks(), records["seq_sha256"].to_pylist())
    features, _ = extract_features(records.select(["protein_id", "sequence", "seq_sha256"]),
                                   MarkovBatchScorer(model, workers=2))
    enhanced, report = build_enhanced(records, features, "model_enhanced", dataset.measured, None)
    return training_set(enhanced), report


def evaluate(dataset: Dataset, seed: int) -> dict:
    started = time.perf_counter()
    data, report = measured_training_set(dataset)
    metrics, _ = cross_validate(data, backend="markov", seed=seed)
    surrogate = metrics["surrogate"]
    return {
        "dataset": dataset.name, "host": dataset.host, "cds": str(dataset.cds), "measured": str(dataset.measured),
        "records": len(data.target), "join": report, "seconds": round(time.perf_counter() - started, 2),
        "spearman": {"surrogate": surrogate["spearman"],
                     **{title: metrics[key]["spearman"] for key, title in BASELINES if key in metrics}},
        "coverage_1sigma": surrogate["coverage_1sigma"], "coverage_2sigma": surrogate["coverage_2sigma"],
        "metrics": metrics,
    }


def table(results: list[dict]) -> str:
    titles = ["surrogate", *(title for _, title in BASELINES)]
    lines = [f"{'dataset':<24}{'records':>8}" + "".join(f"{t:>10}" for t in titles) + f"{'cov 1σ':>9}{'cov 2σ':>9}"]
    for r in results:
        cells = "".join(f"{r['spearman'][t]:>10.4f}" if t in r["spearman"] else f"{'n/a':>10}" for t in titles)
        lines.append(f"{r['dataset']:<24}{r['records']:>8}{cells}{r['coverage_1sigma']:>9.3f}{r['coverage_2sigma']:>9.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="HOST", help="only the datasets of these hosts")
    parser.add_argument("--cds", type=Path, help="S. cerevisiae genome CDS (default: shared/data/yeast)")
    parser.add_argument("--measured", type=Path, help="its measured table (default: shared/data/yeast)")
    parser.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: none, print only)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    datasets = list(DATASETS)
    if args.cds or args.measured:
        genome = datasets[0]
        datasets[0] = Dataset(genome.name, genome.host, args.cds or genome.cds, args.measured or genome.measured,
                              genome.run_name)
    datasets = [d for d in datasets if d.available() and (not args.only or d.host in args.only)]
    if not datasets:
        sys.exit("no dataset found (their CDS and measured tables are missing)")
    results = []
    for dataset in datasets:
        results.append(evaluate(dataset, args.seed))
        print(f"{dataset.name}: {results[-1]['records']} records with a measured level "
              f"(join: {json.dumps(results[-1]['join'])}), {results[-1]['seconds']} s", flush=True)
    print("\ngrouped 5-fold held-out Spearman rho vs log10 measured level (-ENC: ENC negated); held-out coverage "
          "of the calibrated sigma (nominal 0.683 / 0.954)")
    print(table(results))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"quality-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"seed": args.seed, "lgb_params": LGB_PARAMS, "lgb_params_hi": LGB_PARAMS_HI,
                               "results": results}, indent=1))
    print(f"results: {out}")
    if args.mlflow_uri:
        log_to_mlflow(args.mlflow_uri, datasets, results, args.seed)
    failing = [r["dataset"] for r in results if r["records"] >= GATE_MIN_RECORDS
               and r["spearman"]["surrogate"] < max(v for k, v in r["spearman"].items() if k != "surrogate")]
    if failing:
        sys.exit(f"the surrogate does not reach the best baseline on {', '.join(failing)}")
    return results


def log_to_mlflow(uri: str, datasets: list[Dataset], results: list[dict], seed: int) -> None:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("codon-surrogate-quality")
    for dataset, result in zip(datasets, results):
        with mlflow.start_run(run_name=dataset.run_name):
            mlflow.log_params({"records": result["records"], "folds": 5, "seed": seed, "host": dataset.host,
                               "cds": str(dataset.cds), "measured": str(dataset.measured)})
            for model_name, values in result["metrics"].items():
                mlflow.log_metrics({f"{model_name}.{k}": v for k, v in values.items()})


if __name__ == "__main__":
    main()
