"""The original tool's metadata expression estimate, rule by rule."""

import numpy as np
import pyarrow as pa
import pytest

from codon_assets.core.expression import metadata_expression_estimate


def estimate(reviewed, location, length):
    value, confidence = metadata_expression_estimate(np.array([reviewed]), pa.array([location]), np.array([length]))
    return float(value[0]), str(confidence[0])


@pytest.mark.parametrize(
    "reviewed, location, length, expected",
    [
        (False, "", 80, (50.0, "low")),  # base only (80 aa: no length rule)
        (True, "", 80, (70.0, "medium")),  # reviewed +20
        (False, "SUBCELLULAR LOCATION: Cytoplasm.", 80, (65.0, "low")),
        (False, "Cytosol", 80, (65.0, "low")),
        (False, "Cytoplasm, cytosol", 80, (65.0, "low")),  # one +15, not two
        (False, "associated with the Ribosome", 80, (80.0, "medium")),  # ribosome +30, medium
        (False, "Membrane; Multi-pass membrane protein", 80, (40.0, "low")),
        (False, "Secreted", 80, (45.0, "low")),
        (False, "Extracellular space", 80, (45.0, "low")),
        (False, "", 100, (60.0, "low")),  # 100-500 aa +10, inclusive
        (False, "", 500, (60.0, "low")),
        (False, "", 501, (50.0, "low")),
        (False, "", 49, (40.0, "low")),  # < 50 aa -10
        (False, "", 50, (50.0, "low")),
        (False, "", 1001, (40.0, "low")),  # > 1000 aa -10
        (False, "Membrane. Secreted.", 20, (25.0, "low")),  # 50 - 10 - 5 - 10
        (True, "Cytoplasm; ribosome", 300, (125.0, "medium")),  # everything positive at once
    ],
)
def test_rules(reviewed, location, length, expected):
    assert estimate(reviewed, location, length) == expected


def test_floor_is_ten(monkeypatch):
    # With the released rules the lowest reachable score is 25 (50 - 10 - 5 - 10); lower the base to see the
    # floor bind.
    from codon_assets.core import expression

    monkeypatch.setattr(expression, "BASE_SCORE", 0.0)
    assert estimate(False, "membrane", 20) == (10.0, "low")
