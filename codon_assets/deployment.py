"""Where steps run: the deployment profile and the executor that places each step.

The step's op tag decides its container. ``evo2_features`` carries ``codon_assets/compute=gpu`` (and its
``dagster-k8s/config``); every other step carries none. Pure functions of the environment, so the code
location, the run worker and the step containers (which import the definitions again) all compute the same:

- ``CODON_DEPLOYMENT``: ``local`` (default: steps in the run worker, Dagster's default executor), ``docker``
  (every step in a container of its own through the Docker API: the GPU-tagged step in ``CODON_EVO2_IMAGE``
  with one GPU requested, the others in the CPU image without one; ``gpu_routed_docker_executor``) or
  ``k8s`` (every step in a pod of its own through ``dagster_k8s.k8s_job_executor``: the GPU-tagged step's
  ``dagster-k8s/config`` gives its pod the Evo 2 image, a GPU limit, a GPU node selector and toleration and
  ``CODON_EVO2_BACKEND``; the others run in the code location's CPU image on CPU nodes). The profile's
  executor is the code location's default, so every job routes the same way: the implicit asset job behind
  UI materializations and backfills, and the jobs of schedules, sensors and declarative automation.
- ``CODON_EVO2_IMAGE``: the GPU step's image (built from ``deployments/Dockerfile.evo2``, or
  ``deployments/Dockerfile`` for the CPU backends); required in the docker profile.
- ``CODON_IMAGE``: the image of the other steps in the docker profile (built from ``deployments/Dockerfile``);
  when unset, the code location's own image (``dagster code-server start --container-image``).
- ``CODON_DOCKER_NETWORK``: the container's network (default ``host``: Postgres, MLflow and NIM on the
  launching machine's loopback stay reachable). In compose, the compose network's name.
- ``CODON_DOCKER_GPU``: ``0``/``false``/``no``/``off`` drops the GPU step's GPU request (a machine without a
  GPU, the markov backend, CI); anything else, or unset, requests one GPU (``--gpus 1``).
- ``CODON_DOCKER_VOLUMES``: comma-separated ``SRC[:DST[:MODE]]`` (DST defaults to SRC, MODE to rw); SRC is
  a path on the Docker host or a named volume. When unset, each data directory that is set (DAGSTER_HOME,
  CODON_STORAGE_DIR, CODON_FEATURE_CACHE_DIR, CODON_INPUT_DIR read-only, CODON_EVO2_LOCAL_PATH read-only)
  is bind-mounted at the same path: bind sources are paths on the Docker host, so that default is right
  when runs are launched on the host itself, not from inside a container (compose sets a named volume).
- ``CODON_DOCKER_MOUNT_CODE=1``: also bind-mount this checkout at the same path, read-only, so the step
  runs the launching side's code instead of the image's copy (development; the code pointer holds host
  paths).
- ``CODON_DOCKER_USER``: the ``uid[:gid]`` step containers run as (default: the launching process's own, so
  bind-mounted data directories stay writable and owned by whoever launched the run).
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

Kubernetes (``k8s`` profile): ``CODON_EVO2_IMAGE`` (default: the code location's image),
``CODON_K8S_EVO2_BACKEND`` (the GPU step's ``CODON_EVO2_BACKEND``, default ``evo2``; CPU pods keep theirs),
``CODON_K8S_GPU_NODE_SELECTOR`` (``key=value[,key=value]``, default ``nvidia.com/gpu.present=true``, the label
of NVIDIA's GPU feature discovery), ``CODON_K8S_GPU_TOLERATION`` (the taint key of the GPU nodes, default
``nvidia.com/gpu``) and ``CODON_K8S_GPU_COUNT`` (default 1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codon_assets.settings import environment

PROFILES = ("local", "docker", "k8s")
# The op tag that sends a step to the GPU container (docker) or GPU pod (k8s), and its value.
GPU_STEP_TAG = "codon_assets/compute"
GPU = "gpu"
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
    return environment() if environ is None else environ


def _flag(value: str | None, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    return value.strip().lower() not in _FALSE


def deployment_profile(environ: Mapping[str, str] | None = None) -> str:
    """``local`` (default), ``docker`` or ``k8s``, from ``CODON_DEPLOYMENT``."""
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


def gpu_container_kwargs(gpu: bool | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What the GPU step's container adds to the others': one GPU (``docker run --gpus 1``) unless
    ``gpu`` is False (None reads ``CODON_DOCKER_GPU``, default on). On a machine without the NVIDIA runtime
    such a container fails to start ("could not select device driver"): set CODON_DOCKER_GPU=0 there."""
    if gpu is None:
        gpu = _flag(_env(environ).get("CODON_DOCKER_GPU"), True)
    return {"device_requests": [{"driver": "nvidia", "count": 1, "capabilities": [["gpu"]]}]} if gpu else {}


def docker_executor_config(gpu: bool | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Config of ``gpu_routed_docker_executor`` in the docker profile (see the module docstring)."""
    env = _env(environ)
    gpu_image = env.get("CODON_EVO2_IMAGE", "").strip()
    if not gpu_image:
        raise ValueError(
            "CODON_EVO2_IMAGE is not set: the docker deployment runs the Evo 2 step in that image (built from "
            "deployments/Dockerfile.evo2, or deployments/Dockerfile for the markov/nim backends)"
        )
    config: dict[str, Any] = {
        "gpu_image": gpu_image,
        "gpu_container_kwargs": gpu_container_kwargs(gpu, env),
        "env_vars": forwarded_env_vars(env),
        "container_kwargs": {"volumes": container_volumes(env), "labels": container_labels(env),
                             "user": step_user(env)},
    }
    cpu_image = env.get("CODON_IMAGE", "").strip()
    if cpu_image:
        config["image"] = cpu_image
    network = (env.get("CODON_DOCKER_NETWORK") or DEFAULT_NETWORK).strip()
    if network:
        config["network"] = network
    return config


def step_user(env: Mapping[str, str]) -> str:
    """The user step containers run as: ``CODON_DOCKER_USER`` (``uid[:gid]``), else the launching process's own,
    so files a step writes to bind-mounted data directories belong to whoever launched the run (the images'
    own user, 1000, in compose; the developer or CI on a host)."""
    return (env.get("CODON_DOCKER_USER") or "").strip() or f"{os.getuid()}:{os.getgid()}"


def is_gpu_step(step_tags: Mapping[str, str]) -> bool:
    return step_tags.get(GPU_STEP_TAG) == GPU


def default_executor(environ: Mapping[str, str] | None = None):
    """The code location's executor for the deployment profile: every job that does not name its own runs
    with it, so each step lands where its tag says whatever launched the run."""
    import dagster as dg

    profile = deployment_profile(environ)
    if profile == "docker":
        from codon_assets.docker_executor import gpu_routed_docker_executor

        return gpu_routed_docker_executor.configured(docker_executor_config(environ=environ),
                                                     name="gpu_routed_docker_executor")
    if profile == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return dg.multi_or_in_process_executor


def evo2_op_tags(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Op tags of the ``evo2_features`` step: the GPU routing tag, and the ``dagster-k8s/config`` that
    ``k8s_job_executor`` applies to that step's pod (ignored by the other executors)."""
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
    container: dict[str, Any] = {
        "resources": {"limits": {"nvidia.com/gpu": count}},
        "env": [{"name": "CODON_EVO2_BACKEND", "value": (env.get("CODON_K8S_EVO2_BACKEND") or "evo2").strip()}],
    }
    image = env.get("CODON_EVO2_IMAGE", "").strip()
    if image:
        container["image"] = image
    return {
        GPU_STEP_TAG: GPU,
        "dagster-k8s/config": {
            "container_config": container,
            "pod_spec_config": {
                "node_selector": selector,
                "tolerations": [{"key": toleration, "operator": "Exists", "effect": "NoSchedule"}],
            },
        },
    }
