"""Figures people look at: predicted vs label, sigma reliability, feature importances, distributions (PNG via
matplotlib)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


MAX_ERROR_BARS = 2_000


def predicted_vs_label(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, title: str, path: Path) -> Path:
    """Every record as a point; error bars (mu ± sigma) on a seeded sample of at most MAX_ERROR_BARS records:
    more are an unreadable band and cost a second each per 10,000 to draw."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot(y, mu, "o", ms=2.5, alpha=0.35, color="#2b6cb0", label=f"held-out records ({len(y)})")
    bars = np.sort(np.random.default_rng(0).choice(len(y), min(len(y), MAX_ERROR_BARS), replace=False))
    ax.errorbar(y[bars], mu[bars], yerr=sigma[bars], fmt="none", alpha=0.35, elinewidth=0.4, color="#2b6cb0",
                label="± sigma" + (f" ({len(bars)} sampled)" if len(bars) < len(y) else ""))
    ax.legend(loc="upper left", fontsize=8)
    lo, hi = float(min(y.min(), mu.min())), float(max(y.max(), mu.max()))
    ax.plot([lo, hi], [lo, hi], color="#c53030", lw=1)
    ax.set_xlabel("label (log10)")
    ax.set_ylabel("held-out prediction mu ± sigma")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def reliability(nominal: np.ndarray, observed: np.ndarray, title: str, records: int | None = None,
                path: Path | None = None) -> bytes:
    """Observed against nominal coverage of the intervals mu +- z sigma: on the diagonal when sigma is
    calibrated, below it where the intervals are too narrow. With ``records``, the band of +-2 binomial
    standard errors around the diagonal. PNG bytes, also written to ``path`` when given."""
    fig, ax = plt.subplots(figsize=(5, 5))
    if records:
        grid = np.linspace(0, 1, 101)
        band = 2 * np.sqrt(grid * (1 - grid) / records)
        ax.fill_between(grid, grid - band, grid + band, color="#a0aec0", alpha=0.35, lw=0,
                        label=f"±2 binomial SE ({records} records)")
    ax.plot([0, 1], [0, 1], color="#c53030", lw=1, label="calibrated")
    ax.plot(nominal, observed, "o-", ms=3.5, lw=1.2, color="#2b6cb0", label="held-out")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal coverage of mu ± z sigma")
    ax.set_ylabel("observed coverage")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    png = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(png)
    return png


def importances(items: list[tuple[str, float]], title: str, path: Path) -> Path:
    names, values = zip(*items[::-1]) if items else ((), ())
    fig, ax = plt.subplots(figsize=(6, 0.28 * max(len(items), 4) + 1))
    ax.barh(names, values, color="#2f855a")
    ax.set_xlabel("share of total gain")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def histogram(values: np.ndarray, title: str, xlabel: str, path: Path, bins: int = 40) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.hist(values[np.isfinite(values)], bins=bins, color="#6b46c1", alpha=0.85)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("records")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
