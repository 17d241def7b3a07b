"""Asset tests: materialize the ingest assets for a partition on a temporary instance."""

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codon_assets.definitions import defs
from codon_assets.core.convert import ConversionResult, FileCounts
from codon_assets.defs.ingest.assets import CONVERTED, conversion_checks
from resources.inputs import InputFiles
from resources.io_manager import ParquetIOManager
from resources.evo2.resource import Evo2Resource
from resources.mlflow_tracking import MlflowTracking
from resources.model_store import ModelIOManager
from codon_assets_tests.conftest import EXAMPLES, write_tsv


INGEST_AND_FEATURES = ["raw_tsv", "converted_dataset", "converted_rejects", "markov_model", "evo2_features"]


def materialize(instance, host, input_dir, storage, run_config=None, selection=None, evo2=None):
    """Materialize a host partition on a temporary instance (ingest and features unless told otherwise)."""
    return dg.materialize(
        list(defs.assets),
        partition_key=host,
        instance=instance,
        resources=resources_for(input_dir, storage, evo2),
        run_config=run_config,
        selection=selection or INGEST_AND_FEATURES,
        raise_on_error=False,
    )


def resources_for(input_dir, storage, evo2=None):
    storage.mkdir(parents=True, exist_ok=True)
    return {
        "input_files": InputFiles(input_dir=str(input_dir)),
        "io_manager": ParquetIOManager(base_dir=str(storage)),
        "model_io_manager": ModelIOManager(base_dir=str(storage)),
        "evo2": evo2 or Evo2Resource(cache_dir=str(storage / "feature_cache")),
        "mlflow_tracking": MlflowTracking(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}",
                                          artifact_root=str(storage / "mlartifacts")),
    }


def checks_of(result):
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_ingest_assets_for_a_partition(instance, tmp_path):
    result = materialize(instance, "P_pastoris", EXAMPLES, tmp_path)
    assert result.success
    valid = pq.read_table(tmp_path / "converted_dataset" / "P_pastoris.parquet")
    rejects = pq.read_table(tmp_path / "converted_rejects" / "P_pastoris.parquet")
    assert valid.num_rows + rejects.num_rows == 240
    assert set(valid["host"].to_pylist()) == {"P_pastoris"}
    checks = checks_of(result)
    assert {"rows_accounted_for", "unique_protein_id", "reject_rate", "organism_fits_host"} <= set(checks)
    assert all(c.passed for c in checks.values())

    materialized = {e.asset_key.to_user_string(): e.step_materialization_data.materialization
                    for e in result.get_asset_materialization_events()}
    meta = materialized["converted_dataset"].metadata
    assert meta["rows_read"].value == 240
    assert meta["dagster/row_count"].value == valid.num_rows
    assert "duplicate_sequence" in meta["rejects_by_reason"].value
    assert [c.name for c in meta["dagster/column_schema"].schema.columns][:3] == ["protein_id", "sequence", "protein_aa"]
    assert materialized["raw_tsv"].metadata["rows"].value == 240


def test_raw_data_version_is_the_content_hash(instance, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "Sac.tsv").write_bytes((EXAMPLES / "Sac.tsv").read_bytes())

    def raw_version():
        record = instance.get_latest_data_version_record(dg.AssetKey("raw_tsv"), partition_key="S_cerevisiae")
        return record.asset_materialization.tags["dagster/data_version"]

    for _ in range(2):
        assert materialize(instance, "S_cerevisiae", inputs, tmp_path / "s", selection=["raw_tsv"]).success
    first = raw_version()
    runs = instance.fetch_materializations(dg.AssetKey("raw_tsv"), limit=10).records
    assert len(runs) == 2 and len({r.asset_materialization.tags["dagster/data_version"] for r in runs}) == 1
    (inputs / "Sac.tsv").write_bytes((EXAMPLES / "Sac.tsv").read_bytes()[:-200] + b"\n")
    assert materialize(instance, "S_cerevisiae", inputs, tmp_path / "s", selection=["raw_tsv"]).success
    assert raw_version() != first


def test_input_changed_after_fingerprint_fails_clearly(instance, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    tsv = inputs / "Pic.tsv"
    tsv.write_bytes((EXAMPLES / "Pic.tsv").read_bytes())
    assert materialize(instance, "P_pastoris", inputs, tmp_path / "s", selection=["raw_tsv"]).success
    tsv.write_bytes((EXAMPLES / "Pic.tsv").read_bytes()[:5000])
    result = materialize(instance, "P_pastoris", inputs, tmp_path / "s", selection=["converted_dataset", "converted_rejects"])
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "changed since raw_tsv was materialized" in failure.step_failure_data.user_failure_data.description


def test_host_without_input_fails_with_the_expected_names(instance, tmp_path):
    result = materialize(instance, "E_coli", EXAMPLES, tmp_path, selection=["raw_tsv"])  # no E. coli data ships
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "Ec.tsv" in failure.step_failure_data.user_failure_data.description


def test_host_folder_inputs_and_warning_checks(instance, tmp_path):
    """Files under <input>/<host>/*.tsv feed the host; a mostly-bad file from another organism warns."""
    inputs = tmp_path / "in"
    (inputs / "E_coli").mkdir(parents=True)
    good = "ATG" + "GCTAAAGAA" * 10 + "TAA"
    rows = [{"Entry": "Y1", "Organism": "Saccharomyces cerevisiae", "RefSeq_nn": good}] + [
        {"Entry": f"BAD{i}", "RefSeq_nn": "ATGNNN"} for i in range(3)
    ]
    write_tsv(inputs / "E_coli" / "batch1.tsv", rows)
    result = materialize(instance, "E_coli", inputs, tmp_path / "s", selection=["raw_tsv", "converted_dataset", "converted_rejects"],
                         run_config={"ops": {"converted_dataset": {"config": {"max_reject_rate": 0.5}}}})
    assert result.success  # warnings do not block
    checks = checks_of(result)
    assert checks["rows_accounted_for"].passed and checks["unique_protein_id"].passed
    assert not checks["reject_rate"].passed and checks["reject_rate"].severity == dg.AssetCheckSeverity.WARN
    assert not checks["organism_fits_host"].passed
    assert checks["organism_fits_host"].metadata["records_not_fitting"].value == 1


def test_limit_converts_only_the_first_rows(instance, tmp_path):
    result = materialize(instance, "S_cerevisiae", EXAMPLES, tmp_path, selection=["raw_tsv", "converted_dataset", "converted_rejects"],
                         run_config={"ops": {"converted_dataset": {"config": {"limit": 50}}}})
    assert result.success
    valid = pq.read_table(tmp_path / "converted_dataset" / "S_cerevisiae.parquet")
    rejects = pq.read_table(tmp_path / "converted_rejects" / "S_cerevisiae.parquet")
    assert valid.num_rows + rejects.num_rows == 50


def _table(ids):
    return pa.table({"protein_id": ids, "organism": ["Homo sapiens"] * len(ids)})


def _result(valid, rejects, data_lines, blank_lines=0):
    # rows_read as a parser that merged lines would report it: exactly what was accounted for.
    rows = valid.num_rows + rejects.num_rows
    counts = FileCounts("in.tsv", "0" * 64, data_lines, blank_lines, rows, valid.num_rows, rejects.num_rows, 0)
    return ConversionResult(valid, rejects, [counts])


def test_blocking_checks_fail_on_broken_tables():
    """The blocking checks judge the tables as written against the physical lines of the input, so a
    converter bug that drops or repeats rows, or a parser that reads two lines as one, fails them."""
    rejects = pa.table({"reasons": pa.array([["non_acgt"]], pa.list_(pa.string()))})
    results = {r.check_name: r for r in conversion_checks(_result(_table(["a", "b"]), rejects, 4), "Human", 0.5)}
    assert not results["rows_accounted_for"].passed  # 4 lines, 3 accounted for
    results = {r.check_name: r for r in conversion_checks(_result(_table(["a", "b"]), rejects, 4, 1), "Human", 0.5)}
    assert results["rows_accounted_for"].passed  # one of the 4 lines is blank
    results = {r.check_name: r for r in conversion_checks(_result(_table(["a", "a"]), rejects, 3), "Human", 0.5)}
    assert results["rows_accounted_for"].passed
    assert not results["unique_protein_id"].passed
    assert results["unique_protein_id"].metadata["examples"].value == "a"
    assert all(r.asset_key == CONVERTED for r in results.values())


def test_io_manager_rejects_non_tables(tmp_path):
    manager = ParquetIOManager(base_dir=str(tmp_path))
    context = dg.build_output_context(asset_key=dg.AssetKey("x"))
    with pytest.raises(TypeError, match="pyarrow Tables"):
        manager.handle_output(context, {"not": "a table"})
