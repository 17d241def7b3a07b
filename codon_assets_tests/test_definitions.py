"""The code location loads, and its asset graph is the one the docs describe (a snapshot)."""

import json
from datetime import timedelta
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from codon_assets.asset_specs import ASSET_STAMPS, OWNERS, stamp
from codon_assets.definitions import defs
from codon_assets_tests.conftest import ROOT

EXPECTED_ASSETS = ["codon_designs", "converted_dataset", "converted_rejects", "enhanced_dataset", "evo2_features",
                   "markov_model",
                   "raw_tsv", "surrogate_model", "surrogate_model_unified"]
EXPECTED_CHECKS = [
    "converted_dataset:organism_fits_host",
    "converted_dataset:reject_rate",
    "converted_dataset:rows_accounted_for",
    "converted_dataset:unique_protein_id",
    "evo2_features:error_rate",
    "evo2_features:one_row_per_record",
    "evo2_features:values_in_range",
]
GROUPS = {"raw_tsv": "ingest", "converted_dataset": "ingest", "converted_rejects": "ingest",
          "evo2_features": "features", "markov_model": "features", "enhanced_dataset": "model", "surrogate_model": "model",
          "surrogate_model_unified": "model", "codon_designs": "design"}


def test_asset_keys_snapshot():
    graph = defs.resolve_asset_graph()
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == EXPECTED_ASSETS
    checks = sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys)
    assert checks == EXPECTED_CHECKS


def test_every_asset_is_described_grouped_owned_and_versioned():
    for spec in defs.resolve_all_asset_specs():
        assert spec.description, spec.key
        assert spec.group_name == GROUPS[spec.key.to_user_string()], spec.key
        assert spec.owners, spec.key
        assert spec.code_version, spec.key
        assert (spec.partitions_def is None) == (spec.key.path == ["surrogate_model_unified"]), spec.key


def test_lineage_edges():
    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
               for k in graph.get_all_asset_keys()}
    assert parents == {"raw_tsv": [], "converted_dataset": ["raw_tsv"], "converted_rejects": ["raw_tsv"],
                       "markov_model": ["converted_dataset"],
                       "evo2_features": ["converted_dataset", "markov_model"],
                       "enhanced_dataset": ["converted_dataset", "evo2_features"],
                       "surrogate_model": ["enhanced_dataset", "markov_model", "surrogate_model_unified"],
                       "surrogate_model_unified": ["enhanced_dataset", "markov_model"],
                       "codon_designs": ["surrogate_model"]}


def test_blocking_checks_are_declared_blocking():
    graph = defs.resolve_asset_graph()
    blocking = {k.name for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert blocking == {"rows_accounted_for", "unique_protein_id", "one_row_per_record", "values_in_range"}


def test_features_run_in_the_gpu_pool():
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key.path == ["evo2_features"])
    assert spec.tags["compute"] == "gpu" and "pytorch" in spec.kinds
    node = defs.resolve_asset_graph().get(spec.key)
    assert node.pools == {"gpu"}


def test_instance_config_pools_and_retries():
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["run_retries"]["enabled"] is True
    assert config["telemetry"]["enabled"] is False
    assert config["storage"]["sqlite"]["base_dir"] == {"env": "DAGSTER_HOME"}


def test_instance_loads_from_the_project_config(instance):
    assert instance.run_retries_enabled
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_workspace_loads_in_a_fresh_interpreter():
    """What `dagster dev -w workspace.yaml` does first: import the module named there and find `defs`."""
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]["module_name"]
    code = f"import {module} as d; print(len(list(d.defs.resolve_all_asset_specs())))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(len(EXPECTED_ASSETS))


def test_jobs_schedules_and_sensors():
    assert {j.name for j in defs.jobs if not j.name.startswith("__")} >= {
        "ingest_job", "features_job", "model_job", "host_graph_job", "unified_model_job", "design_job"}
    assert [s.name for s in defs.schedules] == ["weekly_host_refresh"]
    assert [s.name for s in defs.sensors] == ["inbox_sensor"]


def test_definitions_load_under_each_profile():
    """The same code location under each profile: only the default executor of every job changes."""
    code = ("from codon_assets.definitions import defs; "
            "print(sorted({j.executor_def.name for j in defs.get_repository_def().get_all_jobs()}))")
    executors = {}
    for profile, extra in [("local", {}), ("docker", {"CODON_EVO2_IMAGE": "codon-assets-evo2:test", "CODON_DOCKER_GPU": "0"}),
                           ("k8s", {})]:
        env = {**__import__("os").environ, "CODON_DEPLOYMENT": profile, **extra}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        executors[profile] = out.stdout.strip().splitlines()[-1]
    assert executors == {"local": "['multi_or_in_process_executor']", "docker": "['gpu_routed_docker_executor']",
                         "k8s": "['k8s']"}


def _dg(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Dagster's project CLI, as a developer runs it from the checkout (in the project's environment)."""
    import os

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "VIRTUAL_ENV": str(bin_dir.parent),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(bin_dir / "dg"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_dg_check_and_list_defs(tmp_path):
    """The layout is a dg project: `dg check defs` loads it, `dg list defs` lists the autoloaded definitions."""
    checked = _dg(tmp_path, "check", "defs")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = _dg(tmp_path, "list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert sorted(a["asset_key"] for a in found["assets"]) == EXPECTED_ASSETS
    assert {j["name"] for j in found["jobs"]} >= {"ingest_job", "host_graph_job", "unified_model_job"}
    assert [s["name"] for s in found["schedules"]] == ["weekly_host_refresh"]
    assert "inbox_sensor" in {s["name"] for s in found["sensors"]}  # beside Dagster's own automation sensor


def test_every_asset_carries_its_stamp_and_an_unstamped_asset_is_an_error():
    for spec in defs.resolve_all_asset_specs():
        entry = ASSET_STAMPS[spec.key.to_user_string()]
        assert (spec.group_name, spec.code_version, set(spec.kinds), list(spec.owners)) == (
            entry.group, entry.code_version, set(entry.kinds), OWNERS)
        # Fresh as the weekly schedule keeps it.
        assert spec.freshness_policy.fail_window.to_timedelta() == timedelta(days=8), spec.key
    with pytest.raises(KeyError, match="no entry in codon_assets.asset_specs.ASSET_STAMPS"):
        stamp(dg.AssetSpec("an_asset_nobody_stamped"))
