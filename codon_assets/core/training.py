"""Training a surrogate from enhanced records: grouped cross-validation with baselines, the refit on every
record, sigma calibration, feature importances and the figures people look at. Knows nothing of Dagster
or MLflow: the model stage and the MLflow resource take the result from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from codon_assets.core import plots
from codon_assets.core.markov import MarkovCdsModel
from codon_assets.core.surrogate import (
    SurrogateModel,
    TrainingSet,
    cross_validate,
    fit_surrogate,
    sigma_calibration,
    top_importances,
    training_set,
)

MIN_TRAINING_RECORDS = 20
CV_FOLDS = 5


@dataclass
class TrainingResult:
    model: SurrogateModel  # refitted on every record, sigma calibrated, Markov models attached
    data: TrainingSet
    metrics: dict[str, dict[str, float]]  # surrogate and baselines, on the same grouped folds
    held_out: np.ndarray  # labels of the cross-validated records
    out_of_fold: dict[str, np.ndarray]  # their out-of-fold predictions (mu, sigma, baselines) and rows
    importances: list[tuple[str, float]]  # top features by share of the mu model's gain

    @property
    def label_name(self) -> str:
        return "log10 measured" if self.data.label_source == "measured" else "log10 enhanced estimate"

    def write_plots(self, model_name: str, folder: Path) -> Path:
        """Held-out predictions against labels, feature importances and the label distribution as PNGs."""
        folder.mkdir(parents=True, exist_ok=True)
        oof = self.out_of_fold
        plots.predicted_vs_label(self.held_out, oof["mu"], oof["sigma"] * self.model.sigma_scale,
                                 f"{model_name}: held-out ({self.label_name})", folder / "predicted_vs_label.png")
        plots.importances(self.importances, f"{model_name}: top features (gain)", folder / "feature_importances.png")
        plots.histogram(self.data.target, f"{model_name}: labels", self.label_name, folder / "label_distribution.png")
        return folder


def feature_backend(enhanced: pa.Table) -> str:
    """The language-model backend the records' features came from (markov when none is recorded)."""
    backends = enhanced["feature_backend"].drop_null()
    return backends[0].as_py() if len(backends) else "markov"


def train_surrogate(enhanced: pa.Table, markov_models: dict[str, MarkovCdsModel]) -> TrainingResult:
    """Cross-validate, refit on every record, calibrate sigma on the out-of-fold predictions."""
    data = training_set(enhanced)
    if len(data.target) < MIN_TRAINING_RECORDS:
        raise ValueError(f"only {len(data.target)} records to train on; need at least {MIN_TRAINING_RECORDS}")
    backend = feature_backend(enhanced)
    metrics, oof = cross_validate(data, backend, folds=CV_FOLDS)
    model = fit_surrogate(data, np.arange(len(data.target)), backend)
    model.markov_models = markov_models
    held_out = data.target[oof["rows"]]
    model.sigma_scale = sigma_calibration(held_out, oof["mu"], oof["sigma"])
    metrics["surrogate"]["sigma_scale"] = model.sigma_scale
    model.metrics = {f"cv_{k}": v for k, v in metrics["surrogate"].items()}
    return TrainingResult(model, data, metrics, held_out, oof, top_importances(model))
