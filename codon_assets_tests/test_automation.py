"""Schedules, sensors and declarative automation, evaluated against temporary instances."""

import datetime as dt
import json
import os

import dagster as dg
import pytest
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from codon_assets.definitions import defs
from codon_assets.defs.resources import build_resources
from codon_assets.defs.automation.schedules import weekly_host_refresh
from codon_assets.defs.automation.sensors import inbox_sensor, scan_inbox
from codon_assets_tests.conftest import EXAMPLES
from resources.inputs import InputFiles


def test_weekly_schedule_requests_one_run_per_host_with_data():
    tick = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.timezone.utc)
    context = dg.build_schedule_context(scheduled_execution_time=tick)
    requests = weekly_host_refresh(context, input_files=InputFiles(input_dir=str(EXAMPLES)))
    with_data = ["Human", "Mouse", "P_pastoris", "S_cerevisiae"]  # E. coli ships no data
    assert sorted(r.partition_key for r in requests) == with_data
    assert {r.run_key for r in requests} == {f"{host}:2026-11-30T03:00" for host in with_data}
    later = weekly_host_refresh(dg.build_schedule_context(scheduled_execution_time=tick + dt.timedelta(days=7)),
                                input_files=InputFiles(input_dir=str(EXAMPLES)))
    assert not {r.run_key for r in requests} & {r.run_key for r in later}  # a new key every tick


def test_weekly_schedule_skips_without_data(tmp_path):
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc))
    assert isinstance(weekly_host_refresh(context, input_files=InputFiles(input_dir=str(tmp_path))), dg.SkipReason)


@pytest.fixture
def inbox(tmp_path, monkeypatch):
    folder = tmp_path / "inbox"
    folder.mkdir()
    monkeypatch.setenv("CODON_INBOX_DIR", str(folder))
    return folder


def run_sensor(cursor=None):
    with dg.instance_for_test() as instance:
        return inbox_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))


def test_sensor_picks_up_dropped_files_once_and_again_when_changed(inbox, tmp_path):
    (inbox / "Pic.tsv").write_bytes((EXAMPLES / "Pic.tsv").read_bytes())
    (inbox / "S_cerevisiae").mkdir()
    (inbox / "S_cerevisiae" / "batch1.tsv").write_bytes((EXAMPLES / "Sac.tsv").read_bytes())
    (inbox / "notes.tsv").write_text("Entry\tRefSeq_nn\n")
    result = run_sensor()
    requests = {r.partition_key: r for r in result.run_requests}
    assert set(requests) == {"P_pastoris", "S_cerevisiae"}
    files = requests["S_cerevisiae"].run_config["resources"]["input_files"]["config"]["files"]
    assert files == {"S_cerevisiae": [str((inbox / "S_cerevisiae" / "batch1.tsv").resolve())]}
    cursor = json.loads(result.cursor)
    assert set(cursor) == {"Pic.tsv", "S_cerevisiae/batch1.tsv"}

    assert run_sensor(result.cursor).run_requests == []  # unchanged: nothing
    (inbox / "Pic.tsv").write_bytes((EXAMPLES / "Pic.tsv").read_bytes()[:-300] + b"\n")
    again = run_sensor(result.cursor)
    assert [r.partition_key for r in again.run_requests] == ["P_pastoris"]
    assert again.run_requests[0].run_key != requests["P_pastoris"].run_key


def test_sensor_cannot_be_led_outside_the_inbox(inbox, tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "Sac.tsv").write_bytes((EXAMPLES / "Sac.tsv").read_bytes())
    os.symlink(outside / "Sac.tsv", inbox / "Sac.tsv")
    os.symlink(outside, inbox / "P_pastoris")
    requests, skipped, _ = scan_inbox(inbox, {})
    assert requests == []
    assert any("symbolic link" in s for s in skipped)


def test_sensor_run_request_executes_with_the_inbox_file(inbox, instance, tmp_path):
    """The run config the sensor emits really points the run at the dropped file."""
    (inbox / "Pic.tsv").write_bytes((EXAMPLES / "Pic.tsv").read_bytes()[:40_000])
    request = run_sensor().run_requests[0]
    resources = build_resources()
    resources["input_files"] = InputFiles(input_dir=str(tmp_path / "elsewhere"))
    result = dg.materialize(list(defs.assets), selection=["raw_tsv"], partition_key=request.partition_key,
                            instance=instance, resources=resources, run_config=request.run_config)
    materialization = result.get_asset_materialization_events()[0].step_materialization_data.materialization
    assert str(inbox / "Pic.tsv") in materialization.metadata["files"].value


def report_upstream(instance, host, features_check_passed=True):
    """Runless events for a host's converted dataset, Markov model and features, with their blocking checks."""
    checks = {"converted_dataset": ["rows_accounted_for", "unique_protein_id"], "markov_model": [],
              "evo2_features": ["one_row_per_record", "values_in_range"]}
    for asset, names in checks.items():
        instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=host))
        # A partitioned check counts only when it names the partition's materialization it evaluated.
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[host]), limit=1).records[0]
        target = AssetCheckEvaluationTargetMaterializationData(
            storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)
        for name in names:
            passed = features_check_passed or asset != "evo2_features"
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(asset), check_name=name, passed=passed, partition=host,
                severity=dg.AssetCheckSeverity.ERROR, target_materialization_data=target))


def test_model_stage_follows_upstream_updates():
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0  # nothing upstream yet
        report_upstream(instance, "S_cerevisiae")
        second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert second.get_requested_partitions(dg.AssetKey("enhanced_dataset")) == {"S_cerevisiae"}
        assert second.get_num_requested(dg.AssetKey("surrogate_model_unified")) == 1
        assert second.get_num_requested(dg.AssetKey("raw_tsv")) == 0  # ingest is scheduled, not automatic
        third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
        assert third.total_requested == 0  # handled: not requested twice


def test_failed_blocking_checks_hold_back_only_their_own_host():
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        report_upstream(instance, "S_cerevisiae", features_check_passed=False)
        second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert second.get_num_requested(dg.AssetKey("enhanced_dataset")) == 0
        # Another host's passing checks, reported later, neither release S_cerevisiae nor wait for it.
        report_upstream(instance, "P_pastoris")
        third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
        assert third.get_requested_partitions(dg.AssetKey("enhanced_dataset")) == {"P_pastoris"}
