"""The benchmark data generator: deterministic, realistic, and its planted bad rows are the ones rejected."""

import hashlib

import numpy as np

from bench.generate import generate
from codon_assets.core.convert import ConversionSettings, convert_files
from codon_assets.core.hosts import get_host
from codon_assets.core.tsv import read_release_table


def test_same_arguments_same_bytes(tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    generate("E_coli", 300, a, seed=3)
    generate("E_coli", 300, b, seed=3)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    generate("E_coli", 300, b, seed=4)
    assert a.read_bytes() != b.read_bytes()


def test_planted_rows_are_rejected_for_their_reason(tmp_path):
    path = tmp_path / "g.tsv"
    planted = generate("S_cerevisiae", 4000, path, seed=1, bad_fraction=0.1)
    result = convert_files([read_release_table(path)], get_host("S_cerevisiae"), ConversionSettings())
    found = result.rejects_by_reason()
    assert result.rows_read == 4000
    for kind, count in planted.items():
        if kind == "duplicate_id":
            assert found[kind] == count - 1  # the first row with the shared id is kept
        elif kind == "translation_mismatch":
            assert found[kind] == count + found["internal_stop"]  # an internal stop also breaks the translation
        else:
            assert found.get(kind, 0) == count, kind
    lengths = np.array(result.valid["length_aa"].to_pylist())
    assert 300 < lengths.mean() < 500 and np.median(lengths) < lengths.mean()  # long right tail, like proteomes
