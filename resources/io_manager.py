"""A Parquet IO manager for Arrow tables: one file per asset partition, written atomically."""

from __future__ import annotations

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
        # Arrow's allocator keeps freed memory for reuse: hand the previous step's tables back to the system
        # before reading this one, or a run's footprint becomes the sum of its steps' peaks.
        pa.default_memory_pool().release_unused()
        columns = (context.definition_metadata or {}).get("columns")
        if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
            # A many-partition input (e.g. every host): the partitions that have been materialized.
            paths = {key: self._path(context, key) for key in context.asset_partition_keys}
            return {key: pq.read_table(path, columns=columns) for key, path in paths.items() if path.exists()}
        path = self._path(context)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: materialize {context.asset_key.to_user_string()} first")
        return pq.read_table(path, columns=columns)
