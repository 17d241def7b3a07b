"""The docker deployment on a real engine: a run of `host_graph_job` requested by the weekly schedule runs
every step in a container of its own through the code location's default executor (the GPU-routed docker
executor), `evo2_features` in the Evo 2 image and every other step in the CPU image, on a Postgres-backed
instance; with the GPU request on, only the `evo2_features` container asks for a GPU.

Needs a running dockerd, Postgres on 127.0.0.1:5432 and debootstrap (``.ci/services.sh start`` provides all
three); skips with the reason when one is missing. No image registry is reachable, so everything is built
here: a Debian bookworm base image (debootstrap + ``docker import``), a wheelhouse of the project's
dependencies made with the host's pip (pinned to the host's versions, so the step container runs the same
Dagster as the run worker), and the user-code image from ``deployments/Dockerfile`` installed offline from
that wheelhouse. All three are cached between runs, keyed by their inputs:

- ``CODON_DOCKER_TEST_CACHE`` (default ``/var/tmp/codon-assets-docker-test``): wheelhouses.
- ``CODON_DOCKER_TEST_KEEP`` (default ``1``): keep the base image, the user-code image and the wheelhouse for
  the next run; ``0`` removes everything this test built. Step containers are always removed.
- ``CODON_PG_HOST`` / ``CODON_PG_PORT`` / ``CODON_PG_USER`` / ``CODON_PG_PASSWORD`` / ``CODON_PG_DB``: the
  server (defaults 127.0.0.1, 5432, codon, codon, codon_test); each run creates and drops its own database
  when the role may (``.ci/services.sh`` grants CREATEDB), else it wipes ``CODON_PG_DB``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "data"
DOCKERFILE = ROOT / "deployments" / "Dockerfile"
CACHE_DIR = Path(os.environ.get("CODON_DOCKER_TEST_CACHE", "/var/tmp/codon-assets-docker-test"))
KEEP = os.environ.get("CODON_DOCKER_TEST_KEEP", "1").strip().lower() not in {"0", "false", "no", "off"}
BASE_IMAGE = "codon-assets-test-base:bookworm"
USER_IMAGE_REPO = "codon-assets-test"
EVO2_IMAGE_REPO = "codon-assets-test-evo2"
TEST_LABEL = "codon-assets.test"  # on every image and container this test makes (.ci/services.sh stop prunes it)
RUN_LABEL = "codon-assets.test-run"
PARTITION = "P_pastoris"
STEP_TIMEOUT_S = 300  # a step container still running after this is killed (the run then fails)
EXTRA_REQUIREMENTS = ["dagster-docker", "dagster-postgres", "psycopg2-binary"]
BUILD_REQUIREMENTS = ["setuptools>=68", "wheel"]  # to build the project from source offline in the image
SOURCE_DIRS = ("codon_assets", "resources")
PATH_ENV = "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PG = {
    "host": os.environ.get("CODON_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("CODON_PG_PORT", "5432")),
    "user": os.environ.get("CODON_PG_USER", "codon"),
    "password": os.environ.get("CODON_PG_PASSWORD", "codon"),
    "db": os.environ.get("CODON_PG_DB", "codon_test"),
}


def log(message: str) -> None:
    print(f"[docker-test {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], *, timeout: float, log_file: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; on failure fail the test with the end of its output."""
    started = time.monotonic()
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, **kwargs)
    output = (result.stdout or "") + (result.stderr or "")
    if log_file is not None:
        log_file.write_text(output)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd[:4]))} ... failed ({result.returncode}) after "
                    f"{time.monotonic() - started:.0f} s:\n{output[-4000:]}")
    return result


def docker(*args: str, timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    if check:
        return run(["docker", *args], timeout=timeout, **kwargs)
    return subprocess.run(["docker", *args], check=False, capture_output=True, text=True, timeout=timeout, **kwargs)


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def sha256_of(parts: list[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------- services

@pytest.fixture(scope="module")
def docker_engine():
    for module in ("dagster_docker", "dagster_postgres", "psycopg2"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install dagster-docker "
                                           "dagster-postgres psycopg2-binary)")
    if shutil.which("docker") is None:
        pytest.skip("no docker client on PATH (.ci/services.sh start installs docker.io)")
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False, capture_output=True,
                          text=True, timeout=30)
    if info.returncode != 0:
        pytest.skip(f"no running Docker engine (`docker info` failed: {info.stderr.strip()[-300:]}); "
                    "start one with .ci/services.sh start")
    if sys.version_info[:2] != (3, 11):
        pytest.skip(f"the wheelhouse is made with this Python ({sys.version_info[0]}.{sys.version_info[1]}) "
                    "for the image's Debian bookworm python3.11: run the tests with Python 3.11")
    log(f"docker engine {info.stdout.strip()}")
    return info.stdout.strip()


@pytest.fixture(scope="module")
def postgres():
    """Connection settings of a database of this run (created and dropped here when the role may)."""
    psycopg2 = pytest.importorskip("psycopg2")
    params = {"host": PG["host"], "port": PG["port"], "user": PG["user"], "password": PG["password"],
              "connect_timeout": 5}
    try:
        admin = psycopg2.connect(dbname=PG["db"], **params)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"Postgres not reachable at {PG['host']}:{PG['port']} as {PG['user']}/{PG['db']} "
                    f"({str(exc).strip()[:200]}); start it with .ci/services.sh start")
    admin.autocommit = True
    db_name = f"{PG['db']}_run_{uuid.uuid4().hex[:10]}"
    created = False
    with admin.cursor() as cursor:
        # Databases left by an interrupted run (one still in use by a concurrent run cannot be dropped).
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{PG['db']}_run_%",))
        for (stale,) in cursor.fetchall():
            with contextlib.suppress(psycopg2.Error):
                cursor.execute(f'DROP DATABASE "{stale}"')
        try:
            cursor.execute(f'CREATE DATABASE "{db_name}"')
            created = True
        except psycopg2.Error as exc:
            log(f"cannot create a database ({str(exc).strip()}); using {PG['db']} and wiping it")
            db_name = PG["db"]
    try:
        yield {**PG, "db": db_name, "wipe": not created}
    finally:
        if created:
            with admin.cursor() as cursor, contextlib.suppress(psycopg2.Error):
                cursor.execute(f'DROP DATABASE "{db_name}" WITH (FORCE)')
        admin.close()


# ------------------------------------------------------------------------------------------------- images

ROOTFS_PRUNE = ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "usr/share/doc/*", "usr/share/man/*",
                "usr/share/locale/*")


def debootstrap_image(tag: str, packages: list[str], changes: list[str], files: dict[str, tuple[str, int]] | None = None,
                      prune: tuple[str, ...] = ROOTFS_PRUNE) -> None:
    """A Debian bookworm root file system with ``packages`` (less the ``prune`` globs, plus ``files``: path ->
    (text, mode)), imported as image ``tag`` with the Dockerfile instructions ``changes`` (an imported image
    has no config)."""
    if shutil.which("debootstrap") is None:
        pytest.skip(f"{tag} is missing and debootstrap is not installed (.ci/services.sh start installs it)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log(f"building {tag} with debootstrap (about 1-2 minutes)")
    with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", "bookworm", str(rootfs)]
        if os.environ.get("CODON_DEBIAN_MIRROR"):
            cmd.append(os.environ["CODON_DEBIAN_MIRROR"])
        run(cmd, timeout=900, log_file=Path(tmp) / "debootstrap.log")
        for pattern in prune:
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        for relative, (text, mode) in (files or {}).items():
            target = rootfs / relative.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            target.chmod(mode)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            run(["docker", "import", *[arg for change in changes for arg in ("--change", change)], "-", tag],
                stdin=tar.stdout, timeout=600)
        finally:
            tar.stdout.close()
            tar.wait(timeout=60)
    log(f"{tag} ready in {time.monotonic() - started:.0f} s")


def build_base_image() -> None:
    """Debian bookworm with python3, venv, CA certificates and libgomp (LightGBM), imported as an image."""
    debootstrap_image(BASE_IMAGE, ["python3", "python3-venv", "ca-certificates", "libgomp1"],
                      [f"ENV PATH={PATH_ENV}", f"LABEL {TEST_LABEL}=base"])


def host_constraints() -> str:
    """`name==version` of every distribution in this environment: the image gets the host's versions."""
    skip = {"codon-assets", "pip", "setuptools", "wheel"}
    pins = {}
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "")).lower()
        version = dist.version
        if name and name not in skip and "+" not in version:
            pins[name] = version
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def project_requirements() -> list[str]:
    import tomllib  # Python 3.11+, which the docker_engine fixture requires

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(pyproject["project"]["dependencies"])


def build_wheelhouse() -> Path:
    """Every dependency of the image as a wheel, made once per (requirements, host versions)."""
    requirements = project_requirements() + EXTRA_REQUIREMENTS + BUILD_REQUIREMENTS
    constraints = host_constraints()
    key = sha256_of([json.dumps(requirements).encode(), constraints.encode(), sys.platform.encode(),
                     f"{sys.version_info[0]}.{sys.version_info[1]}".encode()])[:16]
    wheelhouse = CACHE_DIR / f"wheelhouse-{key}"
    if (wheelhouse / ".complete").exists():
        log(f"reusing {wheelhouse}")
        return wheelhouse
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for stale in CACHE_DIR.glob("wheelhouse-*"):
        shutil.rmtree(stale, ignore_errors=True)
    started = time.monotonic()
    log(f"making {wheelhouse} with pip wheel")
    partial = CACHE_DIR / f".partial-{key}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    (partial / "constraints.txt").write_text(constraints)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(partial),
         "--constraint", str(partial / "constraints.txt"), *requirements], timeout=900,
        log_file=partial / "pip.log")
    (partial / ".complete").write_text(json.dumps({"requirements": requirements}))
    partial.rename(wheelhouse)
    size = sum(p.stat().st_size for p in wheelhouse.glob("*.whl")) / 1e6
    log(f"wheelhouse ready in {time.monotonic() - started:.0f} s: {len(list(wheelhouse.glob('*.whl')))} wheels, "
        f"{size:.0f} MB")
    return wheelhouse


def source_files() -> list[Path]:
    files = [ROOT / "pyproject.toml", DOCKERFILE]
    for directory in SOURCE_DIRS:
        files += sorted(p for p in (ROOT / directory).rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo"})
    return files


def build_user_image(wheelhouse: Path) -> str:
    """deployments/Dockerfile on the base image, offline from the wheelhouse; tagged by a hash of its inputs."""
    base_id = docker("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE).stdout.strip()
    files = source_files()
    key = sha256_of([str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() for p in files]
                    + [wheelhouse.name.encode(), base_id.encode()])[:16]
    tag = f"{USER_IMAGE_REPO}:{key}"
    if image_exists(tag):
        log(f"reusing {tag}")
        return tag
    started = time.monotonic()
    build_started = int(time.time())
    log(f"building {tag} from {DOCKERFILE.relative_to(ROOT)}")
    with tempfile.TemporaryDirectory(prefix="codon-build-") as tmp:
        context = Path(tmp)
        # A small context with the repository's layout (the checkout may hold a .venv and instance data).
        for path in files + [ROOT / "README.md"]:
            target = context / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        staged = context / "deployments" / "wheelhouse"
        staged.mkdir(parents=True)
        for wheel in wheelhouse.glob("*.whl"):
            try:
                os.link(wheel, staged / wheel.name)
            except OSError:
                shutil.copy2(wheel, staged / wheel.name)
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        run(["docker", "build", "--network", "host", "-f", "deployments/Dockerfile",
             "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", "WHEELHOUSE=deployments/wheelhouse",
             "--label", f"{TEST_LABEL}=user-code", "--force-rm", "-t", tag, "."],
            cwd=context, env=env, timeout=900, log_file=CACHE_DIR / "docker-build.log")
    # Images of earlier inputs are of no further use, nor are the build stages of earlier builds (dangling):
    # removed only now, so the layers the new build shares with them stay.
    for stale in docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", USER_IMAGE_REPO).stdout.split():
        if stale != tag:
            docker("image", "rm", stale, check=False)
    docker("image", "prune", "-f", "--filter", f"label={TEST_LABEL}", "--filter", f"until={build_started}",
           check=False)
    log(f"{tag} ready in {time.monotonic() - started:.0f} s")
    return tag


@pytest.fixture(scope="module")
def user_code_image(docker_engine):
    built_base = False
    if image_exists(BASE_IMAGE):
        log(f"reusing {BASE_IMAGE}")
    else:
        build_base_image()
        built_base = True
    wheelhouse = build_wheelhouse()
    tag = build_user_image(wheelhouse)
    yield tag
    if not KEEP:
        log("CODON_DOCKER_TEST_KEEP=0: removing the images and the wheelhouse")
        docker("image", "rm", "-f", tag, check=False)
        docker("image", "prune", "-f", "--filter", f"label={TEST_LABEL}", check=False)
        if built_base or os.environ.get("CODON_DOCKER_TEST_KEEP") is not None:
            docker("image", "rm", "-f", BASE_IMAGE, check=False)
        shutil.rmtree(wheelhouse, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ the run

DAGSTER_YAML = """\
storage:
  postgres:
    postgres_db:
      hostname: {host}
      port: {port}
      username: {user}
      password: {password}
      db_name: {db}
      # SQLAlchemy 2.1 picks psycopg (3) for plain postgresql://; the image has psycopg2.
      scheme: postgresql+psycopg2
compute_logs:
  module: dagster._core.storage.local_compute_log_manager
  class: LocalComputeLogManager
  config:
    base_dir: {home}/storage
telemetry:
  enabled: false
nux:
  enabled: false
concurrency:
  pools:
    default_limit: 1
    granularity: op
"""

def remove_containers(label: str) -> int:
    ids = docker("ps", "-aq", "--filter", f"label={label}", check=False).stdout.split()
    if ids:
        docker("rm", "-f", *ids, check=False)
    return len(ids)


def run_report(instance, run_id: str, label: str) -> str:
    """The run's engine and failure events, with errors, and the output of its step containers."""
    lines = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.event_type_value.startswith(("STEP_OUTPUT", "STEP_INPUT", "ASSET_CHECK")):
            continue
        lines.append(f"{event.event_type_value} {entry.step_key or ''} pid={event.pid}: {event.message or ''}")
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            lines.append(error.to_string()[-3000:])
    for container in docker("ps", "-aq", "--filter", f"label={label}", check=False).stdout.split():
        status = docker("inspect", "--format", "{{.State.Status}} exit={{.State.ExitCode}}", container, check=False)
        output = docker("logs", "--tail", "60", container, check=False)
        lines += [f"container {container}: {status.stdout.strip()}", output.stdout[-4000:], output.stderr[-4000:]]
    return "\n".join(lines)


def step_events(instance, run_id: str, step_key: str):
    return [e for e in instance.all_logs(run_id) if e.step_key == step_key and e.dagster_event is not None]


HOST_GRAPH_STEPS = {"raw_tsv", "converted_dataset", "markov_model", "evo2_features", "enhanced_dataset", "surrogate_model",
                    "codon_designs"}


@pytest.fixture(scope="module")
def evo2_image(user_code_image):
    """The Evo 2 image of the GPU step. A real one holds torch and evo2 for a GPU; here the CPU image under
    another name (the markov backend needs nothing else), so the engine tells which image each step ran."""
    tag = user_code_image.replace(USER_IMAGE_REPO, EVO2_IMAGE_REPO, 1)
    docker("tag", user_code_image, tag)
    yield tag
    docker("image", "rm", tag, check=False)


@pytest.fixture
def docker_profile(docker_engine, postgres, user_code_image, evo2_image, tmp_path_factory, monkeypatch):
    """The docker profile's environment, a Postgres-backed DAGSTER_HOME and a data directory shared with the
    step containers at the same path; yields (work dir, label of this test's containers)."""
    run_tag = uuid.uuid4().hex[:12]
    work = tmp_path_factory.mktemp("docker-deploy")
    home = work / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML.format(home=home, **postgres))
    # Inputs and target proteins inside the shared directory (the image's package has no examples/).
    shutil.copytree(EXAMPLES, work / "input", ignore=shutil.ignore_patterns("Sac*"))
    shutil.copytree(ROOT / "examples" / "proteins", work / "proteins")
    env = {
        "DAGSTER_HOME": str(home),
        "CODON_STORAGE_DIR": str(work / "storage"),
        "CODON_INPUT_DIR": str(work / "input"),
        "CODON_PROTEINS_DIR": str(work / "proteins"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow/mlflow.db",
        "CODON_EVO2_BACKEND": "markov",
        "CODON_DEPLOYMENT": "docker",
        "CODON_IMAGE": user_code_image,
        "CODON_EVO2_IMAGE": evo2_image,
        "CODON_DOCKER_NETWORK": "host",
        "CODON_DOCKER_GPU": "0",
        "CODON_DOCKER_VOLUMES": str(work),
        "CODON_DOCKER_LABELS": f"{TEST_LABEL}=step,{RUN_LABEL}={run_tag}",
    }
    for name in list(os.environ):
        if (name.startswith("CODON_") and not name.startswith("CODON_PG_")) or name.startswith("MLFLOW_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (work / "mlflow").mkdir()
    yield work, f"{RUN_LABEL}={run_tag}"
    log(f"removed {remove_containers(f'{RUN_LABEL}={run_tag}')} step container(s)")


def definitions_in_a_fresh_process(code: str) -> str:
    """The code location as the docker profile's environment builds it (module-level definitions read the
    environment once, at import)."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


# Evaluates the weekly schedule's tick and executes the RunRequest for one host as the daemon would: the
# request's job from the code location (its default executor), its tags and partition.
SCHEDULED_RUN = """
import datetime, json, sys
import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository
from codon_assets.definitions import defs

repository = defs.get_repository_def()
schedule = repository.get_schedule_def("weekly_host_refresh")
with dg.DagsterInstance.get() as instance:
    context = dg.build_schedule_context(instance=instance, repository_def=repository,
                                        resources={"input_files": defs.resources["input_files"]},
                                        scheduled_execution_time=datetime.datetime(2026, 11, 30, 3, 0))
    requests = {r.partition_key: r for r in schedule.evaluate_tick(context).run_requests}
    request = requests[sys.argv[1]]
    job = ReconstructableRepository.for_module("codon_assets.definitions", "defs").get_reconstructable_job(
        schedule.job_name)
    tags = {**request.tags, "dagster/partition": request.partition_key, "dagster/schedule_name": schedule.name,
            "dagster/run_key": request.run_key}
    with dg.execute_job(job, instance=instance, tags=tags, run_config=request.run_config) as result:
        print(json.dumps({"run_id": result.run_id, "success": result.success, "job": schedule.job_name,
                          "executor": result.job_def.executor_def.name}))
"""


def step_containers(label: str, exclude: set[str] = frozenset()) -> dict[str, dict]:
    """The engine's record of this test's step containers (less the ids in ``exclude``), by step key."""
    containers = {}
    for container_id in docker("ps", "-aq", "--no-trunc", "--filter", f"label={label}").stdout.split():
        if container_id in exclude:
            continue
        inspected = json.loads(docker("inspect", container_id).stdout)[0]
        env = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
        assert env["DAGSTER_RUN_STEP_KEY"] not in containers, "one container per step and run"
        containers[env["DAGSTER_RUN_STEP_KEY"]] = inspected
    return containers


def test_a_scheduled_host_graph_run_routes_each_step_to_its_container(docker_profile, postgres, user_code_image,
                                                                      evo2_image, monkeypatch):
    import dagster as dg
    import psycopg2

    work, label = docker_profile
    # A hung step container is killed, so the run fails instead of waiting forever.
    watchdog = threading.Timer(STEP_TIMEOUT_S * 3, remove_containers, args=(label,))
    watchdog.daemon = True
    watchdog.start()
    started = time.monotonic()
    try:
        report = json.loads(definitions_in_a_fresh_process(SCHEDULED_RUN.replace("sys.argv[1]", repr(PARTITION))))
    finally:
        watchdog.cancel()
    log(f"scheduled host_graph_job run {report['run_id']} finished in {time.monotonic() - started:.1f} s")
    with dg.DagsterInstance.get() as instance:
        try:
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            run_id = report["run_id"]
            if not report["success"]:
                pytest.fail("the scheduled run failed:\n" + run_report(instance, run_id, label))
            assert report["job"] == "host_graph_job" and report["executor"] == "gpu_routed_docker_executor"
            run = instance.get_run_by_id(run_id)
            assert run.tags["dagster/schedule_name"] == "weekly_host_refresh"
            assert run.tags["dagster/partition"] == PARTITION

            # Every step ran in a container of its own: the Evo 2 step in the Evo 2 image, every other step in
            # the CPU image, and (the GPU request switched off here) none asked for a device.
            containers = step_containers(label)
            assert set(containers) == HOST_GRAPH_STEPS, sorted(containers)
            for step, inspected in containers.items():
                assert inspected["Config"]["Image"] == (evo2_image if step == "evo2_features" else user_code_image), step
                assert inspected["Config"]["Cmd"][:3] == ["dagster", "api", "execute_step"]
                assert inspected["State"]["ExitCode"] == 0, step
                assert not inspected["HostConfig"].get("DeviceRequests"), step
                assert f"{work}:{work}:rw" in inspected["HostConfig"]["Binds"]
            for step in HOST_GRAPH_STEPS:
                starting = [e for e in step_events(instance, run_id, step)
                            if e.dagster_event.event_type_value == "STEP_WORKER_STARTING"]
                assert len(starting) == 1, step
                assert starting[0].dagster_event.engine_event_data.metadata["Docker container id"].value == \
                    containers[step]["Id"]

            # Every asset of the host graph materialized for the partition, in Postgres.
            with contextlib.closing(psycopg2.connect(host=postgres["host"], port=postgres["port"],
                                                     user=postgres["user"], password=postgres["password"],
                                                     dbname=postgres["db"])) as conn, conn.cursor() as cursor:
                cursor.execute("SELECT asset_key, partition FROM event_logs WHERE run_id = %s AND "
                               "dagster_event_type = 'ASSET_MATERIALIZATION'", (run_id,))
                materialized = {(json.loads(key)[0], partition) for key, partition in cursor.fetchall()}
            assert materialized == {(name, PARTITION) for name in (
                "raw_tsv", "converted_dataset", "converted_rejects", "markov_model", "evo2_features", "enhanced_dataset",
                "surrogate_model", "codon_designs")}
            features = instance.get_latest_materialization_event(dg.AssetKey("evo2_features"))
            assert features.run_id == run_id and features.asset_materialization.metadata["backend"].value == "markov"
            model = instance.get_latest_materialization_event(dg.AssetKey("surrogate_model"))
            assert model.asset_materialization.metadata["model_uri"].value.startswith(
                f"models:/codon-surrogate-{PARTITION}/")
            assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
        finally:
            instance.event_log_storage.free_concurrency_slots_for_run(report["run_id"])

    # With the GPU request on, the engine is asked for a GPU for the Evo 2 step's container and for no
    # other: this engine has no NVIDIA runtime, so that container is created and fails to start.
    monkeypatch.setenv("CODON_DOCKER_GPU", "1")
    before = {c["Id"] for c in containers.values()}
    gpu_run = json.loads(definitions_in_a_fresh_process(GPU_REQUEST_RUN))
    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.free_concurrency_slots_for_run(gpu_run["run_id"])
    assert not gpu_run["success"]
    # features_job: the host's Markov model (a CPU container), then the features (the GPU container).
    new = step_containers(label, exclude=before)
    assert set(new) == {"markov_model", "evo2_features"}, sorted(new)
    assert not new["markov_model"]["HostConfig"].get("DeviceRequests")
    gpu_container = new["evo2_features"]
    assert gpu_container["Config"]["Image"] == evo2_image
    (request,) = gpu_container["HostConfig"]["DeviceRequests"]
    assert (request["Driver"], request["Count"], request["Capabilities"]) == ("nvidia", 1, [["gpu"]])
    assert gpu_container["State"]["Status"] == "created"  # no NVIDIA runtime here: it never started


# features_job for the same partition (its upstream is materialized): only the Evo 2 step, with a GPU request.
GPU_REQUEST_RUN = """
import json
import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

with dg.DagsterInstance.get() as instance:
    job = ReconstructableRepository.for_module("codon_assets.definitions", "defs").get_reconstructable_job(
        "features_job")
    with dg.execute_job(job, instance=instance, tags={"dagster/partition": %r}) as result:
        print(json.dumps({"run_id": result.run_id, "success": result.success}))
""" % PARTITION
