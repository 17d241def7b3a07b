"""`MlflowTracking`: experiment tracking and the model registry, on plain `mlflow`.

(Not dagster-mlflow: its hook leaves runs open when assets are materialized from the UI.) The default
store is sqlite inside DAGSTER_HOME, so the embedded instance needs no server; a deployment points
``tracking_uri`` at its tracking server.
"""

from __future__ import annotations

import functools
import gc
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import pyarrow as pa
from pydantic import PrivateAttr

from codon_assets.settings import dagster_home, mlflow_tracking_uri, mlflow_ui_url
from resources.mlflow_pyfunc import log_surrogate_pyfunc, pyfunc_dependencies

if TYPE_CHECKING:
    from codon_assets.core.surrogate import SurrogateModel
    from codon_assets.core.training import TrainingResult

EXPERIMENT = "codon-surrogate"
DESIGN_EXPERIMENT = "codon-designs"
# Logging processes started ahead of the run that will use them (``MlflowTracking.start_logging_early``), by
# the resource's configuration.
_STARTED_EARLY: dict[tuple[tuple[str, str], ...], LoggingProcess] = {}


class LoggingFailed(RuntimeError):
    """What the logging process raised: its traceback, the exception's own line last."""


class LoggingProcess:
    """MlflowTracking's logging in a process of its own (``python -m resources.mlflow_tracking``), started when
    a run sets the resource up. It imports mlflow, opens (creates) the store and the experiment and reads what
    the pyfunc's code imports while the run's earlier steps go on; a logging method called here is then run
    there (arguments and answer pickled over two pipes). Done in the run's process, that work (mlflow's
    import, its schema migrations, the logging) held the interpreter lock against the steps (measured: the
    whole 52,000-record graph ~0.7 s faster with this process). It ends when its request pipe closes (``close``,
    or the end of the run's process)."""

    def __init__(self, config: dict):
        answer_read, answer_write = os.pipe()
        try:
            self.process = subprocess.Popen([sys.executable, "-m", __name__, str(answer_write)],
                                            stdin=subprocess.PIPE, pass_fds=(answer_write,))
        finally:
            os.close(answer_write)
        self.answers = os.fdopen(answer_read, "rb")
        self.lock = threading.Lock()  # one request at a time
        self._send(config)

    def _send(self, message: object) -> None:
        pickle.dump(message, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self.process.stdin.flush()

    def call(self, method: str, *args, **kwargs):
        with self.lock:
            try:
                self._send((method, args, kwargs))
                done, value = pickle.load(self.answers)
            except (BrokenPipeError, EOFError):
                raise LoggingFailed(f"the MLflow logging process ended (exit status {self.process.wait()})") from None
        if not done:
            raise LoggingFailed(f"MLflow logging failed in its process:\n{value}")
        return value

    def close(self) -> None:
        with self.lock:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
            self.process.wait()
            self.answers.close()


def _in_logging_process(method):
    """``method`` runs in the resource's logging process when a run has started one, else here."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if self._logging is None:
            return method(self, *args, **kwargs)
        return self._logging.call(method.__name__, *args, **kwargs)
    return call


def serve(answer_fd: int) -> None:
    """The logging process: the resource's configuration, then (method, args, kwargs) requests until the pipe
    closes."""
    import logging
    import signal
    import traceback
    import warnings

    # Ctrl-C reaches the whole process group: the run stops; this process ends when the run closes its pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warnings.filterwarnings("ignore", module=r"mlflow\..*")
    for name in ("mlflow", "alembic"):  # their INFO lines (schema migrations, validation) are noise here
        logging.getLogger(name).setLevel(logging.WARNING)
    requests, answers = sys.stdin.buffer, os.fdopen(answer_fd, "wb")
    tracking = MlflowTracking(**pickle.load(requests))
    try:
        tracking.activate()
        pyfunc_dependencies()
        # Logging a model checks its requirements against the installed distributions; the first check maps
        # every installed module to its distribution (~1 s): done now, not after the training.
        from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

        warn_dependency_requirement_mismatches(["mlflow"])
        # What unpickling a training result and drawing its figures import (LightGBM, scipy, matplotlib).
        import codon_assets.core.plots  # noqa: F401
        import codon_assets.core.training  # noqa: F401
    except Exception:  # noqa: BLE001  (the first request meets it again and answers with it)
        pass
    while True:
        try:
            method, args, kwargs = pickle.load(requests)
        except EOFError:
            gc.freeze()  # the interpreter's exit then skips collecting what is about to be freed anyway
            return
        try:
            answer = (True, getattr(tracking, method)(*args, **kwargs))
        except Exception:  # noqa: BLE001  (answered: the run's step fails with it)
            answer = (False, traceback.format_exc().strip())
        pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()


@dataclass(frozen=True)
class LoggedRun:
    experiment_id: str
    run_id: str
    run_url: str


@dataclass(frozen=True)
class LoggedModel:
    """Where one training run went: its MLflow run and registered model version."""

    experiment_id: str
    run_id: str
    run_url: str
    model_name: str
    version: int
    figures: dict[str, bytes] = field(default_factory=dict)  # the logged plots as PNG, by name

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


class MlflowTracking(dg.ConfigurableResource):
    tracking_uri: str = ""  # default: sqlite:///<DAGSTER_HOME>/mlflow/mlflow.db
    artifact_root: str = ""  # default: <DAGSTER_HOME>/mlflow/artifacts (for experiments created here)
    ui_url: str = ""  # where people open the MLflow UI, for links (e.g. http://127.0.0.1:5000)

    @classmethod
    def from_settings(cls) -> MlflowTracking:
        """The tracking store and registry as the environment configures them."""
        return cls(tracking_uri=mlflow_tracking_uri())

    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        folder = dagster_home() / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'mlflow.db'}"

    _logging: LoggingProcess | None = PrivateAttr(default=None)  # the run's, from setup to teardown

    def _logging_key(self) -> tuple[tuple[str, str], ...]:
        return (("tracking_uri", self.uri()), ("artifact_root", self.artifact_root), ("ui_url", self.ui_url))

    def start_logging_early(self) -> None:
        """Start the logging process of the next run that sets this resource up now, before that run starts.
        The command line does so as it launches a run that trains: mlflow's import and the store's creation
        (~5 s of processor time on a new instance) then overlap the run's own start, which leaves a processor
        idle, instead of the steps."""
        key = self._logging_key()
        if key not in _STARTED_EARLY:
            _STARTED_EARLY[key] = LoggingProcess(dict(key))

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """The run's logging process (``LoggingProcess``): the one started early for it, else a new one."""
        key = self._logging_key()
        self._logging = _STARTED_EARLY.pop(key, None) or LoggingProcess(dict(key))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._logging is not None:
            self._logging.close()  # once it has finished: a run leaves a whole store (and no process behind)
            self._logging = None

    def _first_use_lock(self, uri: str):
        from contextlib import nullcontext

        from filelock import FileLock

        # Two processes opening a new sqlite store at once both run its schema migrations and one fails
        # ("duplicate column"): the first use of a store is serialised by a lock file beside it.
        return FileLock(uri.removeprefix("sqlite:///") + ".lock", timeout=300) if uri.startswith("sqlite:///") \
            else nullcontext()

    def activate(self, experiment: str = EXPERIMENT) -> str:
        """Point the mlflow client at this store and make sure the experiment exists; returns its id."""
        import mlflow

        uri = self.uri()
        with self._first_use_lock(uri):
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
        base = self.ui_url or mlflow_ui_url()
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    @_in_logging_process
    def log_training(self, result: TrainingResult, model_name: str, tags: dict[str, str]) -> LoggedModel:
        """One MLflow run for a trained surrogate: parameters, metrics of the surrogate and its baselines,
        the training records by id, the figures, both boosters (LightGBM text) and the pyfunc wrapper, registered as a new
        version of ``model_name``."""
        import mlflow

        from codon_assets.core.surrogate import ALPHA_HI, ALPHA_MU, LGB_PARAMS
        from codon_assets.core.training import CV_FOLDS

        experiment_id = self.activate()
        model, data = result.model, result.data
        with tempfile.TemporaryDirectory(prefix="surrogate-") as tmp, \
                mlflow.start_run(experiment_id=experiment_id, run_name=f"{model_name}-{tags.get('dagster.run_id', '')[:8]}",
                                 tags=tags) as run:
            work = Path(tmp)
            mlflow.log_params({"alpha_mu": ALPHA_MU, "alpha_hi": ALPHA_HI, "feature_backend": model.backend,
                               "label_source": model.label_source, "source_hosts": ",".join(model.source_hosts),
                               "records": len(data.target), "cv_folds": CV_FOLDS,
                               "cv_records": len(result.held_out), "cv_grouping": "identical protein",
                               "cai_reference": "; ".join(f"{h}: {b.cai_reference}" for h, b in model.builders.items()),
                               **{f"lgb_{k}": v for k, v in LGB_PARAMS.items()}})
            for name, values in result.metrics.items():
                mlflow.log_metrics({f"{name}.{k}": v for k, v in values.items()})
            # The training records by id (sequences stay in the enhanced dataset, linked by data version).
            # As numpy arrays: MLflow would infer the schema of a pandas frame's string columns value by value.
            ids = {"host": data.host, "protein_id": data.protein_id.to_numpy(zero_copy_only=False).astype(str)}
            mlflow.log_input(mlflow.data.from_numpy(ids, targets=data.target, name=f"{model_name}-training"),
                             context="training")
            plots = result.write_plots(model_name, work / "plots")
            mlflow.log_artifacts(str(plots), artifact_path="plots")
            figures = {path.stem: path.read_bytes() for path in sorted(plots.glob("*.png"))}
            # Both boosters in LightGBM's own text format (``lgb.Booster(model_file=...)``), beside the pyfunc
            # that serves them: a logged model of each would cost a second of MLflow's environment checks.
            for name, booster in (("mu", model.mu), ("hi", model.hi)):
                mlflow.log_text(booster.model_to_string(), f"boosters/{name}.txt")
            # The pyfunc packs its code (codon_assets modules) and pins only what that code imports.
            info = log_surrogate_pyfunc(model, data, work / "pyfunc", model_name)
            version = int(info.registered_model_version)
            mlflow.MlflowClient().update_model_version(
                model_name, str(version), description=f"Trained by Dagster run {tags.get('dagster.run_id', '')} "
                                                      f"({tags.get('dagster.asset_key', '')}).")
        return LoggedModel(experiment_id, run.info.run_id, self.run_url(experiment_id, run.info.run_id), model_name,
                           version, figures)

    @_in_logging_process
    def log_transferred(self, model: SurrogateModel, records: pa.Table, model_name: str,
                        tags: dict[str, str]) -> LoggedModel:
        """One MLflow run for a transferred model (no training of its own): where it comes from, the source
        model's cross-validation on the measured hosts, and the pyfunc, registered as a new version of
        ``model_name``."""
        import mlflow

        experiment_id = self.activate()
        host = records["host"][0].as_py() if records.num_rows else ""
        with tempfile.TemporaryDirectory(prefix="surrogate-") as tmp, \
                mlflow.start_run(experiment_id=experiment_id, run_name=f"{model_name}-{tags.get('dagster.run_id', '')[:8]}",
                                 tags=tags) as run:
            mlflow.log_params({"feature_backend": model.backend, "label_source": model.label_source,
                               "label_scale": model.label_scale, "source_hosts": ",".join(model.source_hosts),
                               "records": records.num_rows,
                               "cai_reference": f"{host}: {model.builders[host].cai_reference}"})
            mlflow.log_metrics({f"source.{k.removeprefix('cv_')}": v for k, v in model.metrics.items()})
            example = SimpleNamespace(protein_id=records["protein_id"], sequences=records["sequence"],
                                      host=np.array(records["host"].to_pylist()))
            info = log_surrogate_pyfunc(model, example, Path(tmp) / "pyfunc", model_name)
            version = int(info.registered_model_version)
            mlflow.MlflowClient().update_model_version(
                model_name, str(version), description=f"Transferred from {', '.join(model.source_hosts)} by Dagster "
                                                      f"run {tags.get('dagster.run_id', '')}.")
        return LoggedModel(experiment_id, run.info.run_id, self.run_url(experiment_id, run.info.run_id), model_name,
                           version)

    @_in_logging_process
    def log_designs(self, designs, summary: dict, params: dict, tags: dict[str, str], run_name: str) -> LoggedRun:
        """One MLflow run for a design batch: its settings, the numeric summary and the designs as TSV."""
        import mlflow

        experiment_id = self.activate(DESIGN_EXPERIMENT)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            mlflow.log_params(params)
            mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float)) and v is not None})
            mlflow.log_text(designs.to_csv(sep="\t", index=False), "designs.tsv")
        return LoggedRun(experiment_id, run.info.run_id, self.run_url(experiment_id, run.info.run_id))


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
    # Loading puts the model's packed code (code/) first on sys.path; this process already runs the
    # installed codon_assets, which the wrapper uses, so the path is not kept.
    saved = list(sys.path)
    try:
        return mlflow.pyfunc.load_model(reference).unwrap_python_model().model
    finally:
        sys.path[:] = saved


if __name__ == "__main__":
    # Through the module's own name, so that what it answers (LoggedModel, ...) unpickles in the run's process.
    from resources.mlflow_tracking import serve as serve_requests

    serve_requests(int(sys.argv[1]))
