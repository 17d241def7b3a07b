"""`lineage`: an asset's upstream chain with data versions, code versions and runs."""

from __future__ import annotations

import argparse

from codon_assets.cli.common import CliError, ensure_instance_home

def lineage_chain(asset: str, host: str | None) -> list[dict]:
    """The asset and everything upstream of it, each with its latest materialization for the partition."""
    import dagster as dg

    from codon_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    key = dg.AssetKey.from_user_string(asset)
    if key not in graph.get_all_asset_keys():
        names = ", ".join(sorted(k.to_user_string() for k in graph.get_all_asset_keys()))
        raise CliError(f"unknown asset {asset!r}; assets: {names}", code=2)
    order, queue = [], [key]
    while queue:
        current = queue.pop(0)
        if current not in order:
            order.append(current)
            queue.extend(sorted(graph.get(current).parent_keys, key=lambda k: k.to_user_string()))
    chain = []
    with dg.DagsterInstance.get() as instance:
        for current in order:
            node = graph.get(current)
            if node.partitions_def is None:
                partitions = [None]
            elif host is not None:
                partitions = [host]
            else:  # an unpartitioned model over partitioned inputs: every host it could have read
                partitions = sorted(instance.get_materialized_partitions(current)) or [None]
            for partition in partitions:
                chain.append(_lineage_entry(instance, current, node, partition))
    return chain


def _lineage_entry(instance, key, node, partition: str | None) -> dict:
    import dagster as dg

    if partition is None:
        event = instance.get_latest_materialization_event(key)
    else:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
        event = records[0].event_log_entry if records else None
    entry: dict = {"asset": key.to_user_string(), "partition": partition,
                   "upstream": sorted(k.to_user_string() for k in node.parent_keys),
                   "code_version_defined": node.code_version}
    if event is None:
        return entry | {"materialized": False}
    materialization = event.asset_materialization
    tags = materialization.tags or {}
    entry |= {"materialized": True, "run_id": event.run_id, "timestamp": event.timestamp,
              "data_version": tags.get("dagster/data_version"), "code_version": tags.get("dagster/code_version")}
    for name in ("mlflow_run_id", "model_uri", "registered_model", "registered_version"):
        if name in materialization.metadata:
            entry[name] = materialization.metadata[name].value
    return entry


def cmd_lineage(args: argparse.Namespace) -> int:
    import json

    from codon_assets.core.hosts import HOSTS_BY_KEY

    if args.host is not None and args.host not in HOSTS_BY_KEY:
        raise CliError(f"unknown host {args.host!r}; choose one of {', '.join(HOSTS_BY_KEY)}", code=2)
    ensure_instance_home()
    chain = lineage_chain(args.asset, args.host)
    if args.json:
        print(json.dumps(chain, indent=2, default=str))
        return 0
    for entry in chain:
        where = f"{entry['asset']}[{entry['partition']}]" if entry["partition"] else entry["asset"]
        if not entry["materialized"]:
            print(f"{where}: not materialized")
            continue
        line = (f"{where}: data version {entry['data_version']}, code version {entry['code_version']}, "
                f"run {entry['run_id']}")
        if "mlflow_run_id" in entry:
            line += f"\n    MLflow run {entry['mlflow_run_id']}, model {entry['model_uri']}"
        print(line + (f"\n    <- {', '.join(entry['upstream'])}" if entry["upstream"] else ""))
    return 0

