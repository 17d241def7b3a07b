"""Hosts as data: the shipped hosts file, a user's file through CODON_HOSTS_FILE, the genetic code each host
is read with, and one clear line for each way a hosts file can be wrong."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import yaml

from codon_assets import settings
from codon_assets.core import hosts as hosts_module
from codon_assets.core.convert import ConversionSettings, convert_files
from codon_assets.core.genetic_code import CODONS, STANDARD_TABLE, base_codes, codon_codes, genetic_code, string_buffers
from codon_assets.core.hosts import (
    HOSTS,
    HOSTS_BY_KEY,
    Host,
    get_host,
    host_for_filename,
    load_hosts,
    organism_fits_host,
    reload_hosts,
    trna_table_path,
)
from codon_assets.core.tsv import InputError, read_release_table
from codon_assets_tests.conftest import ROOT, write_tsv

# The registry as it was written in code before hosts became data.
TODAY = (
    Host(key="E_coli", display_name="Escherichia coli", file_aliases=("Ec.tsv",), species=("Escherichia coli",),
         start_codons=("ATG", "GTG", "TTG"), translation_table=11),
    Host(key="Human", display_name="Homo sapiens", file_aliases=("Human.tsv",), species=("Homo sapiens",)),
    Host(key="Mouse", display_name="Mus musculus", file_aliases=("mouse.tsv",), species=("Mus musculus",)),
    Host(key="S_cerevisiae", display_name="Saccharomyces cerevisiae", file_aliases=("Sac.tsv",),
         species=("Saccharomyces cerevisiae",), trna_table="S_cerevisiae.csv"),
    Host(key="P_pastoris", display_name="Komagataella (Pichia) pastoris and other methylotrophic yeasts",
         file_aliases=("Pic.tsv",), species=("Komagataella pastoris", "Komagataella phaffii"),
         genera=("Komagataella", "Pichia", "Ogataea", "Hansenula")),
)
# What a user appends to a copy of the shipped file (start codons left out: the table's, ATG and CTG).
C_ALBICANS_TEXT = """
  - key: C_albicans
    display_name: Candida albicans
    species: [Candida albicans]
    file_aliases: [Calb.tsv]
    translation_table: 12  # alternative yeast nuclear: CTG is Ser
"""
C_ALBICANS = {"key": "C_albicans", "display_name": "Candida albicans", "species": ["Candida albicans"],
              "file_aliases": ["Calb.tsv"], "translation_table": 12}
# Leu (CTG) at residue 2: Ser under table 12.
CTG_CDS = "ATG" + "CTG" + "GCTAAAGAA" * 4 + "TAA"
CTG_AS_SER = "MS" + "AKE" * 4


def write_hosts(path, *extra: dict, shipped: bool = True):
    entries = yaml.safe_load(settings.DEFAULT_HOSTS_FILE.read_text())["hosts"] if shipped else []
    path.write_text(yaml.safe_dump({"hosts": entries + list(extra)}, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def shipped_hosts(monkeypatch):
    monkeypatch.delenv("CODON_HOSTS_FILE", raising=False)


@pytest.fixture
def user_hosts(tmp_path, monkeypatch):
    """The shipped hosts plus a CTG-clade yeast, in a file of the user's, named by CODON_HOSTS_FILE."""
    path = tmp_path / "my_hosts.yaml"
    path.write_text(settings.DEFAULT_HOSTS_FILE.read_text() + C_ALBICANS_TEXT)
    monkeypatch.setenv("CODON_HOSTS_FILE", str(path))
    return path


def convert(tmp_path, host: Host, cds: str, protein: str = ""):
    path = write_tsv(tmp_path / f"{host.key}.tsv", [{"Entry": "P1", "RefSeq_nn": cds, "RefSeq_aa": protein}])
    return convert_files([read_release_table(path)], host, ConversionSettings())


def test_the_shipped_file_holds_todays_hosts():
    assert settings.hosts_file() == settings.DEFAULT_HOSTS_FILE
    assert settings.DEFAULT_HOSTS_FILE.parent == ROOT / "codon_assets" / "data"
    assert load_hosts(settings.DEFAULT_HOSTS_FILE) == TODAY
    assert tuple(HOSTS) == TODAY and HOSTS == TODAY and list(HOSTS_BY_KEY) == [h.key for h in TODAY]
    assert trna_table_path(get_host("S_cerevisiae")).is_file() and trna_table_path(get_host("Human")) is None
    assert '"data/hosts.yaml"' in (ROOT / "pyproject.toml").read_text()  # shipped in the package


def test_the_commented_examples_are_valid_entries(tmp_path):
    hosts, examples = settings.DEFAULT_HOSTS_FILE.read_text().split("# Examples")
    uncommented = hosts + "# Examples" + re.sub(r"^# (  .*)$", r"\1", examples, flags=re.MULTILINE)
    path = tmp_path / "examples.yaml"
    path.write_text(uncommented)
    found = {h.key: h for h in load_hosts(path)}
    assert list(found) == [h.key for h in TODAY] + ["CHO", "B_subtilis"]
    assert found["CHO"].species == ("Cricetulus griseus",) and found["CHO"].translation_table == 1
    assert found["B_subtilis"].translation_table == 11 and "GTG" in found["B_subtilis"].start_codons


def test_a_user_file_adds_a_host(user_hosts, monkeypatch):
    assert [h.key for h in HOSTS] == [h.key for h in TODAY] + ["C_albicans"]
    host = get_host("C_albicans")
    assert host.translation_table == 12 and host.start_codons == ("ATG", "CTG")  # the table's, when left out
    assert "C_albicans" in HOSTS_BY_KEY and HOSTS[-1] is host
    for name in ("Calb.tsv", "calb.TSV.GZ", "/in/Calb.parquet", "Candida_albicans.GCA_000182965v3.cds.all.fa.gz"):
        assert host_for_filename(name) is host, name
    assert host_for_filename("Sac.tsv").key == "S_cerevisiae"
    assert organism_fits_host("Candida albicans (strain SC5314 / ATCC MYA-2876) (Yeast)", host)
    monkeypatch.delenv("CODON_HOSTS_FILE")  # another path: the shipped file is read again
    assert tuple(HOSTS) == TODAY and host_for_filename("Calb.tsv") is None
    with pytest.raises(KeyError, match="E_coli"):
        get_host("C_albicans")


def test_partitions_are_built_from_the_users_file(user_hosts):
    # The partitions are made when the code location is imported: a process that starts with the setting.
    code = ("from codon_assets.asset_specs import host_partitions; "
            "print(','.join(host_partitions.get_partition_keys()))")
    env = dict(os.environ, CODON_HOSTS_FILE=str(user_hosts))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [",".join([h.key for h in TODAY] + ["C_albicans"])]


def test_the_file_is_read_once_and_again_for_another_path(user_hosts, tmp_path, monkeypatch):
    calls = []
    real = hosts_module.load_hosts
    monkeypatch.setattr(hosts_module, "load_hosts", lambda path: calls.append(path) or real(path))
    reload_hosts()
    for _ in range(3):
        assert len(HOSTS) == 6 and get_host("C_albicans")
    assert calls == [str(user_hosts)]
    write_hosts(user_hosts, shipped=True)  # edited in place: the same path keeps the hosts read
    assert len(HOSTS) == 6
    other = write_hosts(tmp_path / "other.yaml", C_ALBICANS, shipped=False)
    monkeypatch.setenv("CODON_HOSTS_FILE", str(other))
    assert [h.key for h in HOSTS] == ["C_albicans"] and calls == [str(user_hosts), str(other)]


def test_the_tables_come_from_biopython_and_table_1_is_the_standard_code():
    assert bytes(genetic_code(1).aa_bytes).decode() == STANDARD_TABLE
    assert genetic_code(12).codon_to_aa["CTG"] == "S" and genetic_code(1).codon_to_aa["CTG"] == "L"
    assert genetic_code(12) is genetic_code(12)  # built once
    seqs = ["ATGCTGTGA", "CTGCTGTAA"]
    data, offsets = string_buffers(pa.array(seqs))
    codes = codon_codes(base_codes(data)[0], offsets[:-1], np.diff(offsets) // 3)
    assert genetic_code(12).translate(codes).tobytes() == b"MS*SS*"
    assert genetic_code(11).translate(codes).tobytes() == b"ML*LL*"
    assert genetic_code(4).codon_to_aa["TGA"] == "W" and [c for c in CODONS if genetic_code(4).stop[CODONS.index(c)]] \
        == ["TAA", "TAG"]


def test_ctg_reads_as_serine_for_a_ctg_clade_host_only(user_hosts, tmp_path):
    albicans, yeast = get_host("C_albicans"), get_host("S_cerevisiae")
    result = convert(tmp_path, albicans, CTG_CDS, CTG_AS_SER + "*")
    assert result.rejects.num_rows == 0 and result.valid["protein_aa"].to_pylist() == [CTG_AS_SER]
    result = convert(tmp_path, yeast, CTG_CDS, CTG_AS_SER)
    (reject,) = result.rejects.to_pylist()
    assert reject["reasons"] == ["translation_mismatch"]
    assert reject["detail"] == "residue 2: CDS gives L, RefSeq_aa has S"
    # Without a given protein (a CDS FASTA record) the host's table writes the protein.
    assert convert(tmp_path, albicans, CTG_CDS).valid["protein_aa"].to_pylist() == [CTG_AS_SER]
    assert convert(tmp_path, yeast, CTG_CDS).valid["protein_aa"].to_pylist() == ["ML" + "AKE" * 4]
    # CTG is also an initiation codon of table 12 (read as Met), not of the host's standard code.
    assert convert(tmp_path, albicans, "CTG" + CTG_CDS[3:]).valid["protein_aa"].to_pylist() == [CTG_AS_SER]
    assert convert(tmp_path, yeast, "CTG" + CTG_CDS[3:]).rejects["reasons"].to_pylist() == [["no_start_codon"]]


def test_an_alternative_bacterial_start_is_read_as_met(tmp_path):
    cds = "GTG" + "GCTAAAGAA" * 4 + "TGA"
    result = convert(tmp_path, get_host("E_coli"), cds, "M" + "AKE" * 4)
    assert result.rejects.num_rows == 0 and result.valid["protein_aa"].to_pylist() == ["M" + "AKE" * 4]
    assert convert(tmp_path, get_host("Human"), cds).rejects["reasons"].to_pylist() == [["no_start_codon"]]


def test_stops_follow_the_table(tmp_path):
    # Table 6 (ciliates) reads TAA and TAG as Gln; table 27 reads TGA as Trp inside a CDS and as a stop at its end.
    ciliate = Host("Tetrahymena", "Tetrahymena thermophila", (), ("Tetrahymena thermophila",), translation_table=6)
    karyorelict = Host("Karyo", "a karyorelict ciliate", (), ("Parduczia sp",), translation_table=27)
    gln = "ATG" + "GCT" * 4 + "TAA" + "TAG" + "GCT" * 4 + "TGA"
    result = convert(tmp_path, ciliate, gln, "MAAAAQQAAAA")
    assert result.rejects.num_rows == 0 and result.valid["protein_aa"].to_pylist() == ["MAAAAQQAAAA"]
    assert convert(tmp_path, get_host("Human"), gln).rejects["detail"].to_pylist() == ["TAA at codon 6"]
    assert convert(tmp_path, ciliate, "ATG" + "GCT" * 10 + "TAA").rejects["reasons"].to_pylist() == [["no_stop_codon"]]
    trp = "ATG" + "GCT" * 4 + "TGA" + "GCT" * 5 + "TGA"
    assert convert(tmp_path, karyorelict, trp).valid["protein_aa"].to_pylist() == ["MAAAAW" + "A" * 5]
    assert convert(tmp_path, get_host("Human"), trp).rejects["reasons"].to_pylist() == [["internal_stop"]]


def without(name: str) -> dict:
    return {k: v for k, v in C_ALBICANS.items() if k != name}


# Each wrong entry (the shipped hosts come first: it is entry 6) and the message that names it.
ERRORS = {
    "unknown_table": ({**C_ALBICANS, "translation_table": 99},
                      r"entry 6 \(C_albicans\): unknown translation_table 99; NCBI tables are 1, 2, 3,"),
    "table_as_text": ({**C_ALBICANS, "translation_table": "12"},
                      r"entry 6 \(C_albicans\): translation_table must be a number \(an NCBI table id\), not '12'"),
    "duplicate_key": ({**C_ALBICANS, "key": "E_coli"}, r"entry 6 \(E_coli\): duplicate key E_coli \(also entry 1\)"),
    "missing_table": (without("translation_table"), r"entry 6 \(C_albicans\): missing field translation_table$"),
    "missing_key": (without("key"), r"entry 6: missing field key$"),
    "unknown_field": ({**C_ALBICANS, "start_codon": ["ATG"]},
                      r"entry 6 \(C_albicans\): unknown field start_codon; fields are key, display_name, "),
    "alias_ending": ({**C_ALBICANS, "file_aliases": ["Calb"]},
                     r"entry 6 \(C_albicans\): file alias 'Calb' is not a file name with an input ending \(.tsv, "),
    "alias_folder": ({**C_ALBICANS, "file_aliases": ["in/Calb.tsv"]},
                     r"entry 6 \(C_albicans\): file alias 'in/Calb.tsv' must be a file name alone"),
    "alias_taken": ({**C_ALBICANS, "file_aliases": ["sac.csv"]},
                    r"entry 6 \(C_albicans\): file alias sac.csv names the same files as Sac.tsv of entry 4$"),
    "start_not_of_table": ({**C_ALBICANS, "start_codons": ["ATG", "GTG"]},
                           r"entry 6 \(C_albicans\): start codon GTG is not an initiation codon of table 12 "
                           r"\(Alternative Yeast Nuclear: ATG, CTG\)$"),
    "start_not_codon": ({**C_ALBICANS, "start_codons": ["ATGC"]},
                        r"entry 6 \(C_albicans\): start_codons item 'ATGC' is not a codon$"),
    "species": ({**C_ALBICANS, "species": ["albicans"]},
                r"entry 6 \(C_albicans\): species item 'albicans' is not a binomial \"Genus species\"$"),
    "key_text": ({**C_ALBICANS, "key": "C albicans"},
                 r"entry 6 \(C albicans\): key 'C albicans' must be letters, digits and _"),
    "trna": ({**C_ALBICANS, "trna_table": "C_albicans.csv"},
             r"entry 6 \(C_albicans\): trna_table 'C_albicans.csv' is not a file in codon_assets/data/trna/ "
             r"\(S_cerevisiae.csv\)$"),
    "not_mapping": ("C_albicans", r"entry 6: expected a mapping of fields"),
}


@pytest.mark.parametrize("entry, message", ERRORS.values(), ids=ERRORS.keys())
def test_each_mistake_is_one_line_naming_the_file_and_the_entry(tmp_path, entry, message):
    path = write_hosts(tmp_path / "hosts.yaml", entry)
    with pytest.raises(InputError) as error:
        load_hosts(path)
    text = str(error.value)
    assert "\n" not in text and text.startswith(f"{path}: ") and re.search(message, text), text


@pytest.mark.parametrize("content, message", [
    (None, r": cannot read the hosts file: No such file"),
    ("hosts:\n  - key: [E_coli\n", r": the hosts file is not valid YAML at line \d+: "),
    ("- key: E_coli\n", r": a hosts file holds one mapping, hosts:, with a list of host entries$"),
    ("hosts: []\n", r": the hosts list is empty$"),
    ("hosts:\n  - key: X\n    key: Y\n", r": the hosts file is not valid YAML at line 3: key is given twice$"),
])
def test_a_file_that_is_not_a_hosts_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "hosts.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError) as error:
        load_hosts(path)
    assert "\n" not in str(error.value) and re.search(message, str(error.value)), str(error.value)


def test_a_broken_user_file_fails_where_the_hosts_are_used(tmp_path, monkeypatch):
    path = write_hosts(tmp_path / "hosts.yaml", {**C_ALBICANS, "translation_table": 0})
    monkeypatch.setenv("CODON_HOSTS_FILE", str(path))
    with pytest.raises(InputError, match=r"hosts.yaml: entry 6 \(C_albicans\): unknown translation_table 0"):
        get_host("E_coli")
    monkeypatch.delenv("CODON_HOSTS_FILE")
    assert get_host("E_coli") == TODAY[0]


def test_design_refuses_a_host_whose_code_reads_a_codon_differently(user_hosts):
    from codon_assets.core.design import design_proteins, refuse_non_standard_sense_codons

    with pytest.raises(ValueError, match=r"host C_albicans translates with NCBI table 12 \(CTG -> S\)"):
        design_proteins([], "C_albicans", None, None, None)
    refuse_non_standard_sense_codons("E_coli")  # table 11 differs in start codons only: designs as the standard
