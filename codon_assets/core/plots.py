"""Figures people look at: predicted vs label, feature importances, distributions (PNG via matplotlib)."""

from __future__ import annotations

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


def predicted_vs_label(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.errorbar(y, mu, yerr=sigma, fmt="o", ms=2.5, alpha=0.35, elinewidth=0.4, color="#2b6cb0")
    lo, hi = float(min(y.min(), mu.min())), float(max(y.max(), mu.max()))
    ax.plot([lo, hi], [lo, hi], color="#c53030", lw=1)
    ax.set_xlabel("label (log10)")
    ax.set_ylabel("held-out prediction mu ± sigma")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


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
