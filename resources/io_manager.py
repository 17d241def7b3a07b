"""A Parquet IO manager for Arrow tables: one file per asset partition, written atomically."""

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


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores ``pa.Table`` outputs at ``<base_dir>/<asset key path>/<partition>.parquet``."""

    base_dir: str = ""

    def _path(self, context: dg.OutputContext | dg.InputContext, partition: str | None = None) -> Path:
        root = Path(self.base_dir) if self.base_dir else storage_root()
        if partition is None and context.has_asset_partitions:
            partition = context.asset_partition_key
        return root.joinpath(*context.asset_key.path, f"{partition}.parquet" if partition else "data.parquet")

    def handle_output(self, context: dg.OutputContext, obj: pa.Table) -> None:
        if not isinstance(obj, pa.Table):
            raise TypeError(f"ParquetIOManager stores pyarrow Tables, got {type(obj).__name__}")
        path = self._path(context)
        write_parquet_atomic(obj, path)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path)), "bytes": path.stat().st_size})

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
            if not path.exists():
                raise FileNotFoundError(f"{path} does not exist: materialize {context.asset_key.to_user_string()} first")
            tables = pq.read_table(path, columns=columns)
        release_unused_memory()  # the reader's decompression buffers
        return tables
