"""Throughput of the `evo2` feature backend on a GPU: records/s, tokens/s and peak GPU memory per batch size.

    python bench/gpu_evo2_throughput.py [--model evo2_7b] [--records 256] [--length 1500] [--batch-sizes 1 8 32]

Scores generated CDS-like sequences through `Evo2TorchScorer` (the code path of `evo2_features` with
backend=evo2: windows, length-sorted batches, bf16 autocast, per-base log-probabilities back to the host).

The model: Evo 2 weights cannot be downloaded on the lent GPU machine, so the network is built from the
evo2 package's own config (`evo2.utils.CONFIG_MAP`, vortex `StripedHyena`) with its initial random weights:
the same layers, shapes and kernels, so the same compute per token; the scores themselves are meaningless.
Where the evo2/vortex packages are not importable the script says so and, with `--allow-stand-in`, times
a small causal transformer instead, labelled as such in the output (that measures the batching code path,
not Evo 2). Results go to stdout and to bench/results/gpu-evo2-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from resources.evo2.torch_backend import Evo2TorchScorer  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def evo2_random_weights(name: str, device: str, **overrides) -> tuple[torch.nn.Module, str]:
    """Evo 2's network from the package config, randomly initialised (no checkpoint is loaded).
    ``overrides`` replace config entries (the CPU tests shrink the network with them)."""
    import importlib.util
    import pkgutil
    import types

    import yaml

    # vortex imports flash-attn's compiled extension unconditionally, though a model built with
    # use_flash_attn off never calls it. Where flash-attn is not installed, the attention layers run vortex's
    # own SelfAttention (torch scaled_dot_product_attention, FlashAttention kernels on Hopper) and the
    # description says so.
    flash_attn = "flash_attn_2_cuda" in sys.modules or importlib.util.find_spec("flash_attn_2_cuda") is not None
    if not flash_attn:
        sys.modules["flash_attn_2_cuda"] = types.ModuleType("flash_attn_2_cuda")
    from evo2.utils import CONFIG_MAP
    from vortex.model.model import StripedHyena
    from vortex.model.utils import dotdict

    config = dotdict(yaml.safe_load(pkgutil.get_data("evo2", CONFIG_MAP[name])))
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        config.use_fp8_input_projections = False  # what evo2 itself falls back to for 7b models
    if not flash_attn:
        config.use_flash_attn = False
    config.update(overrides)
    with torch.device(device):
        model = StripedHyena(config)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    attention = "flash-attn" if config.use_flash_attn else "torch SDPA attention (flash-attn not installed)"
    return model, (f"{name} architecture from evo2's {CONFIG_MAP[name]}, random weights ({params / 1e9:.2f} B "
                   f"parameters), {attention}")


class CausalTransformerStandIn(torch.nn.Module):
    """A small causal transformer over Evo 2's byte vocabulary: NOT Evo 2, only the batching code path."""

    def __init__(self, width: int = 256, layers: int = 4, vocab: int = 512):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        block = torch.nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=4 * width, batch_first=True)
        self.blocks = torch.nn.TransformerEncoder(block, layers)
        self.head = torch.nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = torch.nn.Transformer.generate_square_subsequent_mask(ids.shape[1], device=ids.device)
        return self.head(self.blocks(self.embed(ids), mask=mask, is_causal=True))


def build_model(name: str, device: str, allow_stand_in: bool) -> tuple[torch.nn.Module, str]:
    try:
        return evo2_random_weights(name, device)
    except ImportError as exc:
        if not allow_stand_in:
            raise SystemExit(f"evo2/vortex not importable ({exc}); install `.[evo2]` or pass --allow-stand-in")
        model = CausalTransformerStandIn().to(device).eval()
        params = sum(p.numel() for p in model.parameters())
        return model, f"STAND-IN causal transformer ({params / 1e6:.1f} M parameters), not Evo 2: evo2 not importable ({exc})"


def cds_like(records: int, length: int, seed: int = 0) -> list[str]:
    """ATG + random sense codons + TAA, lengths spread +-30 % around ``length`` (so batches need padding)."""
    from codon_assets.core.genetic_code import CODON_TO_AA, CODONS

    rng = np.random.default_rng(seed)
    sense = np.array([c for c in CODONS if CODON_TO_AA[c] != "*"])
    sizes = rng.integers(int(length * 0.7) // 3, int(length * 1.3) // 3, size=records)
    return ["ATG" + "".join(rng.choice(sense, size=n - 2)) + "TAA" for n in sizes]


def measure(scorer: Evo2TorchScorer, sequences: list[str]) -> dict:
    if scorer.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    results = scorer.logprobs(sequences)
    if scorer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    errors = [r for r in results if isinstance(r, Exception)]
    bases = sum(len(s) for s in sequences)
    return {
        "batch_size": scorer.batch_size, "records": len(sequences), "errors": len(errors),
        "first_error": repr(errors[0]) if errors else None, "seconds": seconds,
        "records_per_s": len(sequences) / seconds, "tokens_per_s": bases / seconds,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if scorer.device.type == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="evo2_7b", help="an evo2 model name (evo2.utils.CONFIG_MAP)")
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--records", type=int, default=256)
    parser.add_argument("--length", type=int, default=1500, help="mean CDS length in bases")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-context", type=int, default=8192)
    parser.add_argument("--allow-stand-in", action="store_true")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    model, description = build_model(args.model, args.device, args.allow_stand_in)
    sequences = cds_like(args.records, args.length)
    print(f"model: {description}\ndevice: {args.device}"
          f"{' (' + torch.cuda.get_device_name(args.device) + ')' if args.device.startswith('cuda') else ''}")
    # Warm-up: kernel selection and allocator growth are not throughput.
    Evo2TorchScorer(model, device=args.device, batch_size=max(args.batch_sizes), max_context=args.max_context
                    ).logprobs(sequences[: max(args.batch_sizes)])
    rows = []
    for batch_size in args.batch_sizes:
        scorer = Evo2TorchScorer(model, device=args.device, batch_size=batch_size, max_context=args.max_context)
        rows.append(measure(scorer, sequences))
        r = rows[-1]
        peak = f"{r['peak_gpu_mib']:9.0f} MiB peak" if r["peak_gpu_mib"] is not None else ""
        print(f"batch {batch_size:>4}: {r['records_per_s']:9.1f} records/s {r['tokens_per_s']:12,.0f} tokens/s "
              f"{r['seconds']:8.2f} s {peak} errors {r['errors']}", flush=True)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"gpu-evo2-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"model": description, "device": args.device, "mean_length": args.length,
                               "torch": torch.__version__, "results": rows}, indent=2))
    print(f"results: {out}")
    return out


if __name__ == "__main__":
    main()
