"""The deployment profile, the docker executor configuration and the deployment files (no Docker engine
needed: the real-engine test is test_docker_integration.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml

from codon_assets import deployment
from codon_assets.deployment import (
    deployment_profile,
    docker_executor_config,
    evo2_gpu_executor,
    evo2_k8s_tags,
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


def test_defaults_host_network_and_one_gpu():
    config = docker_executor_config(environ=docker_env())
    assert config["image"] == IMAGE
    assert config["network"] == "host"
    assert config["container_kwargs"]["device_requests"] == [
        {"driver": "nvidia", "count": 1, "capabilities": [["gpu"]]}
    ]
    assert config["container_kwargs"]["labels"]["codon-assets.step"] == "true"


@pytest.mark.parametrize("value", ["0", "false", "No", "off"])
def test_gpu_request_switched_off(value):
    config = docker_executor_config(environ=docker_env(CODON_DOCKER_GPU=value))
    assert "device_requests" not in config["container_kwargs"]


def test_gpu_argument_wins_over_the_environment():
    assert "device_requests" in docker_executor_config(gpu=True, environ=docker_env(CODON_DOCKER_GPU="0"))[
        "container_kwargs"]
    assert "device_requests" not in docker_executor_config(gpu=False, environ=docker_env())["container_kwargs"]


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


def test_config_validates_against_the_docker_executor_schema():
    pytest.importorskip("dagster_docker", reason="dagster-docker is not installed")
    from dagster._config import process_config
    from dagster_docker import docker_executor
    from dagster_docker.utils import validate_docker_config

    config = docker_executor_config(environ=docker_env(DAGSTER_HOME="/data/home", CODON_DOCKER_LABELS="a=b"))
    result = process_config(docker_executor.config_schema.config_type, config)
    assert result.success, result.errors
    validate_docker_config(config.get("network"), config.get("networks"), config["container_kwargs"])


def test_container_kwargs_are_accepted_by_docker_py():
    pytest.importorskip("docker", reason="the docker package is not installed")
    from docker.models.containers import _create_container_args

    config = docker_executor_config(environ=docker_env(DAGSTER_HOME="/data/home"))
    # What DockerStepHandler passes to client.containers.create, less the daemon round trip.
    args = _create_container_args({
        "image": config["image"], "name": "dagster-step-x", "detach": True, "network": config["network"],
        "command": ["dagster", "api", "execute_step"], "environment": {"DAGSTER_RUN_STEP_KEY": "evo2_features"},
        "version": "1.41", **config["container_kwargs"],
    })
    host_config = args["host_config"]
    assert host_config["NetworkMode"] == "host"
    assert host_config["Binds"] == ["/data/home:/data/home:rw"]
    assert host_config["DeviceRequests"][0]["Capabilities"] == [["gpu"]]
    assert host_config["DeviceRequests"][0]["Count"] == 1
    assert args["labels"]["codon-assets.step"] == "true"


# -------------------------------------------------------------------------------------------- executors

def test_local_profile_runs_in_process():
    assert evo2_gpu_executor({}) is dg.in_process_executor


def test_docker_profile_gives_a_configured_docker_executor():
    pytest.importorskip("dagster_docker", reason="dagster-docker is not installed")
    from dagster._core.system_config.objects import ResolvedRunConfig

    from codon_assets.definitions import ALL_ASSETS, build_resources
    from codon_assets.features import evo2_features
    from codon_assets.partitions import host_partitions

    environ = docker_env(DAGSTER_HOME="/data/home", CODON_DOCKER_GPU="0")
    executor = evo2_gpu_executor(environ)
    assert executor.name == "evo2_docker_executor"
    job = dg.define_asset_job("evo2_features_job", selection=[evo2_features], partitions_def=host_partitions,
                              executor_def=executor)
    defs = dg.Definitions(assets=ALL_ASSETS, jobs=[job], resources=build_resources())
    job_def = defs.resolve_job_def("evo2_features_job")
    assert job_def.executor_def.name == "evo2_docker_executor"
    # The run config of the job is complete without an `execution` section, and the configured values are
    # what the executor receives.
    resolved = ResolvedRunConfig.build(job_def, {})
    assert resolved.execution.execution_engine_name == "evo2_docker_executor"
    assert resolved.execution.execution_engine_config["image"] == IMAGE
    assert resolved.execution.execution_engine_config["network"] == "host"


def test_k8s_tags_put_the_run_on_a_gpu_node():
    tags = evo2_k8s_tags({})
    config = tags["dagster-k8s/config"]
    assert config["container_config"]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert config["pod_spec_config"]["node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert config["pod_spec_config"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert json.loads(json.dumps(tags)) == tags  # run tags must survive JSON
    custom = evo2_k8s_tags({"CODON_K8S_GPU_NODE_SELECTOR": "pool=a100,zone=b", "CODON_K8S_GPU_COUNT": "2",
                            "CODON_K8S_GPU_TOLERATION": "gpu"})["dagster-k8s/config"]
    assert custom["pod_spec_config"]["node_selector"] == {"pool": "a100", "zone": "b"}
    assert custom["container_config"]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    # A job accepts them as tags.
    job = dg.define_asset_job("tagged", selection=["evo2_features"], tags={"compute": "gpu", **tags})
    assert "dagster-k8s/config" in job.tags


def test_k8s_run_launcher_builds_a_gpu_pod_from_the_tags():
    """The Kubernetes Job body dagster-k8s makes from the run's tags, as K8sRunLauncher sends it."""
    pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed (the `k8s` extra)")
    from dagster_k8s.client import PatchedApiClient
    from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

    run_tags = {key: json.dumps(value) for key, value in evo2_k8s_tags({}).items()}  # tags are strings
    job_config = DagsterK8sJobConfig(job_image="codon-assets-evo2:test", dagster_home="/opt/dagster/dagster_home",
                                     image_pull_policy="IfNotPresent")
    job = construct_dagster_k8s_job(job_config, ["dagster", "api", "execute_run"], "dagster-run-test",
                                    get_user_defined_k8s_config(run_tags), labels={}, env_vars=[])
    pod = PatchedApiClient().sanitize_for_serialization(job)["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


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
    assert compose["networks"]["default"]["name"] == "codon-assets" in env["CODON_DOCKER_NETWORK"]
    assert env["CODON_DOCKER_VOLUMES"].startswith(compose["volumes"]["data"]["name"] + ":")
    # The code location must not name its own image, or the Evo 2 step would run in it.
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
    assert deployment_["env"]["CODON_DEPLOYMENT"] == "local"  # no Docker socket in a pod
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["dagsterDaemon"]["runMonitoring"]["freeSlotsAfterRunEndSeconds"] > 0
    assert values["concurrency"]["enabled"] and values["concurrency"]["pools"]["defaultLimit"] == 1
    # The chart refuses run limits in both the run coordinator and `concurrency.runs`.
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert "maxConcurrentRuns" not in queued and "tagConcurrencyLimits" not in queued
    assert values["dagsterWebserver"]["enableReadOnly"] is True
