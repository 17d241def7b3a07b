"""What every asset shares, defined once: its owners, its group, code version and kinds (stamped onto the
specs by ``codon_assets/definitions.py``, never repeated in decorators), the host partitions (built from the
host registry) and the checks that belong to one host's partition."""

import warnings
from dataclasses import dataclass
from datetime import timedelta

import dagster as dg

from codon_assets.core.hosts import HOSTS

OWNERS = ["team:codon-design"]
# The weekly schedule refreshes every asset each Monday: a week without a materialization warns, eight days
# (the run plus a day's grace) fail.
WEEKLY_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=8), warn_window=timedelta(days=7))
host_partitions = dg.StaticPartitionsDefinition([host.key for host in HOSTS])


@dataclass(frozen=True)
class AssetStamp:
    group: str  # the stage: its folder under codon_assets/defs/
    code_version: str  # bump when the asset's logic changes: its materializations become stale
    kinds: frozenset[str]


ASSET_STAMPS: dict[str, AssetStamp] = {
    "raw_tsv": AssetStamp("ingest", "2", frozenset({"file"})),
    "converted_dataset": AssetStamp("ingest", "2", frozenset({"parquet"})),
    "converted_rejects": AssetStamp("ingest", "2", frozenset({"parquet"})),
    "markov_model": AssetStamp("features", "1", frozenset({"numpy"})),
    "evo2_features": AssetStamp("features", "2", frozenset({"pytorch", "parquet"})),
    "enhanced_dataset": AssetStamp("model", "2", frozenset({"parquet"})),
    "surrogate_model": AssetStamp("model", "3", frozenset({"lightgbm", "mlflow"})),
    "surrogate_model_unified": AssetStamp("model", "3", frozenset({"lightgbm", "mlflow"})),
    "codon_designs": AssetStamp("design", "2", frozenset({"mlflow", "parquet"})),
}


def stamp(spec: dg.AssetSpec) -> dg.AssetSpec:
    """The spec with the project's owners and its entry of :data:`ASSET_STAMPS` (an asset without one is an
    error: every asset is stamped)."""
    name = spec.key.to_user_string()
    if name not in ASSET_STAMPS:
        raise KeyError(f"asset {name} has no entry in codon_assets.asset_specs.ASSET_STAMPS")
    entry = ASSET_STAMPS[name]
    return spec.replace_attributes(owners=OWNERS, group_name=entry.group, code_version=entry.code_version,
                                   kinds=set(entry.kinds), freshness_policy=WEEKLY_FRESHNESS)


def host_check(name: str, asset: dg.AssetKey, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    """A check evaluated per host partition. Without the partition, Dagster pairs a check evaluation with
    the asset's latest materialization of any host: when two hosts' runs interleave, the UI shows "Not
    evaluated" and automation's `all_deps_blocking_checks_passed` reads another host's result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # partitioned checks are a preview in Dagster 1.13
        return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=description,
                                 partitions_def=host_partitions)
