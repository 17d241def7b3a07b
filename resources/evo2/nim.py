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
  A server answering 202 forever is thus stopped by ``max_poll_s`` or the record deadline, whichever is first.
* The rate limit (token bucket, ``burst`` tokens, shared by all worker threads) covers every POST, retries
  included; status polls are paced by ``poll_interval_s`` instead.
* The API key is read from the environment variable named ``api_key_env`` at each request, never stored on
  the object, never logged, and scrubbed from every message this module builds: any text from the server or
  an exception is redacted *before* it is cut to length (so no part of a key straddling the cut survives).
  Redaction replaces the key itself, the value of any ``Authorization`` header line (a proxy may echo the
  request headers back) and the token after any ``Bearer``.
* Deadlines (all on the real ``time.monotonic`` clock, never on the injectable ``clock``, which only paces
  backoff, polling and the rate limit): ``timeout_s`` bounds each socket read, so a server that trickles its
  body byte by byte would never trip it. Each HTTP exchange (the POST and every status poll) is therefore
  streamed and must complete within ``request_deadline_s`` (default ``2 * timeout_s`` = 120 s: a slow but
  honest model run plus the transfer of a large result); the body is read in chunks with the deadline
  checked between them, and no socket read may wait past it. Past it the attempt fails as a retryable
  ``timeout``. (The response headers are read inside http.client, where only the per-read timeout --
  capped at what is left of the deadline -- applies.)
  A record, all attempts, backoff and polling included, must finish within ``record_deadline_s`` (default
  ``request_deadline_s + max_poll_s`` = 720 s: the whole polling window after one full-length POST is
  honoured, and retries of slow requests share that budget however large ``max_attempts`` is). A retry whose
  backoff would end past it is not made.
* Interrupts: if the caller's thread is interrupted (Ctrl-C) or fails while ``logprobs`` waits, pending
  records are cancelled, the workers are told to stop (they check between body chunks, before each attempt
  and during backoff, rate-limit and poll sleeps), the sessions are closed and the exception propagates.
  A worker blocked in one socket read still finishes that read (at most ``timeout_s``).
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
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager

import numpy as np
import requests
import urllib3
from urllib3.exceptions import DecodeError, HTTPError, ProtocolError, ReadTimeoutError

log = logging.getLogger(__name__)

DEFAULT_PATH = "/biology/arc/evo2/forward"
NVCF_STATUS_URL = "https://api.nvcf.nvidia.com/v2/nvcf/pexec/status/{request_id}"
TOKEN_IDS = {"A": 65, "C": 67, "G": 71, "T": 84}  # Evo 2 byte tokenizer: token id = ASCII code
_MIN_VOCAB = max(TOKEN_IDS.values()) + 1
_RETRY_AFTER_CAP_S = 300.0
_CHUNK_BYTES = 1 << 16
_WAIT_SLICE_S = 0.1
_LUT = np.full(256, -1, dtype=np.int64)
for _base, _tok in TOKEN_IDS.items():
    _LUT[ord(_base)] = _tok
# The value of an Authorization header line (as text, JSON or a dict repr), then any bearer token.
_AUTH_HEADER = re.compile(r"""(?i)(authorization["']?\s*[:=]\s*["']?)[^\r\n"']+""")
_BEARER = re.compile(r"""(?i)(\bbearer\s+)[^\s"',;]+""")


class NimError(RuntimeError):
    """Why one record failed.

    ``kind``: http | timeout | connection | malformed | layout | poll_timeout | input | cancelled | unexpected.
    """

    def __init__(self, kind: str, message: str, *, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.kind, self.status, self.retryable = kind, status, retryable
        self.retry_after, self.attempts = retry_after, attempts


class _Stopped(Exception):
    """The batch was interrupted: a worker unwinds without retrying or logging."""


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

    def acquire(self, sleep: Callable[[float], None] | None = None) -> float:
        """Take one token, sleeping as long as needed (with ``sleep`` if given); returns the wait."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._cap, self._tokens + (now - self._last) * self._rate)
            self._last = now
            self._tokens -= 1.0
            wait_s = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait_s > 0:
            (sleep or self._sleep)(wait_s)
        return wait_s


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
        if not hasattr(urllib3.HTTPResponse, "read1"):  # fail here, not as an AttributeError on every record
            raise RuntimeError("NimEvo2Scorer needs urllib3 >= 2.3 (HTTPResponse.read1) to enforce its deadlines")
        self.url = base_url.rstrip("/") + "/" + path.lstrip("/")
        self.api_key_env, self.logits_layer, self.model_version = api_key_env, logits_layer, model_version
        self.max_concurrency, self.timeout_s, self.max_attempts = max_concurrency, timeout_s, max_attempts
        self.request_deadline_s = 2 * timeout_s if request_deadline_s is None else request_deadline_s
        self.record_deadline_s = (self.request_deadline_s + max_poll_s if record_deadline_s is None
                                  else record_deadline_s)
        if timeout_s <= 0 or self.request_deadline_s <= 0 or self.record_deadline_s <= 0:
            raise ValueError("timeout_s, request_deadline_s and record_deadline_s must be > 0")
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.poll_url = poll_url or NVCF_STATUS_URL
        self.poll_interval_s, self.max_poll_s = poll_interval_s, max_poll_s
        self._sleep, self._clock = sleep, clock
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._limiter = (TokenBucket(requests_per_minute, burst, clock=clock, sleep=sleep or time.sleep)
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
        except _Stopped:
            return NimError("cancelled", "the batch was interrupted before this record finished")
        except Exception as exc:  # the contract: a failure belongs to its record, never to the batch
            if isinstance(exc, NimError):
                return exc
            return NimError("unexpected", self._redact(f"{type(exc).__name__}: {exc}"))

    def _score(self, index: int, sequence: str, stop: threading.Event) -> np.ndarray:
        targets = _token_ids(sequence)
        if len(sequence) <= 1:
            return np.empty(0, dtype=np.float64)
        record_deadline = time.monotonic() + self.record_deadline_s
        last: NimError | None = None
        malformed = 0
        out_of_time = ""
        for attempt in range(1, self.max_attempts + 1):
            if stop.is_set():
                raise _Stopped
            if self._limiter is not None:
                self._limiter.acquire(sleep=lambda s: self._pause(s, stop))
            try:
                with self._session() as session:
                    return self._attempt(session, sequence, targets, record_deadline, stop)
            except NimError as err:
                last = err
                malformed += err.kind == "malformed"
                if not err.retryable or attempt == self.max_attempts or malformed > 1:
                    break
                delay = self._backoff(attempt, err.retry_after)
                if time.monotonic() + delay >= record_deadline:
                    out_of_time = f" (record deadline of {self.record_deadline_s:g}s reached)"
                    break
                log.warning("NIM Evo2 record %d: attempt %d/%d failed (%s); retrying in %.2fs",
                            index, attempt, self.max_attempts, err, delay)
                self._pause(delay, stop)
        assert last is not None
        return_err = NimError(last.kind, f"NIM Evo2 forward failed after {attempt} attempt(s){out_of_time}: "
                                         f"{last}", status=last.status, attempts=attempt)
        log.error("NIM Evo2 record %d failed: %s", index, return_err)
        raise return_err from last

    def _attempt(self, session: requests.Session, sequence: str, targets: np.ndarray, record_deadline: float,
                 stop: threading.Event) -> np.ndarray:
        body = {"sequence": sequence, "output_layers": [self.logits_layer]}
        status, headers, content = self._exchange(session, "POST", self.url, record_deadline, stop, json=body)
        if status == 202:
            status, headers, content = self._poll(session, headers, record_deadline, stop)
        if 200 <= status < 300:
            return self._decode(content, sequence, targets)
        snippet = self._snippet(content.decode("utf-8", errors="replace").strip(), 200)
        if status == 429 or status >= 500:
            raise NimError("http", f"HTTP {status}: {snippet}", status=status, retryable=True,
                           retry_after=_retry_after(headers.get("Retry-After")))
        hint = f" (is ${self.api_key_env} set and valid?)" if status in (401, 403) else ""
        raise NimError("http", f"HTTP {status}{hint}: {snippet}", status=status)

    def _poll(self, session: requests.Session, accepted: Mapping[str, str], record_deadline: float,
              stop: threading.Event) -> tuple[int, Mapping[str, str], bytes]:
        request_id = accepted.get("NVCF-REQID")
        if not request_id:
            raise NimError("malformed", "HTTP 202 without an NVCF-REQID header to poll", status=202, retryable=True)
        url = self.poll_url.format(request_id=request_id) if "{request_id}" in self.poll_url \
            else self.poll_url.rstrip("/") + "/" + request_id
        deadline = self._clock() + self.max_poll_s
        status, headers, content = 202, accepted, b""
        while status == 202:
            if self._clock() >= deadline:
                raise NimError("poll_timeout", f"result not ready after polling for {self.max_poll_s:g}s", status=202)
            self._pause(self.poll_interval_s, stop)
            status, headers, content = self._exchange(session, "GET", url, record_deadline, stop)
        return status, headers, content

    def _exchange(self, session: requests.Session, method: str, url: str, record_deadline: float,
                  stop: threading.Event, **kwargs: object) -> tuple[int, Mapping[str, str], bytes]:
        """One HTTP request and its whole body, within ``request_deadline_s`` and the record's deadline."""
        if stop.is_set():
            raise _Stopped
        deadline = min(time.monotonic() + self.request_deadline_s, record_deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout_error()
        try:
            resp = session.request(method, url, headers=self._headers(), timeout=min(self.timeout_s, remaining),
                                   stream=True, **kwargs)
        except requests.RequestException as exc:
            raise self._transport_error(exc) from None
        try:
            return resp.status_code, resp.headers, self._read_body(resp, deadline, stop)
        finally:
            resp.close()  # after a complete body the connection is already back in the pool; else it is dropped

    def _read_body(self, resp: requests.Response, deadline: float, stop: threading.Event) -> bytes:
        # read1 returns whatever one socket read yields, so the clock and the stop signal are checked even
        # when a server trickles its body (requests' iter_content would block until a whole chunk arrived).
        raw, chunks = resp.raw, []
        try:
            while True:
                if stop.is_set():
                    raise _Stopped
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout_error()
                sock = getattr(raw.connection, "sock", None)
                if sock is not None:  # no single read may wait past the deadline
                    sock.settimeout(min(self.timeout_s, remaining))
                chunk = raw.read1(_CHUNK_BYTES, decode_content=True)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        except ReadTimeoutError:
            raise self._timeout_error() from None
        except (ProtocolError, DecodeError) as exc:  # short read, reset mid-body, bad gzip
            raise NimError("malformed", f"truncated response body ({type(exc).__name__})", retryable=True) from None
        except (HTTPError, OSError) as exc:
            raise NimError("connection", f"connection error while reading the body ({type(exc).__name__})",
                           retryable=True) from None

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
            raise NimError("malformed", f"malformed response body: {self._snippet(str(exc), 300)}",
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
        if len(key) >= 4:
            text = text.replace(key, "***")
        return _BEARER.sub(r"\1***", _AUTH_HEADER.sub(r"\1***", text))

    def _snippet(self, text: str, limit: int) -> str:
        # Redact first: cutting first could split a key and leave a piece that no longer matches.
        return self._redact(text)[:limit]

    def _timeout_error(self) -> NimError:
        return NimError("timeout", f"request timed out (read timeout {self.timeout_s:g}s, request deadline "
                                   f"{self.request_deadline_s:g}s, record deadline {self.record_deadline_s:g}s)",
                        retryable=True)

    def _transport_error(self, exc: requests.RequestException) -> NimError:
        # Only connecting, sending and reading the headers happen inside requests (the body is _read_body's).
        name = type(exc).__name__
        if isinstance(exc, requests.Timeout):
            return self._timeout_error()
        if isinstance(exc, requests.ConnectionError):
            return NimError("connection", f"connection error ({name})", retryable=True)
        return NimError("connection", f"request failed ({name}): {self._snippet(str(exc), 200)}", retryable=False)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), _RETRY_AFTER_CAP_S)
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        with self._rng_lock:
            return cap / 2 + self._rng.uniform(0, cap / 2)  # equal jitter: spreads threads, keeps growth

    def _pause(self, seconds: float, stop: threading.Event) -> None:
        """Backoff / poll / rate-limit sleep; raises ``_Stopped`` if the batch was interrupted meanwhile."""
        if self._sleep is None:
            stop.wait(seconds)  # a real sleep that an interrupt ends at once
        else:
            self._sleep(seconds)
        if stop.is_set():
            raise _Stopped

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
            with self._sessions_lock:
                if any(s is session for s in self._all_sessions):
                    self._sessions.put(session)
                else:  # close() ran while this worker held it (an interrupt): do not resurrect it
                    session.close()


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
