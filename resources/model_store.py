"""The model store: an IO manager for model outputs (the surrogate, a host's Markov model), so models are asset
values that downstream assets take as inputs (codon design the surrogate; features and training the Markov model).

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

from codon_assets.core.markov import MarkovCdsModel
from codon_assets.core.surrogate import SurrogateModel
from codon_assets.settings import storage_root
from resources.io_manager import run_id_of

CURRENT = "CURRENT"
MARKOV_FILE = "markov.npz"


def save_model(model: SurrogateModel | MarkovCdsModel, folder: Path) -> None:
    if isinstance(model, SurrogateModel):
        model.save(folder)
    elif isinstance(model, MarkovCdsModel):
        folder.mkdir(parents=True)
        (folder / MARKOV_FILE).write_bytes(model.to_bytes())
    else:
        raise TypeError(f"the model store keeps SurrogateModel and MarkovCdsModel objects, got {type(model).__name__}")


def load_model(folder: Path) -> SurrogateModel | MarkovCdsModel:
    if (folder / MARKOV_FILE).exists():
        return MarkovCdsModel.from_bytes((folder / MARKOV_FILE).read_bytes())
    return SurrogateModel.load(folder)


class ModelIOManager(dg.ConfigurableIOManager):
    base_dir: str = ""  # default: the asset storage root

    def _folder(self, context: dg.OutputContext | dg.InputContext, partition: str | None = None) -> Path:
        root = Path(self.base_dir) if self.base_dir else storage_root()
        if partition is None:
            partition = context.asset_partition_key if context.has_asset_partitions else "all"
        return root.joinpath(*context.asset_key.path, partition)

    def handle_output(self, context: dg.OutputContext, obj: SurrogateModel | MarkovCdsModel) -> None:
        folder = self._folder(context)
        run_id = run_id_of(context) or "latest"
        version = folder / run_id
        staging = folder / f".{run_id}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        save_model(obj, staging)
        shutil.rmtree(version, ignore_errors=True)  # a retried step of the same run replaces its own attempt
        os.replace(staging, version)
        pointer = folder / f".{CURRENT}.{os.getpid()}.tmp"
        pointer.write_text(run_id)
        os.replace(pointer, folder / CURRENT)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(version))})

    def load_input(self, context: dg.InputContext) -> SurrogateModel | MarkovCdsModel | dict | None:
        if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
            # Every host's model (e.g. for the unified surrogate): the hosts that have one.
            models = {key: self._load(context, self._folder(context, key)) for key in context.asset_partition_keys}
            return {key: model for key, model in models.items() if model is not None}
        model = self._load(context, self._folder(context))
        if model is None and (context.definition_metadata or {}).get("allow_missing"):
            return None  # an input the asset can do without (it says when it needs it)
        if model is None:
            raise FileNotFoundError(f"no stored model in {self._folder(context)}: "
                                    f"materialize {context.asset_key.to_user_string()} first")
        return model

    def _load(self, context: dg.InputContext, folder: Path) -> SurrogateModel | MarkovCdsModel | None:
        """The version this run wrote when there is one, else the current one; None when there is none."""
        run_id = run_id_of(context.upstream_output)
        if run_id is None or not (folder / run_id).is_dir():
            current = folder / CURRENT
            if not current.exists():
                return None
            run_id = current.read_text().strip()
        return load_model(folder / run_id)
