"""Evo 2 per-base log-probabilities from an NVIDIA NIM ``/forward`` endpoint over HTTP.

Protocol, as NVIDIA documents it
--------------------------------
* ``POST {base_url}/biology/arc/evo2/forward`` on a self-hosted NIM, JSON body
  ``{"sequence": <DNA>, "output_layers": [<layer>, ...]}`` (1..100 layer names).
  Sources: https://docs.nvidia.com/nim/bionemo/evo2/latest/endpoints.html ("Run model forward pass and save
  layers outputs") and the hosted API reference https://docs.api.nvidia.com/nim/reference/arc-evo2-7b-infer.
* Layer ``output_layer`` is "Final output/logits of shape [seq_len, batch_size, 512]" (512 = padded byte
  vocabulary) -- same API reference. Hence the default ``logits_layer="output_layer"``.
* Hosted NVIDIA APIs take ``Authorization: Bearer <key>``; NVCF may answer ``202 Accepted`` with an
  ``NVCF-REQID`` header, to be polled at ``https://api.nvcf.nvidia.com/v2/nvcf/pexec/status/{request_id}``
  (202 = still running, 200 = the result). Sources: https://docs.nvidia.com/nvcf/ (function invocation,
  NVCF-REQID) and NVIDIA's sample clients.

Seen in public clients, not in NVIDIA's text (handled defensively)
------------------------------------------------------------------
* The hosted forward URL ``https://health.api.nvidia.com/v1/biology/arc/evo2-40b/forward`` -- pass it as
  base_url + path. A local NIM container needs no key.
* The 200 body is ``{"data": <base64 NPZ>, "elapsed_ms": int}``; inside the NPZ the array for layer X is
  named ``"X.output"`` (e.g. ``npz["output_layer.output"]``). We accept ``"X.output"`` or plain ``"X"``.
* Layout: ``[L, 1, V]`` on self-hosted NIM, ``[1, L, V]`` reported for the hosted API; ``[L, V]`` is also
  accepted. Any other shape, or a length other than ``len(sequence)``, is an error (never a silent shift).
* The hosted (vortex-backed) API reportedly names the logits layer ``"unembed"``; pass ``logits_layer``.
* Large results may come back as a 302 redirect to a pre-signed URL; ``requests`` follows it and drops the
  Authorization header on the host change. A body that is a raw NPZ (zip magic ``PK``) is accepted as-is.

Scoring (Arc Institute's reference scoring, byte tokenizer A=65 C=67 G=71 T=84)
-------------------------------------------------------------------------------
The API receives the bare sequence -- no BOS token -- so logits at position i predict token i+1 and the
scored positions are bases 1..L-1 (base 0 has no context): the result has L-1 values. Log-softmax is done
here in float64 over the whole vocabulary. A vocabulary narrower than 85 cannot hold "T" and fails the record.
Sequences must be upper-case ACGT; those of length <= 1 give an empty array without a request.

Choices where the docs are silent
---------------------------------
* Retried (up to ``max_attempts`` POSTs per record, exponential backoff with equal jitter, capped at
  ``backoff_max_s``): HTTP 429, 5xx, connection errors, timeouts. ``Retry-After`` (seconds or HTTP date)
  replaces the computed backoff, capped at 300 s. Other 4xx fail at once.
* A malformed or truncated body (bad JSON / base64 / NPZ, missing layer, short read) is retried once --
  it may be a broken transfer -- and fails the record if it happens again.
* Wrong shape / length / vocabulary fails at once (deterministic; a retry would not help).
* 202 polling: ``poll_url`` is a template with ``{request_id}`` (default: the public NVCF status URL), polled
  every ``poll_interval_s`` until ``max_poll_s``; running past that fails the record without a re-POST
  (re-submitting would queue the long job again). A transport error while polling retries the whole record.
* The rate limit (token bucket, ``burst`` tokens, shared by all worker threads) covers every POST, retries
  included; status polls are paced by ``poll_interval_s`` instead.
* The API key is read from the environment variable named ``api_key_env`` at each request, never stored on
  the object, never logged, and scrubbed from every message this module builds.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import requests
from urllib3.exceptions import ReadTimeoutError

log = logging.getLogger(__name__)

DEFAULT_PATH = "/biology/arc/evo2/forward"
NVCF_STATUS_URL = "https://api.nvcf.nvidia.com/v2/nvcf/pexec/status/{request_id}"
TOKEN_IDS = {"A": 65, "C": 67, "G": 71, "T": 84}  # Evo 2 byte tokenizer: token id = ASCII code
_MIN_VOCAB = max(TOKEN_IDS.values()) + 1
_RETRY_AFTER_CAP_S = 300.0
_LUT = np.full(256, -1, dtype=np.int64)
for _base, _tok in TOKEN_IDS.items():
    _LUT[ord(_base)] = _tok


class NimError(RuntimeError):
    """Why one record failed.

    ``kind``: http | timeout | connection | malformed | layout | poll_timeout | input | unexpected.
    """

    def __init__(self, kind: str, message: str, *, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.kind, self.status, self.retryable = kind, status, retryable
        self.retry_after, self.attempts = retry_after, attempts


class TokenBucket:
    """Requests-per-minute limiter shared by threads.

    Each caller reserves a token under the lock (the balance may go negative) and sleeps for its own
    deficit outside it, so concurrent callers queue up at exact 60/rpm spacing without busy-waiting.
    """

    def __init__(self, per_minute: float, burst: int = 1, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("per_minute must be > 0 and burst >= 1")
        self._rate, self._cap = per_minute / 60.0, float(burst)
        self._clock, self._sleep = clock, sleep
        self._tokens, self._last = float(burst), clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping as long as needed; returns the wait."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._cap, self._tokens + (now - self._last) * self._rate)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class NimEvo2Scorer:
    """``TokenLogprobScorer`` backed by an Evo 2 NIM ``/forward`` endpoint (see the module docstring)."""

    backend = "nim"

    def __init__(
        self,
        base_url: str,
        path: str = DEFAULT_PATH,
        *,
        api_key_env: str = "NVIDIA_API_KEY",
        logits_layer: str = "output_layer",
        model_version: str = "nim:evo2-40b",
        requests_per_minute: float | None = 60,
        burst: int = 1,
        max_concurrency: int = 4,
        timeout_s: float = 60.0,
        max_attempts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        poll_url: str | None = None,
        poll_interval_s: float = 1.0,
        max_poll_s: float = 600.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1 or max_concurrency < 1:
            raise ValueError("max_attempts and max_concurrency must be >= 1")
        self.url = base_url.rstrip("/") + "/" + path.lstrip("/")
        self.api_key_env, self.logits_layer, self.model_version = api_key_env, logits_layer, model_version
        self.max_concurrency, self.timeout_s, self.max_attempts = max_concurrency, timeout_s, max_attempts
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.poll_url = poll_url or NVCF_STATUS_URL
        self.poll_interval_s, self.max_poll_s = poll_interval_s, max_poll_s
        self._sleep, self._clock = sleep, clock
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._limiter = (TokenBucket(requests_per_minute, burst, clock=clock, sleep=sleep)
                         if requests_per_minute else None)
        # requests.Session is not documented as thread-safe: one per worker, reused across calls.
        self._sessions: queue.SimpleQueue[requests.Session] = queue.SimpleQueue()
        self._all_sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def __repr__(self) -> str:  # deliberately lists the key's variable name only, never its value
        return (f"NimEvo2Scorer(url={self.url!r}, logits_layer={self.logits_layer!r}, "
                f"model_version={self.model_version!r}, api_key_env={self.api_key_env!r})")

    __str__ = __repr__

    def close(self) -> None:
        with self._sessions_lock:
            for s in self._all_sessions:
                s.close()
            self._all_sessions.clear()
            self._sessions = queue.SimpleQueue()

    def __enter__(self) -> NimEvo2Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public API

    def logprobs(self, sequences: list[str]) -> list[np.ndarray | Exception]:
        """Per sequence, in order: float64 log P(true base) at bases 1..L-1, or the exception that failed it."""
        results: list[np.ndarray | Exception] = [RuntimeError("not scored")] * len(sequences)
        if not sequences:
            return results
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(sequences)),
                                thread_name_prefix="nim-evo2") as pool:
            futures = [pool.submit(self._score_safely, i, s) for i, s in enumerate(sequences)]
            for i, fut in enumerate(futures):
                results[i] = fut.result()
        return results

    # ------------------------------------------------------------------ one record

    def _score_safely(self, index: int, sequence: str) -> np.ndarray | Exception:
        try:
            return self._score(index, sequence)
        except Exception as exc:  # the contract: a failure belongs to its record, never to the batch
            if isinstance(exc, NimError):
                return exc
            return NimError("unexpected", self._redact(f"{type(exc).__name__}: {exc}"))

    def _score(self, index: int, sequence: str) -> np.ndarray:
        targets = _token_ids(sequence)
        if len(sequence) <= 1:
            return np.empty(0, dtype=np.float64)
        last: NimError | None = None
        malformed = 0
        for attempt in range(1, self.max_attempts + 1):
            if self._limiter is not None:
                self._limiter.acquire()
            try:
                with self._session() as session:
                    return self._attempt(session, sequence, targets)
            except NimError as err:
                last = err
                malformed += err.kind == "malformed"
                if not err.retryable or attempt == self.max_attempts or malformed > 1:
                    break
                delay = self._backoff(attempt, err.retry_after)
                log.warning("NIM Evo2 record %d: attempt %d/%d failed (%s); retrying in %.2fs",
                            index, attempt, self.max_attempts, err, delay)
                self._sleep(delay)
        assert last is not None
        return_err = NimError(last.kind, f"NIM Evo2 forward failed after {attempt} attempt(s): {last}",
                              status=last.status, attempts=attempt)
        log.error("NIM Evo2 record %d failed: %s", index, return_err)
        raise return_err from last

    def _attempt(self, session: requests.Session, sequence: str, targets: np.ndarray) -> np.ndarray:
        body = {"sequence": sequence, "output_layers": [self.logits_layer]}
        try:
            resp = session.post(self.url, json=body, headers=self._headers(), timeout=self.timeout_s)
            if resp.status_code == 202:
                resp = self._poll(session, resp)
            content = resp.content
        except requests.RequestException as exc:
            raise self._transport_error(exc) from None
        status = resp.status_code
        if 200 <= status < 300:
            return self._decode(content, sequence, targets)
        snippet = self._redact(resp.text[:200].strip())
        if status == 429 or status >= 500:
            raise NimError("http", f"HTTP {status}: {snippet}", status=status, retryable=True,
                           retry_after=_retry_after(resp.headers.get("Retry-After")))
        hint = f" (is ${self.api_key_env} set and valid?)" if status in (401, 403) else ""
        raise NimError("http", f"HTTP {status}{hint}: {snippet}", status=status)

    def _poll(self, session: requests.Session, accepted: requests.Response) -> requests.Response:
        request_id = accepted.headers.get("NVCF-REQID")
        if not request_id:
            raise NimError("malformed", "HTTP 202 without an NVCF-REQID header to poll", status=202, retryable=True)
        url = self.poll_url.format(request_id=request_id) if "{request_id}" in self.poll_url \
            else self.poll_url.rstrip("/") + "/" + request_id
        deadline = self._clock() + self.max_poll_s
        resp = accepted
        while resp.status_code == 202:
            if self._clock() >= deadline:
                raise NimError("poll_timeout", f"result not ready after polling for {self.max_poll_s:g}s", status=202)
            self._sleep(self.poll_interval_s)
            resp = session.get(url, headers=self._headers(), timeout=self.timeout_s)
        return resp

    def _decode(self, content: bytes, sequence: str, targets: np.ndarray) -> np.ndarray:
        try:
            if content[:2] == b"PK":  # raw NPZ, e.g. a redirected large result
                npz_bytes = content
            else:
                payload = json.loads(content)
                data = payload.get("data") if isinstance(payload, dict) else None
                if not isinstance(data, str) or not data:
                    raise ValueError("response JSON has no base64 'data' field")
                npz_bytes = base64.b64decode(data, validate=True)
            with np.load(io.BytesIO(npz_bytes), allow_pickle=False) as npz:
                names = list(npz.files)
                key = next((k for k in (f"{self.logits_layer}.output", self.logits_layer) if k in names), None)
                if key is None:
                    raise ValueError(f"layer {self.logits_layer!r} not in the NPZ (arrays: {names[:10]})")
                logits = npz[key]
        except Exception as exc:  # any unreadable body (JSON, base64, zip, npy) is "malformed"
            raise NimError("malformed", f"malformed response body: {self._redact(str(exc))[:300]}",
                           retryable=True) from None
        return _logprobs_from_logits(logits, len(sequence), targets)

    # ------------------------------------------------------------------ helpers

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env, "")
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env, "")
        return text.replace(key, "***") if len(key) >= 4 else text

    def _transport_error(self, exc: requests.RequestException) -> NimError:
        name = type(exc).__name__
        # A read timeout while streaming the body surfaces as ConnectionError(ReadTimeoutError).
        if isinstance(exc, requests.Timeout) or (exc.args and isinstance(exc.args[0], ReadTimeoutError)):
            return NimError("timeout", f"request timed out after {self.timeout_s:g}s ({name})", retryable=True)
        if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
            return NimError("malformed", f"truncated response body ({name})", retryable=True)
        if isinstance(exc, requests.ConnectionError):
            return NimError("connection", f"connection error ({name})", retryable=True)
        return NimError("connection", f"request failed ({name}): {self._redact(str(exc))[:200]}", retryable=False)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), _RETRY_AFTER_CAP_S)
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        with self._rng_lock:
            return cap / 2 + self._rng.uniform(0, cap / 2)  # equal jitter: spreads threads, keeps growth

    @contextmanager
    def _session(self) -> Iterator[requests.Session]:
        try:
            session = self._sessions.get_nowait()
        except queue.Empty:
            session = requests.Session()
            with self._sessions_lock:
                self._all_sessions.append(session)
        try:
            yield session
        finally:
            self._sessions.put(session)


def _token_ids(sequence: str) -> np.ndarray:
    raw = np.frombuffer(sequence.encode("ascii", errors="replace"), dtype=np.uint8)
    ids = _LUT[raw]
    if (ids < 0).any():
        bad = sorted({c for c in sequence if c not in TOKEN_IDS})[:5]
        raise NimError("input", f"sequence has characters other than upper-case ACGT: {bad}")
    return ids


def _logprobs_from_logits(logits: np.ndarray, length: int, targets: np.ndarray) -> np.ndarray:
    """[L,1,V] / [1,L,V] / [L,V] logits -> float64 log P(token i+1 | tokens <= i) for i in 0..L-2."""
    shape = logits.shape
    if logits.ndim == 3 and shape[1] == 1:
        logits = logits[:, 0, :]
    elif logits.ndim == 3 and shape[0] == 1:
        logits = logits[0]
    if logits.ndim != 2:
        raise NimError("layout", f"logits have shape {shape}; expected [L, 1, V], [1, L, V] or [L, V]")
    if logits.shape[0] != length:
        raise NimError("layout", f"logits cover {logits.shape[0]} positions for a {length}-base sequence "
                                 f"(shape {shape}); refusing to guess the alignment")
    if logits.shape[1] < _MIN_VOCAB:
        raise NimError("layout", f"logits vocabulary has {logits.shape[1]} entries (shape {shape}); "
                                 f"byte tokens need at least {_MIN_VOCAB} (T = 84)")
    x = np.asarray(logits[:-1], dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))  # stable log-sum-exp per position
    return x[np.arange(length - 1), targets[1:]] - lse


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(when.timestamp() - time.time(), 0.0)
