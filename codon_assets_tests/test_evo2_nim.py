"""NimEvo2Scorer against the loopback NIM stand-in: scoring, alignment, retries, polling, rate limit, secrecy,
deadlines against hostile servers, and interrupts."""

from __future__ import annotations

import _thread
import logging
import random
import threading
import time

import numpy as np
import pytest
import requests

from codon_assets_tests.nim_standin import (
    STATUS_PREFIX,
    NimStandin,
    Step,
    accepted,
    accepted_forever,
    echo_headers,
    expected_logprobs,
    fail,
    malformed,
    slow,
    trickle,
)
from resources.evo2.nim import NimError, NimEvo2Scorer, TokenBucket
from codon_assets.core.features import TokenLogprobScorer

ENV = "CODON_TEST_NIM_KEY"
KEY = "nvapi-MARKER-7f3c9e1d-DO-NOT-LEAK"
CHAIN = "ACGTACGTACGTACGTACGT"  # follows the stand-in model's A->C->G->T->A chain


class FakeClock:
    """clock() and sleep() for the client: sleeping advances time instantly and is recorded."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.t += seconds


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(ENV, KEY)


@pytest.fixture
def nim():
    with NimStandin(api_key=KEY) as server:
        yield server


@pytest.fixture
def clock():
    return FakeClock()


def make_client(nim: NimStandin, clock: FakeClock, **kw) -> NimEvo2Scorer:
    args = dict(api_key_env=ENV, requests_per_minute=None, max_concurrency=4, timeout_s=5.0, max_attempts=3,
                backoff_base_s=0.5, backoff_max_s=4.0, poll_url=nim.poll_url, poll_interval_s=0.5, max_poll_s=10.0,
                sleep=clock.sleep, clock=clock, rng=random.Random(0))
    args.update(kw)
    return NimEvo2Scorer(nim.url, **args)


def key_pieces_in(text: str, min_len: int = 6) -> list[str]:
    """Every piece of KEY at least ``min_len`` long that occurs in ``text``."""
    return [KEY[i:j] for i in range(len(KEY)) for j in range(i + min_len, len(KEY) + 1) if KEY[i:j] in text]


def wait_until(condition, within_s: float) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def mutate(seq: str, k: int) -> str:
    wrong = next(b for b in "ACGT" if b != seq[k])
    return seq[:k] + wrong + seq[k + 1:]


# ---------------------------------------------------------------------------- scoring and alignment


@pytest.mark.parametrize("layout", ["L1V", "1LV", "LV"])
def test_logprobs_follow_the_model_and_align_to_bases(layout, clock):
    k = 7
    mutated, last_mutated = mutate(CHAIN, k), mutate(CHAIN, len(CHAIN) - 1)
    with NimStandin(api_key=KEY, layout=layout) as nim, make_client(nim, clock) as client:
        chain_lp, mut_lp, last_lp = client.logprobs([CHAIN, mutated, last_mutated])

    assert chain_lp.dtype == np.float64 and chain_lp.shape == (len(CHAIN) - 1,)
    assert np.all(chain_lp > -1e-5) and np.all(chain_lp <= 0)  # ~0: every base is the predicted one
    np.testing.assert_allclose(mut_lp, expected_logprobs(mutated), rtol=0, atol=1e-9)
    # entry j scores base j+1: the mutated base k is mispredicted, and so is base k+1 (its context changed)
    low = {j + 1 for j in np.flatnonzero(mut_lp < -10)}
    assert low == {k, k + 1}
    assert mut_lp[k - 1] == pytest.approx(-np.log(np.exp(20.0) + 511), abs=1e-9)
    # mutating the last base leaves exactly one low score, on that base
    assert [j + 1 for j in np.flatnonzero(last_lp < -10)] == [len(CHAIN) - 1]
    # the request body is exactly what NIM documents
    assert nim.requests[0].body == {"sequence": nim.requests[0].sequence, "output_layers": ["output_layer"]}
    assert nim.requests[0].headers["Authorization"] == f"Bearer {KEY}"


def test_scorer_fits_the_interface(nim, clock):
    client: TokenLogprobScorer = make_client(nim, clock)
    assert client.backend == "nim" and client.model_version == "nim:evo2-40b"


def test_order_preserved_over_many_records_with_concurrency(clock):
    rng = random.Random(42)
    seqs = ["".join(rng.choice("ACGT") for _ in range(rng.randint(2, 80))) for _ in range(40)]
    seqs[5], seqs[17], seqs[23] = "", "A", "ACGN"  # no scorable position / bad alphabet
    # longer sequences answer faster, so completion order differs from input order
    with NimStandin(api_key=KEY, latency=lambda s: (80 - len(s)) / 80 * 0.02) as nim, \
            make_client(nim, clock, max_concurrency=8) as client:
        results = client.logprobs(seqs)

    assert len(results) == len(seqs)
    for i, (seq, res) in enumerate(zip(seqs, results)):
        if i == 23:
            assert isinstance(res, NimError) and res.kind == "input"
        else:
            assert isinstance(res, np.ndarray), (i, res)
            np.testing.assert_allclose(res, expected_logprobs(seq) if len(seq) > 1 else np.empty(0), atol=1e-9)
    assert nim.count("POST") == 37  # nothing sent for the empty, 1-base and invalid records


def test_vocabulary_too_small_fails_that_record_only(nim, clock):
    bad = "ACGTTGCA"
    nim.script(malformed("small_vocab"), sequence=bad)
    with make_client(nim, clock) as client:
        ok, err = client.logprobs([CHAIN, bad])
    assert isinstance(ok, np.ndarray)
    assert isinstance(err, NimError) and err.kind == "layout" and "85" in str(err)
    assert nim.count("POST", bad) == 1  # deterministic: not retried


# ---------------------------------------------------------------------------- retries


def test_429_then_success_honours_retry_after(nim, clock):
    nim.script(fail(429, retry_after="2"), sequence=CHAIN)
    with make_client(nim, clock) as client:
        (res,) = client.logprobs([CHAIN])
    np.testing.assert_allclose(res, expected_logprobs(CHAIN), atol=1e-9)
    assert nim.count("POST", CHAIN) == 2
    assert clock.sleeps == [2.0]


def test_5xx_beyond_budget_fails_only_that_record(nim, clock):
    bad = "TTTTACGT"
    nim.script(*[fail(500)] * 5, sequence=bad)
    with make_client(nim, clock, max_attempts=3) as client:
        good1, err, good2 = client.logprobs([CHAIN, bad, "GATTACA"])
    assert isinstance(good1, np.ndarray) and isinstance(good2, np.ndarray)
    assert isinstance(err, NimError) and err.status == 500 and err.attempts == 3
    assert "HTTP 500" in str(err) and "3 attempt" in str(err)
    assert nim.count("POST", bad) == 3
    # exponential backoff with jitter: attempt n waits within [cap/2, cap], cap = 0.5 * 2**(n-1)
    assert len(clock.sleeps) == 2
    assert 0.25 <= clock.sleeps[0] <= 0.5 and 0.5 <= clock.sleeps[1] <= 1.0


def test_503_recovers_within_budget(nim, clock):
    nim.script(fail(503), fail(502), sequence=CHAIN)
    with make_client(nim, clock, max_attempts=3) as client:
        (res,) = client.logprobs([CHAIN])
    assert isinstance(res, np.ndarray) and nim.count("POST") == 3


@pytest.mark.parametrize("status", [400, 404, 422])
def test_other_4xx_are_not_retried(nim, clock, status):
    nim.script(fail(status), sequence=CHAIN)
    with make_client(nim, clock) as client:
        (err,) = client.logprobs([CHAIN])
    assert isinstance(err, NimError) and err.status == status and err.attempts == 1
    assert nim.count("POST") == 1 and clock.sleeps == []


def test_wrong_key_is_401_without_retry(nim, clock, monkeypatch):
    monkeypatch.setenv(ENV, "nvapi-some-other-key")
    with make_client(nim, clock) as client:
        (err,) = client.logprobs([CHAIN])
    assert isinstance(err, NimError) and err.status == 401 and ENV in str(err)
    assert nim.count("POST") == 1


def test_timeout_is_retried_then_reported(nim, clock):
    nim.script(slow(1.0), slow(1.0), sequence=CHAIN)
    nim.script(slow(1.0), sequence="GATTACA")
    with make_client(nim, clock, timeout_s=0.25, max_attempts=2) as client:
        err, recovered = client.logprobs([CHAIN, "GATTACA"])
    assert isinstance(err, NimError) and err.kind == "timeout" and "timed out" in str(err)
    assert nim.count("POST", CHAIN) == 2
    np.testing.assert_allclose(recovered, expected_logprobs("GATTACA"), atol=1e-9)
    assert nim.count("POST", "GATTACA") == 2


def test_connection_refused_is_retried_then_reported(clock):
    with NimStandin(api_key=KEY) as nim:
        url = nim.url
    client = NimEvo2Scorer(url, api_key_env=ENV, requests_per_minute=None, max_attempts=2, timeout_s=1,
                           sleep=clock.sleep, clock=clock)
    (err,) = client.logprobs([CHAIN])
    assert isinstance(err, NimError) and err.kind == "connection" and err.attempts == 2


@pytest.mark.parametrize("kind", ["bad_json", "bad_base64", "bad_npz", "missing_layer", "truncated"])
def test_malformed_body_retried_once_then_fails(nim, clock, kind):
    nim.script(malformed(kind), malformed(kind), sequence=CHAIN)
    nim.script(malformed(kind), sequence="GATTACA")
    with make_client(nim, clock, max_attempts=5) as client:
        err, recovered = client.logprobs([CHAIN, "GATTACA"])
    assert isinstance(err, NimError) and err.kind == "malformed", err
    assert nim.count("POST", CHAIN) == 2  # one retry, then give up even though the budget is 5
    np.testing.assert_allclose(recovered, expected_logprobs("GATTACA"), atol=1e-9)
    if kind == "missing_layer":
        assert "output_layer" in str(err)


# ---------------------------------------------------------------------------- 202 polling


def test_202_is_polled_until_the_result(nim, clock):
    nim.script(accepted(polls=2), sequence=CHAIN)
    with make_client(nim, clock) as client:
        (res,) = client.logprobs([CHAIN])
    np.testing.assert_allclose(res, expected_logprobs(CHAIN), atol=1e-9)
    gets = [r for r in nim.requests if r.method == "GET"]
    assert nim.count("POST") == 1 and len(gets) == 3  # 202, 202, 200
    assert all(r.path.startswith(STATUS_PREFIX) and r.headers["Authorization"] == f"Bearer {KEY}" for r in gets)
    assert clock.sleeps == [0.5, 0.5, 0.5]


def test_polling_gives_up_after_max_poll(nim, clock):
    nim.script(accepted(polls=1000), sequence=CHAIN)
    with make_client(nim, clock, max_poll_s=2.0) as client:
        (err,) = client.logprobs([CHAIN])
    assert isinstance(err, NimError) and err.kind == "poll_timeout"
    assert nim.count("POST") == 1 and nim.count("GET") == 4  # not re-submitted


# ---------------------------------------------------------------------------- rate limit


def test_rate_limit_spaces_requests(nim, clock):
    with make_client(nim, clock, requests_per_minute=6, max_concurrency=1) as client:
        results = client.logprobs([CHAIN, "GATTACA", "ACGT", "TTGCA"])
    assert all(isinstance(r, np.ndarray) for r in results)
    assert clock.sleeps == pytest.approx([10.0, 10.0, 10.0])  # 6/min -> one every 10 s, first one free


def test_token_bucket_is_shared_across_threads():
    waits: list[float] = []
    bucket = TokenBucket(60, burst=2, clock=lambda: 0.0, sleep=lambda s: None)  # time frozen
    threads = [threading.Thread(target=lambda: waits.append(bucket.acquire())) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == pytest.approx([0, 0, 1, 2, 3, 4])  # burst of 2, then 1 s apart


# ---------------------------------------------------------------------------- the key stays secret


def test_api_key_never_leaks(nim, clock, caplog):
    caplog.set_level(logging.DEBUG)
    nim.script(Step("echo_auth"), sequence="AAAA")
    nim.script(*[fail(500)] * 3, sequence="CCCC")
    nim.script(slow(1.0), slow(1.0), sequence="GGGG")
    nim.script(malformed("bad_json"), malformed("bad_json"), sequence="TTTT")
    with make_client(nim, clock, timeout_s=0.25, max_attempts=2) as client:
        results = client.logprobs(["AAAA", "CCCC", "GGGG", "TTTT", CHAIN])
        errors = [r for r in results if isinstance(r, Exception)]
        assert len(errors) == 4
        assert nim.requests[0].headers["Authorization"] == f"Bearer {KEY}"  # it was really sent
        texts = [repr(client), str(client), repr(vars(client)), caplog.text]
        for e in errors:
            texts += [str(e), repr(e), str(e.__cause__), repr(e.__cause__)]
    assert "***" in str(results[0])  # the echoed header was redacted
    for text in texts:
        assert KEY not in text


@pytest.fixture(scope="module")
def shared_nim():
    with NimStandin(api_key=KEY) as server:
        yield server


@pytest.mark.parametrize("offset", range(150, 251))
def test_key_straddling_the_snippet_cut_never_leaks(shared_nim, clock, caplog, offset):
    # The message keeps 200 characters of the body: the key sits before, across and after that cut.
    caplog.set_level(logging.DEBUG)
    status, attempts = (400, 1) if offset % 2 else (503, 2)  # not retried / retried (its warning is logged too)
    body = b"x" * offset + KEY.encode() + b"y" * 80
    shared_nim.script(*[fail(status, body=body)] * attempts, sequence=CHAIN)
    with make_client(shared_nim, clock, max_attempts=2) as client:
        (err,) = client.logprobs([CHAIN])
    assert isinstance(err, NimError) and err.status == status
    assert err.attempts == attempts and "xxxx" in str(err)
    for text in (str(err), repr(err), str(err.__cause__), repr([err]), caplog.text):
        assert key_pieces_in(text) == []
    if offset < 200 - len("***"):  # the whole marker fits within the cut
        assert "***" in str(err)


@pytest.mark.parametrize("status", [401, 503])
def test_echoed_request_headers_are_redacted(nim, clock, caplog, status):
    caplog.set_level(logging.DEBUG)
    nim.script(echo_headers(status), echo_headers(status), sequence=CHAIN)
    with make_client(nim, clock, max_attempts=2) as client:
        (err,) = client.logprobs([CHAIN])
    assert isinstance(err, NimError) and err.status == status
    assert nim.requests[0].headers["Authorization"] == f"Bearer {KEY}"  # it was sent, and echoed
    assert "request headers were" in str(err)
    for text in (str(err), repr(err), str(err.__cause__), caplog.text):
        assert key_pieces_in(text) == []


def test_bearer_tokens_and_authorization_values_are_redacted_generically(nim, clock):
    # Not our key (a proxy's, or a stale one): still never repeated.
    body = b'{"detail": "token Bearer nvapi-someone-elses-token rejected", "authorization": "Basic dXNlcjpwdw=="}'
    nim.script(fail(401, body=body), sequence=CHAIN)
    with make_client(nim, clock) as client:
        (err,) = client.logprobs([CHAIN])
    assert isinstance(err, NimError) and err.status == 401
    assert "Bearer ***" in str(err) and "rejected" in str(err)
    assert "someone-elses" not in str(err) and "dXNlcjpwdw" not in str(err)


# ---------------------------------------------------------------------------- deadlines against hostile servers


def test_trickled_body_is_cut_off_at_the_request_deadline(nim, clock):
    # One byte per 10 ms: each socket read is fast, so only an overall deadline stops it (~9 minutes of body).
    nim.script(trickle(0.01), sequence=CHAIN)
    start = time.monotonic()
    with make_client(nim, clock, timeout_s=5.0, request_deadline_s=1.0, max_attempts=1) as client:
        err, ok = client.logprobs([CHAIN, "GATTACA"])
    elapsed = time.monotonic() - start
    assert isinstance(err, NimError) and err.kind == "timeout" and "timed out" in str(err)
    assert isinstance(err.__cause__, NimError) and err.__cause__.retryable
    np.testing.assert_allclose(ok, expected_logprobs("GATTACA"), atol=1e-9)
    assert 0.9 <= elapsed < 5.0
    # the client hung up, so the trickling handler stopped (the server is still running)
    assert wait_until(lambda: not nim._conns, within_s=2.0)


def test_record_deadline_bounds_retries_of_a_slow_server(nim, clock):
    # 20 attempts x 0.5 s would hold the record 10 s; the record deadline of 1.5 s ends it after 2-3 attempts
    # (no retry is made whose backoff would end past it).
    nim.script(*[trickle(0.01)] * 20, sequence=CHAIN)
    start = time.monotonic()
    with make_client(nim, clock, request_deadline_s=0.5, record_deadline_s=1.5, max_attempts=20) as client:
        (err,) = client.logprobs([CHAIN])
    elapsed = time.monotonic() - start
    assert isinstance(err, NimError) and err.kind == "timeout"
    assert "record deadline of 1.5s reached" in str(err)
    assert 2 <= err.attempts <= 4 and nim.count("POST", CHAIN) <= err.attempts
    assert 0.9 <= elapsed < 5.0


def test_202_forever_stops_at_max_poll_without_resubmitting(nim, clock):
    nim.script(accepted_forever(), sequence=CHAIN)
    with make_client(nim, clock, max_poll_s=2.0) as client:
        (err,) = client.logprobs([CHAIN])
    assert isinstance(err, NimError) and err.kind == "poll_timeout"
    assert nim.count("POST") == 1 and nim.count("GET") == 4


def test_202_forever_stops_at_the_record_deadline_in_real_time(nim):
    # Real sleeps and clock: a poll window of 10 minutes, cut by a record deadline of 1 s.
    nim.script(accepted_forever(), sequence=CHAIN)
    start = time.monotonic()
    with NimEvo2Scorer(nim.url, api_key_env=ENV, requests_per_minute=None, timeout_s=5.0, poll_url=nim.poll_url,
                       poll_interval_s=0.05, max_poll_s=600.0, record_deadline_s=1.0) as client:
        (err,) = client.logprobs([CHAIN])
    elapsed = time.monotonic() - start
    assert isinstance(err, NimError) and err.kind == "timeout"
    assert nim.count("POST") == 1 and nim.count("GET") >= 5
    assert 0.9 <= elapsed < 5.0


# ---------------------------------------------------------------------------- interrupts


def nim_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("nim-evo2")]


def test_interrupt_stops_the_batch_and_its_workers_promptly(nim, clock):
    nim.script(*[trickle(0.01)] * 6)  # every record trickles for tens of seconds
    timer = threading.Timer(1.0, _thread.interrupt_main)  # Ctrl-C, delivered to this (the main) thread
    start = time.monotonic()
    with make_client(nim, clock, request_deadline_s=60.0, max_concurrency=3) as client:
        try:
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                client.logprobs([CHAIN, "GATTACA", "ACGTTGCA", "TTGCA", "CCGGA", "AAACG"])
        finally:
            timer.cancel()
            timer.join()
        interrupted_after = time.monotonic() - start
    assert interrupted_after < 3.0
    assert wait_until(lambda: not nim_workers(), within_s=3.0), nim_workers()
    assert nim.count("POST") == 3  # the records still queued were cancelled, never sent


def test_standin_stops_promptly_while_trickling_to_a_stalled_client():
    nim = NimStandin(api_key=KEY)
    with nim:
        nim.script(trickle(0.01))
        resp = requests.post(nim.url + "/biology/arc/evo2/forward", json={"sequence": CHAIN, "output_layers":
                             ["output_layer"]}, headers={"Authorization": f"Bearer {KEY}"}, stream=True, timeout=5)
        assert resp.status_code == 200  # headers in, body trickling, and the client reads none of it
        start = time.monotonic()
    try:
        assert time.monotonic() - start < 2.0
        assert wait_until(lambda: not nim._conns, within_s=2.0)  # every handler ended and let go of its socket
    finally:
        resp.close()
