"""A content-addressed, on-disk cache of per-record features.

Entries are keyed by (backend, model version, CDS SHA-256), so a rerun, a resumed run or another
partition with the same sequence reuses work already done. The model version names the model only
coarsely for the token backends ("evo2:evo2_7b", "nim:evo2-40b:output_layer"), so a cache may also be
given ``settings`` -- everything else that decides the scores: the local checkpoint's path and content
identity, the context window and its overlap, the numeric precision -- and, for a served model, a
``served_version`` callback naming the model the server reports. The folder of a key is
``<backend>/<model version>[/s-<settings digest>][/v-<served version>]``; change any part and nothing
written under the old key is read again. Each scored batch is appended as its own
Parquet shard, written to a temporary name and renamed, so a crash loses at most the batch in flight and
never leaves a partial shard that looks complete. A shard that cannot be read is set aside and its
records are scored again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping
from functools import lru_cache
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


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_identity(path: str | os.PathLike | None) -> str | None:
    """A content identity of local weights (a checkpoint file, or every file under a folder), or None
    without a path: a hash of each file's relative name, size and modification time (ns).

    Chosen over hashing the bytes because an Evo 2 checkpoint is 14-80 GB, minutes to read, while this is
    one ``stat`` per file; it changes whenever the weights are replaced, re-downloaded or rewritten in
    place. The price: a copy of the same weights with new mtimes (``cp`` without ``-p``) gets a new
    identity, i.e. one needless recomputation, never a wrong reuse. Computed once per process per path,
    like the weights themselves, which ``resource._load_evo2`` also loads once per process."""
    if path is None or str(path) == "":
        return None
    return _stat_identity(str(Path(path).expanduser().resolve()))


@lru_cache(maxsize=8)
def _stat_identity(resolved: str) -> str:
    root = Path(resolved)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file())
    else:
        raise FileNotFoundError(f"checkpoint path {resolved} does not exist")
    h = hashlib.sha256()
    for file in files:
        st = file.stat()
        name = file.name if file == root else file.relative_to(root).as_posix()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f"stat-sha256:{h.hexdigest()[:16]}"


class FeatureCache:
    """``settings``: what else decides the scores (JSON-able values; empty for the markov backend, whose
    model version names its training set and every parameter). ``served_version(probe)``: the version of
    the model a server reports, or None while unknown; ``probe=True`` allows it to ask the server."""

    def __init__(self, root: str | Path, settings: Mapping[str, object] | None = None,
                 served_version: Callable[[bool], str | None] | None = None):
        self.root = Path(root)
        self.settings = dict(settings or {})
        self._served_version = served_version

    def _settings_dir(self, backend: str, model_version: str) -> Path:
        folder = self.root / _safe(backend) / _safe(model_version)
        if self.settings:
            folder = folder / f"s-{_digest(json.dumps(self.settings, sort_keys=True, default=str))}"
        return folder

    def key(self, backend: str, model_version: str, probe: bool = False) -> str | None:
        """The key (a folder relative to the root) of scores from this model with these settings; None when a
        served model's version is not known (and ``probe`` is False or the server could not tell)."""
        folder = self._dir(backend, model_version, probe)
        return None if folder is None else folder.relative_to(self.root).as_posix()

    def _dir(self, backend: str, model_version: str, probe: bool = False) -> Path | None:
        folder = self._settings_dir(backend, model_version)
        if self._served_version is not None:
            version = self._served_version(probe)
            if version is None:
                return None
            safe = _safe(version)[:64]
            folder = folder / (f"v-{safe}" if safe == version else f"v-{safe}-{_digest(version)[:8]}")
        return folder

    def _shards(self, backend: str, model_version: str, probe: bool = False) -> list[Path]:
        folder = self._dir(backend, model_version, probe)
        return sorted(folder.glob("part-*.parquet")) if folder is not None and folder.is_dir() else []

    def _read(self, shard: Path) -> pa.Table | None:
        try:
            return pq.read_table(shard)
        except (OSError, pa.ArrowException) as exc:
            log.warning("feature cache shard %s is unreadable (%s); setting it aside", shard, exc)
            shard.rename(shard.with_suffix(".corrupt"))
            return None

    def get(self, backend: str, model_version: str, seq_sha256: list[str]) -> pa.Table | None:
        """Cached rows for these hashes (one per hash at most), or None when nothing is cached."""
        if self._served_version is not None and not any(
                self._settings_dir(backend, model_version).glob("v-*/part-*.parquet")):
            return None  # nothing cached for these settings: no need to ask the server which model it serves
        wanted = pa.array(seq_sha256, pa.string())
        found = []
        for shard in self._shards(backend, model_version, probe=True):
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
        if not rows.num_rows:
            return
        folder = self._dir(backend, model_version)
        if folder is None:  # scored rows, yet no server reply said which model: do not file them under a guess
            log.warning("feature cache: the served model version of %s is unknown; %d rows not cached",
                        model_version, rows.num_rows)
            return
        self._describe(backend, model_version)
        write_parquet_atomic(rows, folder / f"part-{uuid.uuid4().hex}.parquet")

    def _describe(self, backend: str, model_version: str) -> None:
        """settings.json beside the shards, so a person can tell what an ``s-<digest>`` folder holds."""
        if not self.settings:
            return
        path = self._settings_dir(backend, model_version) / "settings.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".settings.json.{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps(self.settings, sort_keys=True, indent=1, default=str) + "\n")
            os.replace(tmp, path)

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
