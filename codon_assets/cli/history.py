"""`codon-assets history` and `codon-assets rollback`: the stored versions of an asset partition, newest first,
and making an earlier version the current table again.

A rollback is recorded in the instance as a materialization of the asset partition that carries the restored
run's tags (data version, code version, the upstream data versions it was computed from) and names the
restored version's ``path``. So the UI's latest materialization points at the bytes that are current, and
staleness stays truthful: downstream partitions computed from the replaced data show "has a new dependency data
version" until they are materialized again, and the restored asset itself shows stale when its upstream has
moved on since the restored run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

    from resources.io_manager import PartitionStore, StoredVersion

IO_MANAGER_KEY = "io_manager"  # assets stored by the Parquet IO manager; models have a store of their own


@dataclass(frozen=True)
class Target:
    """One asset partition in the Parquet store."""

    key: dg.AssetKey
    partition: str | None
    store: PartitionStore
    keep_versions: int
    siblings: tuple[str, ...]  # other stored assets of the same step (converted_rejects of converted_dataset)

    @property
    def label(self) -> str:
        name = self.key.to_user_string()
        return f"{name}[{self.partition}]" if self.partition else name


def _error(message: str, code: int = 1) -> Exception:
    from codon_assets.cli import CliError  # here, not at import: cli.py imports this module

    return CliError(message, code=code)


def resolve_target(asset: str, host: str | None, storage: str | None = None) -> Target:
    """The asset partition named on the command line, in the store the code location writes to (or
    ``storage``, a folder or URL)."""
    import dagster as dg

    from codon_assets.definitions import defs
    from codon_assets.defs.resources import build_resources
    from resources.io_manager import ParquetIOManager

    graph = defs.resolve_asset_graph()
    key = dg.AssetKey.from_user_string(asset)
    stored = sorted(k.to_user_string() for k in graph.get_all_asset_keys()
                    if graph.get(k).io_manager_key == IO_MANAGER_KEY)
    if asset not in stored:
        known = key in graph.get_all_asset_keys()
        problem = f"{asset} is not stored as Parquet tables" if known else f"unknown asset {asset!r}"
        raise _error(f"{problem}; assets with a version history: {', '.join(stored)}", code=2)
    partitions_def = graph.get(key).partitions_def
    if partitions_def is None and host:
        raise _error(f"{asset} is not partitioned: leave out --host", code=2)
    if partitions_def is not None:
        hosts = partitions_def.get_partition_keys()
        if host not in hosts:
            given = f"unknown host {host!r}" if host else "--host is required"
            raise _error(f"{given} for {asset}; choose one of {', '.join(hosts)}", code=2)
    manager = build_resources()[IO_MANAGER_KEY]
    if storage:
        manager = ParquetIOManager(base_dir=storage, keep_versions=manager.keep_versions)
    siblings = tuple(sorted(k.to_user_string() for k in graph.get(key).execution_set_asset_keys
                            if k != key and graph.get(k).io_manager_key == IO_MANAGER_KEY))
    return Target(key, host, manager.partition(key, host), manager.keep_versions, siblings)


def _materialization(instance: dg.DagsterInstance, target: Target, run_id: str) -> dg.EventLogEntry | None:
    """The event of ``run_id`` that materialized the target partition; None for a run this instance does not
    know (another instance's storage, a store written outside a run)."""
    import dagster as dg

    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization.asset_key == target.key and materialization.partition == target.partition:
            return record.event_log_entry
    return None


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def version_history(target: Target) -> list[dict]:
    """The target's stored versions, newest first, each with the materialization that produced it.

    Ordered by the materialization's time where this instance recorded it: an object store's modification
    time has whole seconds, so two runs within one second would otherwise come out in run-id (random) order.
    A version no run of this instance made is placed by its modification time."""
    import dagster as dg

    versions = target.store.versions()
    if not versions:
        raise _error(f"{target.label} has no stored versions in {target.store.folder}: materialize it first")
    current = target.store.current_run()
    entries: list[tuple[float, dict]] = []
    with dg.DagsterInstance.get() as instance:
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=target.key, asset_partitions=[target.partition] if target.partition else None),
            limit=1).records
        rollback = latest[0].asset_materialization.metadata.get("rolled_back_to_run") if latest else None
        for version in versions:
            entry = {"run_id": version.run_id, "current": version.run_id == current, "path": str(version.path),
                     "modified": _iso(version.modified), "bytes": version.bytes,
                     "rows": target.store.rows(version.path)}
            event = _materialization(instance, target, version.run_id)
            written = version.modified if event is None else event.timestamp
            if event is not None:
                run = instance.get_run_by_id(version.run_id)
                entry |= {"run_status": run.status.value if run else "deleted", "materialized_at": _iso(event.timestamp),
                          "data_version": event.asset_materialization.tags.get("dagster/data_version")}
            if entry["current"] and rollback is not None and rollback.value == version.run_id:
                entry["rolled_back_at"] = _iso(latest[0].timestamp)
            entries.append((written, entry))
    return [entry for _, entry in sorted(entries, key=lambda pair: pair[0], reverse=True)]


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GiB"


def _line(entry: dict) -> str:
    mark = "*" if entry["current"] else " "
    origin = (f"run {entry['run_status']}, data version {str(entry['data_version'])[:12]}"
              if "run_status" in entry else "no materialization in this instance")
    line = (f"{mark} {entry['run_id']}  {entry['modified']}  {_size(entry['bytes']):>9}  {entry['rows']:>8} rows  "
            f"{origin}")
    if entry["current"]:
        line += "  current" + (f" (rolled back at {entry['rolled_back_at']})" if "rolled_back_at" in entry else "")
    return line


def cmd_history(args: argparse.Namespace) -> int:
    from codon_assets.cli import ensure_instance_home

    ensure_instance_home()
    target = resolve_target(args.asset, args.host, args.storage)
    entries = version_history(target)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    print(f"{target.label}: {len(entries)} stored versions in {target.store.folder} (the newest "
          f"{target.keep_versions} are kept), newest first; * is the current table")
    for entry in entries:
        print(_line(entry))
    if not any(entry["current"] for entry in entries):
        print(f"the current table {target.store.current} is none of these versions (written before versions were kept)")
    return 0


RUN_ID = re.compile(r"^[0-9a-f]{1,8}(-[0-9a-f]{0,12}){0,4}$")  # a Dagster run id or a prefix of one


def _find_version(target: Target, run: str, instance: dg.DagsterInstance) -> StoredVersion:
    """The stored version of the run ``run`` (a run id or an unambiguous prefix of one)."""
    run = run.strip().lower()
    if not RUN_ID.match(run):  # never a path: the instance keeps one file per run id
        raise _error(f"{run!r} is not a run id (hexadecimal digits and dashes, e.g. 5a8d49bc or a whole id from "
                     "codon-assets history)", code=2)
    versions = target.store.versions()
    matches = [v for v in versions if v.run_id == run] or [v for v in versions if v.run_id.startswith(run)]
    if len(matches) > 1:
        raise _error(f"{run!r} matches {len(matches)} stored versions of {target.label}: give more of the run id", code=2)
    if matches:
        return matches[0]
    # The run storage first: the event log keeps a file per run and would make one for an unknown id.
    if instance.get_run_by_id(run) is not None:
        if _materialization(instance, target, run) is not None:
            raise _error(f"the version of run {run} of {target.label} was pruned: only the newest "
                         f"{target.keep_versions} versions are kept (codon-assets history lists them)")
        raise _error(f"run {run} did not materialize {target.label}")
    stored = ", ".join(v.run_id for v in versions) or "none"
    raise _error(f"no stored version of {target.label} from run {run!r}; stored: {stored}", code=2)


def rollback(target: Target, run: str) -> dict:
    """Make the stored version of ``run`` the target's current table and record that in the instance."""
    import dagster as dg

    from codon_assets.cli import run_guard
    from codon_assets.settings import dagster_home

    with dg.DagsterInstance.get() as instance:
        _find_version(target, run, instance)  # an unknown or pruned version is refused before waiting
        # A command-line run of the same host holds this lock: it would make its own version current after us,
        # and may prune versions meanwhile, so the version is looked up again once the lock is ours.
        with run_guard.partition_lock(dagster_home(), target.partition or "unpartitioned", " ".join(sys.argv)):
            version = _find_version(target, run, instance)
            previous = target.store.current_run()
            result = {"asset": target.key.to_user_string(), "partition": target.partition, "run_id": version.run_id,
                      "previous_run_id": previous, "path": str(version.path)}
            if previous == version.run_id:
                return result | {"changed": False}
            target.store.make_current(version.run_id)
            event = _materialization(instance, target, version.run_id)
            # The restored run's tags (data version, code version, input data versions) describe these bytes.
            tags = dict(event.asset_materialization.tags or {}) if event is not None else {}
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key=target.key, partition=target.partition, tags=tags,
                description=f"rolled back to the version of run {version.run_id}",
                metadata={"path": dg.MetadataValue.path(str(version.path)), "bytes": version.bytes,
                          "rolled_back_to_run": version.run_id, "rolled_back_from_run": previous or ""}))
    return result | {"changed": True, "data_version": tags.get("dagster/data_version")}


def cmd_rollback(args: argparse.Namespace) -> int:
    from codon_assets.cli import ensure_instance_home

    ensure_instance_home()
    target = resolve_target(args.asset, args.host, args.storage)
    result = rollback(target, args.run)
    where = f"{result['asset']}[{result['partition']}]" if result["partition"] else result["asset"]
    if not result["changed"]:
        print(f"{where}: the version of run {result['run_id']} is already current; nothing changed")
    else:
        print(f"{where}: the version of run {result['run_id']} is current again (was {result['previous_run_id'] or 'none'}); "
              f"recorded as a materialization with data version {(result['data_version'] or 'unknown')[:12]}. "
              f"Downstream assets built from the replaced data now show as stale.")
        for sibling in target.siblings:
            print(f"note: the same step stored {sibling}; roll it back too: codon-assets rollback --asset {sibling}"
                  + (f" --host {target.partition}" if target.partition else "") + f" --run {result['run_id']}")
    return 0


def add_history_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `history` and `rollback` on the command line's subcommands."""
    storage_help = "asset store, a folder or URL (default: $CODON_ASSET_STORE, else $CODON_STORAGE_DIR or the instance's)"

    history = subparsers.add_parser("history", help="the stored versions of an asset partition, newest first")
    history.add_argument("--asset", required=True, help="e.g. converted_dataset")
    history.add_argument("--host", help="host partition (for partitioned assets)")
    history.add_argument("--storage", help=storage_help)
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(func=cmd_history)

    back = subparsers.add_parser("rollback", help="make a stored version of an asset partition its current table again")
    back.add_argument("--asset", required=True, help="e.g. converted_dataset")
    back.add_argument("--host", help="host partition (for partitioned assets)")
    back.add_argument("--run", required=True, help="the run id of the version (codon-assets history lists them), or a prefix")
    back.add_argument("--storage", help=storage_help)
    back.set_defaults(func=cmd_rollback)
