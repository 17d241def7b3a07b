"""The one Definitions object of the code location."""

from __future__ import annotations

import os

import dagster as dg

from codon_assets.features import evo2_features
from codon_assets.ingest import converted_dataset, raw_tsv
from resources import InputFiles, ParquetIOManager
from resources.evo2 import Evo2Resource
from resources.paths import DEFAULT_INPUT_DIR

ALL_ASSETS = [raw_tsv, converted_dataset, evo2_features]


def build_resources() -> dict:
    """Resources for the current environment (CODON_INPUT_DIR, CODON_STORAGE_DIR, DAGSTER_HOME)."""
    return {
        "input_files": InputFiles(input_dir=os.environ.get("CODON_INPUT_DIR", str(DEFAULT_INPUT_DIR))),
        "io_manager": ParquetIOManager(),
        "evo2": Evo2Resource(backend=os.environ.get("CODON_EVO2_BACKEND", "markov")),
    }


defs = dg.Definitions(assets=ALL_ASSETS, resources=build_resources())
