"""A Parquet IO manager for Arrow tables: one version per asset partition and run, kept on a local disk or on
an object store (``base_dir`` or $CODON_ASSET_STORE may be any fsspec URL, e.g. ``s3://bucket/prefix``).

Each output is stored as ``<asset>/<partition>/<run id>.parquet``, the run's own version, which its
materialization's ``path`` names. Versions are never rewritten and the newest ``keep_versions`` of a partition
are kept, so lineage points at bytes that exist and a bad run can be rolled back (`codon-assets rollback`).
One version is the partition's current table:

- on a local disk ``<asset>/<partition>.parquet``, a hard link to the version swapped in by an atomic rename;
- on an object store, which has neither links nor renames, ``<asset>/<partition>/CURRENT`` holding the run id
  (one small PUT: atomic, and read-after-write consistent on S3), the convention of the model store too.

A step reads what its own run wrote upstream (never a table a concurrent run of the same partition made current
between two steps); an upstream asset the run did not materialize is read as its current table.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from codon_assets.settings import asset_store

if TYPE_CHECKING:
    from upath import UPath

# The version name of an output stored outside a run (an output context built by a test).
OUTSIDE_A_RUN = "latest"


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


def run_id_of(context: dg.OutputContext | None) -> str | None:
    """The run that produced an output; None for an output context built outside a run (tests) or for an
    upstream asset that the current run did not materialize."""
    if context is None:
        return None
    try:
        return context.run_id
    except dg.DagsterInvariantViolationError:
        return None


def store_root(base_dir: str = "") -> UPath:
    """The root of the asset tables: a local path (hard links, renames) for a folder or a file:// URL, else
    the fsspec path of the URL. Credentials and endpoints come from the environment (AWS_* for S3)."""
    from upath import UPath

    root = UPath(base_dir or asset_store())
    return UPath(root.path) if root.protocol == "file" else root


def table_path(root: UPath, asset_key: dg.AssetKey, partition: str | None) -> UPath:
    """The current table of an asset partition, ``<asset>/<partition>.parquet`` (``data.parquet`` when the
    asset is unpartitioned): UPathIOManager's layout with the manager's ``get_asset_relative_path``."""
    return root.joinpath(*asset_key.path, f"{partition or 'data'}.parquet")


@dataclass(frozen=True)
class StoredVersion:
    run_id: str
    path: UPath
    bytes: int
    modified: float  # seconds since the epoch (object stores keep whole seconds)


class PartitionStore(ABC):
    """The versions of one asset partition, ``<asset>/<partition>/<run id>.parquet``, and its current table."""

    def __init__(self, current: UPath):
        self.current = current
        self.folder = current.with_suffix("")
        self.fs = current.fs

    @staticmethod
    def at(current: UPath) -> PartitionStore:
        return LocalPartitionStore(current) if isinstance(current, Path) else ObjectPartitionStore(current)

    def version(self, run_id: str) -> UPath:
        return self.folder / f"{run_id}.parquet"

    def versions(self) -> list[StoredVersion]:
        """The stored versions, newest first (ties, within an object store's second, by run id)."""
        self.fs.invalidate_cache(self.folder.path)  # other processes write and prune between two listings
        try:
            entries = self.fs.ls(self.folder.path, detail=True)
        except FileNotFoundError:
            return []
        found = [StoredVersion(name.removesuffix(".parquet"), self.folder / name, entry["size"],
                               self.fs.modified(entry["name"]).timestamp())
                 for entry in entries
                 if entry["type"] == "file" and (name := PurePosixPath(entry["name"]).name).endswith(".parquet")]
        return sorted(found, key=lambda v: (v.modified, v.run_id), reverse=True)

    def store(self, table: pa.Table, run_id: str, keep: int) -> UPath:
        """Write ``table`` as the version of ``run_id``, make it current, and delete the versions beyond the
        newest ``keep`` (never the one just written, which may share its second with others)."""
        version = self.version(run_id)
        self._write(table, version)
        self.make_current(run_id)
        for old in self.versions()[max(1, keep):]:
            if old.run_id != run_id:
                old.path.unlink(missing_ok=True)  # a concurrent writer may have pruned it already
        return version

    def read(self, run_id: str | None, columns: list[str] | None = None) -> pa.Table:
        """What a step of run ``run_id`` reads: the version that run wrote, else the current table."""
        if run_id is not None:
            try:
                return self._read(self.version(run_id), columns)
            except FileNotFoundError:
                pass  # the run did not write this partition: its current table
        return self._read(self.current_data(), columns)

    def _read(self, path: UPath, columns: list[str] | None) -> pa.Table:
        source, filesystem = self._arrow(path)
        return pq.read_table(source, columns=columns, filesystem=filesystem)

    def rows(self, path: UPath) -> int:
        """The row count from the Parquet footer (a small ranged read)."""
        source, filesystem = self._arrow(path)
        return pq.read_metadata(source, filesystem=filesystem).num_rows

    @abstractmethod
    def _arrow(self, path: UPath) -> tuple[str, Any]:
        """Where and through which filesystem Arrow reads ``path``."""

    @abstractmethod
    def _write(self, table: pa.Table, path: UPath) -> None:
        """Write ``table`` to ``path`` so that it appears whole or not at all."""

    @abstractmethod
    def current_data(self) -> UPath:
        """The current table's bytes; reading them raises FileNotFoundError when there is none."""

    @abstractmethod
    def current_run(self) -> str | None:
        """The run whose version is current; None when none of the stored versions is."""

    @abstractmethod
    def make_current(self, run_id: str) -> None:
        """Make the stored version of ``run_id`` the current table, atomically: a reader sees the old table or
        the new one."""


class LocalPartitionStore(PartitionStore):
    """On a local disk the current table is a hard link: readers open ``<partition>.parquet`` directly."""

    def _arrow(self, path: UPath) -> tuple[str, Any]:
        return str(path), None  # Arrow's own local filesystem (memory-mapped reads), not fsspec's

    def _write(self, table: pa.Table, path: UPath) -> None:
        write_parquet_atomic(table, path)

    def current_data(self) -> UPath:
        return self.current

    def current_run(self) -> str | None:
        try:
            current = self.current.stat()
        except FileNotFoundError:
            return None
        for version in self.versions():
            try:
                if os.path.samestat(version.path.stat(), current):
                    return version.run_id
            except FileNotFoundError:  # pruned by a concurrent writer since the listing
                continue
        return None

    def make_current(self, run_id: str) -> None:
        tmp = self.current.with_name(f".{self.current.name}.{os.getpid()}.link")
        tmp.unlink(missing_ok=True)
        os.link(self.version(run_id), tmp)
        os.replace(tmp, self.current)


class ObjectPartitionStore(PartitionStore):
    """On an object store the current table is named by ``<partition>/CURRENT``; a copy of the version would
    double the storage and could not tell which version it is."""

    @property
    def pointer(self) -> UPath:
        return self.folder / "CURRENT"

    def _arrow(self, path: UPath) -> tuple[str, Any]:
        return path.path, self.fs

    def _write(self, table: pa.Table, path: UPath) -> None:
        # Written to a local file first, then uploaded: an upload that fails publishes nothing, whereas an
        # fsspec file is committed when closed, even by an exception, leaving a truncated object. The file
        # goes to $TMPDIR, which must hold the largest table.
        with tempfile.TemporaryDirectory(prefix="codon-upload-") as tmp:
            local = Path(tmp) / path.name
            write_parquet_atomic(table, local)
            self.fs.put_file(str(local), path.path)

    def current_data(self) -> UPath:
        run_id = self.current_run()
        if run_id is None:
            raise FileNotFoundError(f"{self.pointer} does not exist")
        return self.version(run_id)

    def current_run(self) -> str | None:
        try:
            return self.fs.cat_file(self.pointer.path).decode().strip()
        except FileNotFoundError:
            return None

    def make_current(self, run_id: str) -> None:
        self.fs.pipe_file(self.pointer.path, run_id.encode())


class _VersionedParquetStore(dg.UPathIOManager):
    """Dagster's UPathIOManager (paths on any fsspec filesystem, many-partition loads) over PartitionStore."""

    extension = ".parquet"

    def __init__(self, root: UPath, keep_versions: int):
        super().__init__(base_path=root)
        self.keep_versions = keep_versions

    def get_asset_relative_path(self, context: dg.InputContext | dg.OutputContext) -> UPath:
        from upath import UPath

        # An unpartitioned asset's table is <asset>/data.parquet, its versions <asset>/data/<run id>.parquet.
        return UPath(*context.asset_key.path, *([] if context.has_asset_partitions else ["data"]))

    def make_directory(self, path: UPath) -> None:
        if isinstance(path, Path):  # object stores have no folders
            path.mkdir(parents=True, exist_ok=True)

    def dump_to_path(self, context: dg.OutputContext, obj: pa.Table, path: UPath) -> None:
        PartitionStore.at(path).store(obj, run_id_of(context) or OUTSIDE_A_RUN, self.keep_versions)

    def get_metadata(self, context: dg.OutputContext, obj: pa.Table) -> dict[str, Any]:
        # Called after dump_to_path; `path` names the run's version, not the current table that moves on.
        partition = context.asset_partition_key if context.has_asset_partitions else None
        store = PartitionStore.at(table_path(self._base_path, context.asset_key, partition))
        version = store.version(run_id_of(context) or OUTSIDE_A_RUN)
        return {"path": dg.MetadataValue.path(str(version)), "bytes": version.stat().st_size}

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pa.Table | None:
        """The stored table; only the columns named in the input's ``columns`` metadata when it has one."""
        columns = (context.definition_metadata or {}).get("columns")
        try:
            return PartitionStore.at(path).read(run_id_of(context.upstream_output), columns)
        except FileNotFoundError:
            if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
                return None  # a many-partition input (e.g. every host) gets the partitions that exist
            raise FileNotFoundError(f"{path} does not exist: materialize {context.asset_key.to_user_string()} first") from None


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores ``pa.Table`` outputs under ``<base_dir>/<asset key path>/``: ``<partition>/<run id>.parquet`` per
    run, and the partition's current table."""

    base_dir: str = ""  # a folder or an fsspec URL; default: $CODON_ASSET_STORE, else the local storage root
    keep_versions: int = 5  # per asset partition, newest first; older versions are deleted

    def partition(self, asset_key: dg.AssetKey, partition: str | None) -> PartitionStore:
        """The stored versions of one asset partition (None: an unpartitioned asset)."""
        return PartitionStore.at(table_path(store_root(self.base_dir), asset_key, partition))

    def _store(self) -> _VersionedParquetStore:
        return _VersionedParquetStore(store_root(self.base_dir), self.keep_versions)

    def handle_output(self, context: dg.OutputContext, obj: pa.Table) -> None:
        if not isinstance(obj, pa.Table):
            raise TypeError(f"ParquetIOManager stores pyarrow Tables, got {type(obj).__name__}")
        self._store().handle_output(context, obj)

    def load_input(self, context: dg.InputContext) -> pa.Table | dict[str, pa.Table]:
        release_unused_memory()  # the previous step's tables are gone by now
        tables = self._store().load_input(context)
        release_unused_memory()  # the reader's decompression buffers
        return tables
