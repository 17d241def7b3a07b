"""`Evo2Resource`: picks and configures the feature backend, and owns the feature cache."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import dagster as dg
import pyarrow as pa
from pydantic import PrivateAttr

from codon_assets.core.features import BatchScorer, MarkovBatchScorer, TokenBatchScorer
from codon_assets.core.markov import MarkovCdsModel
from resources.evo2.cache import FeatureCache
from resources.paths import storage_root


_WORKERS = os.cpu_count() or 1  # counting and scoring threads of the markov backend


@lru_cache(maxsize=2)
def _load_evo2(model_name: str, local_path: str | None, device: str, batch_size: int, max_context: int):
    """Evo 2 weights are loaded once per process, whatever number of partitions it materializes."""
    from resources.evo2.torch_backend import Evo2TorchScorer

    return Evo2TorchScorer.from_pretrained(
        model_name, local_path=local_path, device=device, batch_size=batch_size, max_context=max_context
    )


class Evo2Resource(dg.ConfigurableResource):
    """DNA language-model features per record.

    ``backend``: ``markov`` (default; a codon-phase-aware interpolated Markov model trained on the
    partition's own CDS with cross-fitting, CPU), ``evo2`` (the local ``evo2`` package on a GPU) or ``nim``
    (NVIDIA NIM's Evo 2 forward endpoint over HTTP; the API key is read from the environment variable
    named by ``nim_api_key_env`` and never stored or logged).
    """

    backend: Literal["markov", "evo2", "nim"] = "markov"
    # markov
    markov_order: int = 5
    markov_folds: int = 5
    markov_pseudocount: float = 64.0
    # evo2
    model_name: str = "evo2_7b"
    local_path: str | None = None
    device: str = "cuda:0"
    batch_size: int = 8
    max_context: int = 8192
    # nim
    # A self-hosted NIM by default; NVIDIA's hosted API is nim_base_url="https://health.api.nvidia.com/v1",
    # nim_path="/biology/arc/evo2-40b/forward" (its logits layer may be named differently, e.g. "unembed").
    nim_base_url: str = "http://localhost:8000"
    nim_path: str = "/biology/arc/evo2/forward"
    nim_model: str = "evo2-40b"  # names the served model in the cache key
    nim_api_key_env: str = "NVIDIA_API_KEY"
    logits_layer: str = "output_layer"
    requests_per_minute: int = 60
    nim_max_concurrency: int = 4
    # shared
    cache_dir: str = ""  # default: <storage root>/feature_cache
    records_per_batch: int = 0  # 0: a backend default (all at once for markov, 256 for evo2, 64 for nim)
    max_error_rate: float = 0.05  # the partition fails above this share of records in error
    progress_every: int = 10_000  # log progress after about this many scored records

    _token_scorer: object = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Load the model up front (once per process), not inside the first batch.
        if self.backend == "evo2":
            self._token_scorer = _load_evo2(self.model_name, self.local_path, self.device, self.batch_size,
                                            self.max_context)
        elif self.backend == "nim":
            from resources.evo2.nim import NimEvo2Scorer

            self._token_scorer = NimEvo2Scorer(
                self.nim_base_url,
                self.nim_path,
                api_key_env=self.nim_api_key_env,
                # Scores depend on the served model and the layer read, so both name the cached results.
                model_version=f"nim:{self.nim_model}:{self.logits_layer}",
                logits_layer=self.logits_layer,
                requests_per_minute=self.requests_per_minute,
                max_concurrency=self.nim_max_concurrency,
            )

    def fit_markov(self, records: pa.Table) -> MarkovCdsModel:
        """The partition's own Markov model (the markov backend's model): trained on its CDS with
        cross-fitting, so no record is scored by counts that include itself."""
        return MarkovCdsModel.train(
            records["sequence"].combine_chunks(), records["seq_sha256"].to_pylist(),
            order=self.markov_order, folds=self.markov_folds, pseudocount=self.markov_pseudocount,
            workers=_WORKERS,
        )

    def scorer(self, markov_model: MarkovCdsModel | None = None) -> BatchScorer:
        """The batch scorer of the configured backend; the markov backend scores with ``markov_model``."""
        if self.backend == "markov":
            if markov_model is None:
                raise ValueError("the markov backend scores with a Markov model: fit_markov(records) first")
            return MarkovBatchScorer(markov_model, workers=_WORKERS)
        if self._token_scorer is None:
            raise RuntimeError("Evo2Resource was used outside a Dagster execution; call setup_for_execution")
        return TokenBatchScorer(self._token_scorer)

    @property
    def batch_records(self) -> int:
        return self.records_per_batch or {"markov": 50_000, "evo2": 256, "nim": 64}[self.backend]

    def cache(self) -> FeatureCache:
        return FeatureCache(Path(self.cache_dir) if self.cache_dir else storage_root() / "feature_cache")
