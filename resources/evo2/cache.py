"""A content-addressed, on-disk cache of per-record features.

Entries are keyed by (backend, model version, CDS SHA-256), so a rerun, a resumed run or another
partition with the same sequence reuses work already done. Each scored batch is appended as its own
Parquet shard, written to a temporary name and renamed, so a crash loses at most the batch in flight and
never leaves a partial shard that looks complete. A shard that cannot be read is set aside and its
records are scored again.
"""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from resources.io_manager import write_parquet_atomic

log = logging.getLogger(__name__)
COMPACT_ABOVE = 16  # shards per model before they are merged into one


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


class FeatureCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _dir(self, backend: str, model_version: str) -> Path:
        return self.root / _safe(backend) / _safe(model_version)

    def _shards(self, backend: str, model_version: str) -> list[Path]:
        folder = self._dir(backend, model_version)
        return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []

    def _read(self, shard: Path) -> pa.Table | None:
        try:
            return pq.read_table(shard)
        except (OSError, pa.ArrowException) as exc:
            log.warning("feature cache shard %s is unreadable (%s); setting it aside", shard, exc)
            shard.rename(shard.with_suffix(".corrupt"))
            return None

    def get(self, backend: str, model_version: str, seq_sha256: list[str]) -> pa.Table | None:
        """Cached rows for these hashes (one per hash at most), or None when nothing is cached."""
        wanted = pa.array(seq_sha256, pa.string())
        found = []
        for shard in self._shards(backend, model_version):
            table = self._read(shard)
            if table is not None:
                found.append(table.filter(pc.is_in(table["seq_sha256"], value_set=wanted)))
        if not found:
            return None
        table = pa.concat_tables(found, promote_options="default")
        # The same sequence may sit in two shards (two runs raced): keep its first copy.
        repeated = pd.Index(table["seq_sha256"].to_numpy(zero_copy_only=False)).duplicated()
        return table.filter(pa.array(~repeated))

    def put(self, backend: str, model_version: str, rows: pa.Table) -> None:
        if rows.num_rows:
            shard = self._dir(backend, model_version) / f"part-{uuid.uuid4().hex}.parquet"
            write_parquet_atomic(rows, shard)

    def compact(self, backend: str, model_version: str) -> None:
        """Merge many small shards into one (written before the old ones are removed)."""
        shards = self._shards(backend, model_version)
        if len(shards) <= COMPACT_ABOVE:
            return
        tables = [t for t in (self._read(s) for s in shards) if t is not None]
        if tables:
            self.put(backend, model_version, pa.concat_tables(tables, promote_options="default"))
        for shard in shards:
            shard.unlink(missing_ok=True)
