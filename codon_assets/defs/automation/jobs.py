"""Jobs: one per stage, the whole host graph and the unified model. None names an executor: each runs with
the code location's, which places every step by its tag (codon_assets.deployment)."""

import dagster as dg

from codon_assets.asset_specs import host_partitions

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("raw_tsv", "converted_dataset", "converted_rejects"),
    partitions_def=host_partitions,
    description="Fingerprint and validate a host's input tables.",
)
features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.assets("markov_model", "evo2_features"),
    partitions_def=host_partitions,
    description="Language-model features of a host's converted records (the step goes to the GPU container or pod in the docker and k8s profiles).",
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
        "raw_tsv", "converted_dataset", "converted_rejects", "markov_model", "evo2_features", "enhanced_dataset",
        "surrogate_model",
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
design_job = dg.define_asset_job(
    "design_job",
    selection=dg.AssetSelection.assets("codon_designs"),
    partitions_def=host_partitions,
    description="Codon designs for a host's target proteins against its latest surrogate.",
)
