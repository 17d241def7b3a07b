"""A loopback stand-in for the NVIDIA NIM Evo 2 ``/forward`` endpoint (and NVCF 202 polling), for tests.

It serves a known deterministic "model" so the correct log-probabilities are known exactly: the logits
at position i are ``HIGH`` for the byte token of ``NEXT[base_i]`` and 0 for every other token
(a context-1 chain A->C->G->T->A). Requests can be scripted, per sequence or globally, to fail in the
ways a real endpoint does, or in hostile ways (trickling a body byte by byte, echoing the request headers,
answering 202 forever). Every request is recorded (method, path, headers, JSON body). Stopping the server
ends trickling replies and shuts down every open connection, so no handler outlives a test. A served model
version may be set (``model_version``): every 200 reply then names it, in an ``X-Model-Version`` header or as
a ``"model_version"`` body field (``model_version_in``); by default none is sent, as NVIDIA documents none.
"""

from __future__ import annotations

import base64
import io
import json
import math
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

NEXT = {"A": "C", "C": "G", "G": "T", "T": "A"}
HIGH = 20.0
FORWARD_PATH = "/biology/arc/evo2/forward"
STATUS_PREFIX = "/v2/nvcf/pexec/status/"


def model_logits(sequence: str, vocab: int = 512) -> np.ndarray:
    """[L, V] float32 logits of the stand-in model."""
    logits = np.zeros((len(sequence), vocab), dtype=np.float32)
    for i, base in enumerate(sequence):
        tok = ord(NEXT[base])
        if tok < vocab:
            logits[i, tok] = HIGH
    return logits


def expected_logprobs(sequence: str, vocab: int = 512) -> np.ndarray:
    """Exact log P(base i | base i-1) for i = 1..L-1 under the stand-in model."""
    lse = np.log(np.exp(HIGH) + (vocab - 1))
    return np.array([(HIGH if sequence[i] == NEXT[sequence[i - 1]] else 0.0) - lse
                     for i in range(1, len(sequence))], dtype=np.float64)


@dataclass
class Step:
    """One scripted reply. kind: ok | status | slow | bad_json | bad_base64 | bad_npz | missing_layer |
    truncated | small_vocab | accepted | echo_auth | trickle | echo_headers | accepted_forever."""

    kind: str
    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0  # slow: before answering; trickle: before each byte of the body
    polls: int = 0  # accepted: status GETs answered 202 before the result
    body: bytes | None = None  # status: the error body (default: a JSON "detail")


def fail(status: int, retry_after: str | None = None, body: bytes | None = None) -> Step:
    return Step("status", status=status, retry_after=retry_after, body=body)


def slow(delay_s: float) -> Step:
    return Step("slow", delay_s=delay_s)


def malformed(kind: str) -> Step:
    return Step(kind)


def accepted(polls: int) -> Step:
    return Step("accepted", polls=polls)


def trickle(byte_delay_s: float = 0.01) -> Step:
    """A valid 200 whose body (tens of kB) arrives one byte per ``byte_delay_s``: minutes in all."""
    return Step("trickle", delay_s=byte_delay_s)


def echo_headers(status: int = 400) -> Step:
    """An error whose body lists every request header line, Authorization included."""
    return Step("echo_headers", status=status)


def accepted_forever() -> Step:
    """202 with an NVCF-REQID, and 202 to every status poll of that id."""
    return Step("accepted_forever")


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict | None = None

    @property
    def sequence(self) -> str | None:
        return (self.body or {}).get("sequence")


@dataclass
class NimStandin:
    """``with NimStandin(api_key=...) as nim:`` -> serves on ``nim.url`` (127.0.0.1, ephemeral port)."""

    api_key: str | None = "test-key"
    layer: str = "output_layer"
    key_suffix: str = ".output"  # NPZ array name = layer + key_suffix, as NIM names it
    layout: str = "L1V"  # "L1V" (documented [seq_len, batch, vocab]) | "1LV" | "LV"
    vocab: int = 512
    latency: Callable[[str], float] | None = None  # per-sequence delay before answering
    model_version: str | None = None  # named in every 200 reply when set (may be changed while serving)
    model_version_in: str = "header"  # "header" (X-Model-Version) | "body" (JSON field "model_version")
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str | None, deque[Step]] = {}
        self._pending: dict[str, list] = {}  # request id -> [sequence, 202s still to give]
        self._server: ThreadingHTTPServer | None = None
        self._closing = threading.Event()  # ends sleeping and trickling handlers
        self._conns: set[socket.socket] = set()  # open client connections, shut down on stop

    # ---------------------------------------------------------------- control

    def script(self, *steps: Step, sequence: str | None = None) -> None:
        """Queue replies for the next requests of ``sequence`` (or of any sequence when None)."""
        with self._lock:
            self._scripts.setdefault(sequence, deque()).extend(steps)

    def count(self, method: str = "POST", sequence: str | None = None) -> int:
        with self._lock:
            return sum(r.method == method and (sequence is None or r.sequence == sequence) for r in self.requests)

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def poll_url(self) -> str:
        return self.url + STATUS_PREFIX + "{request_id}"

    def __enter__(self) -> NimStandin:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True  # a handler sleeping past a client timeout must not block stop
        # a short poll interval keeps shutdown (and so every test) quick
        threading.Thread(target=self._server.serve_forever, args=(0.02,), name="nim-standin", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._closing.set()
        self._server.shutdown()
        # Idle keep-alive handlers block reading the next request: shutting their sockets ends them.
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by the client
                pass
        self._server.server_close()

    # ---------------------------------------------------------------- behaviour

    def _next_step(self, sequence: str) -> Step:
        with self._lock:
            for key in (sequence, None):
                q = self._scripts.get(key)
                if q:
                    return q.popleft()
        return Step("ok")

    def _npz(self, sequence: str, *, vocab: int | None = None, name: str | None = None) -> bytes:
        logits = model_logits(sequence, vocab or self.vocab)
        arr = {"L1V": logits[:, None, :], "1LV": logits[None], "LV": logits}[self.layout]
        buf = io.BytesIO()
        np.savez(buf, **{name or (self.layer + self.key_suffix): arr})
        return buf.getvalue()

    def _ok_body(self, sequence: str, **kw) -> bytes:
        payload = {"data": base64.b64encode(self._npz(sequence, **kw)).decode(), "elapsed_ms": 1}
        if self.model_version is not None and self.model_version_in == "body":
            payload["model_version"] = self.model_version
        return json.dumps(payload).encode()


def _make_handler(nim: NimStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real service

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def setup(self) -> None:
            super().setup()
            with nim._lock:
                nim._conns.add(self.connection)

        def finish(self) -> None:
            with nim._lock:
                nim._conns.discard(self.connection)
            super().finish()

        def _record(self, body: dict | None) -> None:
            with nim._lock:
                nim.requests.append(Recorded(self.command, self.path, dict(self.headers.items()), body))

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                  content_length: int | None = None, byte_delay_s: float = 0.0) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if status == 200 and nim.model_version is not None and nim.model_version_in == "header":
                    self.send_header("X-Model-Version", nim.model_version)
                self.end_headers()
                if byte_delay_s <= 0:
                    self.wfile.write(body)
                else:
                    for i in range(len(body)):
                        if nim._closing.wait(byte_delay_s):
                            self.close_connection = True  # the body stays incomplete: never reuse it
                            break
                        self.wfile.write(body[i:i + 1])
                self.wfile.flush()
            except OSError:  # BrokenPipe / ConnectionReset: the client gave up and closed the socket
                self.close_connection = True

        def _authorised(self) -> bool:
            if nim.api_key is None or self.headers.get("Authorization") == f"Bearer {nim.api_key}":
                return True
            self._send(401, b'{"detail": "Unauthorized"}')
            return False

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            self._record(body)
            if self.path != FORWARD_PATH:
                return self._send(404, b'{"detail": "Not Found"}')
            if not self._authorised():
                return None
            seq = (body or {}).get("sequence")
            layers = (body or {}).get("output_layers")
            if not isinstance(seq, str) or not seq or not isinstance(layers, list) or not layers:
                return self._send(422, b'{"detail": "sequence and output_layers are required"}')
            if nim.layer not in layers:
                return self._send(422, json.dumps({"detail": f"no layer {layers!r}"}).encode())
            if nim.latency:
                time.sleep(nim.latency(seq))
            step = nim._next_step(seq)
            k = step.kind
            if k == "ok":
                return self._send(200, nim._ok_body(seq))
            if k == "status":
                extra = {"Retry-After": step.retry_after} if step.retry_after else {}
                body = step.body
                if body is None:
                    body = json.dumps({"detail": f"scripted {step.status}"}).encode()
                return self._send(step.status, body, extra)
            if k == "slow":
                nim._closing.wait(step.delay_s)
                return self._send(200, nim._ok_body(seq))
            if k == "trickle":
                return self._send(200, nim._ok_body(seq), byte_delay_s=step.delay_s)
            if k == "echo_headers":
                lines = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
                return self._send(step.status, f"rejected; your request headers were:\r\n{lines}".encode())
            if k == "bad_json":
                return self._send(200, nim._ok_body(seq)[:40])
            if k == "bad_base64":
                return self._send(200, b'{"data": "@@not*base64@@", "elapsed_ms": 1}')
            if k == "bad_npz":
                return self._send(200, json.dumps({"data": base64.b64encode(b"not an npz at all").decode()}).encode())
            if k == "missing_layer":
                return self._send(200, nim._ok_body(seq, name="some_other_layer.output"))
            if k == "small_vocab":
                return self._send(200, nim._ok_body(seq, vocab=64))
            if k == "truncated":  # promise the whole body, send half, hang up
                full = nim._ok_body(seq)
                self.close_connection = True
                return self._send(200, full[: len(full) // 2], content_length=len(full))
            if k == "echo_auth":  # a misbehaving proxy that echoes request headers into an error body
                echoed = self.headers.get("Authorization")
                return self._send(400, json.dumps({"detail": f"bad request; got {echoed}"}).encode())
            if k in ("accepted", "accepted_forever"):
                req_id = str(uuid.uuid4())
                with nim._lock:
                    nim._pending[req_id] = [seq, math.inf if k == "accepted_forever" else step.polls]
                return self._send(202, b"", {"NVCF-REQID": req_id, "NVCF-STATUS": "pending-evaluation"})
            raise AssertionError(f"unknown step {k!r}")

        def do_GET(self) -> None:
            self._record(None)
            if not self.path.startswith(STATUS_PREFIX):
                return self._send(404, b'{"detail": "Not Found"}')
            if not self._authorised():
                return None
            req_id = self.path[len(STATUS_PREFIX):]
            with nim._lock:
                pending = nim._pending.get(req_id)
                if pending is not None and pending[1] > 0:
                    pending[1] -= 1
                    still = True
                else:
                    still = False
                    nim._pending.pop(req_id, None)
            if pending is None:
                return self._send(404, b'{"detail": "unknown request id"}')
            if still:
                return self._send(202, b"", {"NVCF-REQID": req_id, "NVCF-STATUS": "in-progress"})
            return self._send(200, nim._ok_body(pending[0]))

    return Handler
