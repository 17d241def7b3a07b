"""Evo 2 scorer on local PyTorch: per-base natural-log probabilities of the true base.

Imports torch at module level, so only the code path that selects the ``evo2`` torch backend may import
this module; the ``evo2`` package itself is imported lazily in :meth:`Evo2TorchScorer.from_pretrained`.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# Evo 2's CharLevelTokenizer (vortex): a token is the byte value of the letter; eod (used as BOS) is 0, pad is 1.
BOS_ID = 0
PAD_ID = 1
_ALPHABET = frozenset("ACGT")


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One model input row: ``ids`` predicts ``ids[1:]``; the predictions from ``skip`` on are kept and
    cover the record's bases ``start, start + 1, ...``."""

    record: int
    start: int
    ids: torch.Tensor
    skip: int


def _logits_of(output: Any) -> torch.Tensor:
    """Adapter for model outputs: a plain module returns the logits tensor, while ``evo2.Evo2.__call__``
    returns ``(StripedHyena output, embeddings)`` and StripedHyena returns ``(logits, inference_params)``,
    so the logits are the first tensor found by descending into first elements."""
    while isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"model returned {type(output).__name__}, expected logits tensor [B, L, V]")
    return output


def _parameter_dtypes(model: Any) -> list[str]:
    """The dtypes of a model's parameters (``evo2.Evo2`` keeps its network in ``.model``); [] if unknown."""
    module = model if isinstance(model, torch.nn.Module) else getattr(model, "model", None)
    if not isinstance(module, torch.nn.Module):
        return []
    return sorted({str(p.dtype).removeprefix("torch.") for p in module.parameters()})


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _validate(sequence: str) -> str:
    if not isinstance(sequence, str):
        raise TypeError(f"sequence must be str, got {type(sequence).__name__}")
    seq = sequence.upper()
    if not seq:
        raise ValueError("empty sequence")
    bad = set(seq) - _ALPHABET
    if bad:
        raise ValueError(f"sequence has letters other than ACGT: {''.join(sorted(bad))!r}")
    return seq


class Evo2TorchScorer:
    """``TokenLogprobScorer`` backed by any causal model mapping LongTensor ids [B, L] to logits [B, L, V]
    (or an ``evo2.Evo2`` object, whose tuple output is unwrapped)."""

    def __init__(
        self,
        model: Callable[[torch.Tensor], Any],
        device: str = "cpu",
        batch_size: int = 8,
        max_context: int = 8192,
        window_overlap: int | None = None,
        model_version: str = "evo2:custom",
        backend: str = "evo2",
    ) -> None:
        overlap = max_context // 4 if window_overlap is None else window_overlap
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_context < 2:
            raise ValueError(f"max_context must be >= 2, got {max_context}")
        # A later window needs >= 1 base of context before its first new base and must add >= 1 new base.
        if not 1 <= overlap < max_context:
            raise ValueError(f"window_overlap must be in [1, {max_context - 1}], got {overlap}")
        self.model = model
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_context = max_context
        self.window_overlap = overlap
        self.model_version = model_version
        self.backend = backend

    @classmethod
    def from_pretrained(
        cls, name: str, local_path: str | None = None, device: str = "cuda:0", **kwargs: Any
    ) -> Evo2TorchScorer:
        """Load an Evo 2 checkpoint once (``evo2.Evo2(name, local_path=...)``; vortex places the weights on
        the GPU itself) and wrap it. ``kwargs`` go to the constructor (batch_size, max_context, ...)."""
        from evo2 import Evo2  # lazy: heavy, GPU-only dependency

        kwargs.setdefault("model_version", f"evo2:{name}")
        return cls(Evo2(name, local_path=local_path), device=device, **kwargs)

    # ---- public API ----

    def logprobs(self, sequences: list[str]) -> list[np.ndarray | Exception]:
        results: list[np.ndarray | Exception] = []
        chunks: list[_Chunk] = []
        for index, sequence in enumerate(sequences):
            try:
                seq = _validate(sequence)
            except (TypeError, ValueError) as exc:
                results.append(exc)
                continue
            results.append(np.empty(len(seq), dtype=np.float64))  # filled in by this record's chunks
            chunks.extend(self._chunks(index, seq))

        # Similar lengths share a batch so little compute goes to padding.
        chunks.sort(key=lambda c: c.ids.numel())
        for begin in range(0, len(chunks), self.batch_size):
            batch = chunks[begin : begin + self.batch_size]
            for chunk, scored in zip(batch, self._score_group(batch), strict=True):
                target = results[chunk.record]
                if isinstance(scored, Exception):
                    if not isinstance(target, Exception):  # the record's first failure wins
                        results[chunk.record] = scored
                elif not isinstance(target, Exception):
                    target[chunk.start : chunk.start + len(scored)] = scored
        return results

    # ---- internals ----

    def _chunks(self, record: int, seq: str) -> Iterator[_Chunk]:
        """Token rows for one record: [BOS] + bases, split into overlapping windows when too long."""
        tokens = torch.from_numpy(np.frombuffer(seq.encode("ascii"), dtype=np.uint8).astype(np.int64))
        tokens = torch.cat([torch.tensor([BOS_ID], dtype=torch.long), tokens])
        n_tokens, ctx, overlap = tokens.numel(), self.max_context, self.window_overlap
        yield _Chunk(record, 0, tokens[:ctx], 0)
        first = ctx  # token index of the first unscored base (token i is base i - 1)
        while first < n_tokens:
            # Start `overlap` tokens earlier for left context; keep only predictions from `first` on.
            begin = first - overlap
            yield _Chunk(record, first - 1, tokens[begin : begin + ctx], overlap - 1)
            first = begin + ctx

    def _score_group(self, chunks: list[_Chunk]) -> list[np.ndarray | Exception]:
        try:
            return self._forward(chunks)
        except Exception as exc:  # noqa: BLE001 - turned into per-record results below
            error = exc
            # Drop the failed attempt's frame locals (logits, activations) so a retry has that memory back.
            traceback.clear_frames(exc.__traceback__)
        oom = _is_oom(error)
        if oom and torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(chunks) == 1:
            return [error]
        if oom:  # halve the batch until it fits
            middle = len(chunks) // 2
            return self._score_group(chunks[:middle]) + self._score_group(chunks[middle:])
        # Some record broke the batch: isolate it so the others still succeed.
        return [result for chunk in chunks for result in self._score_group([chunk])]

    def _bf16_autocast(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_bf16_supported()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self._bf16_autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def precision(self) -> str:
        """How the forward pass computes: bf16 autocast (a GPU that supports it) or none, and the dtypes of
        the model's parameters, e.g. ``"autocast-bf16;params=bfloat16+float32"``."""
        autocast = "autocast-bf16" if self._bf16_autocast() else "no-autocast"
        return f"{autocast};params={'+'.join(_parameter_dtypes(self.model)) or 'unknown'}"

    def cache_settings(self) -> dict[str, object]:
        """What, besides the checkpoint, decides the scores (part of the feature cache key): the window
        length, the overlap of consecutive windows, and the precision. The batch size is left out: it decides
        which rows share a forward pass (right-padded, causal), not what a row is scored with."""
        return {"max_context": self.max_context, "window_overlap": self.window_overlap, "precision": self.precision}

    def _forward(self, chunks: list[_Chunk]) -> list[np.ndarray]:
        width = max(c.ids.numel() for c in chunks)
        # Right padding: the model is causal, so pads never influence the scored positions before them.
        ids = torch.full((len(chunks), width), PAD_ID, dtype=torch.long)
        for row, chunk in enumerate(chunks):
            ids[row, : chunk.ids.numel()] = chunk.ids
        ids = ids.to(self.device)
        with torch.inference_mode():
            with self._autocast():
                logits = _logits_of(self.model(ids))
            if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(ids.shape):
                raise ValueError(f"logits shape {tuple(logits.shape)} does not match ids {tuple(ids.shape)}")
            # Logits at position i predict token i + 1; log_softmax in float32 even if the model ran in bf16.
            log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            true_base = log_probs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            scored = true_base.to("cpu", torch.float64).numpy()
        return [scored[row, chunk.skip : chunk.ids.numel() - 1] for row, chunk in enumerate(chunks)]
