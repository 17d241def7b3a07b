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
from resources.evo2.cache import FeatureCache, checkpoint_identity
from codon_assets.settings import storage_root


_WORKERS = os.cpu_count() or 1  # counting and scoring threads of the markov backend
_VERSION_PROBE = "ACGTACGT"  # scored once, only to learn which model a NIM serves (see Evo2Resource.cache)


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
    _checkpoint: str | None = PrivateAttr(default=None)  # content identity of local_path (cache key)
    _probed: bool = PrivateAttr(default=False)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Load the model up front (once per process), not inside the first batch.
        if self.backend == "evo2":
            # Before the weights are read: both happen once per process, so the identity names what is loaded.
            self._checkpoint = checkpoint_identity(self.local_path)
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
        """The feature cache, keyed by everything that decides this backend's scores (see ``cache_settings``;
        for ``nim`` also by the model version the server reports, when it reports one)."""
        root = Path(self.cache_dir) if self.cache_dir else storage_root() / "feature_cache"
        reports = self.backend == "nim" and hasattr(self._token_scorer, "served_versions")
        served = self._served_version if reports else None
        return FeatureCache(root, self.cache_settings(), served)

    def cache_settings(self) -> dict[str, object]:
        """What decides the scores beyond the backend and model version: nothing for ``markov`` (its version
        names the order, folds, pseudo-count and training set); for ``evo2`` the checkpoint (its resolved
        local path and content identity; both None for the named model from the hub) and what the loaded
        scorer reports (context length, window overlap, precision); for ``nim`` the endpoint path."""
        if self.backend == "markov":
            return {}
        if self._token_scorer is None:
            raise RuntimeError("Evo2Resource was used outside a Dagster execution; call setup_for_execution")
        if self.backend == "nim":
            return {"endpoint_path": self.nim_path}
        report = getattr(self._token_scorer, "cache_settings", None)
        return {
            "local_path": str(Path(self.local_path).expanduser().resolve()) if self.local_path else None,
            "checkpoint": self._checkpoint,
            "max_context": self.max_context,
            **(report() if callable(report) else {}),
        }

    def _served_version(self, probe: bool) -> str | None:
        """The model version(s) the NIM named in its replies so far ("a+b" if it changed mid-run: such rows
        are never reused by a run that sees one version); None before any reply. With ``probe``, and no reply
        yet, one short sequence is scored to ask (once: a failed probe is not repeated)."""
        scorer = self._token_scorer
        versions = scorer.served_versions()
        if not versions and probe and not self._probed:
            self._probed = True
            scorer.logprobs([_VERSION_PROBE])
            versions = scorer.served_versions()
        return "+".join(sorted(versions)) if versions else None
