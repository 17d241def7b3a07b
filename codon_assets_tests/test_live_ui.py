"""End to end through the live UI: `dagster dev` on a temporary instance, driven over GraphQL (asset graph,
a partition backfill of every host with data, checks, lineage, the unified surrogate) and looked at in a
headless Chromium (asset graph and partition pages, screenshots in `test-artifacts/`).

Slow (about 3-5 minutes on 2 cores: the backfill daemon ticks every 30 s) and marked `integration`.
Needs `/usr/bin/chromium` (installed here with apt-get when missing and running as root) and the
`playwright` package (no browser download) for the browser tests; without them those tests are skipped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from codon_assets.definitions import defs
from codon_assets_tests.conftest import EXAMPLES, ROOT
from codon_assets_tests.dagster_graphql import BACKFILL_STATUS, LAUNCH_BACKFILL, key, metadata

pytestmark = pytest.mark.integration

HOSTS = ["E_coli", "Human", "Mouse", "S_cerevisiae", "P_pastoris"]
HOSTS_WITH_DATA = ["S_cerevisiae", "P_pastoris"]
PARTITIONED = ["raw_tsv", "converted_dataset", "converted_rejects", "markov_model", "evo2_features", "enhanced_dataset",
               "surrogate_model", "codon_designs"]
UNIFIED = "surrogate_model_unified"
ALL_ASSETS = PARTITIONED + [UNIFIED]
# The code version each asset's definition declares (a materialization records the one it ran).
CODE_VERSIONS = {spec.key.to_user_string(): spec.code_version for spec in defs.resolve_all_asset_specs()}
GROUPS = {"raw_tsv": "ingest", "converted_dataset": "ingest", "converted_rejects": "ingest",
          "markov_model": "features", "evo2_features": "features", "enhanced_dataset": "model", "surrogate_model": "model",
          UNIFIED: "model",
          "codon_designs": "design"}
# asset -> the assets it reads (dependencyKeys)
UPSTREAM = {
    "raw_tsv": set(),
    "converted_dataset": {"raw_tsv"},
    "converted_rejects": {"raw_tsv"},
    "markov_model": {"converted_dataset"},
    "evo2_features": {"converted_dataset", "markov_model"},
    "enhanced_dataset": {"converted_dataset", "evo2_features"},
    "surrogate_model": {"enhanced_dataset", "markov_model", UNIFIED},
    UNIFIED: {"enhanced_dataset", "markov_model"},
    "codon_designs": {"surrogate_model"},
}
# An edge from the unpartitioned unified model (the source of transferred hosts): recorded once it exists.
UNPARTITIONED_UPSTREAM = {UNIFIED}
CHECKS = {
    "converted_dataset": {"rows_accounted_for": True, "unique_protein_id": True, "reject_rate": False,
                          "organism_fits_host": False},
    "evo2_features": {"one_row_per_record": True, "values_in_range": True, "error_rate": False},
}
ARTIFACTS = ROOT / "test-artifacts"
# The backfill daemon loop is a fixed 30 s; each partition run is ~30-60 s of work on 2 cores.
BACKFILL_TIMEOUT_S = float(os.environ.get("CODON_LIVE_UI_TIMEOUT", "300"))
CHROMIUM = os.environ.get("CODON_CHROMIUM", "/usr/bin/chromium")


# --------------------------------------------------------------------------------------------------------
# The live server


class LiveDagster:
    """A running `dagster dev` and its GraphQL endpoint."""

    def __init__(self, url: str, home: Path, log: Path, process: subprocess.Popen):
        self.url = url
        self.home = home
        self.log = log
        self.process = process
        self.http = requests.Session()
        # One connection per request. The webserver (uvicorn) closes a keep-alive connection after 5 s idle,
        # and the backfill poll sleeps 5 s: a request sent on a pooled connection just as the server closes
        # it gets "Connection reset by peer" (a POST is not retried), which looked like the server dying.
        self.http.headers["Connection"] = "close"

    def gql(self, query: str, variables: dict | None = None) -> dict:
        try:
            response = self.http.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                                      timeout=120)
        except requests.ConnectionError as exc:
            exited = self.process.poll()
            state = "still running" if exited is None else f"exited with {exited}"
            raise AssertionError(f"the webserver stopped answering ({exc}); dagster dev {state}; end of its log:\n"
                                 f"{self.log_tail()}") from None
        assert response.ok, f"GraphQL answered {response.status_code}: {response.text[:2000]}"
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _default_signals() -> None:
    # A process started from a non-interactive shell in the background inherits SIGINT/SIGTERM ignored, and
    # `dagster dev` would then never stop; give it the default handlers back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop(process: subprocess.Popen) -> None:
    """SIGINT (dagster dev's clean shutdown, 1-3 s), then SIGKILL to the whole process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # run workers and code servers left behind, if any
    except (ProcessLookupError, PermissionError):
        pass
    if process.poll() is None:
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> LiveDagster:
    home = tmp_path_factory.mktemp("live_dagster_home")
    (home / "dagster.yaml").symlink_to(ROOT / "dagster.yaml")  # nux off, sqlite storage, pools
    dagster = Path(sys.executable).with_name("dagster")
    if not dagster.exists():
        pytest.skip(f"{dagster} not found (install the project with dagster-webserver)")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODON_", "MLFLOW_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        CODON_STORAGE_DIR=str(home / "codon_assets"),
        CODON_INPUT_DIR=str(EXAMPLES),
        MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        # LightGBM's OpenMP threads spin while waiting; with two partition runs on two cores that makes
        # training 5-15x slower. Passive waiting costs nothing when the cores are free.
        OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    )
    (home / "mlflow").mkdir()
    # Create the MLflow store before two partition runs can both find it missing: concurrent first use of a
    # new sqlite store races in MLflow's schema migrations ("duplicate column name: step", "Online migration
    # expected to match one row"), which is not what this test is about. (In a subprocess: `activate` sets
    # MLflow's process-wide tracking URI.)
    subprocess.run([sys.executable, "-c", "from resources.mlflow_tracking import MlflowTracking; "
                    "MlflowTracking(tracking_uri=__import__('os').environ['MLFLOW_TRACKING_URI']).activate()"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    log = home / "dagster-dev.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_default_signals,
        )
    server = LiveDagster(f"http://127.0.0.1:{port}", home, log, process)
    try:
        _wait_until_ready(server, process)
        yield server
    finally:
        stop(process)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(log, ARTIFACTS / "dagster-dev.log")


def _wait_until_ready(server: LiveDagster, process: subprocess.Popen, timeout: float = 120) -> None:
    """/server_info answers, then the code location has loaded."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"dagster dev exited with {process.returncode}:\n{server.log_tail()}"
        assert time.monotonic() < deadline, f"dagster dev not ready after {timeout} s:\n{server.log_tail()}"
        try:
            if server.http.get(f"{server.url}/server_info", timeout=5).ok:
                entries = server.gql("""{ workspaceOrError { ... on Workspace { locationEntries {
                    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }""")
                locations = entries["workspaceOrError"]["locationEntries"]
                if locations and all(e["loadStatus"] == "LOADED" for e in locations):
                    errors = [e for e in locations if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"]
                    assert not errors, f"code location failed to load: {errors}"
                    return
        except requests.RequestException:
            pass
        time.sleep(1)


# --------------------------------------------------------------------------------------------------------
# GraphQL helpers

ASSET_GRAPH = """{ assetNodes {
    assetKey { path } groupName isPartitioned partitionKeys pools
    dependencyKeys { path } dependedByKeys { path }
    repository { name location { name } }
    assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } }
} }"""

ASSET_STATE = """query($key: AssetKeyInput!, $partitions: [String!]) { assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
        partitionStats { numMaterialized numPartitions numFailed numMaterializing }
        assetPartitionStatuses { __typename ... on DefaultPartitionStatuses {
            materializedPartitions failedPartitions unmaterializedPartitions materializingPartitions } }
        dataVersionByPartition(partitions: $partitions)
        assetMaterializations(partitions: $partitions) {
            partition runId timestamp tags { key value }
            metadataEntries { label __typename
                ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue }
                ... on TextMetadataEntry { text } ... on PathMetadataEntry { path } ... on UrlMetadataEntry { url }
                ... on JsonMetadataEntry { jsonString } }
        }
    }
} }"""

# Unpartitioned assets: dataVersionByPartition answers 500 ("Asset node has no partitions definition").
UNPARTITIONED_STATE = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
        dataVersion
        assetMaterializations {
            partition runId timestamp tags { key value }
            metadataEntries { label __typename
                ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue }
                ... on TextMetadataEntry { text } ... on PathMetadataEntry { path } ... on UrlMetadataEntry { url }
                ... on JsonMetadataEntry { jsonString } }
        }
    }
} }"""

CHECK_EXECUTIONS = """query($key: AssetKeyInput!, $check: String!) {
    assetCheckExecutions(assetKey: $key, checkName: $check, limit: 20) {
        runId status evaluation { success severity description } } }"""

LAUNCH_RUN = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on UnauthorizedError { message }
} }"""

RUN_STATUS = "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"


def asset_state(live: LiveDagster, name: str, partitions: list[str] | None = None) -> dict:
    return live.gql(ASSET_STATE, {"key": key(name), "partitions": partitions})["assetNodeOrError"]


def latest_by_partition(materializations: list[dict]) -> dict[str | None, dict]:
    latest: dict[str | None, dict] = {}
    for m in sorted(materializations, key=lambda m: int(m["timestamp"])):
        latest[m["partition"]] = m
    return latest


def tags(event: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in event["tags"]}


def wait_for_run(live: LiveDagster, run_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = live.gql(RUN_STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        assert time.monotonic() < deadline, f"run {run_id} still {status} after {timeout} s:\n{live.log_tail()}"
        time.sleep(3)


@pytest.fixture(scope="module")
def backfill(live) -> dict:
    """Every partitioned asset for the hosts with data, launched as one asset backfill and waited for."""
    params = {"assetSelection": [key(name) for name in PARTITIONED], "partitionNames": HOSTS_WITH_DATA,
              "title": "live UI test", "tags": [{"key": "codon_assets/source", "value": "test_live_ui"}]}
    launched = live.gql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    deadline, started = time.monotonic() + BACKFILL_TIMEOUT_S, time.monotonic()
    while True:
        state = live.gql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert state["__typename"] == "PartitionBackfill", state
        if state["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            break
        runs = [(r["runId"][:8], r["status"]) for r in state["runs"]]
        assert time.monotonic() < deadline, (
            f"backfill {backfill_id} still {state['status']} after {BACKFILL_TIMEOUT_S} s; runs {runs}\n"
            f"{live.log_tail()}")
        time.sleep(5)
    runs = [(r["runId"][:8], r["status"]) for r in state["runs"]]
    assert state["status"] == "COMPLETED_SUCCESS", f"backfill ended {state['status']}: {state['error']} {runs}\n{live.log_tail()}"
    state["id"] = backfill_id
    state["seconds"] = round(time.monotonic() - started, 1)
    print(f"backfill {backfill_id}: {state['status']} in {state['seconds']} s, runs {runs}")
    return state


# --------------------------------------------------------------------------------------------------------
# GraphQL: the asset graph, the backfill, checks, lineage, the unified model


def test_asset_graph_has_every_asset_partition_check_and_edge(live):
    nodes = {"/".join(n["assetKey"]["path"]): n for n in live.gql(ASSET_GRAPH)["assetNodes"]}
    assert set(nodes) == set(ALL_ASSETS)
    for name, node in nodes.items():
        assert node["repository"]["location"]["name"] == "codon_assets"
        assert node["groupName"] == GROUPS[name], name
        if name == UNIFIED:
            assert not node["isPartitioned"] and node["partitionKeys"] == []
        else:
            assert node["isPartitioned"] and node["partitionKeys"] == HOSTS, name
        # Edges both ways: what an asset reads, and who reads it.
        assert {"/".join(k["path"]) for k in node["dependencyKeys"]} == UPSTREAM[name], name
        readers = {down for down, ups in UPSTREAM.items() if name in ups}
        assert {"/".join(k["path"]) for k in node["dependedByKeys"]} == readers, name
        checks = node["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks"
        assert {c["name"]: c["blocking"] for c in checks["checks"]} == CHECKS.get(name, {}), name
    assert nodes["evo2_features"]["pools"] == ["gpu"]
    # The chain the issue names: raw_tsv -> converted_dataset -> evo2_features -> enhanced_dataset -> models.
    chain = ["raw_tsv", "converted_dataset", "evo2_features", "enhanced_dataset"]
    for up, down in zip(chain, chain[1:]):
        assert {"path": [down]} in nodes[up]["dependedByKeys"]
    assert {"surrogate_model", UNIFIED} <= {"/".join(k["path"]) for k in nodes["enhanced_dataset"]["dependedByKeys"]}


def test_backfill_materializes_every_partitioned_asset_for_the_hosts_with_data(live, backfill):
    assert backfill["numPartitions"] == len(HOSTS_WITH_DATA)
    assert set(backfill["partitionNames"]) == set(HOSTS_WITH_DATA)
    backfill_runs = {r["runId"] for r in backfill["runs"]}
    successful = {r["runId"] for r in backfill["runs"] if r["status"] == "SUCCESS"}
    assert {tags(r).get("dagster/partition") for r in backfill["runs"] if r["runId"] in successful} == set(HOSTS_WITH_DATA)
    for name in PARTITIONED:
        state = asset_state(live, name, HOSTS_WITH_DATA)
        assert state["partitionStats"] == {"numMaterialized": 2, "numPartitions": 5, "numFailed": 0,
                                           "numMaterializing": 0}, name
        statuses = state["assetPartitionStatuses"]
        assert sorted(statuses["materializedPartitions"]) == sorted(HOSTS_WITH_DATA), name
        assert sorted(statuses["unmaterializedPartitions"]) == ["E_coli", "Human", "Mouse"], name
        assert statuses["failedPartitions"] == [], name
        latest = latest_by_partition(state["assetMaterializations"])
        assert set(latest) == set(HOSTS_WITH_DATA), name
        for host, event in latest.items():
            assert event["runId"] in successful, (name, host)  # materialized by the backfill's own runs
            assert tags(event)["dagster/code_version"] == CODE_VERSIONS[name]
        assert all(v for v in state["dataVersionByPartition"]), name
    assert backfill_runs >= successful

    converted = latest_by_partition(asset_state(live, "converted_dataset", HOSTS_WITH_DATA)["assetMaterializations"])
    for host, event in converted.items():
        meta = metadata(event)
        assert meta["rows_read"] == meta["valid"] + meta["rejected"] and meta["valid"] > 100, (host, meta)
        assert meta["dagster/row_count"] == meta["valid"]
        # The run's own stored version: <asset>/<host>/<run id>.parquet.
        assert Path(meta["path"]).parent.name == host and Path(meta["path"]).stem == event["runId"]
        assert Path(meta["path"]).is_relative_to(live.home)
    models = latest_by_partition(asset_state(live, "surrogate_model", HOSTS_WITH_DATA)["assetMaterializations"])
    for host, event in models.items():
        meta = metadata(event)
        assert meta["registered_model"] == f"codon-surrogate-{host}"
        assert meta["model_uri"].startswith(f"models:/codon-surrogate-{host}/")
        assert meta["mlflow_tracking_uri"].endswith(str(live.home / "mlflow" / "mlflow.db"))
    # Sac_measured.tsv and Pic_measured.tsv sit beside Sac.tsv and Pic.tsv: both hosts learn from measurements.
    assert metadata(models["S_cerevisiae"])["label_source"] == "measured"
    assert metadata(models["P_pastoris"])["label_source"] == "measured"
    # Each host's designs were made against that host's surrogate from the same backfill.
    designs = latest_by_partition(asset_state(live, "codon_designs", HOSTS_WITH_DATA)["assetMaterializations"])
    for host, event in designs.items():
        meta = metadata(event)
        assert meta["surrogate_model_uri"] == metadata(models[host])["model_uri"], host
        assert meta["feasible"] > 0 and meta["dagster/row_count"] >= meta["feasible"], (host, meta)


def test_every_check_passed_for_each_host(live, backfill):
    for asset, checks in CHECKS.items():
        runs_by_host = {host: event["runId"] for host, event in latest_by_partition(
            asset_state(live, asset, HOSTS_WITH_DATA)["assetMaterializations"]).items()}
        for check in checks:
            executions = live.gql(CHECK_EXECUTIONS, {"key": key(asset), "check": check})["assetCheckExecutions"]
            by_run = {e["runId"]: e for e in executions}
            for host, run_id in runs_by_host.items():
                # The check's evaluation in the run that materialized this host's partition.
                execution = by_run.get(run_id)
                assert execution is not None, (asset, check, host, executions)
                assert execution["status"] == "SUCCEEDED", (asset, check, host, execution)
                assert execution["evaluation"]["success"] is True, (asset, check, host, execution)


def test_lineage_each_materialization_records_the_upstream_partition_it_read(live, backfill):
    """Every edge of the partitioned graph, per host: the downstream materialization's input data version
    is the upstream partition's data version (Dagster stores a partition's input as sha256 of it)."""
    versions = {name: dict(zip(HOSTS_WITH_DATA, asset_state(live, name, HOSTS_WITH_DATA)["dataVersionByPartition"]))
                for name in PARTITIONED}
    # raw_tsv's data version is the content hash the asset sets itself.
    raw = latest_by_partition(asset_state(live, "raw_tsv", HOSTS_WITH_DATA)["assetMaterializations"])
    for host in HOSTS_WITH_DATA:
        assert tags(raw[host])["dagster/data_version_is_user_provided"] == "true"
        assert len(versions["raw_tsv"][host]) == 16
    edges = 0
    for name in PARTITIONED:
        latest = latest_by_partition(asset_state(live, name, HOSTS_WITH_DATA)["assetMaterializations"])
        for host in HOSTS_WITH_DATA:
            recorded = {k.removeprefix("dagster/input_data_version/"): v for k, v in tags(latest[host]).items()
                        if k.startswith("dagster/input_data_version/")}
            assert UPSTREAM[name] - UNPARTITIONED_UPSTREAM <= set(recorded) <= UPSTREAM[name], (name, host, recorded)
            for up, value in recorded.items():
                if up not in UNPARTITIONED_UPSTREAM:
                    assert value == hashlib.sha256(versions[up][host].encode()).hexdigest(), (up, name, host)
                    edges += 1
    assert edges == 2 * sum(len(UPSTREAM[n] - UNPARTITIONED_UPSTREAM) for n in PARTITIONED)

    # The model's MLflow run carries the Dagster lineage: run id, asset, partition, upstream data versions.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{live.home / 'mlflow' / 'mlflow.db'}")
    models = latest_by_partition(asset_state(live, "surrogate_model", HOSTS_WITH_DATA)["assetMaterializations"])
    for host, event in models.items():
        run_tags = client.get_run(metadata(event)["mlflow_run_id"]).data.tags
        assert run_tags["dagster.run_id"] == event["runId"]
        assert run_tags["dagster.asset_key"] == "surrogate_model" and run_tags["dagster.partition"] == host
        assert run_tags["dagster.upstream.enhanced_dataset.data_version"] == versions["enhanced_dataset"][host]
        assert run_tags["dagster.upstream.markov_model.data_version"] == versions["markov_model"][host]


def test_unified_surrogate_materializes_from_every_backfilled_host(live, backfill):
    params = {"selector": {"repositoryLocationName": "codon_assets", "repositoryName": "__repository__",
                           "jobName": "__ASSET_JOB", "assetSelection": [key(UNIFIED)]},
              "executionMetadata": {"tags": [{"key": "codon_assets/source", "value": "test_live_ui"}]}}
    launched = live.gql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    assert wait_for_run(live, run_id, timeout=240) == "SUCCESS", live.log_tail()
    state = live.gql(UNPARTITIONED_STATE, {"key": key(UNIFIED)})["assetNodeOrError"]
    materializations = state["assetMaterializations"]
    assert {m["partition"] for m in materializations} == {None}
    mine = [m for m in materializations if m["runId"] == run_id]
    assert len(mine) == 1, materializations
    event = mine[0]
    meta = metadata(event)
    assert tags(event)["dagster/data_version"] == state["dataVersion"]
    assert meta["registered_model"] == "codon-surrogate-unified"
    assert meta["model_uri"].startswith("models:/codon-surrogate-unified/")
    # Measured labels only, from every host that has them; none is transferred here.
    assert meta["label_source"] == "measured" and meta["source_hosts"] == ["P_pastoris", "S_cerevisiae"]
    assert {k for k in tags(event) if k.startswith("dagster/input_data_version/")} == {
        "dagster/input_data_version/enhanced_dataset", "dagster/input_data_version/markov_model"}


# --------------------------------------------------------------------------------------------------------
# The browser: the pages people look at render the project's assets and partitions


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium; installed with apt-get when missing and this runs as root (CI images)."""
    found = shutil.which(CHROMIUM) or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CODON_INSTALL_CHROMIUM", "1") == "0" or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no chromium: apt-get install -y chromium fonts-liberation")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "fonts-liberation"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:  # a fresh image has no package lists yet
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    found = shutil.which(CHROMIUM) or shutil.which("chromium")
    if not found:
        pytest.skip(f"could not install chromium: {done.stderr[-500:]}")
    return found


@pytest.fixture(scope="module")
def page(chromium_path, live, backfill):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            # Wide enough for the lineage graph (seven assets upstream of the unified model) to draw its nodes
            # with their details (checks, partition fill), which the UI leaves out when zoomed out.
            page = browser.new_page(viewport={"width": 2200, "height": 1200})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def open_page(page, live: LiveDagster, path: str, ready_text: str) -> str:
    page.goto(f"{live.url}{path}", wait_until="networkidle")
    page.get_by_text(ready_text, exact=True).first.wait_for()
    page.wait_for_load_state("networkidle")
    return page.inner_text("body")


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.wait_for_timeout(1000)  # let the graph finish its layout animation
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    return path


def test_ui_global_asset_graph_shows_every_asset(page, live):
    open_page(page, live, "/asset-groups", "ingest")
    page.mouse.click(1000, 250)  # focus the graph canvas (empty area), then Alt+E: "Expand all groups"
    page.keyboard.press("Alt+e")
    # The graph lays its nodes out over a few frames: wait for every label before reading the page.
    for name in PARTITIONED:
        page.get_by_text(name, exact=True).first.wait_for()
    screenshot(page, "ui-asset-graph.png")
    text = page.inner_text("body")
    assert "Global asset lineage" in text
    for group in ("ingest", "features", "model", "design"):
        assert group in text
    for name in PARTITIONED:
        assert name in text, name
    assert "_unified" in text  # the zoomed-out graph shortens it to "surrogate…_unified"


def test_ui_lineage_of_the_unified_model_shows_checks_and_partitions(page, live):
    text = open_page(page, live, f"/assets/{UNIFIED}?view=lineage&lineageScope=upstream&lineageDepth=5", "evo2_features")
    page.get_by_text("4 / 4 Passed").first.wait_for()
    screenshot(page, "ui-lineage.png")
    for name in ("raw_tsv", "converted_dataset", "evo2_features", "enhanced_dataset", UNIFIED):
        assert name in text, name
    text = page.inner_text("body")
    assert "4 / 4 Passed" in text and "3 / 3 Passed" in text  # converted_dataset's and evo2_features' checks
    assert "40% filled" in text  # 2 of 5 host partitions


def test_ui_partition_page_lists_hosts_and_materialized_partitions(page, live):
    text = open_page(page, live, "/assets/converted_dataset?view=partitions", "Materialized (2)")
    screenshot(page, "ui-partitions.png")
    for host in HOSTS:
        assert host in text, host
    assert "Missing (3)" in text and "Failed (0)" in text

    text = open_page(page, live, "/assets/converted_dataset?view=partitions&partition=S_cerevisiae", "rows_read")
    screenshot(page, "ui-partition-S_cerevisiae.png")
    assert "rejects_by_reason" in text and "converted_dataset/S_cerevisiae/" in text


def test_ui_checks_and_model_pages(page, live):
    text = open_page(page, live, "/assets/converted_dataset?view=checks", "rows_accounted_for")
    screenshot(page, "ui-checks.png")
    for check in CHECKS["converted_dataset"]:
        assert check in text, check
    assert text.count("Succeeded") >= len(CHECKS["converted_dataset"]) and "Passed" in text

    text = open_page(page, live, "/assets/surrogate_model?view=partitions&partition=S_cerevisiae", "mlflow_run_url")
    screenshot(page, "ui-surrogate-S_cerevisiae.png")
    assert "models:/codon-surrogate-S_cerevisiae/" in text and "label_source" in text
