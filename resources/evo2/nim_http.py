"""HTTP plumbing of the NIM Evo 2 client (``resources.evo2.nim``): its errors, the shared rate limit, the retry
policy, API-key redaction, and HTTP exchanges held to deadlines and interrupts.

* Retry policy: urllib3's :class:`~urllib3.util.Retry` decides which statuses are retried (429, 5xx, and
  413 with ``Retry-After``), counts the attempts (``increment`` / ``MaxRetryError``) and parses
  ``Retry-After`` (seconds or an HTTP date). It is used as a policy object, not mounted on the session:
  mounted, urllib3 would sleep inside ``requests`` with ``time.sleep`` -- past our deadlines, deaf to an
  interrupt, outside the rate limit -- and drain error bodies with no deadline. The record loop in ``nim.py``
  does the sleeping instead.
* Redaction: the API key is read with :func:`codon_assets.settings.secret` at each use, never stored. Any
  text from the server or an exception is redacted *before* it is cut to length (so no part of a key that
  straddles the cut survives): the key itself, the value of any ``Authorization`` header line (a proxy may
  echo the request headers back) and the token after any ``Bearer``.
* Deadlines are on the real ``time.monotonic`` clock. ``timeout_s`` bounds each socket read, so a server that
  trickles its body byte by byte would never trip it: each exchange is therefore streamed and read in chunks
  with the deadline checked between them, and no socket read may wait past it. (The response headers are
  read inside http.client, where only the per-read timeout -- capped at what is left -- applies.)
"""

from __future__ import annotations

import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import requests
import urllib3
from urllib3.exceptions import DecodeError, HTTPError, InvalidHeader, ProtocolError, ReadTimeoutError
from urllib3.util import Retry

from codon_assets.settings import secret

NVCF_STATUS_URL = "https://api.nvcf.nvidia.com/v2/nvcf/pexec/status/{request_id}"
RETRY_STATUSES = frozenset({429, *range(500, 600)})
_RETRY_AFTER_CAP_S = 300.0  # our own cap: urllib3's retry_after_max is newer than urllib3 2.3
_CHUNK_BYTES = 1 << 16
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


class Stopped(Exception):
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


class RetryPolicy(Retry):
    """urllib3's retry policy with equal-jitter backoff: the n-th retry waits within [cap/2, cap], where
    cap = min(backoff_max, backoff_factor * 2**(n-1)).

    urllib3's own formula retries the first failure at once and adds a fixed jitter; against an overloaded
    endpoint shared by several workers, equal jitter keeps the exponential growth and spreads the threads.
    """

    def __init__(self, *, rng: random.Random | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rng = rng or random.Random()

    def new(self, **kw: Any) -> RetryPolicy:
        return super().new(rng=self.rng, **kw)  # urllib3 rebuilds from its own parameters: add the generator

    def get_backoff_time(self) -> float:
        cap = min(self.backoff_max, self.backoff_factor * 2 ** (len(self.history) - 1))
        return cap / 2 + self.rng.uniform(0, cap / 2)

    def retry_after(self, headers: Mapping[str, str]) -> float | None:
        """The reply's ``Retry-After`` in seconds (capped), or None when absent or unreadable."""
        value = headers.get("Retry-After")
        try:
            return None if value is None else min(float(self.parse_retry_after(value)), _RETRY_AFTER_CAP_S)
        except InvalidHeader:
            return None


def redact(text: str, api_key_env: str) -> str:
    """``text`` without the API key, any Authorization header value, or any bearer token."""
    key = secret(api_key_env)
    if len(key) >= 4:
        text = text.replace(key, "***")
    return _BEARER.sub(r"\1***", _AUTH_HEADER.sub(r"\1***", text))


def snippet(text: str, limit: int, api_key_env: str) -> str:
    # Redact first: cutting first could split a key and leave a piece that no longer matches.
    return redact(text, api_key_env)[:limit]


class NimTransport:
    """Per-worker ``requests`` sessions and deadline-bound, interruptible HTTP exchanges for one scorer.

    ``sleep`` (tests inject a fake one) paces polling and backoff; None is a real sleep that an interrupt
    cuts short.
    """

    def __init__(self, *, api_key_env: str, timeout_s: float, request_deadline_s: float, record_deadline_s: float,
                 poll_url: str, poll_interval_s: float, max_poll_s: float, clock: Callable[[], float],
                 sleep: Callable[[float], None] | None) -> None:
        if not hasattr(urllib3.HTTPResponse, "read1"):  # fail here, not as an AttributeError on every record
            raise RuntimeError("NimEvo2Scorer needs urllib3 >= 2.3 (HTTPResponse.read1) to enforce its deadlines")
        self.api_key_env, self.timeout_s = api_key_env, timeout_s
        self.request_deadline_s, self.record_deadline_s = request_deadline_s, record_deadline_s
        self.poll_url, self.poll_interval_s, self.max_poll_s = poll_url, poll_interval_s, max_poll_s
        self._clock, self._sleep = clock, sleep
        # requests.Session is not documented as thread-safe: one per worker, reused across calls.
        self._sessions: queue.SimpleQueue[requests.Session] = queue.SimpleQueue()
        self._all_sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def close(self) -> None:
        with self._sessions_lock:
            for s in self._all_sessions:
                s.close()
            self._all_sessions.clear()
            self._sessions = queue.SimpleQueue()

    @contextmanager
    def session(self) -> Iterator[requests.Session]:
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

    def pause(self, seconds: float, stop: threading.Event) -> None:
        """Backoff / poll / rate-limit sleep; raises ``Stopped`` if the batch was interrupted meanwhile."""
        if self._sleep is None:
            stop.wait(seconds)  # a real sleep that an interrupt ends at once
        else:
            self._sleep(seconds)
        if stop.is_set():
            raise Stopped

    def timeout_error(self) -> NimError:
        return NimError("timeout", f"request timed out (read timeout {self.timeout_s:g}s, request deadline "
                                   f"{self.request_deadline_s:g}s, record deadline {self.record_deadline_s:g}s)",
                        retryable=True)

    def poll(self, session: requests.Session, accepted: Mapping[str, str], record_deadline: float,
             stop: threading.Event) -> tuple[int, Mapping[str, str], bytes]:
        """Poll an NVCF 202 until it is no longer 202, within ``max_poll_s`` (never re-submitting the job)."""
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
            self.pause(self.poll_interval_s, stop)
            status, headers, content = self.exchange(session, "GET", url, record_deadline, stop)
        return status, headers, content

    def exchange(self, session: requests.Session, method: str, url: str, record_deadline: float,
                 stop: threading.Event, **kwargs: object) -> tuple[int, Mapping[str, str], bytes]:
        """One HTTP request and its whole body, within ``request_deadline_s`` and the record's deadline."""
        if stop.is_set():
            raise Stopped
        deadline = min(time.monotonic() + self.request_deadline_s, record_deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self.timeout_error()
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
                    raise Stopped
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self.timeout_error()
                sock = getattr(raw.connection, "sock", None)
                if sock is not None:  # no single read may wait past the deadline
                    sock.settimeout(min(self.timeout_s, remaining))
                chunk = raw.read1(_CHUNK_BYTES, decode_content=True)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        except ReadTimeoutError:
            raise self.timeout_error() from None
        except (ProtocolError, DecodeError) as exc:  # short read, reset mid-body, bad gzip
            raise NimError("malformed", f"truncated response body ({type(exc).__name__})", retryable=True) from None
        except (HTTPError, OSError) as exc:
            raise NimError("connection", f"connection error while reading the body ({type(exc).__name__})",
                           retryable=True) from None

    def _headers(self) -> dict[str, str]:
        key = secret(self.api_key_env)
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _transport_error(self, exc: requests.RequestException) -> NimError:
        # Only connecting, sending and reading the headers happen inside requests (the body is _read_body's).
        name = type(exc).__name__
        if isinstance(exc, requests.Timeout):
            return self.timeout_error()
        if isinstance(exc, requests.ConnectionError):
            return NimError("connection", f"connection error ({name})", retryable=True)
        return NimError("connection", f"request failed ({name}): {snippet(str(exc), 200, self.api_key_env)}",
                        retryable=False)
