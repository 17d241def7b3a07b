"""Honest uncertainty of the surrogate: sigma is always > 0, the coverage reported for the calibrated sigma is
counted on rows the calibration was not fitted on, and the reliability curve of a Gaussian interval."""

import lightgbm as lgb
import numpy as np
import pytest

from codon_assets.core import plots
from codon_assets.core.calibration import (
    COVERAGE_1SIGMA,
    MIN_SIGMA,
    RELIABILITY_LEVELS,
    calibration_splits,
    cross_fit_sigma,
    regression_metrics,
    reliability_curve,
    sigma_calibration,
    sigma_floor,
    sigma_from_spread,
)
from codon_assets.core.surrogate import SurrogateModel, grouped_folds


def _booster(x: np.ndarray, y: np.ndarray, alpha: float) -> lgb.Booster:
    params = {"objective": "quantile", "alpha": alpha, "num_threads": 1, "verbose": -1, "min_data_in_leaf": 5}
    return lgb.train(params, lgb.Dataset(x, y), num_boost_round=20)


def test_sigma_is_positive_when_the_quantile_models_cross(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = x[:, 0] + rng.normal(0, 0.3, 300)
    mu = _booster(x, y, 0.5)
    crossed = _booster(x, y - 2.0, 0.84)  # the "84th percentile" model sits far below the median model
    model = SurrogateModel(["h"], {}, ["a", "b", "c"], mu, crossed, "markov", sigma_scale=1.3, sigma_floor=0.04)
    hosts = np.full(len(x), "h")
    low, high = model.quantiles_matrix(x)
    assert np.all(high < low)  # the constructed case: the quantile models cross on every record
    pred_mu, sigma = model.predict_matrix(x, hosts)
    assert np.array_equal(pred_mu, low)
    assert np.all(sigma > 0) and np.allclose(sigma, np.maximum(1.3 * (low - high), 0.04))
    # Both quantiles equal (spread 0), or a calibration factor of 0: sigma is the floor, not 0.
    same = SurrogateModel(["h"], {}, ["a", "b", "c"], mu, mu, "markov", sigma_floor=0.04)
    assert np.allclose(same.predict_matrix(x, hosts)[1], 0.04)
    same.sigma_scale = 0.0
    assert np.all(same.predict_matrix(x, hosts)[1] == 0.04)
    # The refitted model as saved and loaded (what predict and the designs use) keeps its floor.
    loaded = SurrogateModel.load(model.save(tmp_path / "m"))
    assert loaded.sigma_floor == 0.04 and np.all(loaded.predict_matrix(x, hosts)[1] > 0)
    # Crossed, equal and NaN spreads with any factor: never <= 0.
    spread = np.array([-1.0, 0.0, np.nan, 1e-12, 2.0])
    for scale in (0.0, 1.0, 3.0):
        assert np.all(sigma_from_spread(spread, scale, 0.0) >= MIN_SIGMA)
    # The floor is a fraction of the labels' spread, and > 0 even for constant labels.
    assert sigma_floor(rng.normal(5.0, 1.0, 5000)) == pytest.approx(0.05, rel=0.1)
    assert sigma_floor(np.full(100, 2.0)) == MIN_SIGMA > 0


def test_cross_fitted_sigma_scales_each_fold_by_the_other_folds_only():
    rng = np.random.default_rng(1)
    protein = [f"P{i % 97}" for i in range(600)]  # proteins repeated: grouped folds
    fold = np.zeros(len(protein), dtype=int)
    for k, (_, test) in enumerate(grouped_folds(protein, 5)):
        fold[test] = k
    splits = calibration_splits(fold)
    assert len(splits) == 5
    names = np.array(protein)
    for k, (calibrate, evaluate) in enumerate(splits):
        assert np.array_equal(evaluate, np.flatnonzero(fold == k))
        assert not np.intersect1d(calibrate, evaluate).size and len(calibrate) + len(evaluate) == len(fold)
        assert not set(names[calibrate]) & set(names[evaluate])  # the grouping holds across the split

    true_sigma = rng.uniform(0.2, 1.0, len(fold))
    mu = rng.normal(size=len(fold))
    y = mu + true_sigma * rng.normal(size=len(fold))
    spread = true_sigma / 2  # the quantile models under-cover by half: the factor is ~2
    sigma, scales = cross_fit_sigma(y, mu, spread, 0.01, fold)
    assert np.all(sigma > 0) and scales.shape == (5,) and np.allclose(scales, 2.0, atol=0.4)
    for k, (calibrate, evaluate) in enumerate(splits):
        assert scales[k] == sigma_calibration(y[calibrate], mu[calibrate], spread[calibrate], 0.01)
        assert np.allclose(sigma[evaluate], sigma_from_spread(spread[evaluate], scales[k], 0.01))
    # Fold 0's labels do not reach fold 0's sigma (only the other folds' factors move).
    wild = y.copy()
    wild[fold == 0] = mu[fold == 0] + 25 * (y - mu)[fold == 0]
    sigma_wild, scales_wild = cross_fit_sigma(wild, mu, spread, 0.01, fold)
    assert np.array_equal(sigma_wild[fold == 0], sigma[fold == 0]) and scales_wild[0] == scales[0]
    assert np.all(scales_wild[1:] > scales[1:])
    # So the coverage counted with it is held out: fold 0's wild residuals are not covered ...
    zero = fold == 0
    assert np.mean(np.abs(wild - mu)[zero] <= sigma_wild[zero]) < 0.1
    # ... while a factor fitted on every row, fold 0 included, would cover 68.3 % of them in-sample.
    in_sample = sigma_from_spread(spread, sigma_calibration(wild, mu, spread, 0.01), 0.01)
    assert np.mean(np.abs(wild - mu) <= in_sample) >= COVERAGE_1SIGMA


def test_reliability_curve_is_monotone_and_nominal_for_gaussian_errors(tmp_path):
    rng = np.random.default_rng(2)
    n = 40_000
    sigma = rng.lognormal(-1.0, 0.5, n)
    mu = rng.normal(size=n)
    y = mu + sigma * rng.normal(size=n)
    curve = reliability_curve(y, mu, sigma)
    assert np.array_equal(curve["nominal"], RELIABILITY_LEVELS)
    assert curve["nominal"][0] == pytest.approx(0.10) and curve["nominal"][-1] == pytest.approx(0.95)
    assert np.all(np.diff(curve["observed"]) >= 0)
    assert np.allclose(curve["observed"], curve["nominal"], atol=0.012)  # binomial SE <= 0.0025 here
    # At the 68.3 % level the interval is mu +- 1 sigma, the coverage_1sigma metric.
    at_one = reliability_curve(y, mu, sigma, [COVERAGE_1SIGMA])
    assert at_one["z"][0] == pytest.approx(1.0)
    assert at_one["observed"][0] == regression_metrics(y, mu, sigma)["coverage_1sigma"]
    # Too narrow a sigma shows below the diagonal at every level, still monotone.
    narrow = reliability_curve(y, mu, sigma / 2)
    assert np.all(narrow["observed"] < narrow["nominal"] - 0.04) and np.all(np.diff(narrow["observed"]) >= 0)
    png = plots.reliability(curve["nominal"], curve["observed"], "synthetic", records=n, path=tmp_path / "r.png")
    assert png.startswith(b"\x89PNG") and (tmp_path / "r.png").read_bytes() == png
