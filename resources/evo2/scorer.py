"""The interface every language-model backend implements (markov, evo2, nim)."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class TokenLogprobScorer(Protocol):
    """Scores DNA sequences base by base.

    ``logprobs`` returns, per input sequence and in input order, a 1-D float64 array of the natural-log
    probability the model gives the true base at each scored position, or the exception that made that
    record fail (the others still succeed). It never drops or reorders records.
    """

    backend: str  # "markov" | "evo2" | "nim"
    model_version: str  # names the exact model whose scores these are (part of the cache key)

    def logprobs(self, sequences: list[str]) -> list[np.ndarray | Exception]: ...
