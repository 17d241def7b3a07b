"""The expression surrogate: LightGBM quantile models giving a predicted level (mu) and its spread (sigma).

mu is the conditional median (alpha = 0.5) and hi the conditional 84th percentile, so sigma = hi - mu is
one standard deviation for a normal error. Cross-validation is grouped (identical proteins never straddle
train and test) and every data-dependent step (CAI weights, rare-codon set) is fitted on the training
folds only. Baselines are scored on the same folds: CAI alone and ridge regression on codon
frequencies. The final models are refitted on all records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
from scipy import stats as scipy_stats
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from codon_assets.core.markov import MarkovCdsModel
from codon_assets.core.sequence_stats import codon_counts, codon_entropy
from codon_assets.core.surrogate_features import EVO2_COLUMNS, GC_PER_CODON, SENSE, FeatureBuilder, sequence_features

ALPHA_MU, ALPHA_HI = 0.5, 0.84
LGB_PARAMS = {
    "n_estimators": 600,
    "learning_rate": 0.03,
    "num_leaves": 15,
    "min_child_samples": 20,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.5,
    "reg_lambda": 1.0,
    "n_jobs": 2,
    "verbose": -1,
}


@dataclass
class TrainingSet:
    """Records of one or more hosts with their target. ``host`` is per record."""

    sequences: pa.Array
    evo2: dict[str, np.ndarray]  # EVO2_COLUMNS
    target: np.ndarray
    host: np.ndarray  # host key per record
    protein: list[str]  # protein sequence per record (defines CV groups)
    protein_names: list[str]
    gene_names: list[str]
    measured: np.ndarray  # measured label (NaN where none), for the CAI reference
    label_source: str


def regression_metrics(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray | None = None) -> dict[str, float]:
    resid = y - mu
    metrics = {
        "r2": float(1 - (resid**2).sum() / ((y - y.mean()) ** 2).sum()),
        "mae": float(np.abs(resid).mean()),
        "spearman": float(scipy_stats.spearmanr(y, mu).statistic),
        "pearson": float(scipy_stats.pearsonr(y, mu).statistic),
    }
    if sigma is not None:
        metrics["coverage_1sigma"] = float(np.mean(np.abs(resid) <= sigma))  # ~0.68 when calibrated
    return metrics


@dataclass
class SurrogateModel:
    hosts: list[str]  # category order of the host feature (one host: no host feature)
    builders: dict[str, FeatureBuilder]
    feature_names: list[str]
    mu: lgb.Booster
    hi: lgb.Booster
    backend: str  # feature backend the evo2 columns come from
    markov_models: dict[str, MarkovCdsModel] = field(default_factory=dict)  # per host, for new sequences
    label_source: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    # Quantile boosters under-cover out of sample; sigma is scaled so that held-out |y - mu| <= sigma for
    # 68.3 % of cross-validation records (fitted on out-of-fold predictions only).
    sigma_scale: float = 1.0
    # Per host: summed codon counts of the training CDS and their 5th-95th percentile GC window, so codon
    # design starts from (and is constrained by) the same host profile the model was trained on.
    host_profiles: dict[str, dict] = field(default_factory=dict)

    def matrix(self, sequences: pa.Array, evo2: dict[str, np.ndarray], host: np.ndarray) -> np.ndarray:
        """Features of records exactly as in training (each host with its own fitted builder)."""
        parts = np.zeros((len(sequences), len(self.feature_names)))
        for key in np.unique(host):
            rows = np.flatnonzero(host == key)
            x = self.builders[key].transform(sequences.take(pa.array(rows)), {k: v[rows] for k, v in evo2.items()})
            if len(self.hosts) > 1:
                x = np.column_stack([x, np.full(len(rows), self.hosts.index(key))])
            parts[rows] = x
        return parts

    def predict(self, sequences: pa.Array, evo2: dict[str, np.ndarray], host: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.predict_matrix(self.matrix(sequences, evo2, host))

    def predict_matrix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """mu and sigma for an already built feature matrix."""
        mu = self.mu.predict(x)
        return mu, self.sigma_scale * np.maximum(self.hi.predict(x) - mu, 0.0)

    def markov_features(self, sequences: pa.Array, seq_sha256: list[str], host: np.ndarray) -> dict[str, np.ndarray]:
        """The evo2 feature columns for new sequences, from the stored Markov model of their host."""
        out = {name: np.full(len(sequences), np.nan) for name in EVO2_COLUMNS}
        out["codon_entropy"] = codon_entropy(codon_counts(sequences))
        for key in np.unique(host):
            rows = np.flatnonzero(host == key)
            scored = self.markov_models[key].score_stats(sequences.take(pa.array(rows)), [seq_sha256[i] for i in rows])
            for name in EVO2_COLUMNS:
                if name in scored:
                    out[name][rows] = scored[name]
        return out

    # Native formats: LightGBM text models, JSON settings, Markov counts as .npz.
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.mu.save_model(folder / "mu.txt")
        self.hi.save_model(folder / "hi.txt")
        for key, model in self.markov_models.items():
            (folder / f"markov_{key}.npz").write_bytes(model.to_bytes())
        settings = {"hosts": self.hosts, "feature_names": self.feature_names, "backend": self.backend,
                    "label_source": self.label_source, "metrics": self.metrics, "sigma_scale": self.sigma_scale,
                    "host_profiles": self.host_profiles,
                    "builders": {k: b.to_dict() for k, b in self.builders.items()},
                    "alphas": [ALPHA_MU, ALPHA_HI]}
        (folder / "surrogate.json").write_text(json.dumps(settings, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> SurrogateModel:
        folder = Path(folder)
        settings = json.loads((folder / "surrogate.json").read_text())
        markov = {p.stem.removeprefix("markov_"): MarkovCdsModel.from_bytes(p.read_bytes())
                  for p in folder.glob("markov_*.npz")}
        return cls(settings["hosts"], {k: FeatureBuilder.from_dict(v) for k, v in settings["builders"].items()},
                   settings["feature_names"], lgb.Booster(model_file=str(folder / "mu.txt")),
                   lgb.Booster(model_file=str(folder / "hi.txt")), settings["backend"], markov,
                   settings["label_source"], settings["metrics"], settings["sigma_scale"], settings["host_profiles"])


def _fit_builders(data: TrainingSet, rows: np.ndarray) -> dict[str, FeatureBuilder]:
    builders = {}
    counts = sequence_features(data.sequences.take(pa.array(rows)))["counts"]
    for key in np.unique(data.host[rows]):
        mine = data.host[rows] == key
        picked = rows[mine]
        builders[key] = FeatureBuilder.fit(
            counts[mine], key, label=data.measured[picked],
            protein_names=[data.protein_names[i] for i in picked], gene_names=[data.gene_names[i] for i in picked],
        )
    return builders


def _fit_boosters(x: np.ndarray, y: np.ndarray, categorical: list[int], seed: int) -> tuple[lgb.Booster, lgb.Booster]:
    boosters = []
    for alpha in (ALPHA_MU, ALPHA_HI):
        model = lgb.LGBMRegressor(objective="quantile", alpha=alpha, random_state=seed, **LGB_PARAMS)
        model.fit(x, y, categorical_feature=categorical or "auto")
        boosters.append(model.booster_)
    return boosters[0], boosters[1]


def fit_surrogate(data: TrainingSet, rows: np.ndarray, backend: str, seed: int = 0) -> SurrogateModel:
    hosts = sorted(set(data.host.tolist()))
    builders = _fit_builders(data, rows)
    names = next(iter(builders.values())).names + (["host"] if len(hosts) > 1 else [])
    model = SurrogateModel(hosts, builders, names, None, None, backend, label_source=data.label_source)
    evo2 = {k: v[rows] for k, v in data.evo2.items()}
    x = model.matrix(data.sequences.take(pa.array(rows)), evo2, data.host[rows])
    model.mu, model.hi = _fit_boosters(x, data.target[rows], [len(names) - 1] if len(hosts) > 1 else [], seed)
    counts = sequence_features(data.sequences.take(pa.array(rows)))["counts"]
    gc = counts @ GC_PER_CODON / np.maximum(3 * counts.sum(axis=1), 1)
    for key in hosts:
        mine = data.host[rows] == key
        model.host_profiles[key] = {"codon_counts": counts[mine].sum(axis=0).tolist(),
                                    "gc_window": [float(np.percentile(gc[mine], 5)), float(np.percentile(gc[mine], 95))]}
    return model


def grouped_folds(protein: list[str], folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """K folds in which identical proteins always fall on the same side of the split."""
    groups = np.unique(np.array(protein), return_inverse=True)[1]
    splitter = GroupKFold(n_splits=min(folds, len(np.unique(groups))))
    return list(splitter.split(np.zeros(len(groups)), groups=groups))


def cross_validate(data: TrainingSet, backend: str, folds: int = 5, seed: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
    """Out-of-fold predictions and metrics for the surrogate and both baselines, on the same grouped folds."""
    y = data.target
    mu, sigma = np.zeros(len(y)), np.zeros(len(y))
    cai_pred, ridge_pred = np.zeros(len(y)), np.zeros(len(y))
    counts = sequence_features(data.sequences)["counts"].astype(np.float64)
    freq = counts[:, SENSE] / np.maximum(counts[:, SENSE].sum(axis=1, keepdims=True), 1)
    for train, test in grouped_folds(data.protein, folds):
        model = fit_surrogate(data, train, backend, seed)
        # One feature matrix per test fold serves the surrogate and the CAI baseline.
        x = model.matrix(data.sequences.take(pa.array(test)), {k: v[test] for k, v in data.evo2.items()}, data.host[test])
        mu[test], sigma[test] = model.predict_matrix(x)
        cai_pred[test] = x[:, model.feature_names.index("cai")]
        ridge = make_pipeline(StandardScaler(), Ridge(alpha=10.0)).fit(freq[train], y[train])
        ridge_pred[test] = ridge.predict(freq[test])
    metrics = {
        "surrogate": regression_metrics(y, mu, sigma),
        # CAI is a score, not a prediction in label units: only its rank correlations are meaningful.
        "baseline_cai": {k: v for k, v in regression_metrics(y, cai_pred).items() if k in ("spearman", "pearson")},
        "baseline_ridge_codon_freq": regression_metrics(y, ridge_pred),
    }
    return metrics, {"mu": mu, "sigma": sigma, "cai": cai_pred, "ridge": ridge_pred}


def sigma_calibration(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Factor that makes |y - mu| <= factor * sigma hold for 68.3 % of out-of-fold predictions."""
    ok = sigma > 0
    if ok.sum() < 10:
        return 1.0
    return float(np.quantile(np.abs(y - mu)[ok] / sigma[ok], 0.6827))


def top_importances(model: SurrogateModel, n: int = 20) -> list[tuple[str, float]]:
    gain = model.mu.feature_importance(importance_type="gain")
    order = np.argsort(gain)[::-1][:n]
    total = gain.sum() or 1.0
    return [(model.feature_names[i], float(gain[i] / total)) for i in order]


MIN_MEASURED = 50  # fewer measured records than this: train on the enhanced estimate instead


def training_set(enhanced: pa.Table) -> TrainingSet:
    """The target and inputs from enhanced records (one host or several).

    Target: log10 of the measured level where the partition has at least MIN_MEASURED measured records
    (then only those records are used), else log10 of the enhanced estimate for every record. Mixing the
    two in one target would put two unrelated scales on one axis, so a partition uses one or the other.
    """
    measured = enhanced["measured_log10"].to_numpy(zero_copy_only=False).astype(float)
    if np.isfinite(measured).sum() >= MIN_MEASURED:
        rows, target, source = np.flatnonzero(np.isfinite(measured)), measured, "measured"
    else:
        rows = np.arange(enhanced.num_rows)
        target = np.log10(enhanced["expression_value"].to_numpy(zero_copy_only=False).astype(float))
        source = "enhanced_estimate"
    table = enhanced.take(pa.array(rows, pa.int64()))
    return TrainingSet(
        sequences=table["sequence"].combine_chunks(),
        evo2={name: table[name].to_numpy(zero_copy_only=False).astype(float) for name in EVO2_COLUMNS},
        target=target[rows],
        host=np.array(table["host"].to_pylist()),
        protein=table["protein_aa"].to_pylist(),
        protein_names=table["protein_names"].to_pylist(),
        gene_names=table["gene_names"].to_pylist(),
        measured=measured[rows],
        label_source=source,
    )


def predict_frame(model: SurrogateModel, frame) -> tuple[np.ndarray, np.ndarray]:
    """mu and sigma for a DataFrame with ``sequence``, ``seq_sha256`` and ``host`` columns; the evo2
    feature columns are taken from the frame when present, else from the model's stored Markov model."""
    sequences = pa.array(frame["sequence"].tolist(), pa.string())
    host = np.array(frame["host"].tolist())
    if all(name in frame.columns for name in EVO2_COLUMNS):
        evo2 = {name: frame[name].to_numpy(dtype=float) for name in EVO2_COLUMNS}
    elif model.backend == "markov":
        evo2 = model.markov_features(sequences, frame["seq_sha256"].tolist(), host)
    else:
        raise ValueError(f"this model was trained on {model.backend} features: pass its feature columns")
    return model.predict(sequences, evo2, host)
