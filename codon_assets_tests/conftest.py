"""Shared fixtures: paths to the bundled real samples and the shared development data, temporary instances."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "data"
# The team's shared real data sits beside the checkout (and beside CI's clean clone).
SHARED_DATA = Path(os.environ.get("CODON_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def isolated_mlflow_environment():
    """`mlflow.set_tracking_uri` exports MLFLOW_TRACKING_URI: without this, the store one test activates
    would become the default store of every later test and of the processes they start."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    for name in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[name]
    os.environ.update(saved)


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data {path} not present")
    return path


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    """A temporary DAGSTER_HOME holding the project's dagster.yaml, and asset storage inside it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(ROOT / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("CODON_STORAGE_DIR", raising=False)
    return home


@pytest.fixture
def instance(dagster_home):
    with dg.DagsterInstance.get() as instance:
        yield instance


def write_tsv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    """A release-layout table from dicts (missing fields left empty)."""
    from codon_assets.core.tsv import RELEASE_COLUMNS

    columns = columns or list(RELEASE_COLUMNS)
    lines = ["\t".join(columns)] + ["\t".join(str(row.get(c, "")) for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path
