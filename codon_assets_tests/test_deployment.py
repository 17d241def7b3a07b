"""The deployment profile, the docker executor configuration and the deployment files (no Docker engine
needed: the real-engine test is test_docker_integration.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from codon_assets import deployment
from codon_assets.deployment import (
    GPU_STEP_TAG,
    default_executor,
    deployment_profile,
    docker_executor_config,
    evo2_op_tags,
    forwarded_env_vars,
)

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = ROOT / "deployments"
IMAGE = "codon-assets-evo2:test"


def docker_env(**extra: str) -> dict[str, str]:
    return {"CODON_DEPLOYMENT": "docker", "CODON_EVO2_IMAGE": IMAGE, **extra}


# ------------------------------------------------------------------------------------------------ profile

def test_profile_defaults_to_local():
    assert deployment_profile({}) == "local"
    assert deployment_profile({"CODON_DEPLOYMENT": ""}) == "local"
    assert deployment_profile({"CODON_DEPLOYMENT": " Docker "}) == "docker"


def test_profile_rejects_unknown_values():
    with pytest.raises(ValueError, match="CODON_DEPLOYMENT"):
        deployment_profile({"CODON_DEPLOYMENT": "kubernetes"})


def test_profile_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("CODON_DEPLOYMENT", "docker")
    assert deployment_profile() == "docker"
    monkeypatch.delenv("CODON_DEPLOYMENT")
    assert deployment_profile() == "local"


# ---------------------------------------------------------------------------------- docker executor config

def test_image_is_required():
    with pytest.raises(ValueError, match="CODON_EVO2_IMAGE"):
        docker_executor_config(environ={"CODON_DEPLOYMENT": "docker"})


def test_defaults_host_network_and_one_gpu_for_the_gpu_step_only():
    config = docker_executor_config(environ=docker_env(CODON_IMAGE="codon-assets:test"))
    assert config["gpu_image"] == IMAGE and config["image"] == "codon-assets:test"
    assert config["network"] == "host"
    assert config["gpu_container_kwargs"]["device_requests"] == [
        {"driver": "nvidia", "count": 1, "capabilities": [["gpu"]]}
    ]
    assert "device_requests" not in config["container_kwargs"]
    assert config["container_kwargs"]["labels"]["codon-assets.step"] == "true"
    # Without CODON_IMAGE the other steps take the code location's image.
    assert "image" not in docker_executor_config(environ=docker_env())


def test_step_containers_run_as_the_launching_user_unless_told():
    """The images run as an unprivileged user; a step writing to a bind-mounted data directory runs as whoever
    launched the run, so the files stay writable and theirs (CODON_DOCKER_USER overrides)."""
    import os

    assert docker_executor_config(environ=docker_env())["container_kwargs"]["user"] == f"{os.getuid()}:{os.getgid()}"
    assert docker_executor_config(environ=docker_env(CODON_DOCKER_USER="1000:1000"))["container_kwargs"]["user"] == "1000:1000"


@pytest.mark.parametrize("value", ["0", "false", "No", "off"])
def test_gpu_request_switched_off(value):
    config = docker_executor_config(environ=docker_env(CODON_DOCKER_GPU=value))
    assert config["gpu_container_kwargs"] == {}


def test_gpu_argument_wins_over_the_environment():
    assert "device_requests" in docker_executor_config(gpu=True, environ=docker_env(CODON_DOCKER_GPU="0"))[
        "gpu_container_kwargs"]
    assert not docker_executor_config(gpu=False, environ=docker_env())["gpu_container_kwargs"]


def test_network_from_environment():
    assert docker_executor_config(environ=docker_env(CODON_DOCKER_NETWORK="codon-assets"))["network"] == "codon-assets"


def test_env_vars_are_names_of_set_variables_only():
    environ = docker_env(
        DAGSTER_HOME="/data/home", MLFLOW_TRACKING_URI="http://mlflow:5000", NVIDIA_API_KEY="nvapi-secret-value",
        DAGSTER_POSTGRES_PASSWORD="pg-secret", CODON_EVO2_BACKEND="evo2", HOME="/root", PATH="/usr/bin",
        EXTRA_TOKEN="x", CODON_DOCKER_ENV="EXTRA_TOKEN, NOT_SET",
    )
    config = docker_executor_config(environ=environ)
    names = config["env_vars"]
    assert {"DAGSTER_HOME", "MLFLOW_TRACKING_URI", "NVIDIA_API_KEY", "DAGSTER_POSTGRES_PASSWORD",
            "CODON_EVO2_BACKEND", "CODON_DEPLOYMENT", "CODON_EVO2_IMAGE", "EXTRA_TOKEN"} <= set(names)
    assert "HOME" not in names and "PATH" not in names and "NOT_SET" not in names
    assert all("=" not in name for name in names)
    serialized = json.dumps(config)
    assert "nvapi-secret-value" not in serialized and "pg-secret" not in serialized
    # Unset names are never forwarded: the executor would fail the run before a container exists.
    assert "NVIDIA_API_KEY" not in forwarded_env_vars(docker_env())


def test_data_directories_are_bound_at_the_same_path():
    environ = docker_env(DAGSTER_HOME="/data/home", CODON_STORAGE_DIR="/data/home/assets",
                         CODON_FEATURE_CACHE_DIR="/cache/features", CODON_INPUT_DIR="/inputs",
                         CODON_EVO2_LOCAL_PATH="/models/evo2_7b.pt")
    volumes = docker_executor_config(environ=environ)["container_kwargs"]["volumes"]
    assert volumes == ["/inputs:/inputs:ro", "/data/home:/data/home:rw", "/cache/features:/cache/features:rw",
                       "/models/evo2_7b.pt:/models/evo2_7b.pt:ro"]


def test_code_mount_is_read_only_and_keeps_a_writable_home_inside_it():
    home = str(deployment.PROJECT_ROOT / ".dagster_home")
    volumes = deployment.container_volumes(docker_env(DAGSTER_HOME=home, CODON_DOCKER_MOUNT_CODE="1"))
    root = str(deployment.PROJECT_ROOT)
    assert f"{root}:{root}:ro" in volumes
    assert f"{home}:{home}:rw" in volumes
    assert volumes.index(f"{root}:{root}:ro") < volumes.index(f"{home}:{home}:rw")
    assert deployment.container_volumes(docker_env(DAGSTER_HOME=home)) == [f"{home}:{home}:rw"]


def test_explicit_volumes_replace_the_defaults():
    environ = docker_env(DAGSTER_HOME="/opt/dagster/dagster_home",
                         CODON_DOCKER_VOLUMES="codon-data:/opt/dagster/data, /srv/models:/models:ro, /scratch")
    assert deployment.container_volumes(environ) == [
        "/srv/models:/models:ro", "/scratch:/scratch:rw",
        "codon-data:/opt/dagster/data:rw",
    ]


@pytest.mark.parametrize("spec", ["data:relative", "/a:/b:rx", "/a:/b:rw:extra", ":/b"])
def test_bad_volume_specs_are_rejected(spec):
    with pytest.raises(ValueError, match="CODON_DOCKER_VOLUMES"):
        deployment.container_volumes(docker_env(CODON_DOCKER_VOLUMES=spec))


def test_extra_labels():
    labels = docker_executor_config(environ=docker_env(CODON_DOCKER_LABELS="team=codon, ci.run=42"))[
        "container_kwargs"]["labels"]
    assert labels == {"codon-assets.step": "true", "codon-assets.deployment": "docker", "team": "codon",
                      "ci.run": "42"}
    with pytest.raises(ValueError, match="CODON_DOCKER_LABELS"):
        deployment.container_labels(docker_env(CODON_DOCKER_LABELS="novalue"))


def test_config_validates_against_the_executor_schema():
    pytest.importorskip("dagster_docker", reason="dagster-docker is not installed")
    from dagster._config import process_config
    from dagster_docker.utils import validate_docker_config

    from codon_assets.docker_executor import gpu_routed_docker_executor

    config = docker_executor_config(environ=docker_env(DAGSTER_HOME="/data/home", CODON_DOCKER_LABELS="a=b"))
    result = process_config(gpu_routed_docker_executor.config_schema.config_type, config)
    assert result.success, result.errors
    validate_docker_config(config.get("network"), config.get("networks"), config["container_kwargs"])
    validate_docker_config(None, None, config["gpu_container_kwargs"])


def test_container_kwargs_are_accepted_by_docker_py():
    pytest.importorskip("docker", reason="the docker package is not installed")
    from docker.models.containers import _create_container_args

    config = docker_executor_config(environ=docker_env(DAGSTER_HOME="/data/home"))
    # What DockerStepHandler passes to client.containers.create, less the daemon round trip.
    args = _create_container_args({
        "image": config["gpu_image"], "name": "dagster-step-x", "detach": True, "network": config["network"],
        "command": ["dagster", "api", "execute_step"], "environment": {"DAGSTER_RUN_STEP_KEY": "evo2_features"},
        "version": "1.41", **config["container_kwargs"], **config["gpu_container_kwargs"],
    })
    host_config = args["host_config"]
    assert host_config["NetworkMode"] == "host"
    assert host_config["Binds"] == ["/data/home:/data/home:rw"]
    assert host_config["DeviceRequests"][0]["Capabilities"] == [["gpu"]]
    assert host_config["DeviceRequests"][0]["Count"] == 1
    assert args["labels"]["codon-assets.step"] == "true"


# -------------------------------------------------------------------------------------------- executors

def test_local_profile_keeps_dagsters_default_executor():
    assert default_executor({}) is dg.multi_or_in_process_executor


ROUTING = """
import json, types
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster_docker.container_context import DockerContainerContext
from codon_assets.definitions import defs
from codon_assets.docker_executor import GpuRoutedStepHandler

report = {}
for job in defs.get_repository_def().get_all_jobs():
    engine = ResolvedRunConfig.build(job, {}).execution  # complete without an `execution` section
    config = engine.execution_engine_config
    handler = GpuRoutedStepHandler(config.get("image"), DockerContainerContext(
        env_vars=config["env_vars"], networks=[config["network"]], container_kwargs=config["container_kwargs"]),
        config["gpu_image"], config["gpu_container_kwargs"])
    steps = {}
    for node in job.nodes:
        # What the handler sees of a step: its key and op tags, the run's code origin (no image of its own).
        context = types.SimpleNamespace(
            step_tags={node.name: node.tags},
            execute_step_args=types.SimpleNamespace(step_keys_to_execute=[node.name]),
            dagster_run=types.SimpleNamespace(job_code_origin=types.SimpleNamespace(
                repository_origin=types.SimpleNamespace(container_image=None, container_context=None))),
            instance=types.SimpleNamespace(run_launcher=None))
        kwargs = handler._get_docker_container_context(context).container_kwargs
        steps[node.name] = {"image": handler._get_image(context), "gpu": "device_requests" in kwargs,
                            "volumes": kwargs.get("volumes")}
    report[job.name] = {"executor": job.executor_def.name, "engine": engine.execution_engine_name, "steps": steps}
print(json.dumps(report))
"""


def _job_report(environ: dict[str, str], code: str) -> dict:
    env = {**os.environ, **environ}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_job_routes_the_evo2_step_to_the_gpu_container():
    """Every job of the code location in the docker profile, the implicit asset job of UI materializations
    and backfills included: evo2_features runs in the GPU image with one GPU, every other step in the CPU
    image without one."""
    pytest.importorskip("dagster_docker", reason="dagster-docker is not installed")
    report = _job_report(docker_env(CODON_IMAGE="codon-assets:test", DAGSTER_HOME="/data/home"), ROUTING)
    assert "__ASSET_JOB" in report and "host_graph_job" in report and "features_job" in report
    with_evo2 = [name for name, job in report.items() if "evo2_features" in job["steps"]]
    assert set(with_evo2) >= {"__ASSET_JOB", "host_graph_job", "features_job"}
    for name, job in report.items():
        assert job["executor"] == job["engine"] == "gpu_routed_docker_executor", name
        for step, placed in job["steps"].items():
            gpu = step == "evo2_features"
            assert placed["image"] == (IMAGE if gpu else "codon-assets:test"), (name, step)
            assert placed["gpu"] is gpu, (name, step)
            assert placed["volumes"] == ["/data/home:/data/home:rw"], (name, step)


def test_the_schedule_sensor_and_automation_jobs_are_routed():
    """What a schedule tick, the inbox sensor and declarative automation launch runs with the same executor."""
    pytest.importorskip("dagster_docker", reason="dagster-docker is not installed")
    code = """
import json
from codon_assets.definitions import defs
repo = defs.get_repository_def()
print(json.dumps({"schedule": repo.get_job(defs.get_schedule_def("weekly_host_refresh").job_name).executor_def.name,
                  "sensor": sorted({repo.get_job(t.job_name).executor_def.name
                                    for t in defs.get_sensor_def("inbox_sensor").targets}),
                  "implicit": repo.get_implicit_global_asset_job_def().executor_def.name}))
"""
    report = _job_report(docker_env(), code)
    assert report == {"schedule": "gpu_routed_docker_executor", "sensor": ["gpu_routed_docker_executor"],
                      "implicit": "gpu_routed_docker_executor"}


K8S_STEP_PODS = """
import json
from dagster_k8s.client import PatchedApiClient
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job
from codon_assets.definitions import defs

report = {}
for job in defs.get_repository_def().get_all_jobs():
    pods = {}
    for node in job.nodes:
        # As K8sStepHandler builds a step's Job: the step's op tags only (include_run_tags=False).
        user = UserDefinedDagsterK8sConfig.from_dict(json.loads(node.tags["dagster-k8s/config"])) \
            if "dagster-k8s/config" in node.tags else UserDefinedDagsterK8sConfig()
        config = DagsterK8sJobConfig(job_image="codon-assets:test", dagster_home="/opt/dagster/dagster_home",
                                     image_pull_policy="IfNotPresent")
        body = construct_dagster_k8s_job(config, ["dagster", "api", "execute_step"], "dagster-step-x", user,
                                         labels={}, env_vars=[])
        pods[node.name] = PatchedApiClient().sanitize_for_serialization(body)["spec"]["template"]["spec"]
    report[job.name] = {"executor": job.executor_def.name, "pods": pods}
print(json.dumps(report))
"""


def test_k8s_profile_gives_only_the_evo2_step_pod_a_gpu():
    pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed (the `k8s` extra)")
    report = _job_report({"CODON_DEPLOYMENT": "k8s", "CODON_EVO2_IMAGE": IMAGE}, K8S_STEP_PODS)
    assert "__ASSET_JOB" in report and "host_graph_job" in report
    for name, job in report.items():
        assert job["executor"] == "k8s", name
        for step, pod in job["pods"].items():
            container = pod["containers"][0]
            env = {e["name"]: e.get("value") for e in container.get("env") or []}
            if step == "evo2_features":
                assert container["image"] == IMAGE and container["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
                assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
                assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
                assert env["CODON_EVO2_BACKEND"] == "evo2"
            else:
                assert container["image"] == "codon-assets:test" and not container.get("resources"), (name, step)
                assert "nodeSelector" not in pod and "tolerations" not in pod and "CODON_EVO2_BACKEND" not in env


def test_evo2_op_tags():
    tags = evo2_op_tags({})
    assert tags[GPU_STEP_TAG] == "gpu"
    config = tags["dagster-k8s/config"]
    assert config["container_config"]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert "image" not in config["container_config"]  # the code location's image unless CODON_EVO2_IMAGE is set
    assert config["pod_spec_config"]["node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert json.loads(json.dumps(tags)) == tags
    custom = evo2_op_tags({"CODON_K8S_GPU_NODE_SELECTOR": "pool=a100,zone=b", "CODON_K8S_GPU_COUNT": "2",
                           "CODON_K8S_GPU_TOLERATION": "gpu", "CODON_K8S_EVO2_BACKEND": "nim"})["dagster-k8s/config"]
    assert custom["pod_spec_config"]["node_selector"] == {"pool": "a100", "zone": "b"}
    assert custom["container_config"]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert custom["container_config"]["env"] == [{"name": "CODON_EVO2_BACKEND", "value": "nim"}]
    with pytest.raises(ValueError, match="CODON_K8S_GPU_NODE_SELECTOR"):
        evo2_op_tags({"CODON_K8S_GPU_NODE_SELECTOR": "novalue"})


# ------------------------------------------------------------------------------------- dagster.yaml files

def dagster_yamls() -> list[Path]:
    return sorted(ROOT.glob("dagster.yaml")) + sorted(DEPLOYMENTS.rglob("dagster.yaml"))


def test_both_instance_files_are_found():
    assert {p.relative_to(ROOT).as_posix() for p in dagster_yamls()} >= {"dagster.yaml", "deployments/dagster.yaml"}


@pytest.mark.parametrize("path", dagster_yamls(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_instance_file_is_valid(path, tmp_path, monkeypatch):
    from dagster._config import StringSource, process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.storage.config import pg_config
    from dagster._serdes.config_class import class_from_code_pointer

    for name, value in {"DAGSTER_HOME": str(tmp_path), "DAGSTER_POSTGRES_HOST": "postgres",
                        "DAGSTER_POSTGRES_PORT": "5432", "DAGSTER_POSTGRES_USER": "dagster",
                        "DAGSTER_POSTGRES_PASSWORD": "secret", "DAGSTER_POSTGRES_DB": "dagster"}.items():
        monkeypatch.setenv(name, value)
    shutil.copy(path, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # the instance schema, and its consistency checks

    storage = config.get("storage", {})
    if "postgres" in storage:
        resolved = process_config(pg_config(), storage["postgres"])
        assert resolved.success, resolved.errors
        # SQLAlchemy 2.1 picks psycopg 3 for a bare `postgresql` scheme; the images install psycopg2.
        assert resolved.value["postgres_db"]["scheme"] == "postgresql+psycopg2"
    if "sqlite" in storage:
        assert process_config({"base_dir": StringSource}, storage["sqlite"]).success

    # Each pluggable class exists and accepts its config.
    for section in ("run_launcher", "run_coordinator", "compute_logs", "local_artifact_storage", "scheduler",
                    "run_storage", "event_log_storage", "schedule_storage"):
        if section in config:
            data = config[section]
            try:
                cls = class_from_code_pointer(data["module"], data["class"])
            except ImportError as exc:
                pytest.skip(f"{section}: {exc}")
            resolved = process_config(cls.config_type(), data.get("config") or {})
            assert resolved.success, (section, resolved.errors)

    pools = config.get("concurrency", {}).get("pools", {})
    assert pools.get("default_limit") == 1  # the `gpu` pool: one Evo 2 step at a time


def test_production_instance_watches_runs_and_frees_slots():
    config = yaml.safe_load((DEPLOYMENTS / "dagster.yaml").read_text())
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] is True and monitoring["free_slots_after_run_end_seconds"] > 0
    assert config["concurrency"]["runs"]["max_concurrent_runs"] > 0
    assert config["telemetry"]["enabled"] is False


# ------------------------------------------------------------------------------------ compose and images

def compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], check=False, capture_output=True, text=True,
                               timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_validates(tmp_path):
    command = compose_command()
    if command is None:
        pytest.skip("no compose binary (docker compose plugin or docker-compose) to validate with")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODON_", "DAGSTER_"))}
    for profiles in ([], ["--profile", "gpu", "--profile", "readonly"]):
        result = subprocess.run([*command, "-f", str(DEPLOYMENTS / "compose.yaml"), *profiles, "config"],
                                check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"postgres", "user_code", "webserver", "daemon", "mlflow", "evo2", "webserver_readonly"} <= set(services)


def test_compose_file_structure():
    compose = yaml.safe_load((DEPLOYMENTS / "compose.yaml").read_text())
    services = compose["services"]
    devices = services["evo2"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["user_code"]["command"][:3] == ["dagster", "code-server", "start"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in services["user_code"]["volumes"]
    env = services["user_code"]["environment"]
    # Every CODON_* setting of the README's Configuration table that a deployment sets.
    for name in ("CODON_INPUT_DIR", "CODON_STORAGE_DIR", "CODON_EVO2_BACKEND", "CODON_EVO2_MODEL",
                 "CODON_EVO2_DEVICE", "CODON_NIM_URL", "CODON_NIM_PATH", "CODON_FEATURE_CACHE_DIR",
                 "CODON_MLFLOW_UI_URL", "MLFLOW_TRACKING_URI", "NVIDIA_API_KEY", "CODON_DEPLOYMENT",
                 "CODON_EVO2_IMAGE", "CODON_DOCKER_VOLUMES", "CODON_DOCKER_NETWORK"):
        assert name in env, name
    # The step containers join the compose network and the data volume by these names.
    assert compose["networks"]["default"]["name"] == env["CODON_DOCKER_NETWORK"] == "${CODON_NETWORK:-codon-assets}"
    assert env["CODON_DOCKER_VOLUMES"].startswith(compose["volumes"]["data"]["name"] + ":")
    # The code location names no image of its own: the other steps take CODON_IMAGE.
    assert "DAGSTER_CURRENT_IMAGE" not in env and "--container-image" not in services["user_code"]["command"]
    assert "--read-only" in services["webserver_readonly"]["command"][0]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.evo2"])
def test_dockerfiles_suit_the_legacy_builder_and_offline_installs(name):
    text = (DEPLOYMENTS / name).read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0].startswith("ARG ") and "\nARG BASE_IMAGE=" in text  # base images are build arguments
    assert all(line.startswith("ARG ") for line in lines[:lines.index(next(l for l in lines if l.startswith("FROM")))])
    assert "--mount" not in text and "# syntax" not in text  # no BuildKit features
    assert "ENV PATH=/opt/venv/bin:" in text
    assert "--no-index --find-links /wheelhouse" in text
    assert "dagster-docker" in text and "dagster-postgres" in text and "psycopg2-binary" in text


def test_cpu_image_stays_without_torch_and_the_gpu_image_pins_it():
    tomllib = pytest.importorskip("tomllib")

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "python:3.11-slim" in (DEPLOYMENTS / "Dockerfile").read_text()
    assert not any(req.startswith("torch") for req in pyproject["project"]["dependencies"])
    evo2 = (DEPLOYMENTS / "Dockerfile.evo2").read_text()
    assert 'p["optional-dependencies"]["evo2"]' in evo2 and "nvidia/cuda:" in evo2
    # evo2's vortex imports flash_attn_2_cuda at module level: the image builds flash-attn against its torch.
    assert 'ARG FLASH_ATTN="flash-attn==' in evo2 and "--no-build-isolation" in evo2
    assert "torch==2.13.0" in pyproject["project"]["optional-dependencies"]["evo2"]


def test_helm_values():
    values = yaml.safe_load((DEPLOYMENTS / "helm" / "values.yaml").read_text())
    deployment_ = values["dagster-user-deployments"]["deployments"][0]
    assert deployment_["image"]["repository"] and deployment_["image"]["tag"]
    assert deployment_["codeServerArgs"][:2] == ["-m", "codon_assets.definitions"]
    # Step pods: only the Evo 2 step's gets the evo2 backend, its image and a GPU (by its op tag).
    assert deployment_["env"]["CODON_DEPLOYMENT"] == "k8s" and "CODON_EVO2_BACKEND" not in deployment_["env"]
    assert deployment_["env"]["CODON_EVO2_IMAGE"] != deployment_["image"]["repository"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["dagsterDaemon"]["runMonitoring"]["freeSlotsAfterRunEndSeconds"] > 0
    assert values["concurrency"]["enabled"] and values["concurrency"]["pools"]["defaultLimit"] == 1
    # The chart refuses run limits in both the run coordinator and `concurrency.runs`.
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert "maxConcurrentRuns" not in queued and "tagConcurrencyLimits" not in queued
    assert values["dagsterWebserver"]["enableReadOnly"] is True
