"""Test-only: run the real Evo 2 network (evo2 0.6.0, vortex from vtx 1.1.0) on a CPU, with random weights.

``evo2`` cannot be imported or constructed on a CPU as shipped; :func:`evo2_on_cpu` answers each obstacle
for the duration of a ``with`` block (a module-scoped fixture) and undoes it afterwards. Nothing here is
imported by production code, and no installed file is modified.

Obstacles, with the exact errors they raise without the shim (torch 2.13.0+cpu, no triton, no flash-attn):

1. ``import evo2`` -> ``vortex/ops/attn_interface.py`` line 7, ``import flash_attn_2_cuda as flash_attn_gpu``:
   ``ModuleNotFoundError: No module named 'flash_attn_2_cuda'`` (the compiled CUDA extension of flash-attn).
   Shim: an empty module of that name in ``sys.modules``. The model is built with ``use_flash_attn: false``,
   so attention runs vortex's own ``SelfAttention`` (``scaled_dot_product_attention``) and never touches it.
2. ``import evo2`` -> ``vortex/ops/embedding/rotary.py`` line 7, ``import triton``:
   ``ModuleNotFoundError: No module named 'triton'``. With triton installed (3.9.0: a 286 MB wheel, 1 GB
   installed) the import works, but the attention block's rotary kernel fails on CPU tensors: first
   ``torch.cuda.device(x.device.index)`` with index None (``TypeError: '<' not supported between instances of
   'NoneType' and 'int'``, torch/cuda/__init__.py line 139), and past that triton has no CPU driver
   (``RuntimeError: 0 active drivers ([]). There should only be one.``, triton/runtime/driver.py).
   Shim: a stand-in ``vortex.ops.embedding.rotary`` module whose ``apply_rotary`` (same signature) is computed
   with vortex's own pure-torch reference ``vortex.model.rotary.apply_rotary_emb_torch``; it is also set on
   ``vortex.model.rotary`` in case the real module was already imported. The fused Hyena kernels
   (``vortex.ops.hc{s,m,l}_interface``) need triton too, but vortex guards those imports and, with the
   ``use_hc*_kernel`` flags off (evo2's default), runs its dense torch path. So triton is not needed.
3. ``StripedHyena(config)`` -> ``vortex/model/model.py`` ``with torch.cuda.device(device):`` for every block, with
   ``device == "cpu"`` (and ``ParallelGatedConvBlock.forward`` enters ``torch.cuda.device(x.device)``):
   ``ValueError: Expected a cuda device, but got: cpu``. Shim: while the block is active, ``torch.cuda.device``
   given a CPU device selects index -1, which torch documents as a no-op.
4. Configuration: the shipped configs need a GPU (``use_flash_attn: true``; the 1B one also
   ``use_fp8_input_projections: true``, i.e. Transformer Engine) and are large. :func:`tiny_evo2_network`
   starts from the package's own YAML and shrinks it (:data:`TINY`).
5. Dtypes: as constructed, the embedding is float32 and the blocks bfloat16, so a CPU forward fails with
   ``RuntimeError: expected m1 and m2 to have the same dtype, but got: float != c10::BFloat16`` (on a GPU the
   scorer's bf16 autocast hides it). evo2's loader converts before loading weights
   (``to_bfloat16_except_pr_lc(to_float32=True)``); so does :func:`tiny_evo2_network`.
6. Weights: vortex leaves the projection weights as ``torch.empty`` (arbitrary values, NaN logits possible), so
   every parameter is drawn from a seeded normal (std 0.02), the norm scales set to 1, and the long filters'
   log-poles made negative: with N(0, 0.02) log-poles half the modal filters grow like exp(+t/50), and the
   rounding of their FFT convolution moves early outputs with the row length (1e-3 even in float32), which
   would blur the batching/windowing checks.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

CONFIG_NAME = "evo2_1b_base"  # evo2.utils.CONFIG_MAP key: configs/evo2-1b-8k.yml
# The 1B layout (hcs, hcm, hcl, hcs, hcm, hcl, attention, ...) cut to one block of each kind, 64 wide.
TINY: dict[str, Any] = {
    "hidden_size": 64,
    "num_filters": 64,  # Hyena-LI filters: must divide hidden_size
    "num_layers": 4,
    "hcs_layer_idxs": [0],  # short explicit filters (length 7)
    "hcm_layer_idxs": [1],  # medium explicit filters (length 128)
    "hcl_layer_idxs": [2],  # long implicit (modal) filters
    "attn_layer_idxs": [3],  # multi-head attention with rotary embedding
    "hcs_filter_groups": 4,  # 1B: 128 groups of 15 channels; here 4 groups of 16
    "hcm_filter_groups": 4,
    "hcl_filter_groups": 64,
    "num_attention_heads": 4,
    "inner_mlp_size": 128,
    "max_seqlen": 512,
    "use_flash_attn": False,
    "use_fp8_input_projections": False,
}

_SHIMMED_PACKAGES = ("evo2", "vortex", "flash_attn_2_cuda")


def apply_rotary_torch(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    seqlen_offsets: int | torch.Tensor = 0,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
    interleaved: bool = False,
    inplace: bool = False,
    conjugate: bool = False,
) -> torch.Tensor:
    """``vortex.ops.embedding.rotary.apply_rotary`` (a triton kernel) in plain torch, fixed-length batches only.

    x: (batch, seqlen, nheads, headdim); cos, sin: (seqlen_ro, rotary_dim / 2); positions start at
    ``seqlen_offsets`` (an int, or one per batch row). ``conjugate`` rotates backwards (sin negated)."""
    from vortex.model.rotary import apply_rotary_emb_torch

    if cu_seqlens is not None:
        raise NotImplementedError("variable-length (cu_seqlens) rotary is not shimmed on CPU")
    _, seqlen, _, _ = x.shape
    if isinstance(seqlen_offsets, torch.Tensor):
        positions = seqlen_offsets.to(torch.long)[:, None] + torch.arange(seqlen, device=x.device)
        cos, sin = cos[positions], sin[positions]  # (batch, seqlen, rotary_dim / 2)
    else:
        if seqlen_offsets + seqlen > cos.shape[0]:
            raise ValueError(f"rotary table has {cos.shape[0]} positions, need {seqlen_offsets + seqlen}")
        cos, sin = cos[seqlen_offsets : seqlen_offsets + seqlen], sin[seqlen_offsets : seqlen_offsets + seqlen]
    if conjugate:
        sin = -sin
    # Like the kernel: compute in float32, store in x's dtype.
    out = apply_rotary_emb_torch(x.float(), cos.float(), sin.float(), interleaved=interleaved).to(x.dtype)
    if inplace:
        return x.copy_(out)
    return out


@contextlib.contextmanager
def _cuda_device_accepts_cpu() -> Iterator[None]:
    """``torch.cuda.device("cpu")`` becomes ``torch.cuda.device(-1)``, the documented no-op. A subclass, not a
    function, because torch itself tests ``isinstance(x, torch.cuda.device)``."""
    real = torch.cuda.device

    class device(real):  # type: ignore[misc,valid-type]
        def __init__(self, dev: Any) -> None:
            if isinstance(dev, (str, torch.device)) and torch.device(dev).type == "cpu":
                dev = -1
            super().__init__(dev)

    torch.cuda.device = device  # type: ignore[misc]
    try:
        yield
    finally:
        torch.cuda.device = real  # type: ignore[misc]


@contextlib.contextmanager
def evo2_on_cpu() -> Iterator[types.ModuleType]:
    """Import ``evo2`` on a CPU and keep it runnable inside the block; yields the ``evo2`` module.

    On exit the shims are removed and every ``evo2``/``vortex`` module imported inside is dropped from
    ``sys.modules``, so later imports elsewhere in the session see the unshimmed packages again. Importing
    ``vortex.logging`` configures the root logger (``basicConfig`` with a rich handler, level INFO) and attaches
    ``logging.FileHandler("activations_debug.log")``, creating that file in the working directory: both undone
    on exit too (the file removed if it did not exist before)."""
    before = {name for name in sys.modules if name.split(".")[0] in _SHIMMED_PACKAGES}
    root = logging.getLogger()
    root_state = root.level, list(root.handlers)
    log_file = Path("activations_debug.log").resolve()
    log_file_existed = log_file.exists()
    if "flash_attn_2_cuda" not in sys.modules and importlib.util.find_spec("flash_attn_2_cuda") is None:
        sys.modules["flash_attn_2_cuda"] = types.ModuleType("flash_attn_2_cuda")
    if "vortex.ops.embedding.rotary" not in sys.modules:
        rotary = types.ModuleType("vortex.ops.embedding.rotary", "CPU stand-in (codon_assets_tests.evo2_cpu)")
        rotary.apply_rotary = apply_rotary_torch  # type: ignore[attr-defined]
        sys.modules["vortex.ops.embedding.rotary"] = rotary
    patched_rotary = None
    try:
        with _cuda_device_accepts_cpu():
            import evo2
            import vortex.model.rotary

            patched_rotary = vortex.model.rotary, vortex.model.rotary.apply_rotary
            vortex.model.rotary.apply_rotary = apply_rotary_torch
            yield evo2
    finally:
        if patched_rotary is not None:
            patched_rotary[0].apply_rotary = patched_rotary[1]
        for name in [n for n in sys.modules if n.split(".")[0] in _SHIMMED_PACKAGES and n not in before]:
            del sys.modules[name]
        for handler in [h for h in root.handlers if h not in root_state[1]]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(root_state[0])
        if not log_file_existed:
            log_file.unlink(missing_ok=True)


def tiny_evo2_network(
    seed: int = 0, std: float = 0.02, float32: bool = False, **overrides: Any
) -> tuple[torch.nn.Module, str]:
    """vortex ``StripedHyena`` from evo2's own config (:data:`CONFIG_NAME`) shrunk by :data:`TINY` (and
    ``overrides``), on the CPU in eval mode, with seeded random weights. Call inside :func:`evo2_on_cpu`.

    Dtypes as ``evo2.Evo2`` loads a checkpoint (``to_bfloat16_except_pr_lc(to_float32=True)``): bfloat16,
    except the long filters' float32 poles and residues. ``float32=True`` then casts everything to float32
    (same weight values), for comparisons that bf16 rounding would blur."""
    from bench.gpu_evo2_throughput import evo2_random_weights

    model, description = evo2_random_weights(CONFIG_NAME, "cpu", **{**TINY, **overrides})
    model.to_bfloat16_except_pr_lc(to_float32=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():  # vortex leaves some as torch.empty
            if name.endswith(".scale"):  # RMSNorm gains
                parameter.fill_(1.0)
            elif name.endswith(".log_poles"):
                # The long filter is h[t] = sum_s residue_s * exp(log_pole_s * t): the poles must be negative
                # (decaying; a trained Evo 2's are). Rates log-uniform in [1/max_seqlen, 1/2].
                low, high = math.log(1 / model.config.max_seqlen), math.log(0.5)
                rates = torch.exp(low + (high - low) * torch.rand(parameter.shape, generator=generator))
                parameter.copy_((-rates).to(parameter.dtype))
            else:
                values = torch.randn(parameter.shape, generator=generator, dtype=torch.float32) * std
                parameter.copy_(values.to(parameter.dtype))
    if float32:
        model.float()
    params = sum(p.numel() for p in model.parameters())
    dtypes = "float32" if float32 else "bfloat16/float32 as evo2 loads it"
    return model, f"tiny {description.split(',')[0]} ({params:,} parameters, seed {seed}, {dtypes})"
