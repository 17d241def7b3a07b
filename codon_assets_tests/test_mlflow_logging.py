"""MLflow logging runs in a process of its own while a run uses the tracking resource (``LoggingProcess``):
what it logs lands in the store, a failure there fails the caller with the exception's own line, the
process ends with the run, and the run's own process never imports mlflow."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest

from codon_assets_tests.conftest import EXAMPLES, ROOT
from resources.mlflow_tracking import LoggingFailed, MlflowTracking


@pytest.fixture
def tracking(tmp_path):
    resource = MlflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    resource.setup_for_execution(None)
    yield resource
    resource.teardown_after_execution(None)


def test_logging_goes_through_the_process_into_the_store_and_the_process_ends_with_the_run(tracking, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    process = tracking._logging.process
    logged = tracking.log_designs(pd.DataFrame({"design_id": ["d1"]}), {"designs": 1.0}, {"steps": "10"},
                                  {"dagster.run_id": "r1"}, "designs-r1")
    assert process.poll() is None and "MLFLOW_TRACKING_URI" not in os.environ  # logged there, not here
    tracking.teardown_after_execution(None)
    assert process.returncode == 0 and tracking._logging is None
    run = mlflow.MlflowClient(tracking_uri=tracking.uri()).get_run(logged.run_id)
    assert run.data.params == {"steps": "10"} and run.data.metrics == {"designs": 1.0}
    assert run.data.tags["dagster.run_id"] == "r1"


def test_a_failure_in_the_logging_process_fails_the_call_with_its_own_line_and_the_process_goes_on(tracking):
    with pytest.raises(LoggingFailed) as failed:
        tracking.log_designs(pd.DataFrame({"design_id": ["d1"]}), {}, {"no*such key": "x"}, {}, "bad")
    assert failed.value.args[0].splitlines()[-1].startswith("mlflow.exceptions.MlflowException")
    logged = tracking.log_designs(pd.DataFrame({"design_id": ["d1"]}), {}, {"steps": "1"}, {}, "good")
    assert logged.run_id


def test_a_run_from_the_command_line_never_imports_mlflow_in_its_own_process(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(ROOT / "dagster.yaml")
    script = ("import sys\nfrom codon_assets.cli import main\n"
              f"code = main(['run', '--input', {str(EXAMPLES / 'Sac.tsv')!r}, '--output-dir', {str(tmp_path / 'out')!r},"
              f" '--train-surrogate', '--measured', {str(EXAMPLES / 'Sac_measured.tsv')!r}])\n"
              "print('mlflow imported' if 'mlflow' in sys.modules else 'mlflow not imported')\nsys.exit(code)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"DAGSTER_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "registered models:/codon-surrogate-S_cerevisiae/1" in done.stderr
    assert done.stdout.rstrip().endswith("mlflow not imported")


def test_a_logging_process_started_early_is_the_one_the_next_run_of_that_store_takes(tmp_path):
    from resources import mlflow_tracking

    early = MlflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    early.start_logging_early()
    early.start_logging_early()  # one per store, however often asked
    started = mlflow_tracking._STARTED_EARLY[early._logging_key()]
    other = MlflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'other.db'}")
    other.setup_for_execution(None)  # another store's run starts its own
    run = MlflowTracking(tracking_uri=early.tracking_uri)  # the run's resource, built apart from the early one
    run.setup_for_execution(None)
    try:
        assert run._logging is started and other._logging is not started
        assert early._logging_key() not in mlflow_tracking._STARTED_EARLY
        assert run.log_designs(pd.DataFrame({"design_id": ["d1"]}), {}, {"steps": "1"}, {}, "early").run_id
    finally:
        run.teardown_after_execution(None)
        other.teardown_after_execution(None)
    assert started.process.returncode == 0
