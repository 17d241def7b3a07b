"""The original tool's metadata expression estimate, reproduced exactly.

It is a heuristic score from UniProt annotations, not a measurement, and is labelled as such
(`expression_unit="estimated"`, `expression_assay="metadata_heuristic"`):

    start at 50
    reviewed entry                                   +20   (confidence "medium")
    subcellular location mentions cytoplasm/cytosol  +15
    subcellular location mentions ribosome           +30   (confidence "medium")
    subcellular location mentions membrane           -10
    subcellular location mentions secreted/extracellular  -5
    protein length 100-500 aa                        +10
    protein length < 50 aa or > 1000 aa              -10
    floor at 10; confidence "low" unless raised above.

Text matches are case-insensitive substrings of the location text; every rule that applies adds up.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BASE_SCORE = 50.0
FLOOR = 10.0
LOCATION_RULES: tuple[tuple[tuple[str, ...], float], ...] = (
    (("cytoplasm", "cytosol"), 15.0),
    (("ribosome",), 30.0),
    (("membrane",), -10.0),
    (("secreted", "extracellular"), -5.0),
)
REVIEWED_BONUS = 20.0


def _mentions(text: pa.Array, words: tuple[str, ...]) -> np.ndarray:
    hit = np.zeros(len(text), dtype=bool)
    for word in words:
        hit |= pc.match_substring(text, word, ignore_case=True).to_numpy(zero_copy_only=False)
    return hit


def metadata_expression_estimate(
    reviewed: np.ndarray, location: pa.Array, length_aa: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(value, confidence) per record; ``reviewed`` is a bool array (unknown counts as not reviewed)."""
    value = np.full(len(length_aa), BASE_SCORE)
    value += np.where(reviewed, REVIEWED_BONUS, 0.0)
    ribosome = np.zeros(len(length_aa), dtype=bool)
    for words, delta in LOCATION_RULES:
        hit = _mentions(location, words)
        value += np.where(hit, delta, 0.0)
        if words == ("ribosome",):
            ribosome = hit
    value += np.where((length_aa >= 100) & (length_aa <= 500), 10.0, 0.0)
    value += np.where((length_aa < 50) | (length_aa > 1000), -10.0, 0.0)
    value = np.maximum(value, FLOOR)
    confidence = np.where(reviewed | ribosome, "medium", "low")
    return value, confidence
