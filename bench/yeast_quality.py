"""Surrogate quality on real measurements: S. cerevisiae CDS against measured mRNA levels.

    python bench/yeast_quality.py [--cds Sac_ensembl.tsv] [--measured Sac_measured.tsv] [--mlflow-uri URI]

Converts all S. cerevisiae CDS, scores them with the Markov backend (cross-fitted), joins the measured
FPKM (Presnyak et al. 2015) and reports grouped 5-fold held-out Spearman rho of the surrogate against
log10 FPKM, beside two baselines computed on the same folds in the same run: CAI alone, and ridge
regression on codon frequencies. The figures are logged to MLflow (experiment `codon-surrogate-quality`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codon_assets.core.convert import ConversionSettings, convert_files  # noqa: E402
from codon_assets.core.features import MarkovBatchScorer, extract_features  # noqa: E402
from codon_assets.core.hosts import get_host  # noqa: E402
from codon_assets.core.labels import join_measured, read_measured  # noqa: E402
from codon_assets.core.markov import MarkovCdsModel  # noqa: E402
from codon_assets.core.surrogate import TrainingSet, cross_validate  # noqa: E402
from codon_assets.core.surrogate_features import EVO2_COLUMNS  # noqa: E402
from codon_assets.core.tsv import read_release_table  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "yeast"


def yeast_training_set(cds: Path, measured: Path) -> tuple[TrainingSet, dict]:
    records = convert_files([read_release_table(cds)], get_host("S_cerevisiae"), ConversionSettings()).valid
    model = MarkovCdsModel.train(records["sequence"].combine_chunks(), records["seq_sha256"].to_pylist())
    features, _ = extract_features(records, MarkovBatchScorer(model, workers=2))
    join = join_measured(records, read_measured(measured))
    keep = np.flatnonzero(np.isfinite(join.measured_value))
    take = records.take(keep)
    data = TrainingSet(
        protein_id=take["protein_id"].combine_chunks(),
        sequences=take["sequence"].combine_chunks(),
        evo2={name: features[name].to_numpy(zero_copy_only=False).astype(float)[keep] for name in EVO2_COLUMNS},
        target=np.log10(join.measured_value[keep]),
        host=np.array(["S_cerevisiae"] * len(keep)),
        protein=take["protein_aa"].combine_chunks(),
        protein_names=take["protein_names"].to_pylist(),
        gene_names=take["gene_names"].to_pylist(),
        measured=np.log10(join.measured_value[keep]),
        label_source="measured",
    )
    return data, join.report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cds", type=Path, default=SHARED / "Sac_ensembl.tsv")
    parser.add_argument("--measured", type=Path, default=SHARED / "Sac_measured.tsv")
    parser.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: none, print only)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data, report = yeast_training_set(args.cds, args.measured)
    metrics, _ = cross_validate(data, backend="markov", seed=args.seed)
    rows = [("surrogate (LightGBM quantile, all features)", metrics["surrogate"]["spearman"]),
            ("baseline: CAI alone", metrics["baseline_cai"]["spearman"]),
            ("baseline: ridge on codon frequencies", metrics["baseline_ridge_codon_freq"]["spearman"])]
    print(f"records with a measured level: {len(data.target)} (join: {json.dumps(report)})")
    print("grouped 5-fold held-out Spearman rho vs log10 FPKM")
    for name, rho in rows:
        print(f"  {name:<48} {rho:.4f}")
    best_baseline = max(rho for _, rho in rows[1:])
    print(f"surrogate - best baseline = {rows[0][1] - best_baseline:+.4f}")
    print(json.dumps(metrics, indent=1))
    if args.mlflow_uri:
        import mlflow

        mlflow.set_tracking_uri(args.mlflow_uri)
        mlflow.set_experiment("codon-surrogate-quality")
        with mlflow.start_run(run_name="yeast-measured-mrna"):
            mlflow.log_params({"records": len(data.target), "folds": 5, "seed": args.seed, "cds": str(args.cds),
                               "measured": str(args.measured)})
            for model_name, values in metrics.items():
                mlflow.log_metrics({f"{model_name}.{k}": v for k, v in values.items()})
    if rows[0][1] < best_baseline:
        sys.exit("the surrogate does not reach the best baseline")


if __name__ == "__main__":
    main()
