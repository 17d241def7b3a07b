"""Evo2TorchScorer on the real Evo 2 network, on the CPU: vortex's StripedHyena built from the evo2 package's
own configuration (evo2_1b_base's YAML, shrunk to one Hyena-short, -medium, -long and attention block each,
64 wide; :mod:`codon_assets_tests.evo2_cpu`), random weights, real CDS from ``examples/data/Pic.tsv``.

The weights are random, so the numbers mean nothing biologically; what is tested is the code path: Evo 2's
real layer stack, its tokenizer ids (``CharLevelTokenizer``: BOS/eod 0, pad 1, bytes), its output tuples
(``StripedHyena`` -> ``(logits, inference_params)``, ``evo2.Evo2`` -> ``((logits, None), None)``), and the
alignment, batching and windowing of our scorer against independent computations on the same network,
including evo2's own ``evo2.scoring.score_sequences``.

Precision: the network runs in bfloat16 as evo2 loads it; the padding, batching and window checks also run
on a float32 copy with the same weights. A batch of one token row is compared with the raw forward to 1e-5
(our float32 log_softmax against a float64 one). The Hyena convolutions are FFTs sized by the row length, so
the same bases in a wider (padded) row move by rounding only: measured 3e-5 in bf16 and 5e-7 in float32,
allowed 1e-3 and 1e-5, while one changed base moves the scores of later bases by ~1e-1 and windows that cut
context away move them by ~2e-2.
"""

from __future__ import annotations

import csv
import importlib.util
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("evo2") is None:
    pytest.skip("evo2 is not installed (`make` installs it: extra `evo2`)", allow_module_level=True)

from codon_assets_tests.conftest import EXAMPLES  # noqa: E402
from codon_assets_tests.evo2_cpu import TINY, apply_rotary_torch, evo2_on_cpu, tiny_evo2_network  # noqa: E402
from resources.evo2.torch_backend import BOS_ID, PAD_ID, Evo2TorchScorer  # noqa: E402

# vortex's Hyena medium filter enters torch.autocast("cuda"), which warns on a CPU-only torch.
pytestmark = pytest.mark.filterwarnings("ignore:CUDA is not available:UserWarning")

VOCAB = 512
EXACT = 1e-5  # same token row: only our float32 log_softmax against the float64 reference
WIDER_ROW = {"bfloat16": 1e-3, "float32": 1e-5}  # same bases in a row of another width (see above)


@pytest.fixture(scope="module")
def evo2():
    with evo2_on_cpu() as module:
        yield module


@pytest.fixture(scope="module")
def networks(evo2) -> dict[str, torch.nn.Module]:
    return {
        "bfloat16": tiny_evo2_network(seed=0)[0],
        "float32": tiny_evo2_network(seed=0, float32=True)[0],
    }


@pytest.fixture(scope="module")
def network(networks):
    return networks["bfloat16"]


@pytest.fixture(scope="module")
def tokenizer(evo2):
    from vortex.model.tokenizer import CharLevelTokenizer

    return CharLevelTokenizer(VOCAB)  # what evo2.Evo2 uses


@pytest.fixture(scope="module")
def evo2_model(evo2, network, tokenizer):
    """An ``evo2.Evo2`` around the tiny network (what ``Evo2TorchScorer.from_pretrained`` wraps), without
    its checkpoint-loading constructor: its real ``__call__``/``forward`` returns ``((logits, None), None)``."""
    shell = evo2.Evo2.__new__(evo2.Evo2)
    shell.model, shell.tokenizer = network, tokenizer
    return shell


@pytest.fixture(scope="module")
def cds() -> list[str]:
    """Four real P. pastoris CDS of 147 to 450 bases (different lengths, so batches need padding)."""
    with open(EXAMPLES / "Pic.tsv", newline="") as handle:
        sequences = [row["RefSeq_nn"] for row in csv.DictReader(handle, delimiter="\t")]
    picked = sorted({s for s in sequences if set(s) <= set("ACGT") and len(s) <= 450}, key=lambda s: (len(s), s))
    return [picked[i] for i in np.linspace(0, len(picked) - 1, 4).astype(int)]


class Recording(torch.nn.Module):
    """Passes ids through to the wrapped model and keeps a copy of each batch."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, ids):
        self.seen.append(ids.clone())
        return self.model(ids)


def reference(network, tokenizer, seq: str, bos: bool = True) -> np.ndarray:
    """Independent per-token log-probabilities: evo2's tokenizer, one raw forward of [eod] + tokens, and
    log p(token i+1) = logit[i, token] - logsumexp(logit[i]) in float64. Without ``bos`` the first base is
    context only (len(seq) - 1 values)."""
    ids = torch.tensor([[tokenizer.eod_id] * bos + tokenizer.tokenize(seq)], dtype=torch.long)
    with torch.inference_mode():
        output = network(ids)
    assert isinstance(output, tuple) and len(output) == 2 and output[1] is None  # (logits, inference_params)
    assert tuple(output[0].shape) == (1, ids.shape[1], VOCAB)
    logits = output[0][0, :-1].double().numpy()
    peak = logits.max(-1)
    log_z = np.log(np.exp(logits - peak[:, None]).sum(-1)) + peak
    return logits[np.arange(len(logits)), ids[0, 1:].numpy()] - log_z


def test_tiny_network_is_evo2_architecture(network, tokenizer):
    from vortex.model.model import AttentionBlock, ParallelGatedConvBlock, StripedHyena

    assert isinstance(network, StripedHyena) and len(network.blocks) == TINY["num_layers"]
    assert [type(block) for block in network.blocks] == [ParallelGatedConvBlock] * 3 + [AttentionBlock]
    short, medium, long_ = (network.blocks[i].filter for i in range(3))
    assert (short.fir_inner_filter_length, medium.fir_inner_filter_length) == (7, 128)  # explicit FIR filters
    assert long_.fir_inner_filter_length is None and long_.log_poles is not None  # implicit modal filter
    assert sum(p.numel() for p in network.parameters()) == 201_884
    assert network.embedding_layer.weight.dtype == torch.bfloat16
    assert (tokenizer.eod_id, tokenizer.pad_id) == (BOS_ID, PAD_ID)
    assert tokenizer.tokenize("ACGT") == [ord(b) for b in "ACGT"]


def test_cpu_rotary_stands_in_for_the_kernel_in_the_attention_block(network, monkeypatch):
    """The one replaced kernel: vortex's attention calls it (in place on q and k), and it rotates each
    (i, i + d/2) pair of the first rotary_dim channels by the angle of the row's position."""
    import vortex.model.rotary

    calls = []

    def spy(x, cos, sin, *args, **kwargs):
        calls.append(kwargs.get("inplace"))
        return apply_rotary_torch(x, cos, sin, *args, **kwargs)

    monkeypatch.setattr(vortex.model.rotary, "apply_rotary", spy)
    with torch.inference_mode():
        network(torch.tensor([[BOS_ID, *b"ACGTAC"]]))
    assert calls == [True]  # q and k of the one attention block, rotated in place

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 3, 8, generator=gen)  # batch, seqlen, heads, headdim; rotary_dim 6 < headdim
    angles = torch.rand(9, 3, generator=gen) * 6
    cos, sin = angles.cos(), angles.sin()
    offsets = torch.tensor([0, 4])
    out = apply_rotary_torch(x, cos, sin, seqlen_offsets=offsets)
    for b, offset in enumerate(offsets.tolist()):
        c, s = cos[offset : offset + 5, None], sin[offset : offset + 5, None]
        x1, x2 = x[b, ..., :3], x[b, ..., 3:6]
        torch.testing.assert_close(out[b, ..., :3], x1 * c - x2 * s)
        torch.testing.assert_close(out[b, ..., 3:6], x1 * s + x2 * c)
        torch.testing.assert_close(out[b], apply_rotary_torch(x[b : b + 1], cos, sin, seqlen_offsets=offset)[0])
    assert torch.equal(out[..., 6:], x[..., 6:])  # channels past rotary_dim untouched
    torch.testing.assert_close(apply_rotary_torch(out, cos, sin, offsets, conjugate=True), x)  # inverse
    view = x.clone()[:, :, :2]  # a strided view, as vortex passes q and k
    assert apply_rotary_torch(view, cos, sin, inplace=True) is view
    torch.testing.assert_close(view, apply_rotary_torch(x[:, :, :2], cos, sin))


def test_scores_real_cds_equal_the_raw_forward(network, tokenizer, evo2_model, cds):
    recorder = Recording(evo2_model)  # through evo2.Evo2.__call__: ((logits, None), None)
    scorer = Evo2TorchScorer(recorder, device="cpu", batch_size=1, model_version="evo2:tiny-random")
    results = scorer.logprobs(cds)
    rows = [ids[0].tolist() for ids in recorder.seen]  # batches of one: no padding
    assert len(rows) == len(cds)
    for seq, got in zip(cds, results):
        assert isinstance(got, np.ndarray), got
        assert got.dtype == np.float64 and got.shape == (len(seq),)
        assert np.all(np.isfinite(got)) and np.all(got <= 0)
        assert got.std() > 0  # position-dependent, not a constant
        assert [tokenizer.eod_id, *tokenizer.tokenize(seq)] in rows  # our token row is evo2's
        np.testing.assert_allclose(got, reference(network, tokenizer, seq), rtol=0, atol=EXACT)
    # Random weights predict close to uniform over the 512 tokens.
    assert abs(np.mean(np.concatenate(results)) + math.log(VOCAB)) < 1.0


def test_network_is_causal_and_uses_context(networks, cds):
    seq = cds[2]
    k = len(seq) // 2
    mutated = seq[:k] + {"A": "C", "C": "G", "G": "T", "T": "A"}[seq[k]] + seq[k + 1 :]
    for precision, network in networks.items():
        scorer = Evo2TorchScorer(network, device="cpu")  # the bare StripedHyena: (logits, inference_params)
        before, after = scorer.logprobs([seq, mutated])
        np.testing.assert_allclose(after[:k], before[:k], rtol=0, atol=EXACT, err_msg=precision)  # not backwards
        assert np.max(np.abs(after[k + 1 :] - before[k + 1 :])) > 1e-2, precision  # later bases see it


@pytest.mark.parametrize("precision", WIDER_ROW)
def test_batched_equals_one_by_one_and_padding_is_never_scored(networks, tokenizer, cds, precision):
    network, atol = networks[precision], WIDER_ROW[precision]
    recorder = Recording(network)
    batched = Evo2TorchScorer(recorder, device="cpu", batch_size=8).logprobs(cds)
    single = Evo2TorchScorer(network, device="cpu", batch_size=1).logprobs(cds)
    (ids,) = recorder.seen  # one right-padded batch
    assert ids.shape == (len(cds), max(map(len, cds)) + 1)
    for row in ids:
        length = int((row != tokenizer.pad_id).sum())
        assert row[0] == tokenizer.eod_id and set(row[length:].tolist()) <= {tokenizer.pad_id}
    for seq, a, b in zip(cds, batched, single):
        assert a.shape == b.shape == (len(seq),)  # no score for any pad position
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)
    # The shortest record filled a third of its row; its scores are its own, not the pads'.
    np.testing.assert_allclose(batched[0], reference(network, tokenizer, cds[0]), rtol=0, atol=atol)


@pytest.mark.parametrize("precision", WIDER_ROW)
def test_long_sequence_in_windows(networks, tokenizer, cds, precision):
    network = networks[precision]
    seq, ctx, overlap = cds[-1], 64, 16
    recorder = Recording(network)
    scorer = Evo2TorchScorer(recorder, device="cpu", max_context=ctx, window_overlap=overlap)
    windowed = scorer.logprobs([seq])[0]
    assert windowed.shape == (len(seq),) and np.all(np.isfinite(windowed)) and np.all(windowed <= 0)
    assert max(ids.shape[1] for ids in recorder.seen) == ctx
    assert sum(ids.shape[0] for ids in recorder.seen) == 1 + math.ceil((len(seq) + 1 - ctx) / (ctx - overlap))
    # Window 1 is [eod] + bases 0..62: the first 63 bases, scored with nothing but BOS before them.
    np.testing.assert_allclose(windowed[:63], reference(network, tokenizer, seq[:63]), rtol=0, atol=EXACT)
    # Window 2 starts `overlap` tokens before the first unscored token (token 64 == base 63): its row is bases
    # 47..110 without BOS, and it contributes bases 63..110, each after at least 16 bases of context.
    second = reference(network, tokenizer, seq[47:111], bos=False)  # predictions of bases 48..110
    np.testing.assert_allclose(windowed[63:111], second[15:], rtol=0, atol=EXACT)
    # Against one unwindowed row: the first window's bases agree; later ones lost context, so they differ a little.
    whole = Evo2TorchScorer(network, device="cpu").logprobs([seq])[0]
    np.testing.assert_allclose(windowed[:63], whole[:63], rtol=0, atol=WIDER_ROW[precision])
    assert 1e-3 < np.max(np.abs(windowed[63:] - whole[63:])) < 0.1


def test_agrees_with_evo2_scoring(networks, tokenizer, cds):
    """evo2.scoring.score_sequences with prepend_bos=True scores the same L bases from the same [eod] + tokens,
    right-padded with pad_id (without BOS it would score bases 2..L only). Both score the CDS as one batch.
    It takes log_softmax in the logits' dtype: on the bf16 network each of its per-base values is within one
    bf16 step (2**-5 at |x| in [4, 8)) of ours, taken in float32; on the float32 network they agree to rounding."""
    from evo2.scoring import score_sequences

    for precision, network in networks.items():
        ours = Evo2TorchScorer(network, device="cpu", batch_size=len(cds)).logprobs(cds)
        theirs = np.array(score_sequences(cds, network, tokenizer, batch_size=len(cds), prepend_bos=True,
                                          reduce_method="sum", device="cpu"), dtype=np.float64)
        sums = np.array([r.sum() for r in ours])
        if precision == "bfloat16":
            assert all(np.all((r > -8) & (r < -4)) for r in ours)  # where a bf16 step is 2**-5
            np.testing.assert_array_less(np.abs(theirs - sums), [len(s) * 2**-5 for s in cds])
        else:
            np.testing.assert_allclose(theirs, sums, rtol=1e-6)
