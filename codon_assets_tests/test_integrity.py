"""Integrity of input reading (issue: quotes in free text, stray bytes, physical line accounting, line
endings, files that are not text): every physical line is a record, a blank line or a counted reject."""

import bz2
import json

import pytest

from codon_assets.core.tsv import RELEASE_COLUMNS, InputError, LineCounter, read_release_table
from codon_assets_tests.test_reliability import GOOD, GOOD_AA, HEADER, convert_bytes, row

OTHER = "ATG" + "GCC" * 20 + "TAA"
THIRD = "ATG" + "GGT" * 20 + "TAA"


def test_an_unclosed_quote_in_free_text_swallows_no_line(tmp_path):
    data = "\n".join([HEADER, row("P1", GOOD, GOOD_AA, **{"Protein names": '"Heat shock protein'}),
                      row("P2", OTHER, ""), row("P3", THIRD, "")]) + "\n"
    result = convert_bytes(tmp_path, data.encode())
    records = {r["protein_id"]: r for r in result.valid.to_pylist()}
    assert result.rows_read == 3 and set(records) == {"P1", "P2", "P3"}
    assert records["P1"]["protein_names"] == '"Heat shock protein' and records["P1"]["sequence"] == GOOD
    assert records["P2"]["sequence"] == OTHER and records["P3"]["sequence"] == THIRD
    assert [r["source_row"] for r in result.valid.to_pylist()] == [1, 2, 3]


def test_quotes_around_a_tab_split_fields_as_written(tmp_path):
    # A quoted value holding a tab is two fields in a format without quoting: that row is malformed.
    data = "\n".join([HEADER, row("P1", GOOD, "", **{"Protein names": '"a\tb"'}), row("P2", OTHER, "")]) + "\n"
    result = convert_bytes(tmp_path, data.encode())
    assert result.valid["protein_id"].to_pylist() == ["P2"]
    assert result.rejects_by_reason() == {"malformed_row": 1}


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_physical_lines_are_counted_from_the_bytes(tmp_path, ending):
    lines = [HEADER, row("P1", GOOD, ""), "", row("P2", OTHER, ""), "\t" * (len(RELEASE_COLUMNS) - 1),
             row("P3", THIRD, "")]
    result = convert_bytes(tmp_path, ending.join(lines).encode())  # no ending after the last line
    (counts,) = result.files
    assert counts.data_lines == 5 and counts.blank_lines == 2 and result.rows_read == 3
    assert result.valid["protein_id"].to_pylist() == ["P1", "P2", "P3"]
    assert result.valid["source_row"].to_pylist() == [1, 3, 5]


def test_line_counter_across_blocks():
    data = b"h\r\na\rb\n\nc\r\r\nd"
    for size in range(1, len(data) + 1):
        counter = LineCounter()
        for start in range(0, len(data), size):
            counter.feed(data[start : start + size])
        assert counter.lines == 7, size


def test_a_stray_byte_in_free_text_keeps_the_row_and_is_counted(tmp_path):
    smart = row("P1", GOOD, GOOD_AA, **{"Protein names": "QUOTE"}).encode().replace(b"QUOTE", b"\x93Hsp70\x94")
    data = (HEADER + "\n").encode() + smart + b"\n" + (row("P2", OTHER, "") + "\n").encode()
    result = convert_bytes(tmp_path, data)
    assert result.valid["protein_id"].to_pylist() == ["P1", "P2"]
    assert result.valid["protein_names"][0].as_py() == "\ufffdHsp70\ufffd"
    assert result.text_replaced_rows == 1 and result.rejects.num_rows == 0


def test_a_stray_byte_in_an_id_or_sequence_rejects_that_row_only(tmp_path):
    bad_id = row("PX", OTHER, "").encode().replace(b"PX", b"P\xff")
    bad_seq = row("P3", THIRD, "").encode().replace(b"ATGGGT", b"ATG\xe9GT")
    data = b"\n".join([HEADER.encode(), row("P1", GOOD, GOOD_AA).encode(), bad_id, bad_seq]) + b"\n"
    result = convert_bytes(tmp_path, data)
    assert result.valid["protein_id"].to_pylist() == ["P1"]
    rejects = result.rejects.to_pylist()
    assert [r["source_row"] for r in rejects] == [2, 3]
    assert all("not_utf8" in r["reasons"] for r in rejects)
    assert "Entry" in rejects[0]["detail"] and "RefSeq_nn" in rejects[1]["detail"]
    assert result.text_replaced_rows == 0


@pytest.mark.parametrize("compress, message", [
    (bz2.compress, "bzip2"),  # gzip is read (by content): tests in test_input_formats.py
    (lambda data: b"PK\x03\x04" + data, "ZIP archive"),
    (lambda data: data.decode().encode("utf-16"), "UTF-16"),
])
def test_files_that_are_not_text_say_what_they_are(tmp_path, compress, message):
    with pytest.raises(InputError, match=message):
        convert_bytes(tmp_path, compress((HEADER + "\n" + row() + "\n").encode()))


def test_a_repeated_column_is_named(tmp_path):
    with pytest.raises(InputError, match="'Entry'"):
        convert_bytes(tmp_path, (HEADER + "\tEntry\n" + row() + "\tP9\n").encode())


def test_limit_counts_lines_as_written(tmp_path):
    path = tmp_path / "in.tsv"
    path.write_text("\n".join([HEADER, row("P1", GOOD, ""), "", row("P2", OTHER, ""), row("P3", THIRD, "")]) + "\n")
    release = read_release_table(path, limit=3)
    assert release.data_lines == 3 and release.blank_lines == 1 and release.rows_read == 2
    assert release.source_rows.to_pylist() == [1, 3]


def test_every_measured_row_is_used_or_counted_under_a_reason(tmp_path):
    import numpy as np
    import pyarrow as pa

    from codon_assets.core.labels import join_measured, read_measured

    table = tmp_path / "measured.tsv"
    table.write_text("gene\tfpkm\n" + "".join(f"G{i}\t{v}\n" for i, v in enumerate(
        ["12.5", "inf", "1e400", "-3", "0", "n/a", "7", "-inf", "NaN"])) + "\t4\nG6\t8\nG99\t5\n")
    measured = read_measured(table)
    records = pa.table({"protein_id": [f"G{i}" for i in range(9)], "gene_names": [""] * 9})
    join = join_measured(records, measured)
    report = join.report
    assert measured.problems == {"missing_id": 1, "not_a_number": 2, "non_finite": 3, "not_positive": 2,
                                 "duplicate_id": 1}
    assert report["measured_rows"] == 12
    assert report["measured_rows_used"] == 2 and report["measured_rows_unmatched"] == 1  # G0, G6 used; G99
    assert report["measured_rows"] == report["measured_rows_used"] + report["measured_rows_unmatched"] + sum(
        measured.problems.values())
    assert np.isfinite(join.measured_value).sum() == 2


def test_a_quote_in_a_measured_tsv_swallows_no_line(tmp_path):
    from codon_assets.core.labels import read_measured

    table = tmp_path / "measured.tsv"
    table.write_text('gene\tfpkm\tnote\nG1\t5\t"open quote\nG2\t6\tx\nG3\t7\t"\n')
    assert read_measured(table).values == {"G1": 5.0, "G2": 6.0, "G3": 7.0}


def test_a_failed_export_leaves_no_temporary_file_and_the_old_file(tmp_path):
    from codon_assets.cli.export import write_jsonl

    target = tmp_path / "out.jsonl"
    target.write_text("old\n")

    def records():
        yield {"a": 1}
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_jsonl(records(), target)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_exports_are_strict_json_a_failed_records_missing_numbers_are_null(tmp_path):
    """A record whose features failed has NaN statistics; the json module wrote them as the token NaN, which
    no strict JSON reader (jq, JSON.parse) accepts."""
    from codon_assets.cli.export import write_json_array, write_jsonl

    def strict(text: str):
        return json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} is not JSON"))

    record = {"output": {"avg_loglik": float("nan"), "gc_content": 0.5}, "protein": "MÅ"}
    write_jsonl(iter([record]), tmp_path / "a.jsonl")
    write_json_array(iter([record, record]), tmp_path / "b.json")
    expected = {"output": {"avg_loglik": None, "gc_content": 0.5}, "protein": "MÅ"}
    assert strict((tmp_path / "a.jsonl").read_text(encoding="utf-8")) == expected
    assert strict((tmp_path / "b.json").read_text(encoding="utf-8")) == [expected, expected]


def test_a_failed_export_job_is_one_line_naming_the_export(tmp_path):
    from codon_assets.cli.common import CliError
    from codon_assets.cli.export import ExportJobs

    target = tmp_path / "out.jsonl"
    with pytest.raises(CliError, match=r"^the converted export failed: .*missing\.parquet"):
        with ExportJobs() as exports:
            exports.submit("converted", tmp_path / "missing.parquet", target)
            exports.wait()
    assert not target.exists() and list(tmp_path.iterdir()) == []
