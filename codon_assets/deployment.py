"""Where steps run: the deployment profile and the docker executor configuration of the Evo 2 step.

Pure functions of the environment, so the code location, the run worker and the step container (which
imports the definitions again) all compute the same thing:

- ``CODON_DEPLOYMENT``: ``local`` (default: every step in the run's own process) or ``docker`` (the GPU
  job's steps each run in a container of ``CODON_EVO2_IMAGE`` through ``dagster_docker.docker_executor``).
- ``CODON_EVO2_IMAGE``: the step image (built from ``deployments/Dockerfile.evo2``, or
  ``deployments/Dockerfile`` for the CPU backends); required in the docker profile.
- ``CODON_DOCKER_NETWORK``: the container's network (default ``host``: Postgres, MLflow and NIM on the
  launching machine's loopback stay reachable). In compose, the compose network's name.
- ``CODON_DOCKER_GPU``: ``0``/``false``/``no``/``off`` drops the GPU request (a machine without a GPU, the
  markov backend, CI); anything else, or unset, requests one GPU (``--gpus 1``).
- ``CODON_DOCKER_VOLUMES``: comma-separated ``SRC[:DST[:MODE]]`` (DST defaults to SRC, MODE to rw); SRC is
  a path on the Docker host or a named volume. When unset, each data directory that is set (DAGSTER_HOME,
  CODON_STORAGE_DIR, CODON_FEATURE_CACHE_DIR, CODON_INPUT_DIR read-only, CODON_EVO2_LOCAL_PATH read-only)
  is bind-mounted at the same path: bind sources are paths on the Docker host, so that default is right
  when runs are launched on the host itself, not from inside a container (compose sets a named volume).
- ``CODON_DOCKER_MOUNT_CODE=1``: also bind-mount this checkout at the same path, read-only, so the step
  runs the launching side's code instead of the image's copy (development; the code pointer holds host
  paths).
- ``CODON_DOCKER_LABELS``: comma-separated ``key=value`` labels added to ``codon-assets.step=true``; step
  containers are never removed by Dagster, prune them with ``docker container prune --filter
  label=codon-assets.step=true``.

Environment forwarded into the step container (``env_vars``): DAGSTER_HOME, MLFLOW_TRACKING_URI,
NVIDIA_API_KEY, every ``CODON_*`` and ``DAGSTER_POSTGRES_*`` variable (the ``{env: ...}`` values of
dagster.yaml are resolved again inside the container) and the names listed in ``CODON_DOCKER_ENV``
(comma-separated), by name only, and only those set when the configuration is built: the docker executor
reads a bare name's value where the run is launched and fails the run before a container exists when it is
not set there. A secret therefore never enters the run configuration (which is stored with the run), only
the container's environment.

The step image is ``CODON_EVO2_IMAGE`` only while the code location does not name an image of its own:
dagster-docker prefers the code location's image (``dagster code-server start --container-image`` or
``DAGSTER_CURRENT_IMAGE`` in the code server's environment) to the executor's, so leave both unset on a
location whose Evo 2 step must run in another image.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROFILES = ("local", "docker")
DEFAULT_NETWORK = "host"
STEP_LABEL = "codon-assets.step"
FORWARDED_NAMES = ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "NVIDIA_API_KEY")
FORWARDED_PREFIXES = ("CODON_", "DAGSTER_POSTGRES_")
# Data directories bound at the same path when CODON_DOCKER_VOLUMES is unset, with their mode.
DATA_DIRS = (
    ("DAGSTER_HOME", "rw"),
    ("CODON_STORAGE_DIR", "rw"),
    ("CODON_FEATURE_CACHE_DIR", "rw"),
    ("CODON_INPUT_DIR", "ro"),
    ("CODON_EVO2_LOCAL_PATH", "ro"),
)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
_FALSE = {"0", "false", "no", "off"}


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _flag(value: str | None, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    return value.strip().lower() not in _FALSE


def deployment_profile(environ: Mapping[str, str] | None = None) -> str:
    """``local`` (default) or ``docker``, from ``CODON_DEPLOYMENT``."""
    value = (_env(environ).get("CODON_DEPLOYMENT") or "local").strip().lower()
    if value not in PROFILES:
        raise ValueError(f"CODON_DEPLOYMENT={value!r}: expected one of {', '.join(PROFILES)}")
    return value


def forwarded_env_vars(environ: Mapping[str, str] | None = None) -> list[str]:
    """Names of the variables the step container gets from the launching side (names only, set ones only)."""
    env = _env(environ)
    extra = {name.strip() for name in env.get("CODON_DOCKER_ENV", "").split(",") if name.strip()}
    return sorted(
        name for name in env
        if name.startswith(FORWARDED_PREFIXES) or name in FORWARDED_NAMES or name in extra
    )


def _parse_volume(spec: str) -> tuple[str, str, str]:
    parts = spec.strip().split(":")
    if not parts[0] or len(parts) > 3:
        raise ValueError(f"CODON_DOCKER_VOLUMES entry {spec!r}: expected SRC[:DST[:MODE]]")
    source = parts[0]
    target = parts[1] if len(parts) > 1 and parts[1] else source
    mode = parts[2] if len(parts) > 2 else "rw"
    if not target.startswith("/"):
        raise ValueError(f"CODON_DOCKER_VOLUMES entry {spec!r}: the container path must be absolute")
    if mode not in ("rw", "ro"):
        raise ValueError(f"CODON_DOCKER_VOLUMES entry {spec!r}: mode must be rw or ro")
    return source, target, mode


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def container_volumes(environ: Mapping[str, str] | None = None) -> list[str]:
    """The step container's volumes as docker-py ``volumes`` entries (``SRC:DST:MODE``)."""
    env = _env(environ)
    explicit = env.get("CODON_DOCKER_VOLUMES", "").strip()
    mounts: list[tuple[str, str, str]] = []
    if explicit:
        mounts = [_parse_volume(spec) for spec in explicit.split(",") if spec.strip()]
    else:
        for name, mode in DATA_DIRS:
            value = env.get(name, "").strip()
            if value:
                path = os.path.abspath(value)
                mounts.append((path, path, mode))
    if _flag(env.get("CODON_DOCKER_MOUNT_CODE"), False):
        mounts.append((str(PROJECT_ROOT), str(PROJECT_ROOT), "ro"))
    # A directory inside one already mounted, from the matching place with the same mode, is redundant;
    # one with another mode (say the data home inside a read-only code mount) is kept: Docker mounts the
    # parent first, then the child over it.
    kept: list[tuple[str, str, str]] = []
    for source, target, mode in sorted(mounts, key=lambda m: (len(m[1]), m[2] != "rw")):
        redundant = any(
            _inside(target, other_target) and mode == other_mode
            and source == other_source + target[len(other_target):]
            for other_source, other_target, other_mode in kept
        )
        if not redundant:
            kept.append((source, target, mode))
    return [f"{source}:{target}:{mode}" for source, target, mode in kept]


def container_labels(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    env = _env(environ)
    labels = {STEP_LABEL: "true", "codon-assets.deployment": deployment_profile(env)}
    for item in env.get("CODON_DOCKER_LABELS", "").split(","):
        if item.strip():
            key, sep, value = item.strip().partition("=")
            if not sep or not key:
                raise ValueError(f"CODON_DOCKER_LABELS entry {item!r}: expected key=value")
            labels[key] = value
    return labels


def docker_executor_config(gpu: bool | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Config of ``dagster_docker.docker_executor`` for the Evo 2 step (see the module docstring).

    ``gpu``: request one GPU; None reads ``CODON_DOCKER_GPU`` (default on).
    """
    env = _env(environ)
    image = env.get("CODON_EVO2_IMAGE", "").strip()
    if not image:
        raise ValueError(
            "CODON_EVO2_IMAGE is not set: the docker deployment runs the Evo 2 step in that image (built from "
            "deployments/Dockerfile.evo2, or deployments/Dockerfile for the markov/nim backends)"
        )
    if gpu is None:
        gpu = _flag(env.get("CODON_DOCKER_GPU"), True)
    container_kwargs: dict[str, Any] = {
        "volumes": container_volumes(env),
        "labels": container_labels(env),
    }
    if gpu:
        # `docker run --gpus 1`; on a machine without the NVIDIA runtime the container fails to start
        # ("could not select device driver"): set CODON_DOCKER_GPU=0 there.
        container_kwargs["device_requests"] = [{"driver": "nvidia", "count": 1, "capabilities": [["gpu"]]}]
    config: dict[str, Any] = {
        "image": image,
        "env_vars": forwarded_env_vars(env),
        "container_kwargs": container_kwargs,
    }
    network = (env.get("CODON_DOCKER_NETWORK") or DEFAULT_NETWORK).strip()
    if network:
        config["network"] = network
    return config


def evo2_gpu_executor(environ: Mapping[str, str] | None = None):
    """The executor of the job that runs ``evo2_features``: a configured docker executor in the docker
    profile, the in-process executor locally (the pool ``gpu`` limits it to one step at a time either way)."""
    import dagster as dg

    if deployment_profile(environ) == "docker":
        from dagster_docker import docker_executor

        return docker_executor.configured(docker_executor_config(environ=environ), name="evo2_docker_executor")
    return dg.in_process_executor


def evo2_k8s_tags(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run tags that put the Evo 2 job's run pod on a GPU node under the K8sRunLauncher (Helm deployment).

    Set them on the job that materializes ``evo2_features`` (``define_asset_job(..., tags=...)``): the
    K8sRunLauncher reads ``dagster-k8s/config`` from the run's tags, and a job's tags become its runs' tags
    (an asset's own ``op_tags`` only reach per-step pods of the ``k8s_job_executor``). Ignored elsewhere.

    ``CODON_K8S_GPU_NODE_SELECTOR`` (``key=value[,key=value]``, default ``nvidia.com/gpu.present=true``, the
    label of NVIDIA's GPU feature discovery), ``CODON_K8S_GPU_TOLERATION`` (the taint key of the GPU nodes,
    default ``nvidia.com/gpu``) and ``CODON_K8S_GPU_COUNT`` (default 1).
    """
    env = _env(environ)
    selector: dict[str, str] = {}
    for item in (env.get("CODON_K8S_GPU_NODE_SELECTOR") or "nvidia.com/gpu.present=true").split(","):
        if item.strip():
            key, sep, value = item.strip().partition("=")
            if not sep or not key:
                raise ValueError(f"CODON_K8S_GPU_NODE_SELECTOR entry {item!r}: expected key=value")
            selector[key] = value
    toleration = (env.get("CODON_K8S_GPU_TOLERATION") or "nvidia.com/gpu").strip()
    count = str(int(env.get("CODON_K8S_GPU_COUNT") or "1"))
    return {
        "dagster-k8s/config": {
            "container_config": {"resources": {"limits": {"nvidia.com/gpu": count}}},
            "pod_spec_config": {
                "node_selector": selector,
                "tolerations": [{"key": toleration, "operator": "Exists", "effect": "NoSchedule"}],
            },
        }
    }
