"""Design stage: `codon_designs`, host-specific CDS for target proteins, optimised against the host's
surrogate (GRPO-style policy) and compared with preferred-codon and random-synonymous baselines."""

import json

import dagster as dg
import numpy as np
import pyarrow as pa

from codon_assets.core.design import DesignConstraints, design_proteins, design_summary, preferred_stop
from codon_assets.core.proteins import read_proteins
from codon_assets.core.surrogate import SurrogateModel
from codon_assets.core.tsv import InputError
from codon_assets.ingest import OWNERS
from codon_assets.metadata import markdown_table, table_metadata
from codon_assets.partitions import host_partitions
from resources.inputs import InputFiles
from resources.mlflow_tracking import MlflowTracking

DESIGN_EXPERIMENT = "codon-designs"


class DesignConfig(dg.Config):
    steps: int = 40
    group: int = 16
    seed: int = 0
    lam: float = 0.5  # weight of sigma in the reward: mu - lam * sigma
    eta: float = 1.0  # weight of the Markov naturalness term
    kl_beta: float = 0.05


def constraints_for(model: SurrogateModel, host: str) -> tuple[DesignConstraints, np.ndarray]:
    """The host's constraints (its own GC window and preferred stop) and codon usage, from the profile
    stored with the surrogate."""
    profile = model.host_profiles[host]
    counts = np.array(profile["codon_counts"], dtype=np.float64)
    lo, hi = profile["gc_window"]
    return DesignConstraints(gc_min=lo, gc_max=hi, stop_codon=preferred_stop(counts)), counts


def run_design(model: SurrogateModel, host: str, proteins, config: DesignConfig) -> tuple[list[dict], dict]:
    constraints, counts = constraints_for(model, host)
    designs = design_proteins(proteins, host, model, model.markov_models.get(host), counts, constraints,
                              steps=config.steps, group=config.group, seed=config.seed, lam=config.lam,
                              eta=config.eta, kl_beta=config.kl_beta)
    return designs, design_summary(designs)


def designs_table(designs: list[dict]) -> pa.Table:
    """One row per protein: the best CDS and its scores, the constraint report and both baselines."""
    rows = []
    for d in designs:
        native = d["native"] or {}
        rows.append({
            "protein_id": d["protein_id"], "protein": d["protein"], "cds": d["cds"], "mu": d["mu"],
            "sigma": d["sigma"], "reward": d["reward"], "cai": d["cai"], "gc": d["gc"],
            "markov_avg_loglik": d["avg_loglik"], "feasible": d["feasible"],
            "constraint_report": json.dumps(d["constraints"]),
            "reward_initial_mean": d["reward_initial_mean"], "reward_final_mean": d["reward_final_mean"],
            "preferred_mu": d["baseline_preferred"]["mu"], "preferred_reward": d["baseline_preferred"]["reward"],
            "random_mu": d["baseline_random"]["mu"], "random_reward": d["baseline_random"]["reward"],
            "native_mu": native.get("mu"), "native_reward": native.get("reward"),
        })
    return pa.Table.from_pylist(rows)


@dg.asset(
    partitions_def=host_partitions,
    group_name="design",
    code_version="1",
    kinds={"mlflow", "parquet"},
    owners=OWNERS,
    deps=["surrogate_model"],
    description=(
        "Host-specific CDS for the target proteins (examples/proteins/<host>.fasta or .tsv), optimised by a "
        "GRPO-style codon policy against the host's surrogate (mu - lam*sigma + eta*Markov log-likelihood) "
        "under hard constraints (exact back-translation, start/stop, no internal stop, no restriction sites, "
        "the host's GC window, no homopolymer >= 8); preferred-codon and random baselines in the same run."
    ),
)
def codon_designs(context: dg.AssetExecutionContext, config: DesignConfig, input_files: InputFiles,
                  mlflow_tracking: MlflowTracking) -> dg.Output[pa.Table]:
    import mlflow

    host = context.partition_key
    source = input_files.proteins_for(host)
    if source is None:
        raise dg.Failure(f"no target proteins for {host}: put {host}.fasta or {host}.tsv in {input_files.proteins_dir}")
    try:
        proteins, rejects = read_proteins(source)
    except InputError as exc:
        raise dg.Failure(str(exc)) from None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("surrogate_model"), asset_partitions=[host]), limit=1).records
    if not records:
        raise dg.Failure(f"surrogate_model[{host}] has not been materialized")
    meta = records[0].asset_materialization.metadata
    model = SurrogateModel.load(meta["model_path"].value)
    designs, summary = run_design(model, host, proteins, config)
    table = designs_table(designs)
    context.log.info(f"designed {len(designs)} proteins: {json.dumps(summary)}")

    experiment_id = mlflow_tracking.activate(DESIGN_EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"designs-{host}-{context.run.run_id[:8]}",
                          tags={"dagster.run_id": context.run.run_id, "dagster.partition": host,
                                "surrogate.model_uri": meta["model_uri"].value,
                                "surrogate.mlflow_run_id": meta["mlflow_run_id"].value}) as run:
        mlflow.log_params({**config.model_dump(), "proteins": len(proteins), "rejected_proteins": len(rejects),
                           "source": str(source)})
        mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float)) and v is not None})
        mlflow.log_text(table.to_pandas().drop(columns=["constraint_report"]).to_csv(sep="\t", index=False),
                        "designs.tsv")
    return dg.Output(
        table,
        metadata={
            **table_metadata(table.drop_columns(["constraint_report"])),
            "surrogate_model_uri": meta["model_uri"].value,
            "mlflow_run_id": run.info.run_id,
            "mlflow_run_url": dg.MetadataValue.url(mlflow_tracking.run_url(experiment_id, run.info.run_id)),
            "summary": dg.MetadataValue.json(summary),
            "rejected_proteins": dg.MetadataValue.md(markdown_table([r.__dict__ for r in rejects])),
            "feasible": int(sum(d["feasible"] for d in designs)),
        },
    )
