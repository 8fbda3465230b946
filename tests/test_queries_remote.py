"""The remote query run around the SDK calls: answers UTF-8 cannot write, Ctrl-C, Retry-After.
Fakes stand only at the SDK client: the real request, retry and cache code runs."""

from __future__ import annotations

import _thread
import email.utils
import gc
import json
import signal
import threading
import time

import httpx2
import openai
import pytest
from google.genai import errors as genai_errors
from test_queries import encode, good_answer, items, make_backend, rate_limit_error  # noqa: F401 - items is a fixture

from semid.queries import CACHE_FILE, InvalidAnswer, generate_queries, parse_answer
from semid.queries.cache import AnswerCache


def cached_item_ids(folder) -> set[int]:
    lines = (folder / CACHE_FILE).read_bytes().decode("utf-8").splitlines()  # strict: every byte UTF-8
    return {json.loads(line)["item_id"] for line in lines}


# ------------------------------------------------------------------- answers UTF-8 cannot write


def test_a_lone_surrogate_is_an_invalid_answer_asked_again(items, tmp_path, monkeypatch):
    with pytest.raises(InvalidAnswer, match="bad_unicode"):
        parse_answer('["\\ud800 alone", "fine"]', 2, "Heat")

    def respond(prompt, number):  # the first answer spells a lone surrogate as a JSON escape
        queries = good_answer(prompt)
        if number == 1:
            queries[0] = "\ud800" + queries[0]
        return encode("openai", queries)

    config, backend, fake = make_backend("openai", respond, monkeypatch, concurrency=1)
    run = generate_queries(items.head(3), config, 42, backend, tmp_path)
    assert len(fake.calls) == 4 and not run.failures and run.stats["invalid_bad_unicode"] == 1
    assert cached_item_ids(tmp_path) == set(run.queries)


# ------------------------------------------------------------------------------------- Ctrl-C


def movie_line(items, position: int) -> str:
    return f"Movie: {items['title'].iloc[position]} ("


def interrupt_a_remote_run(items, tmp_path, monkeypatch) -> tuple[set[int], set[int]]:
    """Ctrl-C while item 1's answer is on its way back, item 0 retried meanwhile: the ids answered,
    and those in the cache when the KeyboardInterrupt reaches the caller."""
    stuck, interrupting = movie_line(items, 0), movie_line(items, 1)

    def respond(prompt, number):
        if stuck in prompt:
            return rate_limit_error("openai")  # retried after long backoffs, until cancelled
        if interrupting in prompt:
            _thread.interrupt_main()  # Ctrl-C while this answer is on its way back
        return encode("openai", good_answer(prompt))

    config, backend, fake = make_backend("openai", respond, monkeypatch, concurrency=2, max_retries=3,
                                         retry_base_seconds=5.0, retry_max_seconds=5.0)
    started = time.monotonic()
    # No garbage collection meanwhile: a Ctrl-C that lands while the collector runs an object's
    # __del__ is swallowed by CPython ("Exception ignored"), which after a long test session
    # happened here about once per run of the suite; that is the interpreter, not the runner.
    gc.disable()
    # interrupt_main() calls whatever SIGINT handler is installed: Python's default raises
    # KeyboardInterrupt, a handler an earlier in-process library call left behind may not (this test
    # failed once more in a full-suite run with the collector off, 2026-11-28; cause not proven).
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            generate_queries(items.head(12), config, 42, backend, tmp_path)
    finally:
        if handler is not None:  # None: installed outside Python, nothing to put back
            signal.signal(signal.SIGINT, handler)
        gc.enable()
    assert time.monotonic() - started < 3.0
    cached_on_return = cached_item_ids(tmp_path) if (tmp_path / CACHE_FILE).exists() else set()
    answered = {p for p in (c["messages"][0]["content"] for c in fake.calls) if stuck not in p}
    answered_ids = {int(items["item_id"].iloc[i]) for i in range(12) if movie_line(items, i) in "\n".join(answered)}
    assert int(items["item_id"].iloc[1]) in answered_ids and len(fake.calls) < 12
    return answered_ids, cached_on_return


def join_threads_started_since(before: set[threading.Thread]) -> None:
    """What the interpreter does before the process exits: wait for every non-daemon thread."""
    for thread in set(threading.enumerate()) - before:
        if thread.daemon:  # tqdm's monitor, say: never joined, and never writes an answer
            continue
        thread.join(10)
        assert not thread.is_alive()


def test_ctrl_c_keeps_the_answers_received_and_cancels_retries_at_once(items, tmp_path, monkeypatch):
    before = set(threading.enumerate())
    answered_ids, _ = interrupt_a_remote_run(items, tmp_path, monkeypatch)
    # Joined first: see the window test below, which this run can hit by chance on a loaded machine.
    join_threads_started_since(before)
    assert cached_item_ids(tmp_path) == answered_ids  # every answer received was kept


def delay_the_second_worker_start_and_every_write(monkeypatch) -> None:
    """Hold the main thread in ThreadPoolExecutor's Thread.start of worker 2 until the Ctrl-C lands
    there, and slow the cache write so that it ends after the KeyboardInterrupt has propagated."""
    start, append = threading.Thread.start, AnswerCache.append

    def slow_start(self):
        start(self)
        if self.name.startswith("ThreadPoolExecutor") and self.name.endswith("_1"):
            time.sleep(0.3)  # worker 2 takes item 1, and item 1's answer sends the Ctrl-C

    def slow_append(self, *args):
        time.sleep(0.5)
        append(self, *args)

    monkeypatch.setattr(threading.Thread, "start", slow_start)
    monkeypatch.setattr(AnswerCache, "append", slow_append)


def test_ctrl_c_while_a_worker_thread_starts_still_keeps_its_answer_by_exit(items, tmp_path, monkeypatch):
    # The CI failure of 2026-11-29 (cached set() vs answered {32}), made certain: a Ctrl-C that
    # lands while ThreadPoolExecutor is starting a worker interrupts submit() before the executor
    # records the thread, so shutdown(wait=True) cannot wait for it. The thread is an ordinary
    # non-daemon one, so its answer is still written before the process can exit.
    delay_the_second_worker_start_and_every_write(monkeypatch)
    before = set(threading.enumerate())
    answered_ids, _ = interrupt_a_remote_run(items, tmp_path, monkeypatch)
    join_threads_started_since(before)
    assert cached_item_ids(tmp_path) == answered_ids


@pytest.mark.xfail(strict=True, reason="known gap: ask_missing drains only the workers the executor "
                   "recorded; counting the requests in flight would close it (a change to src/semid/queries, "
                   "deferred so as not to invalidate every grid run's lock)")
def test_ctrl_c_while_a_worker_thread_starts_writes_its_answer_before_propagating(items, tmp_path, monkeypatch):
    delay_the_second_worker_start_and_every_write(monkeypatch)
    before = set(threading.enumerate())
    try:
        answered_ids, cached_on_return = interrupt_a_remote_run(items, tmp_path, monkeypatch)
    finally:
        join_threads_started_since(before)
    assert cached_on_return == answered_ids


# -------------------------------------------------------------------------------- Retry-After


def throttled(backend: str, status: int, headers: dict[str, str], retry_delay: str = "") -> Exception:
    """The SDK's own 429/503 error, carrying the server's response headers (and Gemini's RetryInfo)."""
    response = httpx2.Response(status, headers=headers, request=httpx2.Request("POST", "https://llm.invalid/v1"))
    if backend == "openai":
        error_type = openai.RateLimitError if status == 429 else openai.InternalServerError
        return error_type("slow down", response=response, body=None)
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}] if retry_delay else []
    body = {"error": {"code": status, "message": "slow down", "status": "UNAVAILABLE", "details": details}}
    error_type = genai_errors.ClientError if status < 500 else genai_errors.ServerError
    return error_type(status, body, response)


def in_30_seconds() -> str:
    return email.utils.formatdate(time.time() + 30, usegmt=True)


@pytest.mark.parametrize(
    ("backend", "status", "headers", "retry_delay", "expected"),
    [
        ("openai", 429, {"retry-after": "7"}, "", 7.0),
        ("openai", 503, {"Retry-After": "4"}, "", 4.0),
        ("openai", 429, {"retry-after-ms": "1500"}, "", 1.5),
        ("openai", 429, {"retry-after": "1000"}, "", 60.0),  # capped at queries.retry_max_seconds
        ("openai", 429, {"retry-after": "date"}, "", 30.0),
        ("gemini", 429, {"Retry-After": "9"}, "", 9.0),
        ("gemini", 429, {}, "12s", 12.0),  # Gemini says it in the body: google.rpc.RetryInfo
        ("gemini", 503, {}, "2.5s", 2.5),
    ],
)
def test_retry_after_is_honoured_and_capped(backend, status, headers, retry_delay, expected, items, tmp_path, monkeypatch):
    headers = {k: in_30_seconds() if v == "date" else v for k, v in headers.items()}

    def respond(prompt, number):
        return throttled(backend, status, headers, retry_delay) if number == 1 else encode(backend, good_answer(prompt))

    config, client, fake = make_backend(backend, respond, monkeypatch, concurrency=1, retry_max_seconds=60.0)
    sleeps: list[float] = []
    run = generate_queries(items.head(1), config, 42, client, tmp_path, sleep=sleeps.append)
    assert len(run.queries) == 1 and len(sleeps) == 1
    assert sleeps[0] == pytest.approx(expected, abs=1.5 if headers.get("retry-after", "").endswith("GMT") else 1e-6)
