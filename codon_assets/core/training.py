"""Training a surrogate from enhanced records: grouped cross-validation with baselines, the refit on every
record, sigma calibration (held-out coverage and reliability), feature importances and the figures people
look at. Knows nothing of Dagster or MLflow: the model stage and the MLflow resource take the result from
here."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from codon_assets.core.calibration import reliability_curve
from codon_assets.core.markov import MarkovCdsModel
from codon_assets.core.surrogate import (
    PER_HOST_Z,
    SurrogateModel,
    TrainingSet,
    top_importances,
    training_set,
    validate_and_refit,
)
from codon_assets.core.transfer import add_transfer_host, leave_one_host_out

MIN_TRAINING_RECORDS = 20
CV_FOLDS = 5


@dataclass
class TrainingResult:
    model: SurrogateModel  # refitted on every record, sigma calibrated, Markov models attached
    data: TrainingSet
    metrics: dict[str, dict[str, float]]  # surrogate and baselines, on the same grouped folds
    held_out: np.ndarray  # labels of the cross-validated records
    # Their out-of-fold predictions and rows: mu, hi, sigma (calibrated, cross-fitted: each fold scaled by the
    # factor fitted on the other folds), sigma_floor, fold, and the baselines.
    out_of_fold: dict[str, np.ndarray]
    importances: list[tuple[str, float]]  # top features by share of the mu model's gain
    # Held-out reliability of sigma: nominal vs observed coverage of mu +- z sigma over the cross-validated
    # records (``reliability_curve``: nominal, observed, z), drawn by ``reliability_plot``.
    reliability: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def label_name(self) -> str:
        return "log10 measured" if self.data.label_scale == "log10" else "log10 measured, standardised per host"

    def write_plots(self, model_name: str, folder: Path) -> Path:
        """Held-out predictions against labels, feature importances and the label distribution as PNGs."""
        # matplotlib is imported by what draws (a run logs in a process of its own: its own never imports it).
        from codon_assets.core import plots

        folder.mkdir(parents=True, exist_ok=True)
        oof = self.out_of_fold
        plots.predicted_vs_label(self.held_out, oof["mu"], oof["sigma"],  # calibrated on the other folds
                                 f"{model_name}: held-out ({self.label_name})", folder / "predicted_vs_label.png")
        plots.importances(self.importances, f"{model_name}: top features (gain)", folder / "feature_importances.png")
        plots.histogram(self.data.target, f"{model_name}: labels", self.label_name, folder / "label_distribution.png")
        self.write_reliability_plot(model_name, folder)
        return folder

    def reliability_plot(self, model_name: str, path: Path | None = None) -> bytes:
        """The reliability figure of the held-out sigma as PNG bytes (also written to ``path`` if given)."""
        from codon_assets.core import plots

        return plots.reliability(self.reliability["nominal"], self.reliability["observed"],
                                 f"{model_name}\nsigma reliability, held-out ({self.label_name})",
                                 records=len(self.held_out), path=path)

    def write_reliability_plot(self, model_name: str, folder: Path) -> Path:
        """``reliability_plot`` as ``folder``/reliability.png (the path), beside ``write_plots``' figures."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "reliability.png"
        self.reliability_plot(model_name, path)
        return path


def feature_backend(enhanced: pa.Table) -> str:
    """The language-model backend the records' features came from (markov when none is recorded)."""
    backends = enhanced["feature_backend"].drop_null()
    return backends[0].as_py() if len(backends) else "markov"


def train_surrogate(enhanced: pa.Table, markov_models: dict[str, MarkovCdsModel],
                    transfer_to: dict[str, pa.Table] | None = None) -> TrainingResult:
    """Cross-validate, refit on every record, calibrate sigma on the out-of-fold predictions.

    Labels are measurements only (``training_set``). ``transfer_to``: the records of every host the model
    is for (a host's own model: that host; the unified model: all hosts). The model then takes every host's
    features without labels (CAI reference, descriptors) and adds the hosts without measurements
    (``add_transfer_host``), whose predictions are ``transferred``.
    """
    data = training_set(enhanced, standardise_per_host=bool(transfer_to))
    if len(data.target) < MIN_TRAINING_RECORDS:
        raise ValueError(f"only {len(data.target)} records to train on; need at least {MIN_TRAINING_RECORDS}")
    backend = feature_backend(enhanced)
    targets = {h: t for h, t in (transfer_to or {}).items() if h not in set(data.host.tolist())}
    transfer = bool(transfer_to)
    # The folds' models and the model on every record grow in one pool (validate_and_refit).
    metrics, oof, model = validate_and_refit(data, backend, folds=CV_FOLDS, transfer=transfer)
    for host_key, records in targets.items():
        add_transfer_host(model, records, host_key)
    if transfer_to and not set(transfer_to) & set(model.source_hosts):
        model.label_source = "transferred"  # the model of hosts none of whose measurements it learnt from
    model.markov_models = markov_models
    model.label_scale = data.label_scale
    held_out = data.target[oof["rows"]]
    model.sigma_scale = metrics["surrogate"]["sigma_scale"]  # fitted on every out-of-fold record
    metrics["surrogate"]["sigma_floor"] = model.sigma_floor
    model.metrics = {f"cv_{k}": v for k, v in metrics["surrogate"].items()}
    if transfer:
        # What a host without measurements can expect: each measured host predicted by the others' model.
        transfer_metrics, _ = leave_one_host_out(data, backend)
        if transfer_metrics:
            metrics["transfer"] = transfer_metrics
            model.transfer_sigma_scale = transfer_metrics["sigma_scale"]
            model.metrics |= {f"transfer_{k}": v for k, v in transfer_metrics.items()}
    return TrainingResult(model, data, metrics, held_out, oof, top_importances(model),
                          reliability_curve(held_out, oof["mu"], oof["sigma"]))


def transfer_model(source: SurrogateModel, records: pa.Table, host: str, markov: MarkovCdsModel) -> SurrogateModel:
    """The model of ``host``, which has no measurements of its own: ``source`` (trained on the measured hosts
    with host descriptors, per-host relative labels: the unified model) applied through ``host``'s own
    profile, built from its records without any label (``add_transfer_host``). The boosters are shared."""
    if not source.source_hosts or source.label_scale != PER_HOST_Z:
        raise ValueError("the source model is not a transfer model (trained on measured hosts with per-host "
                         "relative labels): materialize surrogate_model_unified")
    model = replace(source, hosts=list(source.hosts), builders=dict(source.builders),
                    host_profiles=dict(source.host_profiles), markov_models={host: markov},
                    label_source="transferred", metrics=dict(source.metrics), registry={})
    add_transfer_host(model, records, host)
    return model
