"""Held-out metrics of the surrogate and its baselines, calibration of its sigma, and its reliability.

sigma comes from the spread of two quantile models (|hi - mu|, hi the 84th percentile): it is scaled by a
factor fitted on out-of-fold predictions (``sigma_calibration``) and never falls below a floor
(``sigma_floor``, ``sigma_from_spread``), so it is always > 0. Coverage reported for a calibrated sigma is
cross-fitted (``cross_fit_sigma``): each fold is scaled by the factor fitted on the other folds only.
``reliability_curve`` gives the observed coverage of Gaussian intervals mu +- z sigma at nominal levels.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats

COVERAGE_1SIGMA = float(2 * scipy_stats.norm.cdf(1.0) - 1)  # 0.6827: P(|Z| <= 1) for a normal error
# Floor of sigma, in label units (log10 level): SIGMA_FLOOR_FRACTION of the training labels' robust SD, and
# never below MIN_SIGMA. Where the quantile boosters collapse (spread ~0) or cross, a sigma near 0 would
# claim a certainty no held-out residual supports, and mu - lam * sigma would reward designs for landing
# where the models happen to meet. 5 % of the label SD (~0.03 log10 for a typical SD of 0.5-1) is far below
# the replicate noise of expression assays, so the floor binds only where the spread collapsed.
SIGMA_FLOOR_FRACTION = 0.05
MIN_SIGMA = 1e-3  # constant labels (or a model saved before the floor existed): still > 0
# Nominal coverage levels of the reliability curve (Gaussian intervals mu +- z sigma).
RELIABILITY_LEVELS = np.round(np.arange(0.10, 0.951, 0.05), 2)


def regression_metrics(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray | None = None) -> dict[str, float]:
    """Held-out fit of predictions ``mu`` to labels ``y``, and with ``sigma`` the share within 1 and 2 sigma."""
    resid = y - mu
    metrics = {
        "r2": float(1 - (resid**2).sum() / ((y - y.mean()) ** 2).sum()),
        "mae": float(np.abs(resid).mean()),
        "spearman": float(scipy_stats.spearmanr(y, mu).statistic),
        "pearson": float(scipy_stats.pearsonr(y, mu).statistic),
    }
    if sigma is not None:
        metrics["coverage_1sigma"] = float(np.mean(np.abs(resid) <= sigma))  # ~0.683 when calibrated
        metrics["coverage_2sigma"] = float(np.mean(np.abs(resid) <= 2 * sigma))  # ~0.954 for a normal error
    return metrics


def rank_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Spearman and Pearson correlation of a score with the labels, over the records where it is defined."""
    ok = np.isfinite(score)
    return {"spearman": float(scipy_stats.spearmanr(y[ok], score[ok]).statistic),
            "pearson": float(scipy_stats.pearsonr(y[ok], score[ok]).statistic)}


def sigma_floor(y: np.ndarray) -> float:
    """Smallest sigma a model trained on labels ``y`` gives: SIGMA_FLOOR_FRACTION of their robust SD
    (1.4826 x MAD; the SD where the MAD is 0), at least MIN_SIGMA."""
    y = np.asarray(y, dtype=float)
    y = y[np.isfinite(y)]
    if len(y) == 0:
        return MIN_SIGMA
    spread = 1.4826 * float(np.median(np.abs(y - np.median(y)))) or float(np.std(y))
    return max(SIGMA_FLOOR_FRACTION * spread, MIN_SIGMA)


def sigma_from_spread(spread: np.ndarray, scale: float | np.ndarray = 1.0,
                      floor: float | np.ndarray = MIN_SIGMA) -> np.ndarray:
    """sigma = max(scale * spread, floor), strictly positive: ``spread`` is |hi - mu| (crossed quantile
    models still measure the spread by their distance), the floor is at least MIN_SIGMA, and fmax
    returns the floor where the spread is not a number."""
    return np.fmax(np.asarray(scale) * np.abs(spread), np.fmax(floor, MIN_SIGMA))


def sigma_calibration(y: np.ndarray, mu: np.ndarray, spread: np.ndarray, floor: float | np.ndarray = MIN_SIGMA,
                      level: float = COVERAGE_1SIGMA) -> float:
    """The smallest factor c with |y - mu| <= sigma_from_spread(spread, c, floor) for a share ``level`` of
    the given (out-of-fold) predictions; ``spread`` is |hi - mu| of the uncalibrated models. 1.0 for fewer
    than 10 predictions."""
    resid = np.abs(y - mu)
    if len(resid) < 10:
        return 1.0
    floor = np.fmax(floor, MIN_SIGMA)
    with np.errstate(divide="ignore", invalid="ignore"):
        # The factor each record needs to be covered: none within the floor, infinite at zero spread.
        needed = np.where(resid <= floor, 0.0, resid / np.abs(spread))
    scale = float(np.quantile(needed, level, method="inverted_cdf"))  # an attained value: no inf - inf
    if not np.isfinite(scale):  # too many zero-spread records beyond the floor: cover all that can be
        finite = needed[np.isfinite(needed)]
        scale = float(finite.max()) if len(finite) else 1.0
    return scale


def calibration_splits(fold: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per cross-validation fold k: (calibration rows: the out-of-fold rows of every other fold, evaluation
    rows: fold k's). The folds are grouped, so no protein is on both sides."""
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in np.unique(fold)]


def cross_fit_sigma(y: np.ndarray, mu: np.ndarray, spread: np.ndarray, floor: float | np.ndarray,
                    fold: np.ndarray, level: float = COVERAGE_1SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted calibrated sigma of out-of-fold predictions: each fold's rows are scaled by the factor
    ``sigma_calibration`` fits on the other folds' rows, so coverage counted on them is held out from the
    calibration. Returns sigma (> 0) per row and the factor per fold."""
    floor = np.broadcast_to(np.asarray(floor, dtype=float), np.shape(y))
    sigma, scales = np.empty(len(y)), []
    for calibrate, evaluate in calibration_splits(fold):
        scale = sigma_calibration(y[calibrate], mu[calibrate], spread[calibrate], floor[calibrate], level)
        sigma[evaluate] = sigma_from_spread(spread[evaluate], scale, floor[evaluate])
        scales.append(scale)
    return sigma, np.array(scales)


def reliability_curve(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
                      levels: np.ndarray = RELIABILITY_LEVELS) -> dict[str, np.ndarray]:
    """Observed coverage of the Gaussian intervals mu +- z sigma, z = Phi^-1((1 + level) / 2), at each
    nominal ``level``: the share of records with |y - mu| / sigma <= z (non-decreasing in the level)."""
    levels = np.asarray(levels, dtype=float)
    z = scipy_stats.norm.ppf((1 + levels) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.sort(np.abs(y - mu) / sigma)  # a sigma of 0 (or NaN) sorts last: never covered
    observed = np.searchsorted(ratio, z, side="right") / max(len(ratio), 1)
    return {"nominal": levels, "observed": observed, "z": z}
