"""Evo2TorchScorer against tiny stand-in models whose right answer is known (no GPU, no weights)."""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from resources.evo2.torch_backend import BOS_ID, PAD_ID, Evo2TorchScorer  # noqa: E402

VOCAB = 512
HIGH = 50.0
# Context-1 chain: the token at position i predicts NEXT[token] at i + 1 (BOS->A, A->C, C->G, G->T, T->A).
NEXT = {BOS_ID: "A", ord("A"): "C", ord("C"): "G", ord("G"): "T", ord("T"): "A"}
LOGZ = float(np.logaddexp(HIGH, np.log(VOCAB - 1)))  # log-sum-exp of one HIGH logit and 511 zeros
RIGHT, WRONG = HIGH - LOGZ, -LOGZ  # log-prob of the predicted base / of any other base


class ChainModel(torch.nn.Module):
    """logits[b, i] = HIGH at NEXT[ids[b, i]], 0 elsewhere; records every ids batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        table = torch.zeros(VOCAB, dtype=torch.long)  # pads and anything else "predict" token 0
        for token, base in NEXT.items():
            table[token] = ord(base)
        self.register_buffer("table", table)
        self.seen: list[torch.Tensor] = []

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.seen.append(ids.clone())
        logits = torch.zeros(*ids.shape, VOCAB)
        logits.scatter_(-1, self.table[ids].unsqueeze(-1), HIGH)
        return logits


class Evo2LikeOutput(ChainModel):
    """Returns what evo2.Evo2.__call__ returns: ((logits, inference_params), embeddings)."""

    def forward(self, ids: torch.Tensor):  # type: ignore[override]
        return (super().forward(ids), None), None


class OomAboveBatch(ChainModel):
    def __init__(self, max_rows: int, error: type[Exception]) -> None:
        super().__init__()
        self.max_rows, self.error = max_rows, error

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[0] > self.max_rows:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(ids)


class OomAboveLength(ChainModel):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > 51:  # BOS + more than 50 bases
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return super().forward(ids)


class BreaksOnWidth(ChainModel):
    """A non-OOM failure tied to one record (any batch padded to 34 tokens, i.e. holding a 33-base record)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] == 34:
            raise RuntimeError("kernel exploded")
        return super().forward(ids)


def expected(seq: str) -> np.ndarray:
    previous = [BOS_ID] + [ord(b) for b in seq[:-1]]
    return np.array([RIGHT if NEXT[p] == b else WRONG for p, b in zip(previous, seq)])


def chain(n: int, start: int = 0) -> str:
    return "".join("ACGT"[(start + i) % 4] for i in range(n))


def random_seqs(count: int, lo: int, hi: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("ACGT") for _ in range(rng.randint(lo, hi))) for _ in range(count)]


def scorer(model=None, **kwargs) -> Evo2TorchScorer:
    return Evo2TorchScorer(model if model is not None else ChainModel(), device="cpu", **kwargs)


def test_alignment_bos_predicts_first_base_and_mutation_hits_only_its_index():
    seq = chain(40)
    mutated = seq[:17] + "T" + seq[18:]  # position 17 should be "C"; 18 then breaks too (T predicts A)
    good, bad = scorer().logprobs([seq, mutated])
    assert good.dtype == np.float64 and good.shape == (40,) and bad.shape == (40,)
    assert np.all(good > -1e-6)
    low = np.flatnonzero(bad < -1)
    assert low.tolist() == [17, 18]
    np.testing.assert_allclose(bad, expected(mutated))
    # A mutation that stays on the chain afterwards only hits its own index: ...C G T A... -> ...C G T [C] G...
    single = seq[:-1] + ("A" if seq[-1] != "A" else "C")
    assert np.flatnonzero(scorer().logprobs([single])[0] < -1).tolist() == [39]
    assert scorer().logprobs(["a"])[0].tolist() == pytest.approx([RIGHT])  # lower case is accepted


def test_evo2_style_tuple_output_is_unwrapped():
    seqs = random_seqs(5, 1, 30)
    for got, seq in zip(scorer(Evo2LikeOutput()).logprobs(seqs), seqs):
        np.testing.assert_allclose(got, expected(seq))


def test_batched_equals_single_and_keeps_input_order():
    seqs = random_seqs(20, 1, 60)
    batched = scorer(batch_size=8).logprobs(seqs)
    single = scorer(batch_size=1).logprobs(seqs)
    for seq, a, b in zip(seqs, batched, single):
        assert a.shape == (len(seq),)
        assert np.array_equal(a, b)
        np.testing.assert_allclose(a, expected(seq))


def test_padding_is_right_side_pad_id_and_never_scored():
    short, longs = "ACGA", [chain(90), chain(70, 1)]
    alone = scorer().logprobs([short])[0]
    model = ChainModel()
    together = scorer(model, batch_size=8).logprobs([longs[0], short, longs[1]])
    assert together[1].shape == (4,) and np.array_equal(together[1], alone)
    (ids,) = model.seen
    row = next(r for r in ids if r[1:5].tolist() == [ord(b) for b in short] and r[5] == PAD_ID)
    assert row[0] == BOS_ID and set(row[5:].tolist()) == {PAD_ID}
    assert ids.shape == (3, 91) and ids[:, 0].tolist() == [BOS_ID] * 3


def test_long_sequences_use_overlapping_windows_exactly_once():
    seqs = random_seqs(6, 100, 100, seed=3) + [chain(100), "ACG" * 5, chain(15)]  # 15 bases + BOS == 16
    model = ChainModel()
    windowed = scorer(model, max_context=16, window_overlap=4).logprobs(seqs)
    whole = scorer(max_context=4096).logprobs(seqs)
    assert max(ids.shape[1] for ids in model.seen) == 16
    for seq, a, b in zip(seqs, windowed, whole):
        assert a.shape == (len(seq),) and np.array_equal(a, b)
        np.testing.assert_allclose(a, expected(seq))
    # Base count: a 100-base record needs 1 + ceil((101 - 16) / 12) = 9 windows with 4 tokens of context.
    rows = [r for ids in model.seen for r in ids]
    first_rows = [r for r in rows if r[0] == BOS_ID]
    assert len(first_rows) == len(seqs)
    assert len(rows) == len(seqs) + 7 * 8


def test_default_overlap_and_invalid_windows():
    assert scorer(max_context=64).window_overlap == 16
    with pytest.raises(ValueError):
        scorer(max_context=16, window_overlap=16)
    with pytest.raises(ValueError):
        scorer(max_context=16, window_overlap=0)


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, RuntimeError])
def test_oom_splits_the_batch_and_still_scores_everything(error):
    seqs = random_seqs(13, 5, 40)
    model = OomAboveBatch(max_rows=2, error=error)
    got = scorer(model, batch_size=8).logprobs(seqs)
    assert max(ids.shape[0] for ids in model.seen) <= 2
    for seq, a in zip(seqs, got):
        np.testing.assert_allclose(a, expected(seq))


def test_oom_on_a_single_sequence_fails_only_that_record():
    seqs = random_seqs(9, 5, 40) + [chain(80)] + random_seqs(3, 5, 50, seed=11)
    got = scorer(OomAboveLength(), batch_size=8).logprobs(seqs)
    assert isinstance(got[9], torch.cuda.OutOfMemoryError)
    for index, (seq, a) in enumerate(zip(seqs, got)):
        if index != 9:
            np.testing.assert_allclose(a, expected(seq))


def test_other_batch_error_falls_back_to_one_by_one():
    seqs = random_seqs(7, 5, 30) + ["A" * 33] + random_seqs(4, 5, 30, seed=5)
    got = scorer(BreaksOnWidth(), batch_size=8).logprobs(seqs)
    assert isinstance(got[7], RuntimeError) and "exploded" in str(got[7])
    for index, (seq, a) in enumerate(zip(seqs, got)):
        if index != 7:
            np.testing.assert_allclose(a, expected(seq))


def test_bad_letters_and_empty_fail_only_their_record():
    seqs = ["ACGT", "ACNGXT", "", "GGCA"]
    got = scorer().logprobs(seqs)
    assert isinstance(got[1], ValueError) and "N" in str(got[1]) and "X" in str(got[1])
    assert isinstance(got[2], ValueError)
    np.testing.assert_allclose(got[0], expected("ACGT"))
    np.testing.assert_allclose(got[3], expected("GGCA"))
    assert scorer().logprobs([]) == []


def test_identity_fields():
    s = scorer(model_version="evo2:evo2_7b")
    assert (s.backend, s.model_version) == ("evo2", "evo2:evo2_7b")
