"""Design stage: `codon_designs`, host-specific CDS for target proteins, optimised against the host's
surrogate (GRPO-style policy) and compared with preferred-codon and random-synonymous baselines."""

import json

import dagster as dg
import numpy as np
import pyarrow as pa

from codon_assets.core.design import Design, design_proteins, design_summary
from codon_assets.core.design_constraints import DesignConstraints, preferred_stop
from codon_assets.core.design_settings import OptimiserSettings
from codon_assets.core.proteins import ProteinRecord, read_proteins
from codon_assets.core.surrogate import SurrogateModel
from codon_assets.core.tsv import InputError
from codon_assets.metadata import markdown_table, table_metadata
from codon_assets.partitions import OWNERS, host_partitions
from resources.inputs import InputFiles
from resources.mlflow_tracking import MlflowTracking

_DEFAULTS = OptimiserSettings()


class DesignConfig(dg.Config):
    """The optimiser settings a run may set (see OptimiserSettings, which holds their defaults)."""

    steps: int = _DEFAULTS.steps
    group: int = _DEFAULTS.group
    seed: int = _DEFAULTS.seed
    lam: float = _DEFAULTS.lam
    eta: float = _DEFAULTS.eta
    kl_beta: float = _DEFAULTS.kl_beta

    def settings(self) -> OptimiserSettings:
        return OptimiserSettings(**self.model_dump())


def constraints_for(model: SurrogateModel, host: str) -> tuple[DesignConstraints, np.ndarray]:
    """The host's constraints (its own GC window and preferred stop) and codon usage, from the profile
    stored with the surrogate."""
    profile = model.host_profiles[host]
    counts = np.array(profile["codon_counts"], dtype=np.float64)
    lo, hi = profile["gc_window"]
    return DesignConstraints(gc_min=lo, gc_max=hi, stop_codon=preferred_stop(counts)), counts


def run_design(model: SurrogateModel, host: str, proteins: list[ProteinRecord],
               config: DesignConfig) -> tuple[list[Design], dict]:
    constraints, counts = constraints_for(model, host)
    designs = design_proteins(proteins, host, model, model.markov_models.get(host), counts, constraints,
                              config.settings())
    return designs, design_summary(designs)


def designs_table(designs: list[Design]) -> pa.Table:
    """One row per protein: the best CDS and its scores, the constraint report and both baselines."""
    rows = []
    for d in designs:
        rows.append({
            "protein_id": d.protein_id, "protein": d.protein, "cds": d.cds, "mu": d.mu,
            "sigma": d.sigma, "reward": d.reward, "cai": d.cai, "gc": d.gc,
            "markov_avg_loglik": d.avg_loglik, "feasible": d.feasible,
            "constraint_report": json.dumps(d.constraints.as_dict()),
            "reward_initial_mean": d.reward_initial_mean, "reward_final_mean": d.reward_final_mean,
            "preferred_mu": d.baseline_preferred.mu, "preferred_reward": d.baseline_preferred.reward,
            "random_mu": d.baseline_random.mu, "random_reward": d.baseline_random.reward,
            "native_mu": d.native.mu if d.native is not None else None,
            "native_reward": d.native.reward if d.native is not None else None,
        })
    return pa.Table.from_pylist(rows)


@dg.asset(
    partitions_def=host_partitions,
    group_name="design",
    code_version="2",
    kinds={"mlflow", "parquet"},
    owners=OWNERS,
    description=(
        "Host-specific CDS for the target proteins (examples/proteins/<host>.fasta or .tsv), optimised by a "
        "GRPO-style codon policy against the host's surrogate (mu - lam*sigma + eta*Markov log-likelihood) "
        "under hard constraints (exact back-translation, start/stop, no internal stop, no restriction sites, "
        "the host's GC window, no homopolymer >= 8); preferred-codon and random baselines in the same run."
    ),
)
def codon_designs(context: dg.AssetExecutionContext, config: DesignConfig, input_files: InputFiles,
                  mlflow_tracking: MlflowTracking, surrogate_model: SurrogateModel) -> dg.Output[pa.Table]:
    host = context.partition_key
    source = input_files.proteins_for(host)
    if source is None:
        raise dg.Failure(f"no target proteins for {host}: put {host}.fasta or {host}.tsv in {input_files.proteins_dir}")
    try:
        proteins, rejects = read_proteins(source)
    except InputError as exc:
        raise dg.Failure(str(exc)) from None
    designs, summary = run_design(surrogate_model, host, proteins, config)
    table = designs_table(designs)
    context.log.info(f"designed {len(designs)} proteins: {json.dumps(summary)}")
    registry = surrogate_model.registry
    logged = mlflow_tracking.log_designs(
        table.to_pandas().drop(columns=["constraint_report"]), summary,
        params={**config.model_dump(), "proteins": len(proteins), "rejected_proteins": len(rejects),
                "source": str(source)},
        tags={"dagster.run_id": context.run.run_id, "dagster.partition": host,
              "surrogate.model_uri": registry.get("model_uri", ""),
              "surrogate.mlflow_run_id": registry.get("mlflow_run_id", "")},
        run_name=f"designs-{host}-{context.run.run_id[:8]}")
    return dg.Output(table, metadata={
        **table_metadata(table.drop_columns(["constraint_report"])),
        "surrogate_model_uri": registry.get("model_uri", ""),
        "mlflow_run_id": logged.run_id,
        "mlflow_run_url": dg.MetadataValue.url(logged.run_url),
        "summary": dg.MetadataValue.json(summary),
        "rejected_proteins": dg.MetadataValue.md(markdown_table([r.__dict__ for r in rejects])),
        "feasible": int(sum(d.feasible for d in designs)),
    })
