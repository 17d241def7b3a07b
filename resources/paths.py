"""Where the embedded instance and the asset files live on disk."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUT_DIR = PROJECT_ROOT / "examples" / "data"
DEFAULT_PROTEINS_DIR = PROJECT_ROOT / "examples" / "proteins"


def dagster_home() -> Path:
    """$DAGSTER_HOME, else `.dagster_home/` in the current directory (what the Makefile uses too)."""
    return Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()


def storage_root() -> Path:
    """Root of the Parquet asset files: $CODON_STORAGE_DIR, else `<DAGSTER_HOME>/codon_assets`."""
    return Path(os.environ.get("CODON_STORAGE_DIR") or dagster_home() / "codon_assets").resolve()


def asset_store() -> str:
    """Where the Parquet IO manager keeps asset tables: $CODON_ASSET_STORE, a folder or an object-store URL
    such as `s3://bucket/prefix` (the feature cache, models and exports stay local), else storage_root()."""
    return os.environ.get("CODON_ASSET_STORE") or str(storage_root())
