"""The model store: an IO manager for `SurrogateModel` outputs, so the surrogate is an asset value that
downstream assets (codon design) take as an input.

Each materialization is a folder ``<base_dir>/<asset key path>/<partition or all>/<run id>/`` in the model's
native formats (LightGBM text, JSON, Markov counts as .npz), written beside and renamed into place; the
partition's ``CURRENT`` file names the newest. A step reads the model its own run trained when there is one
(a concurrent run of the same partition cannot swap it), else the current one. Every version is kept: the
materialization's ``path`` and the MLflow registry both point at it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

from codon_assets.core.surrogate import SurrogateModel
from resources.io_manager import run_id_of
from resources.paths import storage_root

CURRENT = "CURRENT"


class SurrogateModelIOManager(dg.ConfigurableIOManager):
    base_dir: str = ""  # default: the asset storage root

    def _folder(self, context: dg.OutputContext | dg.InputContext) -> Path:
        root = Path(self.base_dir) if self.base_dir else storage_root()
        partition = context.asset_partition_key if context.has_asset_partitions else "all"
        return root.joinpath(*context.asset_key.path, partition)

    def handle_output(self, context: dg.OutputContext, obj: SurrogateModel) -> None:
        if not isinstance(obj, SurrogateModel):
            raise TypeError(f"SurrogateModelIOManager stores SurrogateModel objects, got {type(obj).__name__}")
        folder = self._folder(context)
        run_id = run_id_of(context) or "latest"
        version = folder / run_id
        staging = folder / f".{run_id}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        obj.save(staging)
        shutil.rmtree(version, ignore_errors=True)  # a retried step of the same run replaces its own attempt
        os.replace(staging, version)
        pointer = folder / f".{CURRENT}.{os.getpid()}.tmp"
        pointer.write_text(run_id)
        os.replace(pointer, folder / CURRENT)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(version))})

    def load_input(self, context: dg.InputContext) -> SurrogateModel:
        folder = self._folder(context)
        run_id = run_id_of(context.upstream_output)
        if run_id is None or not (folder / run_id).is_dir():
            current = folder / CURRENT
            if not current.exists():
                raise FileNotFoundError(f"no stored model in {folder}: materialize {context.asset_key.to_user_string()} first")
            run_id = current.read_text().strip()
        return SurrogateModel.load(folder / run_id)
