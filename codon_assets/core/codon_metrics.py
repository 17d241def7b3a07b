"""Codon adaptation indices from codon counts: CAI (Sharp & Li 1987) and tAI (dos Reis et al. 2004); and
the host's GC window.

Both are geometric means of per-codon weights over a CDS's codons. Stop codons and single-codon amino
acids (Met, Trp) carry no choice, so they are left out of the mean rather than scored as 0; a CDS
therefore never gets CAI = 0 because it ends with a stop.
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import numpy as np

from codon_assets.core.genetic_code import CODON_TO_AA, CODONS, SYNONYMS, reverse_complement
from codon_assets.core.sequence_stats import gc_content

# Codons that say something about choice: sense codons of amino acids with more than one codon.
CHOICE = np.array([CODON_TO_AA[c] != "*" and len(SYNONYMS[CODON_TO_AA[c]]) > 1 for c in CODONS])

# dos Reis et al. 2004 wobble penalties (s values; 1 - s is the pairing efficiency).
S_GU, S_IC, S_IA, S_UG = 0.41, 0.28, 0.9999, 0.68
# The host's own GC window: these percentiles of GC over its CDS bound the GC of designed CDS.
HOST_GC_PERCENTILES = (5.0, 95.0)


def relative_adaptiveness(reference_counts: np.ndarray, pseudocount: float = 0.5) -> np.ndarray:
    """w_c = f_c / max f over the codon's synonyms, from summed reference counts; NaN where there is no
    choice (stops, Met, Trp)."""
    counts = reference_counts.astype(np.float64) + pseudocount
    w = np.full(64, np.nan)
    for aa, codons in SYNONYMS.items():
        if aa != "*" and len(codons) > 1:
            w[codons] = counts[codons] / counts[codons].max()
    return w


def geometric_mean_index(counts: np.ndarray, w: np.ndarray) -> np.ndarray:
    """exp(mean log w) over each record's codons with a defined weight (NaN for a record with none)."""
    usable = np.isfinite(w) & (w > 0)
    log_w = np.where(usable, np.log(np.where(usable, w, 1.0)), 0.0)
    n = counts[:, usable].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.exp(counts @ log_w / np.maximum(n, 1)), np.nan)


def host_gc_window(host_counts: np.ndarray) -> tuple[float, float]:
    """The host's GC window (``HOST_GC_PERCENTILES`` of GC over its CDS) from per-record (n, 64) codon counts."""
    gc = gc_content(np.atleast_2d(host_counts))
    low, high = HOST_GC_PERCENTILES
    return float(np.percentile(gc, low)), float(np.percentile(gc, high))


def read_trna_copy_numbers(path: str | Path) -> dict[str, int]:
    """tRNA gene copy numbers by anticodon (DNA letters, 5'->3'), from rows like ``"Ala-AGC",11``."""
    copies: dict[str, int] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            anticodon = row["anticodon"].split("-")[-1].upper()
            copies[anticodon] = copies.get(anticodon, 0) + int(row["gcn"])
    return copies


def bundled_trna_table(host_key: str) -> Path | None:
    """The tRNA copy-number table shipped for a host (only S. cerevisiae has one: GtRNAdb sacCer3)."""
    path = resources.files("codon_assets") / "data" / "trna" / f"{host_key}.csv"
    return Path(str(path)) if path.is_file() else None


def tai_weights(copies: dict[str, int]) -> np.ndarray:
    """Per-codon tAI weights w (NaN where there is no choice) from anticodon copy numbers.

    A codon is read by the anticodon that pairs with it exactly and by wobble partners at its third base:
    C by G34 (exact) and I34 (A34 edited to inosine, s_IC); T by A34/I34 (exact) and G34 (s_GU); A by T34
    (exact) and I34 (s_IA); G by C34 (exact) and T34 (s_UG).
    """
    def gcn(first_anticodon_base: str, codon: str) -> float:
        # The anticodon is the reverse complement of the codon, with its 5' (wobble) base replaced.
        anticodon = first_anticodon_base + reverse_complement(codon[:2])
        return float(copies.get(anticodon, 0))

    raw = np.zeros(64)
    for i, codon in enumerate(CODONS):
        third = codon[2]
        if third == "C":
            raw[i] = gcn("G", codon) + (1 - S_IC) * gcn("A", codon)
        elif third == "T":
            raw[i] = gcn("A", codon) + (1 - S_GU) * gcn("G", codon)
        elif third == "A":
            raw[i] = gcn("T", codon) + (1 - S_IA) * gcn("A", codon)
        else:
            raw[i] = gcn("C", codon) + (1 - S_UG) * gcn("T", codon)
    w = np.full(64, np.nan)
    w[CHOICE] = raw[CHOICE] / raw[CHOICE].max()
    # A codon no tRNA reads gets the geometric mean of the others (dos Reis et al.), not 0.
    positive = w[CHOICE][w[CHOICE] > 0]
    w[CHOICE & (w == 0)] = np.exp(np.log(positive).mean())
    return w
