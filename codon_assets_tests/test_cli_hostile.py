"""Files and arguments that would file one host's data under another, overwrite an input, drop input without
a word or leak a credential: each is one line and a non-zero exit before any run starts."""

import gzip
import os

import dagster as dg
import pytest

from codon_assets.cli import main
from codon_assets.core.labels import read_measured
from codon_assets.core.tsv import SEQUENCE_COLUMN, InputError
from codon_assets_tests.conftest import EXAMPLES

SAC_LINES = (EXAMPLES / "Sac.tsv").read_text().splitlines()
MEASURED_LINES = (EXAMPLES / "Sac_measured.tsv").read_text().splitlines()


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(lines) == 1, lines
    return lines[0]


def no_run_started() -> bool:
    with dg.DagsterInstance.get() as instance:
        return not instance.get_runs()


def small_table(path, rows=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(SAC_LINES[: rows + 1]) + "\n")
    return path


def test_a_folder_reads_every_host_file_and_names_what_no_host_reads(dagster_home, tmp_path, capsys):
    folder = tmp_path / "in"
    small_table(folder / "Sac.tsv")
    (folder / "P_pastoris.tsv").write_text((EXAMPLES / "Pic.tsv").read_text())  # named by the host key
    (folder / "Pic.tsv").symlink_to(tmp_path / "nowhere.tsv")
    (folder / "notes_measured.tsv").write_text("id\tvalue\nA\t1\n")
    (folder / "batch7.csv").write_text("Entry,Sequence\n")
    assert main(["run", "--input", str(folder), "--output-dir", str(tmp_path / "out")]) == 2
    line = error_line(capsys)
    assert "Pic.tsv (a link to nothing)" in line and "batch7.csv" in line and "notes_measured.tsv" in line
    assert no_run_started()
    for name in ("Pic.tsv", "notes_measured.tsv", "batch7.csv"):
        (folder / name).unlink()
    small_table(folder / "S_cerevisiae.tsv")  # a second file of yeast at the root
    assert main(["run", "--input", str(folder), "--output-dir", str(tmp_path / "out")]) == 1
    assert "S_cerevisiae.tsv, Sac.tsv; keep one" in error_line(capsys) and no_run_started()
    (folder / "S_cerevisiae.tsv").unlink()
    assert main(["run", "--input", str(folder), "--output-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "P_pastoris" / "P_pastoris.jsonl").exists()
    assert (tmp_path / "out" / "S_cerevisiae" / "Sac.jsonl").exists()


def test_host_and_measured_flags_that_do_not_apply_are_refused(dagster_home, tmp_path, capsys):
    sac = small_table(tmp_path / "Sac.tsv")
    out = str(tmp_path / "out")
    assert main(["run", "--input", str(sac), "--host", "P_pastoris", "--output-dir", out]) == 2
    assert "named for host S_cerevisiae but --host is P_pastoris" in error_line(capsys)
    assert main(["run", "--input", str(sac), "--measured", str(EXAMPLES / "Sac_measured.tsv"), "--output-dir", out]) == 2
    assert "add --train-surrogate" in error_line(capsys)
    assert main(["run", "--input", str(tmp_path), "--host", "S_cerevisiae", "--output-dir", out]) == 2
    assert "--host goes with one input file" in error_line(capsys)
    assert main(["lineage", "--asset", "surrogate_model", "--host", "../../etc"]) == 2
    assert "unknown host" in error_line(capsys)
    assert no_run_started()


def test_no_output_replaces_an_input(dagster_home, tmp_path, capsys):
    folder = tmp_path / "od"
    source = small_table(folder / "x.jsonl")  # the run's own export of x.* would be x.jsonl
    before = source.read_bytes()
    assert main(["run", "--input", str(source), "--host", "S_cerevisiae", "--output-dir", str(folder)]) == 2
    assert "writing it would destroy the input" in error_line(capsys) and source.read_bytes() == before
    table = small_table(tmp_path / "Sac.tsv")
    assert main(["predict", "--model", "any", "--input", str(table), "--output", str(table)]) == 2
    assert "writing it would destroy the input" in error_line(capsys)
    proteins = tmp_path / "p.fasta"
    proteins.write_text(">P1\nMKTAYIAKQR\n")
    assert main(["design", "--model", "any", "--input", str(proteins), "--output", str(tmp_path / "." / "p.fasta"),
                 "--host", "S_cerevisiae"]) == 2
    assert "writing it would destroy the input" in error_line(capsys)
    assert proteins.read_text() == ">P1\nMKTAYIAKQR\n" and table.read_bytes().startswith(SAC_LINES[0].encode())
    # The model predict reads (a file or a saved folder), and a file inside a folder of proteins design reads.
    model_file, model_folder = tmp_path / "m.pkl", tmp_path / "model"
    model_file.write_bytes(b"a model")
    (model_folder / "surrogate.json").parent.mkdir()
    (model_folder / "surrogate.json").write_text("{}")
    for model, output in [(model_file, model_file), (model_folder, model_folder / "surrogate.json")]:
        assert main(["predict", "--model", str(model), "--input", str(table), "--output", str(output)]) == 2
        assert "writing it would destroy the input" in error_line(capsys)
    folder = tmp_path / "proteins"
    folder.mkdir()
    (folder / "a.fasta").write_text(">P1\nMKTAYIAKQR\n")
    assert main(["design", "--model", "any", "--input", str(folder), "--output", str(folder / "a.fasta"),
                 "--host", "S_cerevisiae"]) == 2
    assert "is inside the input folder" in error_line(capsys)
    assert model_file.read_bytes() == b"a model" and (model_folder / "surrogate.json").read_text() == "{}"
    assert (folder / "a.fasta").read_text() == ">P1\nMKTAYIAKQR\n"
    assert no_run_started()


def test_an_instance_folder_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["lineage", "--asset", "surrogate_model", "--host", "S_cerevisiae"]) == 1
    assert f"DAGSTER_HOME {home}: cannot be the instance folder" in error_line(capsys)


@pytest.mark.parametrize("flag, value", [("--group", "100000000"), ("--steps", "1000000"), ("--seed", "-1")])
def test_design_settings_out_of_range_are_refused_before_the_model_loads(dagster_home, tmp_path, capsys, flag, value):
    proteins = tmp_path / "p.fasta"
    proteins.write_text(">P1\nMKTAYIAKQR\n")
    assert main(["design", "--model", "no-such-model", "--input", str(proteins), "--output", str(tmp_path / "d.tsv"),
                 "--host", "S_cerevisiae", flag, value]) == 2
    assert flag.removeprefix("--") in error_line(capsys)


def test_a_predict_without_a_valid_record_leaves_an_existing_output_as_it_was(dagster_home, tmp_path, capsys):
    from codon_assets.core.training import train_surrogate
    from codon_assets_tests.test_transfer import enhanced_for

    enhanced, markov = enhanced_for("Sac.tsv", "S_cerevisiae", "Sac_measured.tsv")
    model = train_surrogate(enhanced, {"S_cerevisiae": markov}).model.save(tmp_path / "model")
    bad = tmp_path / "Sac.tsv"  # every row rejected: no record to predict
    header, *rows = SAC_LINES[:21]
    column = header.split("\t").index(SEQUENCE_COLUMN)
    bad.write_text("\n".join([header, *("\t".join("N" * 30 if i == column else c for i, c in enumerate(r.split("\t")))
                                        for r in rows)]) + "\n")
    output = tmp_path / "pred.tsv"
    output.write_text("what an earlier prediction wrote\n")
    assert main(["predict", "--model", str(model), "--input", str(bad), "--output", str(output)]) == 1
    assert "nothing could be predicted (0 valid records, 0 without features, 20 rejected: non_acgt 20)" in error_line(capsys)
    assert output.read_text() == "what an earlier prediction wrote\n"


def test_a_measured_table_is_read_before_the_run_and_a_bad_row_is_counted(dagster_home, tmp_path, capsys):
    sac = tmp_path / "Sac.tsv"
    sac.write_text((EXAMPLES / "Sac.tsv").read_text())
    header_only = tmp_path / "header_only.tsv"
    header_only.write_text(MEASURED_LINES[0] + "\n")
    assert main(["run", "--input", str(sac), "--measured", str(header_only), "--train-surrogate",
                 "--output-dir", str(tmp_path / "out")]) == 1
    assert "header and no rows" in error_line(capsys) and no_run_started()

    # A numeric-looking gene name, a row with extra fields, a name that is not UTF-8, gzip: the table is used.
    rows = [line.split("\t") for line in MEASURED_LINES]
    rows[1][1] = "1"
    lines = ["\t".join(r) for r in rows]
    lines[11] += "\textra\tmore"
    data = ("\n".join(lines) + "\n").encode().replace(rows[20][0].encode(), rows[20][0].encode() + b"\xe9")
    packed = tmp_path / "m.tsv.gz"
    packed.write_bytes(gzip.compress(data))
    table = read_measured(packed)
    plain = read_measured(EXAMPLES / "Sac_measured.tsv")
    assert table.value_column == plain.value_column == "mrna_fpkm"
    assert table.problems["malformed_row"] == 1 and table.problems["not_utf8"] == 1
    assert table.rows == plain.rows and sum(table.problems.values()) + len(table.values) == table.rows


def test_the_first_usable_value_of_an_id_wins_over_an_unusable_one_before_it(tmp_path):
    table = tmp_path / "m.tsv"
    table.write_text("id\tvalue\nA\t0\nA\t12.5\nB\t3\nB\t4\n")
    measured = read_measured(table)
    assert measured.values == {"A": 12.5, "B": 3.0}
    assert measured.problems == {"not_positive": 1, "duplicate_id": 1}
    with pytest.raises(InputError, match="fields"):
        (tmp_path / "bad.tsv").write_text("id\tvalue\nA\t1\t2\n")
        read_measured(tmp_path / "bad.tsv")


def test_a_nim_url_with_a_credential_is_refused_and_never_stored(dagster_home, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CODON_NIM_URL", "http://user:nvapi-SECRET@127.0.0.1:9")
    assert main(["run", "--input", str(small_table(tmp_path / "Sac.tsv")), "--evo2-backend", "nim",
                 "--output-dir", str(tmp_path / "out")]) == 1
    assert "CODON_NIM_URL carries a user name or password" in error_line(capsys)
    assert no_run_started()
    stored = b"".join(p.read_bytes() for p in dagster_home.rglob("*") if p.is_file())
    assert b"nvapi-SECRET" not in stored


@pytest.fixture
def fresh_s3_filesystems():
    """fsspec keeps one S3 filesystem per set of arguments for the process: one made here without credentials
    must not serve a later test (nor an earlier one's serve this test)."""
    s3fs = pytest.importorskip("s3fs")
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def test_an_object_store_that_cannot_be_used_is_one_line(dagster_home, capsys, monkeypatch, fresh_s3_filesystems):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no credential lookup over the network
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    assert main(["history", "--asset", "converted_dataset", "--host", "S_cerevisiae", "--storage",
                 "s3://no-such-bucket/x"]) == 1
    assert "the asset store cannot be used: NoCredentialsError" in error_line(capsys)


def test_a_header_line_in_a_message_is_cut(tmp_path):
    from codon_assets.core.tsv import read_release_table

    headerless = tmp_path / "Sac.tsv"
    headerless.write_text("ATG" * 300_000 + "\tMKT\n")
    with pytest.raises(InputError) as raised:
        read_release_table(headerless)
    assert len(str(raised.value)) < 1000


def test_a_value_decades_away_from_the_rest_is_not_a_label(tmp_path):
    table = tmp_path / "m.tsv"
    table.write_text("id\tvalue\n" + "".join(f"P{i}\t{10 + i}\n" for i in range(50)) + "X\t1e308\nY\t1e-300\n")
    measured = read_measured(table)
    assert "X" not in measured.values and "Y" not in measured.values and len(measured.values) == 50
    assert measured.problems == {"implausible_value": 2}


def test_a_table_with_a_header_and_no_rows_is_refused_before_any_run(dagster_home, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from codon_assets.core.tsv import RELEASE_COLUMNS

    tsv, csv, parquet = tmp_path / "Sac.tsv", tmp_path / "Sac.csv", tmp_path / "Sac.parquet"
    tsv.write_text(SAC_LINES[0] + "\n\n  \n")
    csv.write_text(",".join(RELEASE_COLUMNS) + "\r\n")
    pq.write_table(pa.table({name: pa.array([], pa.string()) for name in RELEASE_COLUMNS}), parquet)
    for source in (tsv, csv, parquet):
        assert main(["run", "--input", str(source), "--output-dir", str(tmp_path / "out")]) == 1
        assert "no data rows" in error_line(capsys)
    assert no_run_started()


def test_materialize_of_a_host_without_input_is_refused_before_any_run(dagster_home, capsys):
    assert main(["materialize", "--host", "E_coli"]) == 2
    assert "no input for host E_coli" in error_line(capsys) and no_run_started()


def test_an_ncbi_cds_marked_partial_is_rejected_even_when_it_starts_with_a_start_codon(tmp_path):
    from codon_assets.core.convert import ConversionSettings, convert_files
    from codon_assets.core.hosts import get_host
    from codon_assets.core.tsv import read_release_table

    cds = "ATG" + "GCT" * 40 + "TAA"
    fasta = tmp_path / "GCF_000005845.2_cds_from_genomic.fna"
    fasta.write_text(
        f">lcl|NC_000913.3_cds_NP_1.1_1 [gene=a] [protein_id=NP_1.1] [gbkey=CDS]\n{cds}\n"
        f">lcl|NC_000913.3_cds_NP_2.1_2 [gene=b] [protein_id=NP_2.1] [partial=5'] [gbkey=CDS]\n{cds}\n"
        f">lcl|NC_000913.3_cds_NP_3.1_3 [gene=c] [protein_id=NP_3.1] [partial=3'] [gbkey=CDS]\n{cds}\n")
    result = convert_files([read_release_table(fasta)], get_host("E_coli"), ConversionSettings())
    assert result.valid["protein_id"].to_pylist() == ["NP_1.1"]
    assert result.rejects_by_reason() == {"partial": 2}


@pytest.mark.parametrize("run", ["a/b", "../../../evil", "zzz", "08ceb9fc"])
def test_a_rollback_run_that_is_not_a_known_run_id_touches_no_file(dagster_home, tmp_path, capsys, run):
    assert main(["rollback", "--asset", "converted_dataset", "--host", "S_cerevisiae", "--run", run]) == 2
    line = error_line(capsys)
    assert "is not a run id" in line or "no stored version" in line
    # The event log keeps one file per run: none is made for an id no run has, nor anywhere outside the instance.
    assert sorted(p.name for p in (dagster_home / "history" / "runs").glob("*.db")) in ([], ["index.db"])
    assert not list(tmp_path.parent.glob("evil*")) and not list(tmp_path.glob("**/evil*"))


def test_one_hosts_unusable_measured_table_fails_that_host_alone(dagster_home, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "in"
    small_table(folder / "Pic.tsv")
    (folder / "Pic_measured.tsv").write_text("gene\tvalue\nfoo\tbar\n")
    (folder / "mouse.fa.gz").write_bytes((EXAMPLES / "mouse.fa.gz").read_bytes())
    monkeypatch.setenv("CODON_INPUT_DIR", str(folder))
    monkeypatch.setenv("CODON_PROTEINS_DIR", str(tmp_path / "no-proteins"))
    assert main(["materialize"]) == 1
    err = capsys.readouterr().err
    assert "[P_pastoris] FAILED:" in err and "no numeric value column" in err
    with dg.DagsterInstance.get() as instance:
        assert instance.get_latest_materialization_event(dg.AssetKey("converted_dataset")) is not None  # Mouse ran


def test_converted_records_are_versioned_by_their_content(dagster_home, tmp_path):
    """Two tables of one file cut at different --limit are two data versions (a rollback between them leaves
    downstream stale); the same table again is the same version."""
    versions = []
    for limit in ("40", "30", "40"):
        assert main(["run", "--input", str(EXAMPLES / "Sac.tsv"), "--output-dir", str(tmp_path / "out"),
                     "--limit", limit]) == 0
        with dg.DagsterInstance.get() as instance:
            record = instance.get_latest_data_version_record(dg.AssetKey("converted_dataset"),
                                                             partition_key="S_cerevisiae")
            versions.append(record.asset_materialization.tags["dagster/data_version"])
    assert versions[0] != versions[1] and versions[0] == versions[2]


def test_a_gzip_measured_table_beside_its_input_is_found(tmp_path):
    from resources.inputs import InputFiles

    small_table(tmp_path / "Sac.tsv")
    (tmp_path / "Sac_measured.tsv.gz").write_bytes(gzip.compress((EXAMPLES / "Sac_measured.tsv").read_bytes()))
    finder = InputFiles(input_dir=str(tmp_path))
    assert finder.measured_for("S_cerevisiae") == (tmp_path / "Sac_measured.tsv.gz").resolve()
    assert finder.unclaimed() == []


def test_target_proteins_are_found_by_host_key_in_any_case_and_two_are_an_error(tmp_path):
    from codon_assets.core.proteins import read_proteins
    from resources.inputs import InputFiles

    fasta = (EXAMPLES.parent / "proteins" / "S_cerevisiae.fasta").read_bytes()
    (tmp_path / "s_cerevisiae.faa.gz").write_bytes(gzip.compress(fasta))
    finder = InputFiles(input_dir=str(tmp_path), proteins_dir=str(tmp_path))
    found = finder.proteins_for("S_cerevisiae")
    assert found == (tmp_path / "s_cerevisiae.faa.gz").resolve()
    proteins, rejects = read_proteins(found)
    assert len(proteins) == len(read_proteins(EXAMPLES.parent / "proteins" / "S_cerevisiae.fasta")[0]) > 0
    (tmp_path / "S_cerevisiae.tsv").write_text("id\tprotein\nP1\tMKTAYIAKQR\n")
    with pytest.raises(InputError, match="2 target protein files for host S_cerevisiae"):
        finder.proteins_for("S_cerevisiae")
