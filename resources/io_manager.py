"""A Parquet IO manager for Arrow tables: one file per asset partition and run, written atomically.

Each output is stored as ``<asset>/<partition>/<run id>.parquet`` (the run's own version, which its
materialization's ``path`` names) and becomes the partition's current table ``<asset>/<partition>.parquet``
by an atomic hard-link swap. A step reads what its own run wrote upstream (never a table a concurrent run
of the same partition swapped in between two steps); an upstream asset the run did not materialize is
read as its current table. The newest ``keep_versions`` versions of a partition are kept.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from resources.paths import storage_root


def write_parquet_atomic(table: pa.Table, path: Path, row_group_size: int = 65_536) -> None:
    """Write to a temporary file beside the target and rename: a crash never leaves a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _glibc_malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


_MALLOC_TRIM = _glibc_malloc_trim()


def release_unused_memory() -> None:
    """Hand memory freed by the previous step back to the system: Arrow's allocator keeps freed blocks for
    reuse, and so does glibc's heap (numpy's small and medium arrays). Without this a run that executes its
    steps in one process (the command line) needs the sum of its steps' peaks instead of the largest."""
    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _run_id(context: dg.OutputContext | None) -> str | None:
    """The run that produced an output; None for an output context built outside a run (tests) or for an
    upstream asset that the current run did not materialize."""
    if context is None:
        return None
    try:
        return context.run_id
    except dg.DagsterInvariantViolationError:
        return None


def _make_current(version: Path, current: Path) -> None:
    """Point the partition's current table at ``version`` in one atomic rename."""
    tmp = current.with_name(f".{current.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    os.link(version, tmp)
    os.replace(tmp, current)


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores ``pa.Table`` outputs under ``<base_dir>/<asset key path>/``: ``<partition>/<run id>.parquet``
    per run, and ``<partition>.parquet``, the current table."""

    base_dir: str = ""
    keep_versions: int = 5  # per asset partition, newest first; older versions are deleted

    def _path(self, context: dg.OutputContext | dg.InputContext, partition: str | None = None) -> Path:
        root = Path(self.base_dir) if self.base_dir else storage_root()
        if partition is None and context.has_asset_partitions:
            partition = context.asset_partition_key
        return root.joinpath(*context.asset_key.path, f"{partition}.parquet" if partition else "data.parquet")

    @staticmethod
    def _version_path(current: Path, run_id: str) -> Path:
        return current.with_suffix("") / f"{run_id}.parquet"

    def handle_output(self, context: dg.OutputContext, obj: pa.Table) -> None:
        if not isinstance(obj, pa.Table):
            raise TypeError(f"ParquetIOManager stores pyarrow Tables, got {type(obj).__name__}")
        current = self._path(context)
        run_id = _run_id(context)
        if run_id is None:
            write_parquet_atomic(obj, current)
            path = current
        else:
            path = self._version_path(current, run_id)
            write_parquet_atomic(obj, path)
            _make_current(path, current)
            self._prune(path.parent)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path)), "bytes": path.stat().st_size})

    def _prune(self, versions: Path) -> None:
        files = sorted(versions.glob("*.parquet"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in files[max(1, self.keep_versions):]:
            old.unlink(missing_ok=True)

    def load_input(self, context: dg.InputContext) -> pa.Table | dict[str, pa.Table]:
        """The stored table; only the columns named in the input's ``columns`` metadata when it has one."""
        release_unused_memory()  # the previous step's tables are gone by now
        columns = (context.definition_metadata or {}).get("columns")
        if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
            # A many-partition input (e.g. every host): the partitions that have been materialized.
            paths = {key: self._path(context, key) for key in context.asset_partition_keys}
            tables = {key: pq.read_table(path, columns=columns) for key, path in paths.items() if path.exists()}
        else:
            path = self._path(context)
            run_id = _run_id(context.upstream_output)
            if run_id is not None and self._version_path(path, run_id).exists():
                path = self._version_path(path, run_id)  # what this run wrote, whatever replaced it since
            if not path.exists():
                raise FileNotFoundError(f"{path} does not exist: materialize {context.asset_key.to_user_string()} first")
            tables = pq.read_table(path, columns=columns)
        release_unused_memory()  # the reader's decompression buffers
        return tables
