"""Design stage: `codon_designs`, host-specific CDS for target proteins, optimised against the host's
surrogate (GRPO-style policy) and compared with preferred-codon and random-synonymous baselines."""

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa

from codon_assets.core.design import Design, design_proteins, design_summary
from codon_assets.core.design_constraints import DesignConstraints, preferred_stop
from codon_assets.core.design_formats import designs_table, write_designs
from codon_assets.core.design_settings import OptimiserSettings
from codon_assets.core.proteins import ProteinRecord, read_proteins
from codon_assets.core.surrogate import SurrogateModel
from codon_assets.core.tsv import InputError
from codon_assets.metadata import markdown_table, table_metadata
from codon_assets.asset_specs import host_partitions
from codon_assets.settings import storage_root
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
    avoid_enzymes: list[str] = list(_DEFAULTS.avoid_enzymes)  # REBASE names (Bio.Restriction), both strands
    avoid_motifs: list[str] = list(_DEFAULTS.avoid_motifs)  # "MOTIF" or "NAME=MOTIF", IUPAC, both strands

    def settings(self) -> OptimiserSettings:
        """The optimiser settings; unknown enzyme names or bad motifs are a SettingsError, before any work."""
        return OptimiserSettings(**self.model_dump())


def constraints_for(model: SurrogateModel, host: str) -> tuple[DesignConstraints, np.ndarray]:
    """The host's constraints (its own GC window and preferred stop) and codon usage, from the profile
    stored with the surrogate."""
    profile = model.host_profiles[host]
    counts = np.array(profile["codon_counts"], dtype=np.float64)
    lo, hi = profile["gc_window"]
    # No motifs here: the settings' avoid_motifs / avoid_enzymes decide which sites are forbidden.
    return DesignConstraints(forbidden_motifs=(), gc_min=lo, gc_max=hi, stop_codon=preferred_stop(counts)), counts


def run_design(model: SurrogateModel, host: str, proteins: list[ProteinRecord],
               config: DesignConfig) -> tuple[list[Design], dict]:
    constraints, counts = constraints_for(model, host)
    designs = design_proteins(proteins, host, model, model.markov_models.get(host), counts, constraints,
                              config.settings())
    return designs, design_summary(designs)


@dg.asset(
    partitions_def=host_partitions,
    # A host without target proteins has nothing to design: the step ends without a materialization (and
    # says so), so the weekly run of that host still succeeds.
    output_required=False,
    description=(
        "Host-specific CDS for the target proteins (examples/proteins/<host>.fasta or .tsv), optimised by a "
        "GRPO-style codon policy against the host's surrogate (mu - lam*sigma + eta*Markov log-likelihood) "
        "under hard constraints (exact back-translation, start/stop, no internal stop, no restriction sites "
        "(enzymes by REBASE name, IUPAC motifs), the host's GC window, no homopolymer >= 8); preferred-codon "
        "and random baselines in the same run; also written as FASTA and GenBank (fasta_path, genbank_path)."
    ),
)
def codon_designs(context: dg.AssetExecutionContext, config: DesignConfig, input_files: InputFiles,
                  mlflow_tracking: MlflowTracking, surrogate_model: SurrogateModel) -> Iterator[dg.Output[pa.Table]]:
    host = context.partition_key
    try:
        source = input_files.proteins_for(host)
    except InputError as exc:  # two target files for the host
        raise dg.Failure(str(exc)) from None
    if source is None:
        context.log.warning(f"no target proteins for {host}: put {host}.fasta or {host}.tsv in "
                            f"{input_files.proteins_dir}; nothing designed")
        return
    try:
        proteins, rejects = read_proteins(source)
        designs, summary = run_design(surrogate_model, host, proteins, config)
    except (InputError, ValueError) as exc:  # an unreadable file, bad settings, a genetic code not supported
        raise dg.Failure(str(exc)) from None
    table = designs_table(designs)
    files = write_design_files(designs, storage_root() / "codon_designs" / host, context.run.run_id)
    context.log.info(f"designed {len(designs)} proteins: {json.dumps(summary)}")
    logged = log_designs(context, mlflow_tracking, table, summary, surrogate_model.registry,
                         {**config.model_dump(), "proteins": len(proteins), "rejected_proteins": len(rejects),
                          "source": str(source)})
    yield dg.Output(table, metadata={
        **table_metadata(table.drop_columns(["constraint_report"])),
        "surrogate_model_uri": surrogate_model.registry.get("model_uri", ""),
        "mlflow_run_id": logged.run_id,
        "mlflow_run_url": dg.MetadataValue.url(logged.run_url),
        "summary": dg.MetadataValue.json(summary),
        "rejected_proteins": dg.MetadataValue.md(markdown_table([r.__dict__ for r in rejects])),
        "feasible": int(sum(d.feasible for d in designs)),
        **{f"{kind}_path": dg.MetadataValue.path(str(path)) for kind, path in files.items()},
    })


def log_designs(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking, table: pa.Table, summary: dict,
                registry: dict[str, str], params: dict):
    """The design batch's MLflow run, tagged with the Dagster run and the surrogate it was designed against."""
    host = context.partition_key
    return mlflow_tracking.log_designs(
        table.to_pandas().drop(columns=["constraint_report"]), summary, params=params,
        tags={"dagster.run_id": context.run.run_id, "dagster.partition": host,
              "surrogate.model_uri": registry.get("model_uri", ""),
              "surrogate.mlflow_run_id": registry.get("mlflow_run_id", "")},
        run_name=f"designs-{host}-{context.run.run_id[:8]}")


def write_design_files(designs: list[Design], folder: Path, run_id: str) -> dict[str, Path]:
    """The designs as FASTA and GenBank files of this run, beside the stored table (what `design --output`
    writes from the command line)."""
    files = {"fasta": folder / f"{run_id}.fasta", "genbank": folder / f"{run_id}.gb"}
    for path in files.values():
        write_designs(designs, path)
    return files
