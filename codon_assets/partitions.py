"""What every asset shares: its owners, the host partitions (built from the host registry) and the checks
that belong to one host's partition."""

import warnings

import dagster as dg

from codon_assets.core.hosts import HOSTS

OWNERS = ["team:codon-design"]
host_partitions = dg.StaticPartitionsDefinition([host.key for host in HOSTS])


def host_check(name: str, asset: dg.AssetKey, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    """A check evaluated per host partition. Without the partition, Dagster pairs a check evaluation with
    the asset's latest materialization of any host: when two hosts' runs interleave, the UI shows "Not
    evaluated" and automation's `all_deps_blocking_checks_passed` reads another host's result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # partitioned checks are a preview in Dagster 1.13
        return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=description,
                                 partitions_def=host_partitions)
