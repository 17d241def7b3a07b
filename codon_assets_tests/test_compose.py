"""The compose stack, up and used: ``deployments/compose.yaml`` on a real engine (Postgres, the code location,
webserver, daemon, MLflow; the ``gpu`` profile's ``evo2`` service is not started), a partition backfill of
the host graph launched through the webserver's GraphQL API and waited for, its materializations checked
through GraphQL and in the stack's Postgres, the surrogate's registration checked through MLflow's REST API,
and everything torn down again (``down -v``: containers, the data and Postgres volumes, the network).

Needs a running dockerd, a compose binary (the ``docker compose`` plugin or ``docker-compose``, which
``.ci/services.sh start`` installs) and debootstrap; skips with the reason when one is missing. No registry
is reachable, so the images are built here and kept between runs: the user-code image of
``test_docker_integration.py`` (``CODON_IMAGE``, also the webserver, daemon and MLflow image) and a
PostgreSQL 15 image (``CODON_POSTGRES_IMAGE``, ``postgres_image.py``). The stack runs offline
(``up --no-build``), under a project name of its own (``codon-ci-<random>``), with its own volume and network
names and free loopback ports, so it collides neither with a developer's stack nor with a concurrent run.

- ``CODON_COMPOSE_TEST_DEPLOYMENTS`` (default ``local``): comma-separated values of the stack's
  ``CODON_DEPLOYMENT``, one stack (and one test) each. ``docker`` runs every step in a container of its own
  through the Docker socket (``CODON_DOCKER_GPU=0``): ``evo2_features`` in ``CODON_EVO2_IMAGE`` (here the
  user-code image under another tag, so the routing shows), the others in ``CODON_IMAGE``; about as long as
  ``local``.
- ``CODON_COMPOSE_TEST_BACKFILL_TIMEOUT`` (default 480 s).
"""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from codon_assets_tests.dagster_graphql import BACKFILL_STATUS, LAUNCH_BACKFILL, key, metadata
from codon_assets_tests.postgres_image import build_postgres_image
from codon_assets_tests.test_docker_integration import (
    BASE_IMAGE,
    TEST_LABEL,
    build_base_image,
    build_user_image,
    build_wheelhouse,
    docker,
    docker_engine,  # noqa: F401  (a fixture)
    image_exists,
    log,
)

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "deployments" / "compose.yaml"
RUN_LABEL = "codon-assets.test-run"
PROJECT_PREFIX = "codon-ci-"
PARTITION = "P_pastoris"
INPUTS = {"input/Pic.tsv": ROOT / "examples" / "data" / "Pic.tsv",
          "input/Pic_measured.tsv": ROOT / "examples" / "data" / "Pic_measured.tsv",
          "proteins/P_pastoris.fasta": ROOT / "examples" / "proteins" / "P_pastoris.fasta"}
# host_graph_job's selection (codon_assets/defs/automation/jobs.py): every partitioned asset of one host.
HOST_GRAPH = ["raw_tsv", "converted_dataset", "converted_rejects", "markov_model", "evo2_features", "enhanced_dataset",
              "surrogate_model", "codon_designs"]
APP_UID = 1000  # the images' user (deployments/Dockerfile, ARG APP_UID)
SERVICES = ["postgres", "mlflow", "user_code", "webserver", "daemon"]
DEPLOYMENTS = [d.strip() for d in os.environ.get("CODON_COMPOSE_TEST_DEPLOYMENTS", "local").split(",") if d.strip()]
EVO2_ALIAS_REPO = "codon-assets-test-evo2"  # the user-code image under another name, the docker profile's GPU image
UP_TIMEOUT_S = 420
READY_TIMEOUT_S = 180
BACKFILL_TIMEOUT_S = float(os.environ.get("CODON_COMPOSE_TEST_BACKFILL_TIMEOUT", "480"))
STALE_AFTER_S = 3 * 3600  # a codon-ci-* stack older than this was left by an interrupted run
ORPHAN_AFTER_S = 15 * 60  # ... and its volumes or network without a container, older than this

# ------------------------------------------------------------------------------------------------ GraphQL
WORKSPACE = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }"""

ASSET_STATE = """query($key: AssetKeyInput!, $partitions: [String!]) { assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
        partitionStats { numMaterialized numPartitions numFailed numMaterializing }
        assetMaterializations(partitions: $partitions) {
            partition runId timestamp tags { key value }
            metadataEntries { label __typename
                ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue }
                ... on TextMetadataEntry { text } ... on PathMetadataEntry { path } ... on UrlMetadataEntry { url } }
        }
    }
} }"""

RUN_LOGS = """query($id: ID!) { logsForRun(runId: $id) { __typename
    ... on EventConnection { events { __typename
        ... on MessageEvent { message stepKey level }
        ... on ExecutionStepFailureEvent { error { message stack cause { message stack } } }
        ... on RunFailureEvent { pipelineFailureError: error { message } } } }
    ... on PythonError { message } } }"""


def http(url: str, payload: dict | None = None, timeout: float = 60) -> tuple[int, dict | str]:
    """One request on its own connection (``Connection: close``: the webserver drops idle keep-alive
    connections after 5 s, docs/troubleshooting.md)."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Connection": "close", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode(errors="replace")
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------------ compose

def compose_binary() -> list[str] | None:
    """The v2 plugin when the docker client has it, else the v1 ``docker-compose``."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], check=False,
                                                 capture_output=True, timeout=30).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


class Stack:
    """One compose project of deployments/compose.yaml, driven with a fixed environment."""

    def __init__(self, binary: list[str], project: str, env: dict[str, str], env_file: Path):
        self.binary = binary
        self.project = project
        self.env = env
        self.env_file = env_file
        self.webserver = f"http://127.0.0.1:{env['CODON_WEBSERVER_PORT']}"
        self.mlflow = f"http://127.0.0.1:{env['CODON_MLFLOW_PORT']}"

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        # --env-file: a developer's deployments/.env (read from the project directory) stays out of the test.
        cmd = [*self.binary, "-p", self.project, "-f", str(COMPOSE_FILE), "--env-file", str(self.env_file), *args]
        started = time.monotonic()
        result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=self.env,
                                cwd=self.env_file.parent)
        if check and result.returncode != 0:
            raise AssertionError(f"`{' '.join(cmd[len(self.binary):][:8])} ...` failed ({result.returncode}) after "
                                 f"{time.monotonic() - started:.0f} s:\n{(result.stdout + result.stderr)[-4000:]}")
        return result

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).stdout.split()
        assert ids, f"no container for {service}"
        return ids[0]

    def gql(self, query: str, variables: dict | None = None) -> dict:
        try:
            status, body = http(f"{self.webserver}/graphql", {"query": query, "variables": variables or {}},
                                timeout=120)
        except OSError as exc:  # URLError included
            raise AssertionError(f"the webserver stopped answering ({exc}); the stack:\n{self.status()}") from None
        assert status == 200 and isinstance(body, dict), f"GraphQL answered {status}: {str(body)[:2000]}"
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def logs(self, *services: str, tail: int = 100) -> str:
        result = self.compose("logs", "--no-color", "--tail", str(tail), *services, check=False, timeout=60)
        return (result.stdout + result.stderr)[-30000:]

    def status(self) -> str:
        result = self.compose("ps", "-a", check=False, timeout=60)
        return result.stdout + result.stderr

    def down(self) -> str:
        # Step containers (docker profile) are not compose's and would hold the volume.
        steps = docker("ps", "-aq", "--filter", f"label={RUN_LABEL}={self.project}", check=False).stdout.split()
        if steps:
            docker("rm", "-f", *steps, check=False)
        result = self.compose("down", "-v", "--remove-orphans", "--timeout", "10", check=False, timeout=180)
        return result.stdout + result.stderr


def stack_env(project: str, user_image: str, postgres_image: str, deployment: str = "local",
              evo2_image: str | None = None) -> dict[str, str]:
    # Only what the test sets reaches the interpolation: none of the caller's CODON_*/DAGSTER_*/MLFLOW_*.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODON_", "DAGSTER_", "MLFLOW_", "COMPOSE_"))}
    mlflow_port = free_port()
    env.update({
        "CODON_IMAGE": user_image,
        "CODON_EVO2_IMAGE": evo2_image or user_image,  # the markov backend needs no GPU image
        "CODON_POSTGRES_IMAGE": postgres_image,
        "CODON_DATA_VOLUME": f"{project}-data",
        "CODON_NETWORK": f"{project}-net",
        "CODON_WEBSERVER_PORT": str(free_port()),
        "CODON_WEBSERVER_READONLY_PORT": str(free_port()),
        "CODON_MLFLOW_PORT": str(mlflow_port),
        "CODON_MLFLOW_UI_URL": f"http://127.0.0.1:{mlflow_port}",
        "CODON_DEPLOYMENT": deployment,
        "CODON_DOCKER_GPU": "0",
        "CODON_EVO2_BACKEND": "markov",
        # The docker profile's code location starts step containers through the host's socket.
        "CODON_DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid) if os.path.exists("/var/run/docker.sock") else "0",
        "CODON_DOCKER_LABELS": f"codon-assets.compose=true,{TEST_LABEL}=step,{RUN_LABEL}={project}",
        "DAGSTER_POSTGRES_PASSWORD": secrets.token_hex(12),
    })
    return env


def _created(kind: str, name: str) -> float | None:
    """Creation time (epoch seconds) of a container, volume or network, None when it is gone."""
    field = "{{.CreatedAt}}" if kind == "volume" else "{{.Created}}"
    result = docker(kind, "inspect", "--format", field, name, check=False)
    match = re.match(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)", result.stdout.strip())
    if result.returncode != 0 or match is None:
        return None
    return calendar.timegm(time.strptime(f"{match[1]} {match[2]}", "%Y-%m-%d %H:%M:%S"))


def remove_stale_stacks(binary: list[str], env_file: Path) -> None:
    """What a run killed before its teardown left: stacks of this test whose newest part is older than
    STALE_AFTER_S, or volumes and networks without any container older than ORPHAN_AFTER_S (a concurrent
    run's are younger, and have containers once its `up --no-start` returns)."""
    pattern = re.compile(rf"^({re.escape(PROJECT_PREFIX)}[0-9a-f]{{8}})")
    newest: dict[str, float] = {}
    with_containers: set[str] = set()
    listings = {
        "container": docker("ps", "-a", "--filter", "label=com.docker.compose.project", "--format",
                            '{{.ID}} {{.Label "com.docker.compose.project"}}', check=False).stdout.splitlines(),
        "volume": [f"{n} {n}" for n in docker("volume", "ls", "-q", check=False).stdout.split()],
        "network": [f"{n} {n}" for n in docker("network", "ls", "--format", "{{.Name}}", check=False).stdout.split()],
    }
    for kind, rows in listings.items():
        for row in rows:
            name, _, label = row.partition(" ")
            match = pattern.match(label)
            if match is None:
                continue
            project = match[1]
            if kind == "container":
                with_containers.add(project)
            created = _created(kind, name)
            if created is not None:
                newest[project] = max(newest.get(project, 0.0), created)
    for project, created in newest.items():
        age = time.time() - created
        if age > (STALE_AFTER_S if project in with_containers else ORPHAN_AFTER_S):
            log(f"removing the stale stack {project} ({age / 60:.0f} min old)")
            Stack(binary, project, stack_env(project, "unused", "unused"), env_file).down()


def fill_data_volume(volume: str) -> None:
    """The example inputs into the stack's data volume (a tar through a throwaway container)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "inputs.tar"
        with tarfile.open(archive, "w") as tar:
            for name, source in INPUTS.items():
                tar.add(source, arcname=name)
        with archive.open("rb") as stdin:
            # Owned by the images' user (deployments/Dockerfile APP_UID), as a volume the stack created would be.
            docker("run", "--rm", "-i", "--label", f"{TEST_LABEL}=fill", "-v", f"{volume}:/data", BASE_IMAGE,
                   "sh", "-c", f"tar -x -C /data --no-same-owner && chown -R {APP_UID}:{APP_UID} /data",
                   stdin=stdin, timeout=120)


# ------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def compose_images(docker_engine):  # noqa: F811
    """(user-code image, Postgres image), built here on first use and kept."""
    binary = compose_binary()
    if binary is None:
        pytest.skip("no compose binary (docker compose plugin or docker-compose; .ci/services.sh start installs "
                    "docker-compose)")
    started = time.monotonic()
    if not image_exists(BASE_IMAGE):
        build_base_image()
    user_image = build_user_image(build_wheelhouse())
    postgres_image = build_postgres_image()
    log(f"images ready in {time.monotonic() - started:.0f} s: {user_image}, {postgres_image}")
    return binary, user_image, postgres_image


# ------------------------------------------------------------------------------------------------ the test

def wait_until_ready(stack: Stack) -> None:
    """The webserver answers GraphQL with the code location loaded."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, AssertionError):
            entries = stack.gql(WORKSPACE)["workspaceOrError"]["locationEntries"]
            last = entries
            if any(e["name"] == "codon_assets" and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                   for e in entries):
                return
        time.sleep(2)
    raise AssertionError(f"the webserver did not load the code location in {READY_TIMEOUT_S} s: {last}")


def run_failures(stack: Stack, run_ids: list[str]) -> str:
    lines = []
    for run_id in run_ids:
        with contextlib.suppress(Exception):
            logs = stack.gql(RUN_LOGS, {"id": run_id})["logsForRun"]
            for event in logs.get("events", []):
                if event.get("level") in ("ERROR", "CRITICAL") or "error" in event or "pipelineFailureError" in event:
                    error = event.get("error") or event.get("pipelineFailureError") or {}
                    # The user code's exception is the cause; the error itself is Dagster's wrapper.
                    cause = error.get("cause") or error
                    lines.append(f"{run_id[:8]} {event['__typename']} {event.get('stepKey') or ''}: "
                                 f"{event.get('message', '')}\n{(error.get('message') or '').strip()[-1000:]}\n"
                                 f"{(''.join(cause.get('stack') or []))[-3000:]}{(cause.get('message') or '')[-2000:]}")
    return "\n".join(lines)


def run_backfill(stack: Stack) -> dict:
    params = {"assetSelection": [key(name) for name in HOST_GRAPH], "partitionNames": [PARTITION],
              "title": "compose test", "tags": [{"key": "codon_assets/source", "value": "test_compose"}]}
    launched = stack.gql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    started = time.monotonic()
    while True:
        state = stack.gql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert state["__typename"] == "PartitionBackfill", state
        if state["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            break
        runs = [(r["runId"][:8], r["status"]) for r in state["runs"]]
        assert time.monotonic() - started < BACKFILL_TIMEOUT_S, (
            f"backfill {backfill_id} still {state['status']} after {BACKFILL_TIMEOUT_S:.0f} s; runs {runs}\n"
            + run_failures(stack, [r["runId"] for r in state["runs"]]))
        time.sleep(4)  # away from the webserver's 5 s keep-alive (each request has its own connection anyway)
    runs = [(r["runId"][:8], r["status"]) for r in state["runs"]]
    assert state["status"] == "COMPLETED_SUCCESS", (
        f"backfill ended {state['status']}: {state['error']} {runs}\n"
        + run_failures(stack, [r["runId"] for r in state["runs"]]))
    log(f"backfill {backfill_id} {state['status']} in {time.monotonic() - started:.0f} s, runs {runs}")
    return state


def check_materializations(stack: Stack, backfill: dict) -> dict[str, dict]:
    """Each host-graph asset has a P_pastoris materialization from the backfill's runs; returns the latest."""
    successful = {r["runId"] for r in backfill["runs"] if r["status"] == "SUCCESS"}
    assert successful, backfill["runs"]
    latest = {}
    for name in HOST_GRAPH:
        state = stack.gql(ASSET_STATE, {"key": key(name), "partitions": [PARTITION]})["assetNodeOrError"]
        assert state["partitionStats"]["numMaterialized"] == 1, (name, state["partitionStats"])
        assert state["partitionStats"]["numFailed"] == 0, (name, state["partitionStats"])
        events = sorted(state["assetMaterializations"], key=lambda e: int(e["timestamp"]))
        assert events and events[-1]["partition"] == PARTITION, (name, events)
        assert events[-1]["runId"] in successful, (name, events[-1]["runId"], successful)
        latest[name] = events[-1]
    return latest


def check_step_containers(stack: Stack, user_image: str, evo2_image: str) -> None:
    """Docker profile: each step ran in a container of its own, started by the run worker through the Docker
    socket, on the stack's network with its data volume; evo2_features in the GPU image (without a GPU request
    here), the others in the CPU image."""
    ids = docker("ps", "-aq", "--filter", f"label={RUN_LABEL}={stack.project}").stdout.split()
    containers = json.loads(docker("inspect", *ids).stdout) if ids else []
    by_step = {}
    for container in containers:
        env = dict(item.split("=", 1) for item in container["Config"]["Env"])
        by_step[env.get("DAGSTER_RUN_STEP_KEY")] = container
    steps = {"raw_tsv", "converted_dataset", "markov_model", "evo2_features", "enhanced_dataset", "surrogate_model",
             "codon_designs"}
    assert steps <= set(by_step), sorted(map(str, by_step))
    for step, container in by_step.items():
        assert container["Config"]["Cmd"][:3] == ["dagster", "api", "execute_step"], step
        assert container["State"]["ExitCode"] == 0, (step, container["State"])
        assert container["Config"]["Image"] == (evo2_image if step == "evo2_features" else user_image), step
        assert container["HostConfig"]["NetworkMode"] == stack.env["CODON_NETWORK"], step
        assert not container["HostConfig"].get("DeviceRequests"), step  # CODON_DOCKER_GPU=0
        mounts = {(m.get("Name"), m["Destination"]) for m in container["Mounts"]}
        assert (stack.env["CODON_DATA_VOLUME"], "/opt/dagster/data") in mounts, (step, mounts)


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_compose_stack_runs_a_partition_backfill_end_to_end(compose_images, tmp_path, deployment):
    binary, user_image, postgres_image = compose_images
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    remove_stale_stacks(binary, env_file)
    project = f"{PROJECT_PREFIX}{uuid.uuid4().hex[:8]}"
    evo2_image = None
    if deployment == "docker":
        evo2_image = f"{EVO2_ALIAS_REPO}:{project}"
        docker("tag", user_image, evo2_image)
    stack = Stack(binary, project, stack_env(project, user_image, postgres_image, deployment, evo2_image), env_file)
    timings: dict[str, float] = {}
    clock = time.monotonic()
    log(f"{' '.join(binary)} project {project} (CODON_DEPLOYMENT={deployment}): webserver {stack.webserver}, "
        f"mlflow {stack.mlflow}")
    try:
        try:
            # Volumes, network and containers first; the inputs into the volume before anything starts.
            stack.compose("up", "--no-build", "--no-start", timeout=180)
            fill_data_volume(stack.env["CODON_DATA_VOLUME"])
            # `up -d` waits for the health of what each service depends on (postgres, mlflow -> user_code ->
            # webserver, daemon).
            stack.compose("up", "-d", "--no-build", timeout=UP_TIMEOUT_S)
            wait_until_ready(stack)
            timings["up"] = time.monotonic() - clock
            log(f"stack up in {timings['up']:.0f} s")
            running = set(stack.compose("ps", "--services", "--filter", "status=running").stdout.split())
            assert set(SERVICES) <= running, stack.status()
            assert "evo2" not in running and "webserver_readonly" not in running  # profiles gpu, readonly

            clock = time.monotonic()
            backfill = run_backfill(stack)
            timings["backfill"] = time.monotonic() - clock
            assert backfill["numPartitions"] == 1 and backfill["partitionNames"] == [PARTITION]

            # Dagster's view: every asset of the host graph materialized for the partition by the backfill.
            latest = check_materializations(stack, backfill)
            converted = metadata(latest["converted_dataset"])
            assert converted["dagster/row_count"] > 100, converted
            assert converted["path"].startswith("/opt/dagster/data/assets/"), converted  # the data volume
            model = metadata(latest["surrogate_model"])
            model_name = f"codon-surrogate-{PARTITION}"
            assert model["registered_model"] == model_name, model
            assert model["mlflow_tracking_uri"] == "http://mlflow:5000", model
            assert model["model_uri"].startswith(f"models:/{model_name}/"), model
            designs = metadata(latest["codon_designs"])
            assert designs["surrogate_model_uri"] == model["model_uri"], designs
            assert designs["feasible"] > 0, designs

            # ... as the stack's Postgres has it (the instance is there, not in a SQLite file somewhere).
            query = ("SELECT DISTINCT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                     f"AND partition = '{PARTITION}'")
            psql = docker("exec", stack.container("postgres"), "psql", "-U", "dagster", "-d", "dagster", "-tAc",
                          query)
            assert {json.loads(k)[0] for k in psql.stdout.split()} == set(HOST_GRAPH), psql.stdout

            # ... and the Parquet file is on the data volume, where the code location's container sees it.
            stack.compose("exec", "-T", "user_code", "test", "-s", converted["path"])

            # MLflow's view, through its published port: the model is registered, with a ready version.
            status, body = http(f"{stack.mlflow}/api/2.0/mlflow/registered-models/get?"
                                + urllib.parse.urlencode({"name": model_name}))
            assert status == 200, (status, body)
            versions = body["registered_model"].get("latest_versions") or []
            assert versions, body
            version = max(versions, key=lambda v: int(v["version"]))
            assert model["model_uri"] in (f"models:/{model_name}/{version['version']}",
                                          f"models:/{model_name}/latest"), (model, version)
            status, body = http(f"{stack.mlflow}/api/2.0/mlflow/model-versions/get?"
                                + urllib.parse.urlencode({"name": model_name, "version": version["version"]}))
            assert status == 200 and body["model_version"]["status"] == "READY", (status, body)
            if deployment == "docker":
                check_step_containers(stack, user_image, evo2_image)
        except BaseException:
            log(f"the stack's state:\n{stack.status()}")
            for service in SERVICES:
                log(f"--- {service} (last 100 lines)\n{stack.logs(service)}")
            raise
    finally:
        clock = time.monotonic()
        output = stack.down()
        if evo2_image:
            docker("image", "rm", evo2_image, check=False)
        timings["down"] = time.monotonic() - clock
        log(f"down -v in {timings['down']:.0f} s")
    # Nothing of the stack is left: containers, the data and Postgres volumes, the network.
    left = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
    assert not left, (left, output)
    volumes = docker("volume", "ls", "-q", "--filter", f"name={project}").stdout.split()
    assert not volumes, (volumes, output)
    networks = docker("network", "ls", "-q", "--filter", f"name={project}").stdout.split()
    assert not networks, (networks, output)
    log("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
