"""Reliability: a corpus of bad inputs, property tests over generated tables, a features run killed and
resumed, writers killed mid-write, and concurrent runs of one host."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codon_assets.core.convert import ConversionSettings, convert_files
from codon_assets.cli.export import converted_records
from codon_assets.core.hosts import get_host
from codon_assets.core.tsv import RELEASE_COLUMNS, InputError, read_release_table
from codon_assets_tests.conftest import EXAMPLES, ROOT

GOOD = "ATG" + "GCTAAAGAA" * 12 + "TAA"
GOOD_AA = "M" + "AKE" * 12
HEADER = "\t".join(RELEASE_COLUMNS)


def row(entry="P1", cds=GOOD, protein=GOOD_AA + "*", **extra) -> str:
    fields = {"Entry": entry, "Organism": "Homo sapiens", "RefSeq_nn": cds, "RefSeq_aa": protein, **extra}
    return "\t".join(fields.get(c, "") for c in RELEASE_COLUMNS)


def convert_bytes(tmp_path, data: bytes, host="Human"):
    path = tmp_path / "in.tsv"
    path.write_bytes(data)
    return convert_files([read_release_table(path)], get_host(host), ConversionSettings())


# Inputs that convert: bad rows rejected with reasons, good rows kept, nothing dropped silently.
CONVERTIBLE = {
    "header_only": (HEADER + "\n").encode(),
    "extra_columns": ("\t".join(RELEASE_COLUMNS + ("Note",)) + "\n" + row() + "\tan extra note\n").encode(),
    "windows_line_endings": (HEADER + "\r\n" + row() + "\r\n" + row("P2", "ATG" + "GCC" * 20 + "TAA", "") + "\r\n").encode(),
    "utf8_bom": ("\ufeff" + HEADER + "\n" + row() + "\n").encode(),
    "quoted_field_with_tab_and_newline": (HEADER + "\n" + row(**{"Protein names": '"a\tb\nc"'}) + "\n").encode(),
    "lower_case_and_padding": (HEADER + "\n" + row(cds="  " + GOOD.lower() + " ", protein=" " + GOOD_AA.lower()) + "\n").encode(),
    "rna_letters": (HEADER + "\n" + row(cds=GOOD.replace("T", "U")) + "\n" + row("P2", "ATG" + "GCC" * 20 + "TAA", "") + "\n").encode(),
    "iupac_codes": (HEADER + "\n" + row(cds=GOOD[:9] + "RYN" + GOOD[12:]) + "\n").encode(),
    "non_utf8_bytes_in_a_row": (HEADER + "\n").encode() + row(**{"Protein names": "caf"}).encode() + b"\xe9\n",
    "missing_field": (HEADER + "\n" + row() + "\n" + "P2\treviewed\n").encode(),
}


@pytest.mark.parametrize("case", sorted(CONVERTIBLE))
def test_bad_inputs_that_still_convert(tmp_path, case):
    data = CONVERTIBLE[case]
    try:
        result = convert_bytes(tmp_path, data)
    except InputError as exc:  # a clear, one-line refusal is also acceptable for a whole-file problem
        assert "\n" not in str(exc) and str(tmp_path) in str(exc)
        return
    assert result.rows_read == result.valid.num_rows + result.rejects.num_rows
    assert all(r["reasons"] for r in result.rejects.to_pylist())
    if case == "lower_case_and_padding":
        assert result.valid["sequence"].to_pylist() == [GOOD]
    if case in ("rna_letters", "iupac_codes"):
        assert "non_acgt" in result.rejects_by_reason()
    if case == "windows_line_endings":
        assert result.valid.num_rows == 2
    if case == "missing_field":
        assert result.rejects_by_reason() == {"malformed_row": 1}


@pytest.mark.parametrize("case, content, message", [
    ("empty", b"", "empty"),
    ("whitespace_only", b"\n\n  \n", "empty"),
    ("renamed_columns", b"Accession\tCDS\nP1\tATG\n", "missing required column"),
    ("binary_garbage", bytes(range(256)) * 64, "binary data"),
    ("latin1_header", "Entry\tRefSeq_nn\tNote é\n".encode("latin-1"), "not UTF-8"),
])
def test_unusable_inputs_fail_with_one_clear_line(tmp_path, case, content, message):
    with pytest.raises(InputError) as excinfo:
        convert_bytes(tmp_path, content)
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_directory_and_unreadable_paths(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        read_release_table(tmp_path)
    broken = tmp_path / "broken.tsv"
    broken.symlink_to(tmp_path / "nowhere.tsv")
    with pytest.raises(InputError, match="cannot be read"):
        read_release_table(broken)


def test_a_ten_megabase_sequence(tmp_path):
    giant = "ATG" + "GCT" * 3_333_332 + "TAA"  # 10 Mb
    result = convert_bytes(tmp_path, (HEADER + "\n" + row(cds=giant, protein="") + "\n" + row("P2") + "\n").encode())
    # 3.3 M residues: outside the default protein length bounds, rejected with that reason; P2 kept.
    assert result.rejects.to_pylist()[0]["reasons"] == ["protein_length_out_of_bounds"]
    assert result.valid["protein_id"].to_pylist() == ["P2"]


def test_a_million_rows(tmp_path):
    lines = [HEADER] + ["\t".join(["P%d" % i, "", "", "", "", "Homo sapiens", "", "", "", "",
                                   "ATG" + "GCT" * (10 + i % 7) + "AAG" * (i % 5) + "TAA", ""]) for i in range(1_000_000)]
    result = convert_bytes(tmp_path, ("\n".join(lines) + "\n").encode())
    assert result.rows_read == 1_000_000 == result.valid.num_rows + result.rejects.num_rows
    # Only 35 distinct CDS exist: the first of each is kept, every other row is a named duplicate.
    assert result.valid.num_rows == 35 and result.rejects_by_reason() == {"duplicate_sequence": 999_965}


protein_letters = st.text(alphabet="ACDEFGHIKLMNPQRSTVWY", min_size=10, max_size=40)
cds_text = st.text(alphabet="ACGTNacgtu ", min_size=0, max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.text(alphabet="PQX0123456789", min_size=0, max_size=6), cds_text,
                               st.booleans(), st.integers(0, 3)), min_size=0, max_size=25))
def test_property_rows_in_equal_valid_plus_rejected_and_jsonl_round_trips(tmp_path, rows):
    from codon_assets.core.genetic_code import CODON_TO_AA

    sense = sorted(c for c in CODON_TO_AA if CODON_TO_AA[c] != "*")
    lines = [HEADER]
    for i, (entry, noise, make_valid, size) in enumerate(rows):
        if make_valid:  # a CDS that converts unless it duplicates another row
            cds = "ATG" + "".join(sense[(i * 7 + k) % len(sense)] for k in range(10 + size)) + "TAA"
            lines.append(row(entry, cds, ""))
        else:
            lines.append(row(entry, noise, ""))
    result = convert_bytes(tmp_path, ("\n".join(lines) + "\n").encode())
    assert result.rows_read == len(rows) == result.valid.num_rows + result.rejects.num_rows
    exported = list(converted_records(result.valid.to_batches()))
    for record, original in zip(exported, result.valid.to_pylist()):
        back = json.loads(json.dumps(record))
        assert back["sequence"] == original["sequence"] and back["protein_id"] == original["protein_id"]
        assert back["protein_aa"] == original["protein_aa"] and back["metadata"]["source_row"] == original["source_row"]
        assert back["expression"]["value"] == original["expression_value"]


RESUMABLE_RUN = textwrap.dedent('''
    import sys, time
    import numpy as np, pyarrow.parquet as pq
    from codon_assets.core.features import TokenBatchScorer, extract_features
    from resources.evo2.cache import FeatureCache

    class SlowScorer:
        """Deterministic per-base log-probabilities from the sequence itself, slowly."""
        backend, model_version = "evo2", "evo2:slow-stand-in"
        def logprobs(self, sequences):
            time.sleep(float(sys.argv[3]))
            return [np.log(0.2 + 0.6 * (np.frombuffer(s.encode(), np.uint8) % 7) / 7.0) for s in sequences]

    records = pq.read_table(sys.argv[1])
    table, summary = extract_features(records, TokenBatchScorer(SlowScorer()), FeatureCache(sys.argv[2]), batch_records=10)
    pq.write_table(table, sys.argv[4])
    print(summary.scored, summary.cache_hits)
''')


def test_features_killed_halfway_resume_from_the_cache(tmp_path):
    records = convert_files([read_release_table(EXAMPLES / "Pic.tsv")], get_host("P_pastoris"), ConversionSettings()).valid
    records = records.select(["protein_id", "sequence", "seq_sha256"]).slice(0, 120)
    pq.write_table(records, tmp_path / "records.parquet")
    script = tmp_path / "run.py"
    script.write_text(RESUMABLE_RUN)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(script), str(tmp_path / "records.parquet")]

    killed = subprocess.Popen(args + [str(tmp_path / "cache"), "0.15", str(tmp_path / "killed.parquet")], env=env)
    cache_dir = tmp_path / "cache" / "evo2"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(cache_dir.rglob("part-*.parquet"))) < 4:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    shards = len(list(cache_dir.rglob("part-*.parquet")))
    assert 4 <= shards < 12 and not (tmp_path / "killed.parquet").exists()

    resumed = subprocess.run(args + [str(tmp_path / "cache"), "0", str(tmp_path / "resumed.parquet")], env=env,
                             capture_output=True, text=True, check=True)
    scored, hits = map(int, resumed.stdout.split())
    assert hits == 10 * shards and scored == 120 - hits  # only what was missing
    fresh = subprocess.run(args + [str(tmp_path / "fresh_cache"), "0", str(tmp_path / "fresh.parquet")], env=env,
                           capture_output=True, text=True, check=True)
    assert fresh.stdout.split() == ["120", "0"]
    columns = ["protein_id", "status", "avg_loglik", "avg_confidence", "min_confidence", "perplexity", "gc_content"]
    assert pq.read_table(tmp_path / "resumed.parquet", columns=columns).equals(
        pq.read_table(tmp_path / "fresh.parquet", columns=columns))


KILLED_WRITER = textwrap.dedent('''
    import sys
    import numpy as np, pyarrow as pa
    from pathlib import Path
    from resources.io_manager import write_parquet_atomic
    table = pa.table({"x": np.random.default_rng(0).random(30_000_000)})
    print("writing", flush=True)
    write_parquet_atomic(table, Path(sys.argv[1]), row_group_size=100_000)
''')


def test_a_writer_killed_mid_write_leaves_the_previous_file_intact(tmp_path):
    target = tmp_path / "out.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0]}), target)
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    writer = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert writer.stdout.readline().strip() == "writing"
    deadline = time.time() + 30
    while time.time() < deadline and not list(tmp_path.glob(".out.parquet.*.tmp")):
        time.sleep(0.01)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert pq.read_table(target)["x"].to_pylist() == [1.0, 2.0]  # the complete old file, not a partial new one


def test_two_runs_of_one_host_at_once(tmp_path):
    """Two CLI runs of the same host started together on one instance: both finish, outputs are whole."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    procs = [subprocess.Popen([sys.executable, "-m", "codon_assets.cli", "run", "--input", str(EXAMPLES / "Pic.tsv"),
                               "--output-dir", str(tmp_path / f"out{i}")], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    results = [json.loads((tmp_path / f"out{i}" / "pipeline_results.json").read_text()) for i in range(2)]
    assert results[0]["steps"]["convert"] == {**results[1]["steps"]["convert"], "seconds": results[0]["steps"]["convert"]["seconds"]}
    features = pq.read_table(results[0]["outputs"]["evo2_features_parquet"])
    assert features.num_rows == results[0]["steps"]["convert"]["valid"]
    for i in range(2):
        lines = (tmp_path / f"out{i}" / "Pic.jsonl").read_text().splitlines()
        assert len(lines) == results[i]["steps"]["convert"]["valid"] and all(json.loads(line) for line in lines)



def test_a_malformed_row_that_is_not_utf8_is_rejected_alone(tmp_path):
    # Arrow decodes a malformed row's text before our handler sees it: a non-UTF-8 byte there used to fail
    # the whole file. Now that row alone is rejected, and a good row's non-UTF-8 free text is still kept with
    # a replacement character and counted.
    latin1_name = row("P3", "ATG" + "GCC" * 20 + "TAA", "", **{"Protein names": "cafe"}).encode()
    latin1_name = latin1_name.replace(b"cafe", b"caf\xe9")
    data = (HEADER + "\n" + row() + "\n").encode() + b"P2\tcaf\xe9\n" + latin1_name + b"\n"
    result = convert_bytes(tmp_path, data)
    assert result.rejects_by_reason() == {"malformed_row": 1}
    assert result.valid["protein_id"].to_pylist() == ["P1", "P3"] and result.text_replaced_rows == 1
    assert "caf\ufffd" in result.valid["protein_names"][1].as_py()
