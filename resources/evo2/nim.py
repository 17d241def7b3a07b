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
* NVIDIA documents no model version in the ``/forward`` reply. Where a server gives one -- a string
  ``"model_version"`` in the JSON body, else an ``X-Model-Version`` header -- it is recorded from every
  successful reply (``served_versions``; a reply without one counts as ``UNREPORTED_VERSION``), so the
  feature cache can tell the served model's versions apart.

Scoring (Arc Institute's reference scoring, byte tokenizer A=65 C=67 G=71 T=84)
-------------------------------------------------------------------------------
The API receives the bare sequence -- no BOS token -- so logits at position i predict token i+1 and the
scored positions are bases 1..L-1 (base 0 has no context): the result has L-1 values. Log-softmax is done
here in float64 over the whole vocabulary. A vocabulary narrower than 85 cannot hold "T" and fails the record.
Sequences must be upper-case ACGT; those of length <= 1 give an empty array without a request.

Choices where the docs are silent (HTTP details: ``resources.evo2.nim_http``)
-----------------------------------------------------------------------------
* Retried (up to ``max_attempts`` POSTs per record; the policy is urllib3's ``Retry``): HTTP 429, 5xx (and
  413 with ``Retry-After``, as urllib3 reads RFC 9110), connection errors, timeouts; exponential backoff with
  equal jitter, capped at ``backoff_max_s``. ``Retry-After`` (integer seconds or HTTP date) replaces the
  backoff, capped at 300 s. Other 4xx fail at once.
* A malformed or truncated body (bad JSON / base64 / NPZ, missing layer, short read) is retried once --
  it may be a broken transfer -- and fails the record if it happens again.
* Wrong shape / length / vocabulary fails at once (deterministic; a retry would not help).
* 202 polling: ``poll_url`` is a template with ``{request_id}`` (default: the public NVCF status URL), polled
  every ``poll_interval_s`` until ``max_poll_s``; running past that fails the record without a re-POST
  (re-submitting would queue the long job again). A transport error while polling retries the whole record.
  A server answering 202 forever is thus stopped by ``max_poll_s`` or the record deadline, whichever is first.
* The rate limit (token bucket, ``burst`` tokens, shared by all worker threads) covers every POST, retries
  included; status polls are paced by ``poll_interval_s`` instead.
* The API key is read with ``codon_assets.settings.secret(api_key_env)`` at each request, never stored on
  the object, never logged, and redacted from every message built here, before any cut to length.
* Deadlines (all on the real ``time.monotonic`` clock, never on the injectable ``clock``, which only paces
  backoff, polling and the rate limit): each HTTP exchange (the POST and every status poll) must complete,
  body included, within ``request_deadline_s`` (default ``2 * timeout_s`` = 120 s: a slow but honest model
  run plus the transfer of a large result), else the attempt fails as a retryable ``timeout``; ``timeout_s``
  bounds each socket read. A record, all attempts, backoff and polling included, must finish within
  ``record_deadline_s`` (default ``request_deadline_s + max_poll_s`` = 720 s: the whole polling window after
  one full-length POST is honoured, and retries of slow requests share that budget however large
  ``max_attempts`` is). A retry whose backoff would end past it is not made.
* Interrupts: if the caller's thread is interrupted (Ctrl-C) or fails while ``logprobs`` waits, pending
  records are cancelled, the workers are told to stop (they check between body chunks, before each attempt
  and during backoff, rate-limit and poll sleeps), the sessions are closed and the exception propagates.
  A worker blocked in one socket read still finishes that read (at most ``timeout_s``).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import requests
from urllib3.exceptions import MaxRetryError

from resources.evo2.nim_http import (
    NVCF_STATUS_URL,
    RETRY_STATUSES,
    NimError,
    NimTransport,
    RetryPolicy,
    Stopped,
    TokenBucket,
    redact,
    snippet,
)

log = logging.getLogger(__name__)

DEFAULT_PATH = "/biology/arc/evo2/forward"
TOKEN_IDS = {"A": 65, "C": 67, "G": 71, "T": 84}  # Evo 2 byte tokenizer: token id = ASCII code
_MIN_VOCAB = max(TOKEN_IDS.values()) + 1
_WAIT_SLICE_S = 0.1
_LUT = np.full(256, -1, dtype=np.int64)
for _base, _tok in TOKEN_IDS.items():
    _LUT[ord(_base)] = _tok
MODEL_VERSION_FIELD = "model_version"  # JSON body field naming the served model's version, when a server sends it
MODEL_VERSION_HEADER = "X-Model-Version"  # ... or this response header
UNREPORTED_VERSION = "unreported"  # what a successful reply without either counts as


class NimEvo2Scorer:
    """``TokenLogprobScorer`` backed by an Evo 2 NIM ``/forward`` endpoint (see the module docstring).

    ``sleep``/``clock`` (tests inject a fake pair) pace backoff, polling and the rate limit; the default
    ``sleep=None`` is a real sleep that an interrupt cuts short. Deadlines always use real time.
    """

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
        request_deadline_s: float | None = None,
        record_deadline_s: float | None = None,
        max_attempts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        poll_url: str | None = None,
        poll_interval_s: float = 1.0,
        max_poll_s: float = 600.0,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1 or max_concurrency < 1:
            raise ValueError("max_attempts and max_concurrency must be >= 1")
        self.url = base_url.rstrip("/") + "/" + path.lstrip("/")
        self.api_key_env, self.logits_layer, self.model_version = api_key_env, logits_layer, model_version
        self.max_concurrency, self.max_attempts = max_concurrency, max_attempts
        request_deadline_s = 2 * timeout_s if request_deadline_s is None else request_deadline_s
        self.record_deadline_s = request_deadline_s + max_poll_s if record_deadline_s is None else record_deadline_s
        if timeout_s <= 0 or request_deadline_s <= 0 or self.record_deadline_s <= 0:
            raise ValueError("timeout_s, request_deadline_s and record_deadline_s must be > 0")
        self._http = NimTransport(api_key_env=api_key_env, timeout_s=timeout_s,
                                  request_deadline_s=request_deadline_s, record_deadline_s=self.record_deadline_s,
                                  poll_url=poll_url or NVCF_STATUS_URL, poll_interval_s=poll_interval_s,
                                  max_poll_s=max_poll_s, clock=clock, sleep=sleep)
        # Each record starts from this policy (Retry objects are immutable: increment returns a new one).
        self._retry = RetryPolicy(total=max_attempts - 1, status_forcelist=RETRY_STATUSES,
                                  allowed_methods=frozenset({"POST"}), respect_retry_after_header=True,
                                  backoff_factor=backoff_base_s, backoff_max=backoff_max_s, rng=rng)
        self._limiter = (TokenBucket(requests_per_minute, burst, clock=clock, sleep=sleep or time.sleep)
                         if requests_per_minute else None)
        self._served: set[str] = set()  # model versions the server reported in successful replies
        self._served_lock = threading.Lock()

    def served_versions(self) -> frozenset[str]:
        """The model versions named by this scorer's successful replies so far (``UNREPORTED_VERSION`` for a
        reply that named none); empty before the first success."""
        with self._served_lock:
            return frozenset(self._served)

    def __repr__(self) -> str:  # deliberately lists the key's variable name only, never its value
        return (f"NimEvo2Scorer(url={self.url!r}, logits_layer={self.logits_layer!r}, "
                f"model_version={self.model_version!r}, api_key_env={self.api_key_env!r})")

    __str__ = __repr__

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NimEvo2Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public API

    def logprobs(self, sequences: list[str]) -> list[np.ndarray | Exception]:
        """Per sequence, in order: float64 log P(true base) at bases 1..L-1, or the exception that failed it."""
        if not sequences:
            return []
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(sequences)),
                                  thread_name_prefix="nim-evo2")
        try:
            futures = [pool.submit(self._score_safely, i, s, stop) for i, s in enumerate(sequences)]
            pending = set(futures)
            while pending:
                # Short waits, not a blocking future.result(): that is not woken by a Ctrl-C whose signal
                # another thread received (nor by _thread.interrupt_main), and a record can take minutes.
                _, pending = wait(pending, timeout=_WAIT_SLICE_S)
        except BaseException:
            # Ctrl-C or any failure here: do not sit in the pool's exit until every request has run.
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            self.close()
            raise
        pool.shutdown()
        return [f.result() for f in futures]

    # ------------------------------------------------------------------ one record

    def _score_safely(self, index: int, sequence: str, stop: threading.Event) -> np.ndarray | Exception:
        try:
            return self._score(index, sequence, stop)
        except Stopped:
            return NimError("cancelled", "the batch was interrupted before this record finished")
        except Exception as exc:  # the contract: a failure belongs to its record, never to the batch
            if isinstance(exc, NimError):
                return exc
            return NimError("unexpected", redact(f"{type(exc).__name__}: {exc}", self.api_key_env))

    def _score(self, index: int, sequence: str, stop: threading.Event) -> np.ndarray:
        targets = _token_ids(sequence)
        if len(sequence) <= 1:
            return np.empty(0, dtype=np.float64)
        record_deadline = time.monotonic() + self.record_deadline_s
        retry, malformed, out_of_time = self._retry, 0, ""
        while True:
            attempt = len(retry.history) + 1
            if stop.is_set():
                raise Stopped
            if self._limiter is not None:
                self._limiter.acquire(sleep=lambda s: self._http.pause(s, stop))
            try:
                with self._http.session() as session:
                    return self._attempt(session, sequence, targets, record_deadline, stop)
            except NimError as err:
                last = err
            malformed += last.kind == "malformed"
            if not last.retryable or malformed > 1:
                break
            try:
                retry = retry.increment(method="POST", url=self.url, error=last)
            except MaxRetryError:  # max_attempts used up
                break
            delay = retry.get_backoff_time() if last.retry_after is None else last.retry_after
            if time.monotonic() + delay >= record_deadline:
                out_of_time = f" (record deadline of {self.record_deadline_s:g}s reached)"
                break
            log.warning("NIM Evo2 record %d: attempt %d/%d failed (%s); retrying in %.2fs",
                        index, attempt, self.max_attempts, last, delay)
            self._http.pause(delay, stop)
        return_err = NimError(last.kind, f"NIM Evo2 forward failed after {attempt} attempt(s){out_of_time}: "
                                         f"{last}", status=last.status, attempts=attempt)
        log.error("NIM Evo2 record %d failed: %s", index, return_err)
        raise return_err from last

    def _attempt(self, session: requests.Session, sequence: str, targets: np.ndarray, record_deadline: float,
                 stop: threading.Event) -> np.ndarray:
        body = {"sequence": sequence, "output_layers": [self.logits_layer]}
        status, headers, content = self._http.exchange(session, "POST", self.url, record_deadline, stop, json=body)
        if status == 202:
            status, headers, content = self._http.poll(session, headers, record_deadline, stop)
        if 200 <= status < 300:
            logprobs, version = self._decode(content, sequence, targets)
            version = version or _header_version(headers)
            # It names cache folders: a server that echoed credentials into it must not put them on disk.
            version = redact(version, self.api_key_env) if version else UNREPORTED_VERSION
            with self._served_lock:
                self._served.add(version)
            return logprobs
        text = snippet(content.decode("utf-8", errors="replace").strip(), 200, self.api_key_env)
        retry_after = self._retry.retry_after(headers)
        # Classified as the record's POST: a failed poll is retried by re-submitting the record.
        if self._retry.is_retry("POST", status, has_retry_after=retry_after is not None):
            raise NimError("http", f"HTTP {status}: {text}", status=status, retryable=True, retry_after=retry_after)
        hint = f" (is ${self.api_key_env} set and valid?)" if status in (401, 403) else ""
        raise NimError("http", f"HTTP {status}{hint}: {text}", status=status)

    def _decode(self, content: bytes, sequence: str, targets: np.ndarray) -> tuple[np.ndarray, str | None]:
        """(log-probabilities, the model version the body names, if any)."""
        version = None
        try:
            if content[:2] == b"PK":  # raw NPZ, e.g. a redirected large result
                npz_bytes = content
            else:
                payload = json.loads(content)
                if isinstance(payload, dict):
                    version = _clean_version(payload.get(MODEL_VERSION_FIELD))
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
            raise NimError("malformed", f"malformed response body: {snippet(str(exc), 300, self.api_key_env)}",
                           retryable=True) from None
        return _logprobs_from_logits(logits, len(sequence), targets), version


def _clean_version(value: object) -> str | None:
    """A reported model version as a short single-line string, or None when absent or not a string."""
    if not isinstance(value, str):
        return None
    value = " ".join(value.split())[:200]
    return value or None


def _header_version(headers: Mapping[str, str]) -> str | None:
    return _clean_version(headers.get(MODEL_VERSION_HEADER))  # requests' headers: case-insensitive


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
