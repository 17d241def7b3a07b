"""Codon adaptation indices from codon counts: CAI (Sharp & Li 1987) and tAI (dos Reis et al. 2004); the
effective number of codons (ENC, Wright 1990); and the host's GC window.

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


# Amino acids with a synonymous choice, by degeneracy class (2-, 3-, 4- and 6-fold in the standard code).
_FAMILIES = {aa: codons for aa, codons in SYNONYMS.items() if aa != "*" and len(codons) > 1}
_SINGLE = sum(1 for aa, codons in SYNONYMS.items() if aa != "*" and len(codons) == 1)  # Met, Trp
ENC_MAX = 61.0  # every sense codon used equally


def effective_number_of_codons(counts: np.ndarray) -> np.ndarray:
    """ENC (Wright 1990) per record from (n, 64) codon counts (one record: (64,)): from 20 (one codon per
    amino acid) to 61 (no bias).

    Per amino acid with n >= 2 codons observed, homozygosity F = (n * sum p_i^2 - 1) / (n - 1); F is averaged
    within each degeneracy class k, and ENC = 2 + sum over classes of (amino acids in class) / mean F. A
    missing 3-fold class (no Ile) takes the mean F of the 2- and 4-fold classes, as Wright proposed; a record
    missing another class gets NaN. Values above 61 (F below its expectation under equal use) are set to 61.
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    classes: dict[int, list[np.ndarray]] = {}
    for codons in _FAMILIES.values():
        c = counts[:, codons]
        n = c.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = (n * ((c / n[:, None]) ** 2).sum(axis=1) - 1) / (n - 1)
        classes.setdefault(len(codons), []).append(np.where(n >= 2, f, np.nan))
    mean_f = {}
    for k, values in classes.items():
        stacked = np.column_stack(values)
        seen = np.isfinite(stacked).sum(axis=1)
        mean_f[k] = np.where(seen > 0, np.nansum(stacked, axis=1) / np.maximum(seen, 1), np.nan)
    if 3 in mean_f and 2 in mean_f and 4 in mean_f:
        mean_f[3] = np.where(np.isnan(mean_f[3]), (mean_f[2] + mean_f[4]) / 2, mean_f[3])
    with np.errstate(divide="ignore"):
        enc = _SINGLE + sum(len(classes[k]) / mean_f[k] for k in classes)
    return np.minimum(enc, ENC_MAX)  # NaN stays NaN (np.minimum propagates it)
