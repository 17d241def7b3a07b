"""The docker deployment on a real engine: `evo2_features` runs in a container of the user-code image
through `dagster_docker.docker_executor`, on a Postgres-backed instance.

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

def build_base_image() -> None:
    """Debian bookworm with python3, venv, CA certificates and libgomp (LightGBM), imported as an image."""
    if shutil.which("debootstrap") is None:
        pytest.skip(f"{BASE_IMAGE} is missing and debootstrap is not installed (.ci/services.sh start installs it)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log(f"building {BASE_IMAGE} with debootstrap (about 1-2 minutes)")
    with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates,libgomp1",
               "bookworm", str(rootfs)]
        if os.environ.get("CODON_DEBIAN_MIRROR"):
            cmd.append(os.environ["CODON_DEBIAN_MIRROR"])
        run(cmd, timeout=900, log_file=Path(tmp) / "debootstrap.log")
        for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "usr/share/doc/*",
                        "usr/share/man/*", "usr/share/locale/*"):
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            run(["docker", "import", "--change", f"ENV PATH={PATH_ENV}", "--change", f"LABEL {TEST_LABEL}=base",
                 "-", BASE_IMAGE], stdin=tar.stdout, timeout=600)
        finally:
            tar.stdout.close()
            tar.wait(timeout=60)
    log(f"{BASE_IMAGE} ready in {time.monotonic() - started:.0f} s")


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

# What definitions.py is expected to gain: a job for the Evo 2 step with the deployment's executor.
DEFS_PY = '''\
import dagster as dg

from codon_assets.definitions import ALL_ASSETS, build_resources
from codon_assets.deployment import evo2_gpu_executor
from codon_assets.features import evo2_features
from codon_assets.partitions import host_partitions

evo2_features_job = dg.define_asset_job(
    "evo2_features_job", selection=[evo2_features], partitions_def=host_partitions,
    executor_def=evo2_gpu_executor(),
)
defs = dg.Definitions(assets=ALL_ASSETS, resources=build_resources(), jobs=[evo2_features_job])
'''


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


def test_evo2_features_step_runs_in_a_docker_container(docker_engine, postgres, user_code_image, tmp_path_factory,
                                                       monkeypatch):
    # Fixture order: the cheap checks (engine, Postgres) skip before minutes of image building.
    import dagster as dg
    import psycopg2
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    run_tag = uuid.uuid4().hex[:12]
    # One directory holds everything the step container needs; it is bind-mounted at the same path.
    work = tmp_path_factory.mktemp("docker-deploy")
    home = work / "dagster_home"
    storage = work / "storage"
    code = work / "code"
    for path in (home, storage, code):
        path.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML.format(home=home, **postgres))
    (code / "docker_defs.py").write_text(DEFS_PY)

    env = {
        "DAGSTER_HOME": str(home),
        "CODON_STORAGE_DIR": str(storage),
        "CODON_INPUT_DIR": str(EXAMPLES),
        "CODON_EVO2_BACKEND": "markov",
        "CODON_DEPLOYMENT": "docker",
        "CODON_EVO2_IMAGE": user_code_image,
        "CODON_DOCKER_NETWORK": "host",
        "CODON_DOCKER_GPU": "0",
        "CODON_DOCKER_VOLUMES": str(work),
        "CODON_DOCKER_LABELS": f"{TEST_LABEL}=step,{RUN_LABEL}={run_tag}",
    }
    for name in list(os.environ):
        if name.startswith("CODON_") and name not in env and not name.startswith("CODON_PG_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    from codon_assets.definitions import build_resources
    from codon_assets.ingest import converted_dataset, raw_tsv

    # A hung step container is killed, so the run fails instead of waiting forever.
    watchdog = threading.Timer(STEP_TIMEOUT_S, remove_containers, args=(f"{RUN_LABEL}={run_tag}",))
    watchdog.daemon = True
    run_ids: list[str] = []
    with dg.DagsterInstance.get() as instance:
        try:
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            if postgres["wipe"]:
                instance.wipe()
            # Upstream assets in this process, on the same instance.
            started = time.monotonic()
            upstream = dg.materialize([raw_tsv, converted_dataset], partition_key=PARTITION, instance=instance,
                                      resources=build_resources())
            assert upstream.success
            run_ids.append(upstream.run_id)
            log(f"raw_tsv and converted_dataset materialized in {time.monotonic() - started:.1f} s")

            # evo2_features through the docker executor.
            recon = ReconstructableRepository.for_file(
                str(code / "docker_defs.py"), "defs", working_directory=str(code)
            ).get_reconstructable_job("evo2_features_job")
            started = time.monotonic()
            watchdog.start()
            with dg.execute_job(recon, instance=instance, tags={"dagster/partition": PARTITION}) as result:
                run_id = result.run_id
                run_ids.append(run_id)
                success = result.success
            watchdog.cancel()
            log(f"evo2_features run {run_id} finished in {time.monotonic() - started:.1f} s")
            events = step_events(instance, run_id, "evo2_features")
            if not success:
                pytest.fail("the docker run failed:\n" + run_report(instance, run_id, f"{RUN_LABEL}={run_tag}"))

            # The executor launched a container for the step, and reported its id.
            starting = [e for e in events if e.dagster_event.event_type_value == "STEP_WORKER_STARTING"]
            assert len(starting) == 1, [e.dagster_event.event_type_value for e in events]
            container_id = starting[0].dagster_event.engine_event_data.metadata["Docker container id"].value
            assert re.fullmatch(r"[0-9a-f]{64}", container_id)
            # Everything the step itself logged came from PID 1 of its own PID namespace: the container's
            # `dagster api execute_step` process (the host-side steps carry the test process's pid).
            step_side = [e for e in events if e.dagster_event.event_type_value in
                         ("STEP_WORKER_STARTED", "STEP_START", "ASSET_MATERIALIZATION", "STEP_OUTPUT",
                          "STEP_SUCCESS")]
            assert {e.dagster_event.event_type_value for e in step_side} >= {
                "STEP_WORKER_STARTED", "STEP_START", "ASSET_MATERIALIZATION", "STEP_SUCCESS"}
            assert {e.dagster_event.pid for e in step_side} == {1}, [(e.dagster_event.event_type_value,
                                                                      e.dagster_event.pid) for e in step_side]
            host_pids = {e.dagster_event.pid for e in step_events(instance, upstream.run_id, "converted_dataset")}
            assert host_pids - {None} == {os.getpid()}

            # The engine's view of that container (the run can end while the step process is still exiting).
            docker("wait", container_id, timeout=60)
            inspected = json.loads(docker("inspect", container_id).stdout)[0]
            container_env = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
            assert container_env["DAGSTER_RUN_STEP_KEY"] == "evo2_features"
            assert container_env["CODON_EVO2_IMAGE"] == user_code_image
            assert container_env["DAGSTER_HOME"] == str(home)
            assert inspected["Config"]["Image"] == user_code_image
            assert inspected["Config"]["Cmd"][:3] == ["dagster", "api", "execute_step"]
            assert inspected["Config"]["Labels"][RUN_LABEL] == run_tag
            assert inspected["Config"]["Labels"]["codon-assets.step"] == "true"
            assert inspected["State"]["Status"] == "exited" and inspected["State"]["ExitCode"] == 0
            assert inspected["HostConfig"]["NetworkMode"] == "host"
            assert not inspected["HostConfig"].get("DeviceRequests")  # CODON_DOCKER_GPU=0
            assert f"{work}:{work}:rw" in inspected["HostConfig"]["Binds"]

            # The materialization is in the Postgres-backed instance, from the docker run ...
            materialization = instance.get_latest_materialization_event(dg.AssetKey("evo2_features"))
            assert materialization is not None and materialization.run_id == run_id
            assert materialization.asset_materialization.partition == PARTITION
            metadata = materialization.asset_materialization.metadata
            assert metadata["backend"].value == "markov"
            converted = instance.get_latest_materialization_event(dg.AssetKey("converted_dataset"))
            assert metadata["records"].value == converted.asset_materialization.metadata["dagster/row_count"].value > 0
            # ... as Postgres itself has it ...
            with contextlib.closing(psycopg2.connect(host=postgres["host"], port=postgres["port"],
                                                     user=postgres["user"], password=postgres["password"],
                                                     dbname=postgres["db"])) as conn, conn.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = "
                               "'ASSET_MATERIALIZATION' AND step_key = 'evo2_features'", (run_id,))
                assert cursor.fetchone()[0] == 1
            # ... and the file the container wrote is on the shared data directory.
            import pyarrow.parquet as pq

            features = pq.read_table(storage / "evo2_features" / f"{PARTITION}.parquet")
            assert features.num_rows == metadata["records"].value

            # The step's stdout/stderr, captured inside the container, landed under the bind-mounted
            # DAGSTER_HOME/storage and name the step and the backend.
            logs = [p for p in (home / "storage").rglob("*") if p.is_file() and p.suffix in (".err", ".out")]
            captured = "\n".join(p.read_text(errors="replace") for p in logs if run_id in str(p))
            assert "scoring" in captured and "markov" in captured, [str(p) for p in logs]

            # The gpu pool slot was given back.
            pool = instance.event_log_storage.get_concurrency_info("gpu")
            assert pool.claimed_slots == [] or len(pool.claimed_slots) == 0
        finally:
            watchdog.cancel()
            for run_id in run_ids:
                instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            removed = remove_containers(f"{RUN_LABEL}={run_tag}")
            log(f"removed {removed} step container(s)")
