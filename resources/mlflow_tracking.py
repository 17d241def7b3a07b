"""`MlflowTracking`: experiment tracking and the model registry, on plain `mlflow`.

(Not dagster-mlflow: its hook leaves runs open when assets are materialized from the UI.) The default
store is sqlite inside DAGSTER_HOME, so the embedded instance needs no server; a deployment points
``tracking_uri`` at its tracking server.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from resources.paths import dagster_home

EXPERIMENT = "codon-surrogate"
# The pyfunc wrapper is logged as code (MLflow "models from code"), not as a pickled object.
PYFUNC_CODE = Path(__file__).with_name("surrogate_pyfunc.py")


def pinned_requirements(*distributions: str) -> list[str]:
    """``name==installed version`` for each distribution. Logged models name their requirements
    explicitly: MLflow's inference would import the model in a subprocess per logged model (~1 s each)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in distributions]


# What loading each logged model imports.
BOOSTER_REQUIREMENTS = ("lightgbm", "numpy", "scipy")
PYFUNC_REQUIREMENTS = ("mlflow", "codon-assets", "lightgbm", "numpy", "pandas", "pyarrow", "scikit-learn", "scipy")


def pyfunc_signature():
    """Input and output columns of the pyfunc wrapper (built on use: importing mlflow is slow)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from codon_assets.core.surrogate_features import EVO2_COLUMNS

    inputs = [ColSpec("string", name) for name in ("sequence", "seq_sha256", "host")]
    inputs += [ColSpec("double", name, required=False) for name in EVO2_COLUMNS]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", "mu"), ColSpec("double", "sigma")]))


class MlflowTracking(dg.ConfigurableResource):
    tracking_uri: str = ""  # default: sqlite:///<DAGSTER_HOME>/mlflow/mlflow.db
    artifact_root: str = ""  # default: <DAGSTER_HOME>/mlflow/artifacts (for experiments created here)
    ui_url: str = ""  # where people open the MLflow UI, for links (e.g. http://127.0.0.1:5000)

    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        folder = dagster_home() / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'mlflow.db'}"

    def activate(self, experiment: str = EXPERIMENT) -> str:
        """Point the mlflow client at this store and make sure the experiment exists; returns its id."""
        import mlflow
        from filelock import FileLock

        uri = self.uri()
        if uri.startswith("sqlite:///"):
            # Two processes opening a new sqlite store at once both run its schema migrations and one fails
            # ("duplicate column"): the first use of a store is serialised by a lock file beside it.
            with FileLock(uri.removeprefix("sqlite:///") + ".lock", timeout=300):
                return self._activate(mlflow, uri, experiment)
        return self._activate(mlflow, uri, experiment)

    def _activate(self, mlflow, uri: str, experiment: str) -> str:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        if self.artifact_root:
            location = (Path(self.artifact_root) / experiment).resolve().as_uri()
        elif uri.startswith("sqlite:///"):
            # Beside the database, never MLflow's default ./mlruns in whatever directory the process runs.
            location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts" / experiment).resolve().as_uri()
        else:
            location = None  # a tracking server decides where its artifacts live
        return mlflow.create_experiment(experiment, artifact_location=location)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        base = self.ui_url or os.environ.get("CODON_MLFLOW_UI_URL", "http://127.0.0.1:5000")
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def load_registered(reference: str, tracking: MlflowTracking):
    """A SurrogateModel from ``name``, ``name/version`` or a ``models:/`` URI in the registry."""
    import mlflow

    tracking.activate()
    if not reference.startswith("models:/"):
        name, _, version = reference.partition("/")
        if not version:
            versions = mlflow.MlflowClient().search_model_versions(f"name = '{name}'")
            if not versions:
                raise LookupError(f"no registered model named {name!r} in {tracking.uri()}")
            version = str(max(int(v.version) for v in versions))
        reference = f"models:/{name}/{version}"
    return mlflow.pyfunc.load_model(reference).unwrap_python_model().model
