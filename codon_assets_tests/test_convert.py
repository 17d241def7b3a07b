"""Validation and normalisation on real messy rows and on one crafted row per reject reason."""

import random

import numpy as np
import pyarrow as pa
import pytest

from codon_assets.core.convert import REASONS, ConversionSettings, Converter, convert_files
from codon_assets.core.genetic_code import CODON_TO_AA, CODONS, codon_codes, base_codes, string_buffers, translate
from codon_assets.core.hosts import get_host
from codon_assets.core.tsv import read_release_table
from codon_assets_tests.conftest import EXAMPLES, shared_file, write_tsv

GOOD = "ATG" + "GCTAAAGAA" * 10 + "TAA"  # M + (AKE)x10 + stop: 31 aa
GOOD_AA = "M" + "AKE" * 10


def convert_rows(tmp_path, rows, host="S_cerevisiae", **settings):
    path = write_tsv(tmp_path / "t.tsv", rows)
    return convert_files([read_release_table(path)], get_host(host), ConversionSettings(**settings))


def reasons_by_row(result):
    return {r["source_row"]: r["reasons"] for r in result.rejects.to_pylist()}


def test_translation_matches_a_plain_codon_table():
    rng = random.Random(7)
    seqs = ["".join(rng.choice("ACGT") for _ in range(3 * rng.randint(1, 40))) for _ in range(200)]
    data, offsets = string_buffers(pa.array(seqs))
    base, acgt = base_codes(data)
    assert acgt.all()
    n = np.diff(offsets) // 3
    aa = translate(codon_codes(base, offsets[:-1], n)).tobytes().decode()
    expected = "".join(CODON_TO_AA[s[k : k + 3]] for s in seqs for k in range(0, len(s), 3))
    assert aa == expected
    assert len(CODONS) == 64 and sum(CODON_TO_AA[c] == "*" for c in CODONS) == 3


def test_one_row_per_reason(tmp_path):
    rows = [
        {"Entry": "OK1", "RefSeq_nn": GOOD, "RefSeq_aa": GOOD_AA + "*"},
        {"Entry": "", "RefSeq_nn": "ATG" + "GCC" * 20 + "TGA"},  # 2 missing_id
        {"Entry": "E3", "RefSeq_nn": ""},  # 3 missing_sequence
        {"Entry": "E4", "RefSeq_nn": "ATGNNN" + "GCC" * 20 + "TAA"},  # 4 non_acgt
        {"Entry": "E5", "RefSeq_nn": "ATG" + "GCC" * 20 + "TA"},  # 5 length (and no stop is not judged)
        {"Entry": "E6", "RefSeq_nn": "TTT" + "GCC" * 20 + "TAA"},  # 6 no_start_codon (not E. coli)
        {"Entry": "E7", "RefSeq_nn": "ATG" + "GCC" * 20 + "TGG"},  # 7 no_stop_codon
        {"Entry": "E8", "RefSeq_nn": "ATG" + "GCC" * 10 + "TAG" + "GCC" * 10 + "TAA"},  # 8 internal_stop
        {"Entry": "E9", "RefSeq_nn": GOOD.replace("GCT", "GGT", 1), "RefSeq_aa": GOOD_AA},  # 9 mismatch
        {"Entry": "E10", "RefSeq_nn": "ATGAAATAA"},  # 10 too short
        {"Entry": "OK1", "RefSeq_nn": "ATG" + "GCA" * 30 + "TAA"},  # 11 duplicate_id
        {"Entry": "E12", "RefSeq_nn": GOOD.lower()},  # 12 duplicate_sequence (after upper-casing)
    ]
    result = convert_rows(tmp_path, rows)
    assert result.valid["protein_id"].to_pylist() == ["OK1"]
    by_row = reasons_by_row(result)
    assert by_row == {
        2: ["missing_id"], 3: ["missing_sequence"], 4: ["non_acgt"], 5: ["length_not_multiple_of_3"],
        6: ["no_start_codon"], 7: ["no_stop_codon"], 8: ["internal_stop"], 9: ["translation_mismatch"],
        10: ["protein_length_out_of_bounds"], 11: ["duplicate_id"], 12: ["duplicate_sequence"],
    }
    details = {r["source_row"]: r["detail"] for r in result.rejects.to_pylist()}
    assert details[4] == "letters N"
    assert details[6] == "starts with TTT"
    assert details[8] == "TAG at codon 12"
    assert details[9] == "residue 2: CDS gives G, RefSeq_aa has A"
    assert details[12] == "same CDS as OK1"
    assert result.rows_read == len(rows) == result.valid.num_rows + result.rejects.num_rows
    assert set(result.rejects_by_reason()) <= set(REASONS)


def test_normalisation_and_record_fields(tmp_path):
    rows = [{"Entry": "  P1 ", "Reviewed": "reviewed", "RefSeq_nn": "  " + GOOD.lower() + " ",
             "RefSeq_aa": GOOD_AA.lower() + "*", "Organism": "Saccharomyces cerevisiae", "Length": "31"}]
    record = convert_rows(tmp_path, rows).valid.to_pylist()[0]
    assert record["protein_id"] == "P1"
    assert record["sequence"] == GOOD
    assert record["protein_aa"] == GOOD_AA
    assert record["length_aa"] == 31
    assert record["reviewed"] is True
    assert record["source_row"] == 1
    assert record["host"] == "S_cerevisiae"
    import hashlib

    assert record["seq_sha256"] == hashlib.sha256(GOOD.encode()).hexdigest()


def test_protein_id_falls_back_to_refseq_then_genome_id(tmp_path):
    rows = [
        {"RefSeq_id": "NP_1.1", "RefSeq_nn": GOOD},
        {"Genome_id": "NC_9", "RefSeq_nn": "ATG" + "GCC" * 20 + "TAA"},
    ]
    assert convert_rows(tmp_path, rows).valid["protein_id"].to_pylist() == ["NP_1.1", "NC_9"]


def test_bacterial_alternative_starts_translate_as_met(tmp_path):
    cds = "GTG" + "GCTAAAGAA" * 10 + "TAA"
    rows = [{"Entry": "B1", "RefSeq_nn": cds, "RefSeq_aa": GOOD_AA}]
    assert convert_rows(tmp_path, rows, host="E_coli").valid["protein_aa"].to_pylist() == [GOOD_AA]
    assert reasons_by_row(convert_rows(tmp_path, rows, host="Human")) == {1: ["no_start_codon", "translation_mismatch"]}


def test_protein_length_bounds_are_configurable(tmp_path):
    rows = [{"Entry": "S", "RefSeq_nn": "ATGAAATAA"}]
    assert convert_rows(tmp_path, rows, min_protein_length=2).valid.num_rows == 1
    assert convert_rows(tmp_path, [{"Entry": "L", "RefSeq_nn": GOOD}], max_protein_length=30).valid.num_rows == 0


def test_malformed_rows_are_rejected_with_their_row_number(tmp_path):
    path = tmp_path / "m.tsv"
    header = "Entry\tRefSeq_nn\tRefSeq_aa"
    path.write_text(f"{header}\nA\t{GOOD}\t{GOOD_AA}\nB\t{GOOD}\nC\tATG{'GCC' * 20}TAA\t\n")
    result = convert_files([read_release_table(path)], get_host("Human"), ConversionSettings())
    assert result.valid["protein_id"].to_pylist() == ["A", "C"]
    assert result.valid["source_row"].to_pylist() == [1, 3]
    assert result.rejects.to_pylist()[0] | {"source_file": None} == {
        "source_file": None, "source_row": 2, "protein_id": None, "reasons": ["malformed_row"],
        "detail": "2 fields, expected 3",
    }


def test_duplicates_are_found_across_files_and_chunks(tmp_path):
    first = write_tsv(tmp_path / "a.tsv", [{"Entry": "A", "RefSeq_nn": GOOD}])
    second = write_tsv(tmp_path / "b.tsv", [{"Entry": f"X{i}", "RefSeq_nn": "ATG" + "GCC" * (20 + i) + "TAA"}
                                              for i in range(10)] + [{"Entry": "B", "RefSeq_nn": GOOD}])
    converter = Converter(get_host("Human"), chunk_rows=3)
    converter.convert(read_release_table(first))
    result = converter.convert(read_release_table(second))
    assert result.valid.num_rows == 10
    assert result.rejects.to_pylist()[0]["detail"] == "same CDS as A"


def test_chunking_does_not_change_the_result(tmp_path):
    path = EXAMPLES / "Sac.tsv"
    whole = Converter(get_host("S_cerevisiae"), chunk_rows=100_000).convert(read_release_table(path))
    chunked = Converter(get_host("S_cerevisiae"), chunk_rows=37, workers=2).convert(read_release_table(path))
    assert whole.valid.equals(chunked.valid)
    assert whole.rejects.equals(chunked.rejects)


def test_real_pichia_rows(tmp_path):
    """The released Pichia table: 4 CDS with N, one starting with TTT, nine duplicated CDS."""
    result = convert_files([read_release_table(shared_file("pichia/Pic.tsv"))], get_host("P_pastoris"),
                           ConversionSettings())
    assert result.rows_read == 320
    assert result.rejects_by_reason() == {"non_acgt": 4, "no_start_codon": 1, "duplicate_sequence": 9}
    rejects = {r["protein_id"]: r for r in result.rejects.to_pylist()}
    assert rejects["P12808"]["detail"] == "starts with TTT"
    assert rejects["Q7Z888"]["reasons"] == ["non_acgt"]
    assert result.valid.num_rows == 306


def test_real_yeast_rows_with_non_canonical_cds():
    """All 6,600 S. cerevisiae CDS: mitochondrial genes (TGA = Trp there) and CDS without a canonical start."""
    result = convert_files([read_release_table(shared_file("yeast/Sac_ensembl.tsv"))], get_host("S_cerevisiae"),
                           ConversionSettings())
    assert result.rows_read == 6600 == result.valid.num_rows + result.rejects.num_rows
    rejects = {r["protein_id"]: r for r in result.rejects.to_pylist()}
    assert rejects["Q0065"]["reasons"] == ["internal_stop"] and rejects["Q0065"]["detail"] == "TGA at codon 5"
    assert all(r["reasons"] for r in rejects.values())
    assert all(pid.startswith("Q0") for pid, r in rejects.items() if "internal_stop" in r["reasons"])
    assert result.valid.num_rows > 6500


@pytest.mark.parametrize("host", ["S_cerevisiae", "P_pastoris"])
def test_bundled_examples_convert(host):
    name = {"S_cerevisiae": "Sac.tsv", "P_pastoris": "Pic.tsv"}[host]
    result = convert_files([read_release_table(EXAMPLES / name)], get_host(host), ConversionSettings())
    assert result.valid.num_rows > 0 and result.rejects.num_rows > 0
    assert result.valid.num_rows + result.rejects.num_rows == result.rows_read


def test_reasons_a_reader_found_survive_chunking(tmp_path):
    """A CDS FASTA record marked [pseudo=true] is rejected with that reason wherever chunks are cut."""
    path = tmp_path / "cds.fna"
    records = []
    for i in range(9):
        pseudo = " [pseudo=true]" if i % 3 == 1 else ""
        records.append(f">lcl|NC_1.1_cds_NP_{i}.1_{i + 1} [locus_tag=b{i}]{pseudo} [protein_id=NP_{i}.1] [gbkey=CDS]\n"
                       f"ATG{'GCC' * (20 + i)}TAA\n")
    path.write_text("".join(records))
    whole = Converter(get_host("E_coli"), chunk_rows=100).convert(read_release_table(path))
    chunked = Converter(get_host("E_coli"), chunk_rows=2, workers=2).convert(read_release_table(path))
    assert whole.valid.equals(chunked.valid) and whole.rejects.equals(chunked.rejects)
    assert reasons_by_row(chunked) == {2: ["pseudogene"], 5: ["pseudogene"], 8: ["pseudogene"]}
    assert chunked.valid.num_rows == 6 and chunked.files[0].data_lines == 9
