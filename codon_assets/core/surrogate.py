"""The expression surrogate: LightGBM quantile models giving a predicted level (mu) and its spread (sigma).

mu is the conditional median (alpha = 0.5) and hi the conditional 84th percentile, so |hi - mu| is one
standard deviation for a normal error. The two boosters are fitted independently and can cross, so sigma
is the distance between them, scaled by a calibration factor and never below a floor (``sigma_from_spread``;
calibration and reliability live in ``codon_assets.core.calibration``): it is always > 0. Cross-validation is
grouped (identical proteins never straddle train and test) and every data-dependent step (CAI weights,
rare-codon set) is fitted on the training folds only. Baselines are scored on the same folds: CAI, tAI, ENC
and ridge regression on codon frequencies. The calibration factor is fitted on out-of-fold predictions; the
coverage reported for it is cross-fitted (factor fitted on the other folds' out-of-fold rows, coverage
counted on fold k's), so no reported coverage comes from rows the factor was fitted on. The final models
are refitted on all records, grown in the same thread pool as the folds' (``validate_and_refit``).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.model_selection import GroupKFold

from codon_assets.core.calibration import (MIN_SIGMA, cross_fit_sigma, rank_metrics, regression_metrics,
                                           sigma_calibration, sigma_floor, sigma_from_spread)
from codon_assets.core.codon_metrics import effective_number_of_codons, host_gc_window
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
# LightGBM's own parameter names (lgb.train). On the measured sets of bench/yeast_quality.py, 250 trees of 31
# leaves at rate 0.05 (L2 5) rank at least as well as 600 of 15 at 0.03 (L2 1), at about half the cost.
LGB_PARAMS = {
    "num_iterations": 250,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "feature_fraction": 0.5,
    "lambda_l2": 5.0,
    "max_bin": 63,
    "num_threads": 2,
    "verbose": -1,
}
# The hi booster only sets sigma's spread, which the calibration factor rescales: a small one (100 trees of
# 7 leaves) gives as sharp a calibrated sigma, with the same held-out coverage, for a fraction of the cost.
LGB_PARAMS_HI = {"num_iterations": 100, "learning_rate": 0.1, "num_leaves": 7}


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
    label_scale: str = "log10"  # LOG10 or PER_HOST_Z: what mu means

    @cached_property
    def stats(self) -> dict[str, np.ndarray]:
        """``sequence_features`` of every record, computed once and shared by all folds and the refit."""
        return sequence_features(self.sequences)


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
    # 68.3 % of cross-validation records (fitted on out-of-fold predictions only; ``sigma_calibration``).
    sigma_scale: float = 1.0
    # Per host: summed codon counts of the training CDS and their 5th-95th percentile GC window, so codon
    # design starts from (and is constrained by) the same host profile the model was trained on.
    host_profiles: dict[str, dict] = field(default_factory=dict)
    # Where this model is registered (MLflow model URI and run), for what is derived from it.
    registry: dict[str, str] = field(default_factory=dict)
    # Smallest sigma this model gives (``sigma_floor`` of its training labels; MIN_SIGMA for older models).
    sigma_floor: float = MIN_SIGMA
    # The hosts whose measured labels trained the model; any other host in ``hosts`` is predicted by transfer.
    source_hosts: list[str] = field(default_factory=list)
    label_scale: str = "log10"  # what mu means: the host's log10 level, or its level relative to the host
    # sigma's factor for hosts not in source_hosts, fitted on leave-one-host-out predictions (core.transfer);
    # None where that was not possible (fewer than two measured hosts): sigma_scale then.
    transfer_sigma_scale: float | None = None

    def label_source_for(self, host: str) -> str:
        """``measured`` for a host whose own measurements trained the model, else ``transferred``."""
        return "measured" if host in self.source_hosts else "transferred"

    def matrix(self, sequences: pa.Array, evo2: dict[str, np.ndarray], host: np.ndarray,
               stats: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Features of records exactly as in training (each host with its own fitted builder). ``stats``:
        the records' ``sequence_features`` when already computed."""
        keys = np.unique(host)
        unknown = sorted(set(keys.tolist()) - set(self.builders))
        if unknown:
            raise ValueError(f"the model has no profile for host {', '.join(unknown)} (it knows {', '.join(self.builders)})")
        if len(self.builders) == 1 and len(keys) == 1:  # one host: its builder's matrix is the whole matrix
            return self.builders[keys[0]].transform(sequences, evo2, stats)
        parts = np.zeros((len(sequences), len(self.feature_names)))
        for key in keys:
            rows = np.flatnonzero(host == key)
            x = self.builders[key].transform(take_records(sequences, rows), take_rows(evo2, rows),
                                             None if stats is None else take_rows(stats, rows))
            if self.feature_names[-1] == "host":  # a model saved before host descriptors replaced the host id
                x = np.column_stack([x, np.full(len(rows), self.hosts.index(key))])
            parts[rows] = x
        return parts

    def predict(self, sequences: pa.Array, evo2: dict[str, np.ndarray], host: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.predict_matrix(self.matrix(sequences, evo2, host), host)

    def predict_matrix(self, x: np.ndarray, host: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """mu and calibrated sigma (> 0, also where the quantile models cross) for a built feature matrix of
        records of ``host`` (per record): a host the model has no labels of gets sigma calibrated on hosts
        left out of training (``transfer_sigma_scale``)."""
        mu, hi = self.quantiles_matrix(x)
        scale = self.sigma_scale
        if self.transfer_sigma_scale is not None:
            scale = np.where(np.isin(host, self.source_hosts), self.sigma_scale, self.transfer_sigma_scale)
        return mu, sigma_from_spread(hi - mu, scale, self.sigma_floor)

    def quantiles_matrix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The two boosters' raw predictions (median and 84th percentile), uncalibrated, as they come."""
        return self.mu.predict(x), self.hi.predict(x)

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
                    "sigma_floor": self.sigma_floor, "source_hosts": self.source_hosts, "label_scale": self.label_scale,
                    "transfer_sigma_scale": self.transfer_sigma_scale,
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
                   settings.get("registry", {}), settings.get("sigma_floor", MIN_SIGMA),
                   settings.get("source_hosts", settings["hosts"]), settings.get("label_scale", "log10"),
                   settings.get("transfer_sigma_scale"))


def _fit_builders(data: TrainingSet, rows: np.ndarray, transfer: bool = False) -> dict[str, FeatureBuilder]:
    """One builder per host. A transfer model (one that also predicts hosts without labels) takes every
    host's CAI reference without labels (ribosomal-protein genes), so CAI means the same for a host it
    learnt from and a host it predicts."""
    builders = {}
    counts = data.stats["counts"][rows]
    for key in np.unique(data.host[rows]):
        mine = data.host[rows] == key
        picked = rows[mine]
        builders[key] = FeatureBuilder.fit(
            counts[mine], key, label=None if transfer else data.measured[picked],
            protein_names=[data.protein_names[i] for i in picked], gene_names=[data.gene_names[i] for i in picked],
        )
    return builders


def _prepare_fit(data: TrainingSet, rows: np.ndarray, backend: str, transfer: bool) -> tuple[SurrogateModel, lgb.Dataset]:
    """A model fitted on ``rows`` up to its boosters (builders, sigma floor, host profiles) and its binned
    training data (binning costs as much as ~100 trees; the float matrix is freed once binned)."""
    hosts = sorted(set(data.host[rows].tolist()))
    builders = _fit_builders(data, rows, transfer)
    # No host id among the features: hosts differ by their descriptors (codon usage, GC, tRNA-based tAI,
    # host-relative CAI), so the model also predicts for a host it has no labels for.
    names = next(iter(builders.values())).names
    model = SurrogateModel(hosts, builders, names, None, None, backend, label_source=data.label_source,
                           sigma_floor=sigma_floor(data.target[rows]), source_hosts=hosts)
    stats, host = take_rows(data.stats, rows), data.host[rows]
    dataset = lgb.Dataset(model.matrix(take_records(data.sequences, rows), take_rows(data.evo2, rows), host, stats),
                          data.target[rows], params={"max_bin": LGB_PARAMS["max_bin"], "verbose": -1}).construct()
    for key in hosts:
        model.host_profiles[key] = host_profile(stats["counts"][host == key])
    return model, dataset


def _grow_boosters(fits: Iterable[tuple[SurrogateModel, lgb.Dataset]], seed: int) -> list[SurrogateModel]:
    """Grows both quantile boosters of each fit, in the order given (largest first), on one pool of
    LGB_PARAMS["num_threads"] threads (LightGBM releases the GIL) as soon as the fit is prepared, so the next is
    prepared meanwhile; one thread a booster, as the trees of these small models barely speed up with two."""
    def grow(dataset: lgb.Dataset, alpha: float) -> lgb.Booster:
        params = {**LGB_PARAMS, **(LGB_PARAMS_HI if alpha == ALPHA_HI else {}), "objective": "quantile",
                  "alpha": alpha, "seed": seed, "num_threads": 1}
        booster = lgb.Booster(params, dataset)
        booster.reset_parameter({"verbose": -1})  # LightGBM's log level is per thread
        for _ in range(params["num_iterations"]):
            if booster.update():  # no split improves any more
                break
        return booster

    with ThreadPoolExecutor(max_workers=max(1, LGB_PARAMS["num_threads"])) as pool:
        grown = [(model, pool.submit(grow, dataset, ALPHA_MU), pool.submit(grow, dataset, ALPHA_HI))
                 for model, dataset in fits]
        for model, mu, hi in grown:
            model.mu, model.hi = mu.result(), hi.result()
    return [model for model, _, _ in grown]


def fit_surrogates(data: TrainingSet, row_sets: Iterable[np.ndarray], backend: str, seed: int = 0,
                   transfer: bool = False) -> list[SurrogateModel]:
    """One model fitted on each set of rows (largest first), every booster grown in one pool while the next
    fit is prepared."""
    return _grow_boosters((_prepare_fit(data, rows, backend, transfer) for rows in row_sets), seed)


def host_profile(counts: np.ndarray) -> dict:
    """Summed codon counts of a host's CDS and their 5th-95th percentile GC window, so codon design starts
    from (and is constrained by) the host's own usage."""
    return {"codon_counts": counts.sum(axis=0).tolist(), "gc_window": list(host_gc_window(counts))}


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


CV_MAX_RECORDS = 10_000


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
                   max_records: int = CV_MAX_RECORDS, transfer: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
    """Out-of-fold predictions and metrics for the surrogate and the baselines, on the same grouped folds
    over ``cv_rows`` (returned as ``rows``; the predictions are for those records, in that order). sigma is
    calibrated without extra fits: ``sigma_scale`` is fitted on every out-of-fold row (the factor the refitted
    model gets); the returned ``sigma`` and coverages are cross-fitted (``cross_fit_sigma``)."""
    metrics, oof, _ = validate_and_refit(data, backend, folds, seed, max_records, transfer, refit=False)
    return metrics, oof


def validate_and_refit(data: TrainingSet, backend: str, folds: int = 5, seed: int = 0,
                       max_records: int = CV_MAX_RECORDS, transfer: bool = False,
                       refit: bool = True) -> tuple[dict, dict[str, np.ndarray], SurrogateModel | None]:
    """``cross_validate``, and with ``refit`` the model fitted on every record (as ``fit_surrogates``), its
    boosters grown in the same pool as the folds' (the refit does not depend on the folds)."""
    rows = cv_rows(data.protein, max_records, seed)
    splits = grouped_folds(take_records(data.protein, rows), folds)
    every = [np.arange(len(data.target))] if refit else []  # the largest fit first
    models = fit_surrogates(data, [*every, *(rows[train] for train, _ in splits)], backend, seed, transfer)
    final, models = models[0] if refit else None, models[len(every):]
    y = data.target[rows]
    mu, hi, floor, fold = np.zeros(len(y)), np.zeros(len(y)), np.zeros(len(y)), np.zeros(len(y), dtype=np.int64)
    baselines = {name: np.zeros(len(y)) for name in ("cai", "tai", "ridge")}
    counts = data.stats["counts"][rows].astype(np.float64)
    freq = counts[:, SENSE] / np.maximum(counts[:, SENSE].sum(axis=1, keepdims=True), 1)
    for k, ((train, test), model) in enumerate(zip(splits, models)):
        # One feature matrix per test fold serves the surrogate and the CAI and tAI baselines.
        held_out = rows[test]
        x = model.matrix(take_records(data.sequences, held_out), take_rows(data.evo2, held_out),
                         data.host[held_out], take_rows(data.stats, held_out))
        mu[test], hi[test] = model.quantiles_matrix(x)
        floor[test], fold[test] = model.sigma_floor, k
        for name in ("cai", "tai"):
            baselines[name][test] = x[:, model.feature_names.index(name)]
        baselines["ridge"][test] = ridge_predict(freq[train], y[train], freq[test])
    spread = np.abs(hi - mu)
    sigma, fold_scales = cross_fit_sigma(y, mu, spread, floor, fold)
    surrogate = regression_metrics(y, mu, sigma)
    surrogate.update({
        "coverage_1sigma_uncalibrated": float(np.mean(np.abs(y - mu) <= sigma_from_spread(spread, 1.0, floor))),
        "sigma_scale": sigma_calibration(y, mu, spread, floor),
        "sigma_scale_fold_min": float(fold_scales.min()),
        "sigma_scale_fold_max": float(fold_scales.max()),
        "quantile_crossing_rate": float(np.mean(hi < mu)),
        "sigma_at_floor_rate": float(np.mean(sigma <= np.fmax(floor, MIN_SIGMA))),
    })
    # CAI, tAI and ENC are scores, not predictions in label units: only their rank correlations mean something.
    # ENC is negated (a lower effective number of codons, a stronger bias, goes with higher expression).
    baselines["enc"] = -effective_number_of_codons(counts)
    metrics = {"surrogate": surrogate, "baseline_ridge_codon_freq": regression_metrics(y, baselines["ridge"])}
    for name in ("cai", "tai", "enc"):
        if np.isfinite(baselines[name]).sum() >= 10:  # tAI: hosts with a tRNA table only
            metrics[f"baseline_{name}"] = rank_metrics(y, baselines[name])
    out_of_fold = {"rows": rows, "mu": mu, "hi": hi, "sigma": sigma, "sigma_floor": floor, "fold": fold, **baselines}
    return metrics, out_of_fold, final


def ridge_predict(x: np.ndarray, y: np.ndarray, x_new: np.ndarray, alpha: float = 10.0) -> np.ndarray:
    """Ridge regression (penalty ``alpha``) on standardised columns, solved by its normal equations:
    StandardScaler + Ridge in closed form, fitted on ``x``, ``y`` and applied to ``x_new``."""
    mean, scale = x.mean(axis=0), np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    z = (x - mean) / scale
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return (x_new - mean) / scale @ w + y.mean()


def top_importances(model: SurrogateModel, n: int = 20) -> list[tuple[str, float]]:
    gain = model.mu.feature_importance(importance_type="gain")
    order = np.argsort(gain)[::-1][:n]
    total = gain.sum() or 1.0
    return [(model.feature_names[i], float(gain[i] / total)) for i in order]


# What training reads of an enhanced dataset: the records' inputs, then the two possible targets.
RECORD_COLUMNS = ["protein_id", "sequence", "host", "protein_aa", "protein_names", "gene_names", *EVO2_COLUMNS]
TRAINING_COLUMNS = [*RECORD_COLUMNS, "measured_log10", "expression_value", "feature_backend"]
LOG10 = "log10"  # mu is the log10 measured level, in the host's own unit
PER_HOST_Z = "per-host z of log10"  # mu is the level relative to the host's own records (transfer models)
MIN_MEASURED = 50  # a host with fewer measured records has no labels of its own: its model is transferred


def measured_hosts(enhanced: pa.Table) -> list[str]:
    """The hosts of ``enhanced`` with at least MIN_MEASURED measured records."""
    measured = np.isfinite(enhanced["measured_log10"].to_numpy(zero_copy_only=False).astype(float))
    hosts, counts = np.unique(np.array(enhanced["host"].to_pylist())[measured], return_counts=True)
    return sorted(h for h, n in zip(hosts.tolist(), counts) if n >= MIN_MEASURED)


def per_host_standardised(values: np.ndarray, host: np.ndarray) -> np.ndarray:
    """Each host's values centred on its median and scaled by its robust spread (1.4826 MAD)."""
    out = np.empty_like(values)
    for key in np.unique(host):
        mine = host == key
        centre = np.median(values[mine])
        spread = 1.4826 * np.median(np.abs(values[mine] - centre))
        out[mine] = (values[mine] - centre) / (spread if spread > 0 else 1.0)
    return out


def training_set(enhanced: pa.Table, standardise_per_host: bool = False) -> TrainingSet:
    """The measured records of the hosts with at least MIN_MEASURED of them, target log10 measured level.

    ``standardise_per_host``: the target is each host's log10 level standardised within the host
    (``per_host_standardised``). Hosts measure in different units (FPKM, copies per cell, normalised RNA),
    so only the relative level within a host carries over to another host: transfer models learn that.

    Only measurements are labels. The metadata estimate (``expression_value``) is built from length,
    confidence, likelihood and codon entropy, which are the model's own features: trained on it, the model
    would learn the heuristic back and cross-validation would measure that. A host without measurements
    gets a transferred model instead (``add_transfer_host``)."""
    measured = enhanced["measured_log10"].to_numpy(zero_copy_only=False).astype(float)
    sources = measured_hosts(enhanced)
    if not sources:
        raise ValueError(f"no host has {MIN_MEASURED} or more measured values: nothing to train on (give a "
                         "measured table, e.g. <alias>_measured.tsv beside the release file, or --measured)")
    rows = np.flatnonzero(np.isfinite(measured) & np.isin(np.array(enhanced["host"].to_pylist()), sources))
    table = enhanced.select(RECORD_COLUMNS)
    if not every_row(rows, table.num_rows):
        table = table.take(pa.array(rows, pa.int64()))
    host = np.array(table["host"].to_pylist())
    target = per_host_standardised(measured[rows], host) if standardise_per_host else measured[rows]
    return TrainingSet(
        protein_id=table["protein_id"].combine_chunks(),
        sequences=table["sequence"],
        evo2={name: table[name].to_numpy(zero_copy_only=False).astype(float) for name in EVO2_COLUMNS},
        target=target,
        host=host,
        protein=table["protein_aa"].combine_chunks(),
        protein_names=table["protein_names"].to_pylist(),
        gene_names=table["gene_names"].to_pylist(),
        measured=measured[rows],
        label_source="measured",
        label_scale=PER_HOST_Z if standardise_per_host else LOG10,
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
