"""Host partitions, built from the host registry."""

import dagster as dg

from codon_assets.core.hosts import HOSTS

host_partitions = dg.StaticPartitionsDefinition([host.key for host in HOSTS])
