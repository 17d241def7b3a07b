"""The expression surrogate: LightGBM quantile models giving a predicted level (mu) and its spread (sigma).

mu is the conditional median (alpha = 0.5) and hi the conditional 84th percentile, so sigma = hi - mu is
one standard deviation for a normal error. Cross-validation is grouped (identical proteins never straddle
train and test) and every data-dependent step (CAI weights, rare-codon set) is fitted on the training
folds only. Baselines are scored on the same folds: CAI alone and ridge regression on codon
frequencies. The final models are refitted on all records.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats as scipy_stats
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from codon_assets.core.codon_metrics import host_gc_window
from codon_assets.core.markov import MarkovCdsModel
from codon_assets.core.sequence_stats import codon_counts, codon_entropy
from codon_assets.core.surrogate_features import (
    EVO2_COLUMNS,
    SENSE,
    FeatureBuilder,
    sequence_features,
    every_row,
    take_records,
    take_rows,
)

ALPHA_MU, ALPHA_HI = 0.5, 0.84
LGB_PARAMS = {  # LightGBM's own parameter names (lgb.train)
    "num_iterations": 600,
    "learning_rate": 0.03,
    "num_leaves": 15,
    "min_data_in_leaf": 20,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "feature_fraction": 0.5,
    "lambda_l2": 1.0,
    "max_bin": 63,
    "num_threads": 2,
    "verbose": -1,
}


@dataclass
class TrainingSet:
    """Records of one or more hosts with their target. ``host`` is per record."""

    protein_id: pa.Array
    sequences: pa.Array | pa.ChunkedArray  # chunked as read: the largest column is never copied whole
    evo2: dict[str, np.ndarray]  # EVO2_COLUMNS
    target: np.ndarray
    host: np.ndarray  # host key per record
    protein: pa.Array  # protein sequence per record (defines CV groups)
    protein_names: list[str]
    gene_names: list[str]
    measured: np.ndarray  # measured label (NaN where none), for the CAI reference
    label_source: str

    @cached_property
    def stats(self) -> dict[str, np.ndarray]:
        """``sequence_features`` of every record, computed once and shared by all folds and the refit."""
        return sequence_features(self.sequences)


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
    # Where this model is registered (MLflow model URI and run), for what is derived from it.
    registry: dict[str, str] = field(default_factory=dict)

    def matrix(self, sequences: pa.Array, evo2: dict[str, np.ndarray], host: np.ndarray,
               stats: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Features of records exactly as in training (each host with its own fitted builder). ``stats``:
        the records' ``sequence_features`` when already computed."""
        keys = np.unique(host)
        if len(self.hosts) == 1 and len(keys) == 1:  # one host: its builder's matrix is the whole matrix
            return self.builders[keys[0]].transform(sequences, evo2, stats)
        parts = np.zeros((len(sequences), len(self.feature_names)))
        for key in keys:
            rows = np.flatnonzero(host == key)
            x = self.builders[key].transform(take_records(sequences, rows), take_rows(evo2, rows),
                                             None if stats is None else take_rows(stats, rows))
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
            scored = self.markov_models[key].score_stats(take_records(sequences, rows), [seq_sha256[i] for i in rows])
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
                    "host_profiles": self.host_profiles, "registry": self.registry,
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
                   settings["label_source"], settings["metrics"], settings["sigma_scale"], settings["host_profiles"],
                   settings.get("registry", {}))


def _fit_builders(data: TrainingSet, rows: np.ndarray) -> dict[str, FeatureBuilder]:
    builders = {}
    counts = data.stats["counts"][rows]
    for key in np.unique(data.host[rows]):
        mine = data.host[rows] == key
        picked = rows[mine]
        builders[key] = FeatureBuilder.fit(
            counts[mine], key, label=data.measured[picked],
            protein_names=[data.protein_names[i] for i in picked], gene_names=[data.gene_names[i] for i in picked],
        )
    return builders


def _fit_boosters(x: np.ndarray, y: np.ndarray, categorical: list[int], seed: int) -> tuple[lgb.Booster, lgb.Booster]:
    """The two quantile boosters, grown side by side on one binned dataset (binning costs as much as ~100
    trees). Each tree of these small models is cheap and barely speeds up with a second thread, so with two
    or more threads each booster gets half of them and both grow at once (LightGBM releases the GIL)."""
    dataset = lgb.Dataset(x, y, categorical_feature=categorical or "auto",
                          params={"max_bin": LGB_PARAMS["max_bin"], "verbose": -1}).construct()
    del x  # binned now; the caller passes the matrix without keeping it, so its memory goes back here
    threads = LGB_PARAMS["num_threads"]
    params = {**LGB_PARAMS, "objective": "quantile", "seed": seed, "num_threads": max(1, threads // 2)}
    boosters = [lgb.Booster({**params, "alpha": alpha}, dataset) for alpha in (ALPHA_MU, ALPHA_HI)]

    def grow(booster: lgb.Booster) -> None:
        booster.reset_parameter({"verbose": -1})  # LightGBM's log level is per thread
        for _ in range(LGB_PARAMS["num_iterations"]):
            if booster.update():  # no split improves any more
                break

    with ThreadPoolExecutor(max_workers=2 if threads >= 2 else 1) as pool:
        list(pool.map(grow, boosters))
    return boosters[0], boosters[1]


def fit_surrogate(data: TrainingSet, rows: np.ndarray, backend: str, seed: int = 0) -> SurrogateModel:
    hosts = sorted(set(data.host.tolist()))
    builders = _fit_builders(data, rows)
    names = next(iter(builders.values())).names + (["host"] if len(hosts) > 1 else [])
    model = SurrogateModel(hosts, builders, names, None, None, backend, label_source=data.label_source)
    stats, host = take_rows(data.stats, rows), data.host[rows]
    model.mu, model.hi = _fit_boosters(
        model.matrix(take_records(data.sequences, rows), take_rows(data.evo2, rows), host, stats),
        data.target[rows], [len(names) - 1] if len(hosts) > 1 else [], seed)
    counts = stats["counts"]
    for key in hosts:
        mine = host == key
        model.host_profiles[key] = {"codon_counts": counts[mine].sum(axis=0).tolist(),
                                    "gc_window": list(host_gc_window(counts[mine]))}
    return model


def protein_groups(protein: pa.Array | list[str]) -> np.ndarray:
    """Group id per record: records with identical protein sequences share one."""
    # Arrow's dictionary encoding: a numpy string array would be n x the longest protein in memory.
    protein = protein.combine_chunks() if isinstance(protein, pa.ChunkedArray) else pa.array(protein, pa.string())
    return pc.dictionary_encode(protein).indices.to_numpy(zero_copy_only=False)


def grouped_folds(protein: pa.Array | list[str], folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """K folds in which identical proteins always fall on the same side of the split."""
    groups = protein_groups(protein)
    splitter = GroupKFold(n_splits=min(folds, len(np.unique(groups))))
    return list(splitter.split(np.zeros(len(groups)), groups=groups))


CV_MAX_RECORDS = 20_000


def cv_rows(protein: pa.Array | list[str], max_records: int, seed: int = 0) -> np.ndarray:
    """Every record, or on larger sets a seeded random subset of whole protein groups of about
    ``max_records`` records (sorted): a held-out estimate needs thousands of records, not all of them."""
    groups = protein_groups(protein)
    if not max_records or len(groups) <= max_records:
        return np.arange(len(groups))
    order = np.random.default_rng(seed).permutation(groups.max() + 1)
    sizes = np.bincount(groups)[order]
    keep = order[: int(np.searchsorted(np.cumsum(sizes), max_records, side="right"))]
    return np.flatnonzero(np.isin(groups, keep))


def cross_validate(data: TrainingSet, backend: str, folds: int = 5, seed: int = 0,
                   max_records: int = CV_MAX_RECORDS) -> tuple[dict, dict[str, np.ndarray]]:
    """Out-of-fold predictions and metrics for the surrogate and both baselines, on the same grouped folds
    over ``cv_rows`` (returned as ``rows``; the predictions are for those records, in that order)."""
    rows = cv_rows(data.protein, max_records, seed)
    y = data.target[rows]
    mu, sigma = np.zeros(len(y)), np.zeros(len(y))
    cai_pred, ridge_pred = np.zeros(len(y)), np.zeros(len(y))
    counts = data.stats["counts"][rows].astype(np.float64)
    freq = counts[:, SENSE] / np.maximum(counts[:, SENSE].sum(axis=1, keepdims=True), 1)
    for train, test in grouped_folds(take_records(data.protein, rows), folds):
        model = fit_surrogate(data, rows[train], backend, seed)
        # One feature matrix per test fold serves the surrogate and the CAI baseline.
        held_out = rows[test]
        x = model.matrix(take_records(data.sequences, held_out), take_rows(data.evo2, held_out),
                         data.host[held_out], take_rows(data.stats, held_out))
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
    return metrics, {"rows": rows, "mu": mu, "sigma": sigma, "cai": cai_pred, "ridge": ridge_pred}


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


# What training reads of an enhanced dataset: the records' inputs, then the two possible targets.
RECORD_COLUMNS = ["protein_id", "sequence", "host", "protein_aa", "protein_names", "gene_names", *EVO2_COLUMNS]
TRAINING_COLUMNS = [*RECORD_COLUMNS, "measured_log10", "expression_value", "feature_backend"]
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
    table = enhanced.select(RECORD_COLUMNS)
    if not every_row(rows, table.num_rows):
        table = table.take(pa.array(rows, pa.int64()))
    return TrainingSet(
        protein_id=table["protein_id"].combine_chunks(),
        sequences=table["sequence"],
        evo2={name: table[name].to_numpy(zero_copy_only=False).astype(float) for name in EVO2_COLUMNS},
        target=target[rows],
        host=np.array(table["host"].to_pylist()),
        protein=table["protein_aa"].combine_chunks(),
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
