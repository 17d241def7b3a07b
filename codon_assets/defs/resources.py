"""The resources of the code location, built from the settings (``codon_assets/settings.py``). The same
resources serve every deployment profile: what differs between local, docker and k8s is the environment
they are built from and the executor (``codon_assets/deployment.py``)."""

from __future__ import annotations

import dagster as dg

from codon_assets import settings
from resources.evo2.resource import Evo2Resource
from resources.inputs import InputFiles
from resources.io_manager import ParquetIOManager
from resources.mlflow_tracking import MlflowTracking
from resources.model_store import ModelIOManager


def feature_resource(backend: str | None = None) -> Evo2Resource:
    """The feature resource as the environment configures it (``backend`` overrides CODON_EVO2_BACKEND)."""
    return Evo2Resource(**settings.evo2_settings(backend))


def build_resources(evo2_backend: str | None = None) -> dict[str, dg.ConfigurableResource | dg.ConfigurableIOManager]:
    return {
        "input_files": InputFiles(input_dir=settings.input_dir(), proteins_dir=settings.proteins_dir()),
        "io_manager": ParquetIOManager(),
        "model_io_manager": ModelIOManager(),
        "evo2": feature_resource(evo2_backend),
        "mlflow_tracking": MlflowTracking.from_settings(),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())
