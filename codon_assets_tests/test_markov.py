"""The Markov backend: exact against a plain reference, cross-fitted, deterministic, and it sees real signal."""

import hashlib
import random

import numpy as np
import pyarrow as pa
import pytest

from codon_assets.core.convert import ConversionSettings, convert_files
from codon_assets.core.genetic_code import CODON_TO_AA, CODONS
from codon_assets.core.hosts import get_host
from codon_assets.core import markov
from codon_assets.core.markov import MAX_ORDER, MarkovCdsModel, fold_of
from codon_assets.core.sequence_stats import codon_counts
from codon_assets.core.tsv import read_release_table
from codon_assets_tests.conftest import EXAMPLES

CODE = {"A": 0, "C": 1, "T": 2, "G": 3}


@pytest.fixture(scope="module")
def yeast():
    result = convert_files([read_release_table(EXAMPLES / "Sac.tsv")], get_host("S_cerevisiae"), ConversionSettings())
    return result.valid["sequence"].combine_chunks(), result.valid["seq_sha256"].to_pylist()


def sha(seq: str) -> str:
    return hashlib.sha256(seq.encode()).hexdigest()


def reference_logprobs(train: list[str], seq: str, order: int, pseudocount: float) -> np.ndarray:
    """The model's definition, position by position, in plain Python."""
    counts = [dict() for _ in range(order + 1)]
    for s in train:
        for i, x in enumerate(s):
            for k in range(min(i, order) + 1):
                key = (i % 3, s[i - k : i])
                counts[k].setdefault(key, np.zeros(4))[CODE[x]] += 1
    out = []
    for i, x in enumerate(seq):
        p = 0.25
        for k in range(min(i, order) + 1):
            c = counts[k].get((i % 3, seq[i - k : i]), np.zeros(4))
            p = (c[CODE[x]] + pseudocount * p) / (c.sum() + pseudocount)
        out.append(np.log(p))
    return np.array(out)


def random_cds(rng: random.Random, n_codons: int) -> str:
    sense = [c for c in CODONS if CODON_TO_AA[c] != "*"]
    return "ATG" + "".join(rng.choice(sense) for _ in range(n_codons)) + "TAA"


def test_matches_the_reference_definition():
    rng = random.Random(1)
    train = [random_cds(rng, rng.randint(1, 30)) for _ in range(40)]
    shas = [sha(s) for s in train]
    model = MarkovCdsModel.train(pa.array(train), shas, order=3, folds=4, pseudocount=2.0)
    fold = fold_of(shas, 4)
    stats = model.score_stats(pa.array(train), shas)
    for r in range(len(train)):
        others = [s for s, f in zip(train, fold) if f != fold[r]]
        expected = reference_logprobs(others, train[r], 3, 2.0)
        assert stats["avg_loglik"][r] == pytest.approx(expected.mean(), rel=1e-12)
        assert stats["min_confidence"][r] == pytest.approx(np.exp(expected).min(), rel=1e-12)
        assert stats["scored_bases"][r] == len(train[r])
    # A sequence outside the training set is scored with every fold's counts.
    new = random_cds(rng, 25)
    expected = reference_logprobs(train, new, 3, 2.0)
    assert model.score_stats(pa.array([new]), [sha(new)])["avg_loglik"][0] == pytest.approx(expected.mean())


def training_set(rng: random.Random) -> list[str]:
    """Random CDS, half of them from four codons only so that even order-8 contexts recur, plus records
    shorter than the highest order (every position near a CDS start)."""
    few = ["GCT", "GAA", "AAG", "CTG"]
    train = [random_cds(rng, rng.randint(5, 40)) for _ in range(12)]
    train += ["ATG" + "".join(rng.choice(few) for _ in range(rng.randint(5, 40))) + "TAA" for _ in range(12)]
    return train + ["ATG", "ATGTAA", "ATGGCTTAA"]


@pytest.mark.parametrize("order", range(MAX_ORDER + 1))
def test_every_allowed_order_matches_the_reference_base_by_base(order, monkeypatch):
    """Per-base log-probabilities and probabilities equal the plain-Python definition at every order the
    model accepts (orders 7 and 8 once overflowed 16-bit context indices and scored wrong bases)."""
    seen = []

    def capture(logprobs, lengths, probs=None):
        seen.append((np.array(logprobs), None if probs is None else np.array(probs)))
        return logprob_stats(logprobs, lengths, probs)

    logprob_stats = markov.logprob_stats
    monkeypatch.setattr(markov, "logprob_stats", capture)
    rng = random.Random(100 + order)
    train = training_set(rng)
    shas = [sha(s) for s in train]
    folds, pseudocount = 3, 0.5
    model = MarkovCdsModel.train(pa.array(train), shas, order=order, folds=folds, pseudocount=pseudocount)
    fold = fold_of(shas, folds)
    few = ["GCT", "GAA", "AAG", "CTG"]
    unseen = [random_cds(rng, 30), "ATG" + "".join(rng.choice(few) for _ in range(30)) + "TAA", "GCA"]
    cases = [(s, h, [t for t, f in zip(train, fold) if f != fold[r]]) for r, (s, h) in enumerate(zip(train, shas))]
    cases += [(s, sha(s), train) for s in unseen]  # outside the training set: every fold's counts
    for seq, seq_sha, counted_from in cases:
        seen.clear()
        stats = model.score_stats(pa.array([seq]), [seq_sha])
        expected = reference_logprobs(counted_from, seq, order, pseudocount)
        (logp, p), = seen
        np.testing.assert_allclose(logp, expected, rtol=1e-12, atol=0)
        np.testing.assert_allclose(p, np.exp(expected), rtol=1e-12, atol=0)
        assert stats["avg_loglik"][0] == pytest.approx(expected.mean(), rel=1e-12)
        assert stats["scored_bases"][0] == len(seq)


@pytest.mark.parametrize("order", range(MAX_ORDER + 1))
@pytest.mark.parametrize("bad", ["ATGNNNTAA", "ATGgctTAA", "ATGRYKTAA"])
def test_every_allowed_order_rejects_letters_other_than_acgt(order, bad):
    good = ["ATGGCTGAATAA", "ATGAAGCTGTAA"]
    with pytest.raises(ValueError, match="A/C/G/T"):
        MarkovCdsModel.train(pa.array(good + [bad]), [sha(s) for s in good + [bad]], order=order, folds=2)
    model = MarkovCdsModel.train(pa.array(good), [sha(s) for s in good], order=order, folds=2)
    with pytest.raises(ValueError, match="A/C/G/T"):
        model.score_stats(pa.array([bad]), [sha(bad)])


@pytest.mark.parametrize("order", [-1, MAX_ORDER + 1])
def test_orders_outside_the_allowed_range_are_refused(order):
    with pytest.raises(ValueError, match=f"between 0 and {MAX_ORDER}"):
        MarkovCdsModel.train(pa.array(["ATGTAA"]), [sha("ATGTAA")], order=order)


def test_no_record_is_scored_by_its_own_counts():
    """A long record memorised by a high-order model would score far better in-sample than cross-fitted."""
    rng = random.Random(2)
    train = [random_cds(rng, 400) for _ in range(10)]
    shas = [sha(s) for s in train]
    model = MarkovCdsModel.train(pa.array(train), shas, order=5, folds=5, pseudocount=4.0)
    cross_fitted = model.score_stats(pa.array(train), shas)["avg_loglik"]
    in_sample = model.score_stats(pa.array(train), ["0" * 64] * 10)["avg_loglik"]  # unknown hashes: full model
    assert (in_sample > cross_fitted + 0.1).all()
    # Random codons carry no context signal, so cross-fitted scores stay near the uniform log(1/4).
    assert np.all(np.abs(cross_fitted - np.log(0.25)) < 0.3)


def test_deterministic_and_independent_of_row_order(yeast):
    sequences, shas = yeast
    first = MarkovCdsModel.train(sequences, shas).score_stats(sequences, shas)
    threaded = MarkovCdsModel.train(sequences, shas, workers=2)
    assert np.array_equal(threaded.full, MarkovCdsModel.train(sequences, shas).full)  # counted in 2 threads
    again = threaded.score_stats(sequences, shas, workers=2)
    for name in first:
        assert np.array_equal(first[name], again[name])
    assert np.array_equal(codon_counts(sequences, workers=2), codon_counts(sequences))
    perm = np.random.default_rng(0).permutation(len(shas))
    shuffled_seqs = sequences.take(pa.array(perm))
    shuffled = MarkovCdsModel.train(shuffled_seqs, [shas[i] for i in perm]).score_stats(shuffled_seqs, [shas[i] for i in perm])
    assert np.allclose(shuffled["avg_loglik"], first["avg_loglik"][perm], rtol=0, atol=1e-12)


def test_serialisation_round_trip(yeast):
    sequences, shas = yeast
    model = MarkovCdsModel.train(sequences, shas)
    restored = MarkovCdsModel.from_bytes(model.to_bytes())
    assert restored.version == model.version
    assert np.array_equal(restored.score_stats(sequences, shas)["avg_loglik"], model.score_stats(sequences, shas)["avg_loglik"])


def synonymous_recoding(seq: str, rng: random.Random) -> str:
    """Each codon replaced by a synonymous codon drawn uniformly: same protein, no host codon preference."""
    by_aa = {}
    for c in CODONS:
        by_aa.setdefault(CODON_TO_AA[c], []).append(c)
    codons = [seq[i : i + 3] for i in range(0, len(seq), 3)]
    return codons[0] + "".join(rng.choice(by_aa[CODON_TO_AA[c]]) for c in codons[1:-1]) + codons[-1]


def synonymous_shuffle(seq: str, rng: random.Random) -> str:
    """Codons permuted among the positions of the same amino acid: same protein and codon usage."""
    codons = [seq[i : i + 3] for i in range(0, len(seq), 3)]
    positions = {}
    for i, c in enumerate(codons[1:-1], start=1):
        positions.setdefault(CODON_TO_AA[c], []).append(i)
    shuffled = list(codons)
    for idx in positions.values():
        picked = [codons[i] for i in idx]
        rng.shuffle(picked)
        for i, c in zip(idx, picked):
            shuffled[i] = c
    return "".join(shuffled)


@pytest.mark.parametrize("transform, majority", [(synonymous_recoding, 0.95), (synonymous_shuffle, 0.75)])
def test_native_cds_beat_synonymous_copies(yeast, transform, majority):
    """Real yeast genes score higher than synonymous copies of themselves, each scored by the same
    cross-fitted model that never saw the gene (the copy is passed under its native's hash)."""
    sequences, shas = yeast
    model = MarkovCdsModel.train(sequences, shas)
    native = model.score_stats(sequences, shas)["avg_loglik"]
    rng = random.Random(0)
    copies = pa.array([transform(s, rng) for s in sequences.to_pylist()])
    copied = model.score_stats(copies, shas)["avg_loglik"]
    assert np.mean(native > copied) >= majority
