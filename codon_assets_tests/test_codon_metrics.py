"""The effective number of codons (Wright 1990) against values computed by hand."""

import numpy as np
import pytest

from codon_assets.core.codon_metrics import ENC_MAX, effective_number_of_codons
from codon_assets.core.genetic_code import SYNONYMS, codon_index


def counts_of(usage: dict[str, int]) -> np.ndarray:
    counts = np.zeros(64)
    for codon, n in usage.items():
        counts[codon_index(codon)] = n
    return counts


# One amino acid of each degeneracy class, and a second 2-fold and 4-fold one:
#   Phe TTT 3, TTC 1: n 4, sum p^2 = 10/16, F = (4 * 10/16 - 1) / 3 = 1/2
#   Lys AAA 2, AAG 2: n 4, sum p^2 = 1/2,   F = (2 - 1) / 3        = 1/3   -> F2 = (1/2 + 1/3) / 2 = 5/12
#   Ile ATT 2:        n 2, sum p^2 = 1,     F = (2 - 1) / 1        = 1     -> F3 = 1
#   Ala GCT 4:        n 4, sum p^2 = 1,     F = 1
#   Gly GGT 1, GGC 1: n 2, sum p^2 = 1/2,   F = (1 - 1) / 1        = 0     -> F4 = (1 + 0) / 2 = 1/2
#   Leu CTT, CTC, CTA 2 each: n 6, sum p^2 = 1/3, F = (2 - 1) / 5 = 1/5   -> F6 = 1/5
# ENC = 2 + 9 / (5/12) + 1 / 1 + 5 / (1/2) + 3 / (1/5) = 2 + 21.6 + 1 + 10 + 15 = 49.6
EXAMPLE = {"TTT": 3, "TTC": 1, "AAA": 2, "AAG": 2, "ATT": 2, "GCT": 4, "GGT": 1, "GGC": 1,
           "CTT": 2, "CTC": 2, "CTA": 2, "ATG": 5, "TGG": 3, "TAA": 1}


def test_enc_of_a_small_example_computed_by_hand():
    assert effective_number_of_codons(counts_of(EXAMPLE)) == pytest.approx([49.6])


def test_enc_without_isoleucine_takes_the_mean_of_the_two_and_four_fold_classes():
    # F3 = (F2 + F4) / 2 = (5/12 + 1/2) / 2 = 11/24: ENC = 2 + 21.6 + 24/11 + 10 + 15
    usage = {k: v for k, v in EXAMPLE.items() if k != "ATT"}
    assert effective_number_of_codons(counts_of(usage)) == pytest.approx([48.6 + 24 / 11])


def test_enc_bounds_and_rows():
    one_codon_each = np.zeros(64)
    uniform = np.zeros(64)
    for aa, codons in SYNONYMS.items():
        if aa != "*":
            one_codon_each[codons[0]] = 10
            uniform[codons] = 1000
    # Only one codon per amino acid: every F is 1, ENC = 2 + 9 + 1 + 5 + 3 = 20. Equal use: 61 (capped).
    enc = effective_number_of_codons(np.stack([one_codon_each, uniform, counts_of(EXAMPLE), np.zeros(64)]))
    assert enc[:3] == pytest.approx([20.0, ENC_MAX, 49.6])
    assert np.isnan(enc[3])  # no codons: undefined
    # Only a 4-fold amino acid seen: the 2- and 6-fold classes are missing, so ENC is undefined.
    assert np.isnan(effective_number_of_codons(counts_of({"GCT": 3, "GCC": 1}))[0])
