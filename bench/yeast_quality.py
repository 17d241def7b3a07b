"""Surrogate quality on real measurements, for every host with a measured table, beside external baselines.

    python bench/yeast_quality.py [--only S_cerevisiae ...] [--cds C.tsv --measured M.tsv] [--mlflow-uri URI]

Each dataset's CDS are converted, scored by the Markov backend (cross-fitted) and enhanced with its measured
table exactly as the pipeline does (``build_enhanced`` then ``training_set``: measured records only, target
log10 measured level). On the same grouped 5-fold split (``cross_validate``), it reports held-out Spearman
rho of the surrogate beside the baselines: CAI (reference fitted on the training folds), tAI (hosts with a
tRNA table), ENC (Wright's effective number of codons, negated: a stronger bias goes with a higher level)
and ridge regression on codon frequencies (fitted on the training folds), and the held-out coverage of the
surrogate's calibrated sigma at 1 and 2 sigma (nominal 0.683 and 0.954). Then leave-one-host-out over the
example hosts (``core.transfer.leave_one_host_out``, as the unified model does): each host ranked by a model
of the other hosts' measurements only, which is what a host without measurements gets (transferred).

Datasets (those whose files exist): S. cerevisiae genome CDS (shared/data/yeast: Ensembl CDS, Presnyak et al.
2015 mRNA FPKM), the S. cerevisiae, P. pastoris, human and mouse examples (examples/data; provenance and units
in examples/data/MEASURED.md; small sets, so their figures move by chance). The table is printed and
written to bench/results/quality-<timestamp>.json (git-ignored); with --mlflow-uri each dataset is one run of
the MLflow experiment `codon-surrogate-quality` (and one run for the leave-one-host-out evaluation). Exits non-zero when, on a dataset of at least
GATE_MIN_RECORDS records, the surrogate ranks worse than the best baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codon_assets.core.convert import ConversionSettings, convert_files  # noqa: E402
from codon_assets.core.enhance import build_enhanced  # noqa: E402
from codon_assets.core.features import MarkovBatchScorer, extract_features  # noqa: E402
from codon_assets.core.hosts import get_host  # noqa: E402
from codon_assets.core.markov import MarkovCdsModel  # noqa: E402
from codon_assets.core.surrogate import LGB_PARAMS, LGB_PARAMS_HI, cross_validate, training_set  # noqa: E402
from codon_assets.core.transfer import leave_one_host_out  # noqa: E402
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
    Dataset("Human examples", "Human", EXAMPLES / "Human.fa.gz", EXAMPLES / "Human_measured.tsv",
            "human-examples-measured"),
    Dataset("Mouse examples", "Mouse", EXAMPLES / "mouse.fa.gz", EXAMPLES / "mouse_measured.tsv",
            "mouse-examples-measured"),
)


def measured_enhanced(dataset: Dataset) -> tuple[pa.Table, dict]:
    """The dataset's enhanced records (``training_set`` takes its measured ones), and the label join report."""
    records = convert_files([read_release_table(dataset.cds)], get_host(dataset.host), ConversionSettings()).valid
    model = MarkovCdsModel.train(records["sequence"].combine_chunks(), records["seq_sha256"].to_pylist())
    features, _ = extract_features(records.select(["protein_id", "sequence", "seq_sha256"]),
                                   MarkovBatchScorer(model, workers=2))
    return build_enhanced(records, features, "model_enhanced", dataset.measured, None)


def evaluate(dataset: Dataset, enhanced: pa.Table, report: dict, seed: int) -> dict:
    data = training_set(enhanced)
    metrics, _ = cross_validate(data, backend="markov", seed=seed)
    surrogate = metrics["surrogate"]
    return {
        "dataset": dataset.name, "host": dataset.host, "cds": str(dataset.cds), "measured": str(dataset.measured),
        "records": len(data.target), "join": report,
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
    results, examples = [], {}
    for dataset in datasets:
        started = time.perf_counter()
        enhanced, report = measured_enhanced(dataset)
        results.append(evaluate(dataset, enhanced, report, args.seed))
        results[-1]["seconds"] = round(time.perf_counter() - started, 2)
        if dataset.cds.parent == EXAMPLES:
            examples[dataset.host] = enhanced
        print(f"{dataset.name}: {results[-1]['records']} records with a measured level "
              f"(join: {json.dumps(results[-1]['join'])}), {results[-1]['seconds']} s", flush=True)
    print("\ngrouped 5-fold held-out Spearman rho vs log10 measured level (-ENC: ENC negated); held-out coverage "
          "of the calibrated sigma (nominal 0.683 / 0.954)")
    print(table(results))
    transfer = transfer_quality(examples, args.seed)
    if transfer:
        print("\nleave-one-host-out over the example hosts: each ranked by a model of the other hosts' "
              "measurements only (what a transferred host gets); coverage cross-fitted over hosts")
        print(transfer_table(transfer, results))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"quality-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"seed": args.seed, "lgb_params": LGB_PARAMS, "lgb_params_hi": LGB_PARAMS_HI,
                               "results": results, "leave_one_host_out": transfer}, indent=1))
    print(f"results: {out}")
    if args.mlflow_uri:
        log_to_mlflow(args.mlflow_uri, datasets, results, transfer, args.seed)
    failing = [r["dataset"] for r in results if r["records"] >= GATE_MIN_RECORDS
               and r["spearman"]["surrogate"] < max(v for k, v in r["spearman"].items() if k != "surrogate")]
    if failing:
        sys.exit(f"the surrogate does not reach the best baseline on {', '.join(failing)}")
    return results


def transfer_quality(examples: dict[str, pa.Table], seed: int) -> dict[str, float]:
    """``leave_one_host_out`` over the example hosts' measured records (per-host relative labels, as the
    unified model trains); empty with fewer than two hosts."""
    if len(examples) < 2:
        return {}
    combined = pa.concat_tables(list(examples.values()), promote_options="default")
    metrics, _ = leave_one_host_out(training_set(combined, standardise_per_host=True), "markov", seed)
    return metrics


def transfer_table(transfer: dict[str, float], results: list[dict]) -> str:
    """Per example host: its Spearman when left out, beside CAI and its own grouped CV (from ``results``)."""
    own = {r["host"]: r for r in results if r["dataset"].endswith("examples")}
    lines = [f"{'host left out':<16}{'transfer':>10}{'CAI':>10}{'own CV':>10}"]
    for host in sorted(own):
        if f"spearman.{host}" in transfer:
            lines.append(f"{host:<16}{transfer[f'spearman.{host}']:>10.4f}{own[host]['spearman']['CAI']:>10.4f}"
                         f"{own[host]['spearman']['surrogate']:>10.4f}")
    lines.append(f"{'mean':<16}{transfer['spearman']:>10.4f}   coverage {transfer['coverage_1sigma']:.3f} / "
                 f"{transfer['coverage_2sigma']:.3f}")
    return "\n".join(lines)


def log_to_mlflow(uri: str, datasets: list[Dataset], results: list[dict], transfer: dict[str, float],
                  seed: int) -> None:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("codon-surrogate-quality")
    for dataset, result in zip(datasets, results):
        with mlflow.start_run(run_name=dataset.run_name):
            mlflow.log_params({"records": result["records"], "folds": 5, "seed": seed, "host": dataset.host,
                               "cds": str(dataset.cds), "measured": str(dataset.measured)})
            for model_name, values in result["metrics"].items():
                mlflow.log_metrics({f"{model_name}.{k}": v for k, v in values.items()})
    if transfer:
        with mlflow.start_run(run_name="leave-one-host-out"):
            mlflow.log_params({"seed": seed, "hosts": ",".join(sorted(k.removeprefix("spearman.") for k in transfer
                                                                        if k.startswith("spearman.")))})
            mlflow.log_metrics({f"transfer.{k}": v for k, v in transfer.items()})


if __name__ == "__main__":
    main()
