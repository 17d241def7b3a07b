"""Jobs: one per stage, the whole host graph, the unified model, and the Evo2 GPU job."""

import dagster as dg

from codon_assets.deployment import evo2_gpu_executor
from codon_assets.partitions import host_partitions

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("raw_tsv", "converted_dataset", "converted_rejects"),
    partitions_def=host_partitions,
    description="Fingerprint and validate a host's input tables.",
)
features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.assets("evo2_features"),
    partitions_def=host_partitions,
    description="Language-model features of a host's converted records (in process, CPU backend by default).",
)
model_job = dg.define_asset_job(
    "model_job",
    selection=dg.AssetSelection.assets("enhanced_dataset", "surrogate_model"),
    partitions_def=host_partitions,
    description="Enhanced dataset and per-host surrogate.",
)
host_graph_job = dg.define_asset_job(
    "host_graph_job",
    selection=dg.AssetSelection.assets(
        "raw_tsv", "converted_dataset", "converted_rejects", "evo2_features", "enhanced_dataset", "surrogate_model",
        "codon_designs",
    ),
    partitions_def=host_partitions,
    description="Everything for one host, from its input table to its surrogate and codon designs.",
)
unified_model_job = dg.define_asset_job(
    "unified_model_job",
    selection=dg.AssetSelection.assets("surrogate_model_unified"),
    description="The all-host surrogate, from every host's enhanced dataset.",
)
evo2_gpu_job = dg.define_asset_job(
    "evo2_gpu_job",
    selection=dg.AssetSelection.assets("evo2_features"),
    partitions_def=host_partitions,
    executor_def=evo2_gpu_executor(),
    tags={"compute": "gpu"},
    description=(
        "evo2_features on the GPU image: each step in its own container through the Docker executor "
        "(CODON_DEPLOYMENT=docker; image CODON_EVO2_IMAGE, one GPU requested unless CODON_DOCKER_GPU=0). "
        "In the local profile the same job runs in process."
    ),
)

design_job = dg.define_asset_job(
    "design_job",
    selection=dg.AssetSelection.assets("codon_designs"),
    partitions_def=host_partitions,
    description="Codon designs for a host's target proteins against its latest surrogate.",
)

ALL_JOBS = [ingest_job, features_job, model_job, host_graph_job, unified_model_job, evo2_gpu_job, design_job]
