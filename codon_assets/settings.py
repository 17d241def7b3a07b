"""Configuration: the one module that reads the environment.

Every variable the platform reads is named here with its default. Resources (``codon_assets/defs/resources.py``),
the inbox sensor, the deployment profiles (``codon_assets/deployment.py``, which takes :func:`environment`),
the MLflow resource and the command line take their settings from these functions; the command line's
flags override the same settings objects through run configuration. Values are read when asked for, not at
import, so a test or the CLI entry point (which sets ``DAGSTER_HOME``) can change the environment first.

| variable | meaning | default |
| --- | --- | --- |
| ``DAGSTER_HOME`` | the Dagster instance folder | ``.dagster_home/`` in the working directory |
| ``CODON_STORAGE_DIR`` | local asset files, models, feature cache | ``$DAGSTER_HOME/codon_assets`` |
| ``CODON_ASSET_STORE`` | the asset tables' store: a folder or ``s3://bucket/prefix`` | ``CODON_STORAGE_DIR`` |
| ``CODON_INPUT_DIR`` / ``CODON_PROTEINS_DIR`` | release tables / design target proteins | ``examples/data`` / ``examples/proteins`` |
| ``CODON_INBOX_DIR`` | the inbox sensor's folder | ``$DAGSTER_HOME/inbox`` |
| ``CODON_EVO2_BACKEND``, ``CODON_EVO2_MODEL``, ``CODON_EVO2_LOCAL_PATH``, ``CODON_EVO2_DEVICE``, ``CODON_NIM_URL``, ``CODON_NIM_PATH``, ``CODON_FEATURE_CACHE_DIR`` | the feature resource | ``Evo2Resource``'s field defaults |
| ``MLFLOW_TRACKING_URI`` / ``CODON_MLFLOW_UI_URL`` | MLflow tracking / the UI links in metadata | sqlite in ``$DAGSTER_HOME`` / ``http://127.0.0.1:5000`` |
| ``CODON_HOSTS_FILE`` | the hosts file (YAML): host partitions, file aliases, genetic codes | ``codon_assets/data/hosts.yaml`` |
| ``CODON_CLI_LARGE_INPUT_BYTES`` | above this input size the CLI runs each step in a process of its own | 200 MiB |
| ``CODON_DEPLOYMENT`` and the ``CODON_DOCKER_*`` / ``CODON_K8S_*`` variables | where steps run | see ``codon_assets/deployment.py`` |

Secrets (the NIM API key) are read by name with :func:`secret` when a request needs them and are never
stored in a setting, run configuration or metadata.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUT_DIR = PROJECT_ROOT / "examples" / "data"
DEFAULT_PROTEINS_DIR = PROJECT_ROOT / "examples" / "proteins"
DEFAULT_HOSTS_FILE = Path(__file__).resolve().parent / "data" / "hosts.yaml"  # shipped with the package
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"
DEFAULT_LARGE_INPUT_BYTES = 200 * 2**20  # about 110,000 records of the release layout
# Settings of the feature resource, by the variable that sets each (unset: the resource's own default).
EVO2_VARIABLES = {
    "backend": "CODON_EVO2_BACKEND",
    "model_name": "CODON_EVO2_MODEL",
    "local_path": "CODON_EVO2_LOCAL_PATH",
    "device": "CODON_EVO2_DEVICE",
    "nim_base_url": "CODON_NIM_URL",
    "nim_path": "CODON_NIM_PATH",
    "cache_dir": "CODON_FEATURE_CACHE_DIR",
}


def environment() -> Mapping[str, str]:
    """The process environment, for the deployment profiles (which also accept any other mapping)."""
    return os.environ


def _get(name: str) -> str | None:
    return os.environ.get(name) or None  # set but empty counts as unset


def dagster_home() -> Path:
    return Path(_get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()


def storage_root() -> Path:
    return Path(_get("CODON_STORAGE_DIR") or dagster_home() / "codon_assets").resolve()


def asset_store() -> str:
    """A folder or an object-store URL (the feature cache, models and exports stay local)."""
    return _get("CODON_ASSET_STORE") or str(storage_root())


def input_dir() -> str:
    return _get("CODON_INPUT_DIR") or str(DEFAULT_INPUT_DIR)


def proteins_dir() -> str:
    return _get("CODON_PROTEINS_DIR") or str(DEFAULT_PROTEINS_DIR)


def inbox_dir() -> Path:
    return Path(_get("CODON_INBOX_DIR") or dagster_home() / "inbox")


def evo2_settings(backend: str | None = None) -> dict[str, str]:
    """The feature resource's settings that the environment gives (``backend`` overrides its variable).
    Settings are stored with every run's configuration, so a URL carrying a credential is refused: the
    NIM's key goes in NVIDIA_API_KEY, which is read only when a request is made."""
    from urllib.parse import urlsplit

    found = {field: value for field, name in EVO2_VARIABLES.items() if (value := _get(name))}
    url = found.get("nim_base_url", "")
    if "@" in urlsplit(url).netloc:
        from codon_assets.core.tsv import InputError

        raise InputError("CODON_NIM_URL carries a user name or password (user:secret@host); settings are stored "
                         "with each run, so give the URL without it and the key in NVIDIA_API_KEY")
    return found | ({"backend": backend} if backend else {})


def mlflow_tracking_uri() -> str:
    """``""`` when unset: the MLflow resource then keeps a sqlite database in the instance folder."""
    return _get("MLFLOW_TRACKING_URI") or ""


def mlflow_ui_url() -> str:
    return _get("CODON_MLFLOW_UI_URL") or DEFAULT_MLFLOW_UI_URL


def large_input_bytes() -> int:
    value = _get("CODON_CLI_LARGE_INPUT_BYTES")
    return int(value) if value else DEFAULT_LARGE_INPUT_BYTES


def hosts_file() -> Path:
    """The hosts file in use: the one shipped with the package unless ``CODON_HOSTS_FILE`` names another."""
    return Path(_get("CODON_HOSTS_FILE") or DEFAULT_HOSTS_FILE)


def secret(name: str) -> str:
    """The value of the variable ``name`` that holds a secret, read when it is about to be used."""
    return os.environ.get(name, "")
