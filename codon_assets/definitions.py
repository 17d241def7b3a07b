"""The one Definitions object of the code location."""

from __future__ import annotations

import os

import dagster as dg

from codon_assets.deployment import default_executor
from codon_assets.design import codon_designs
from codon_assets.features import evo2_features
from codon_assets.ingest import converted_dataset, raw_tsv
from codon_assets.jobs import ALL_JOBS
from codon_assets.schedules import ALL_SCHEDULES
from codon_assets.sensors import ALL_SENSORS
from codon_assets.surrogate import enhanced_dataset, surrogate_model, surrogate_model_unified
from resources.inputs import InputFiles
from resources.io_manager import ParquetIOManager
from resources.evo2.resource import Evo2Resource
from resources.mlflow_tracking import MlflowTracking
from resources.model_store import SurrogateModelIOManager
from resources.paths import DEFAULT_INPUT_DIR, DEFAULT_PROTEINS_DIR

ALL_ASSETS = [raw_tsv, converted_dataset, evo2_features, enhanced_dataset, surrogate_model, surrogate_model_unified,
              codon_designs]


def evo2_from_env(backend: str | None = None) -> Evo2Resource:
    """The feature resource as configured by CODON_EVO2_* / CODON_NIM_* variables (unset: defaults)."""
    env = os.environ
    settings = {
        "backend": backend or env.get("CODON_EVO2_BACKEND"),
        "model_name": env.get("CODON_EVO2_MODEL"),
        "local_path": env.get("CODON_EVO2_LOCAL_PATH"),
        "device": env.get("CODON_EVO2_DEVICE"),
        "nim_base_url": env.get("CODON_NIM_URL"),
        "nim_path": env.get("CODON_NIM_PATH"),
        "cache_dir": env.get("CODON_FEATURE_CACHE_DIR"),
    }
    return Evo2Resource(**{k: v for k, v in settings.items() if v})


def build_resources(evo2_backend: str | None = None) -> dict:
    """Resources for the current environment (CODON_INPUT_DIR, CODON_STORAGE_DIR, DAGSTER_HOME, CODON_EVO2_*)."""
    return {
        "input_files": InputFiles(input_dir=os.environ.get("CODON_INPUT_DIR", str(DEFAULT_INPUT_DIR)),
                                  proteins_dir=os.environ.get("CODON_PROTEINS_DIR", str(DEFAULT_PROTEINS_DIR))),
        "io_manager": ParquetIOManager(),
        "model_io_manager": SurrogateModelIOManager(),
        "evo2": evo2_from_env(evo2_backend),
        "mlflow_tracking": MlflowTracking(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", "")),
    }


defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=ALL_JOBS,
    schedules=ALL_SCHEDULES,
    sensors=ALL_SENSORS,
    resources=build_resources(),
    # Every job without an executor of its own, the implicit asset job of UI materializations and backfills
    # included, places each step by its tag: in process locally, the GPU step in its container or pod.
    executor=default_executor(),
)


def command_line_job() -> dg.JobDefinition:
    """Every asset as one job for `codon-assets`, run through `dg.execute_job`, which (unlike `materialize`)
    keeps no step's output in memory once it is stored. Its executor is chosen per run: steps in the
    calling process (fast start), or each step in a process of its own, so that a large partition's step
    gives all its memory back when it ends. Module level, so it is reconstructable."""
    job = dg.define_asset_job("codon_assets_command_line", executor_def=dg.multi_or_in_process_executor)
    return dg.Definitions(assets=ALL_ASSETS, jobs=[job], resources=build_resources()).resolve_job_def(job.name)
