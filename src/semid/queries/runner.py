"""A generation run: every item's queries, through the template backend directly or a remote
one (cache first, then the missing items asked in a thread pool, with retries); failures counted."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pandas as pd

from semid.io import progress
from semid.queries.answers import parse_answer
from semid.queries.backends import create_backend
from semid.queries.cache import CACHE_FILE, AnswerCache
from semid.queries.errors import InvalidAnswer, QueryGenerationError
from semid.queries.prompt import ItemInfo, build_prompt, items_from_frame, prompt_hash
from semid.queries.remote import RemoteBackend
from semid.queries.retries import classify_error, retry_delay

if TYPE_CHECKING:
    from semid.config import QueriesConfig

logger = logging.getLogger(__name__)


@dataclass
class ItemOutcome:
    item_id: int
    queries: list[str] | None
    events: Counter = field(default_factory=Counter)  # retries and invalid answers by reason
    error: str = ""
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    from_cache: bool = False  # another run answered it while this one waited
    held_elsewhere: bool = False  # another run is asking for it: not done, try later


@dataclass
class QueryRun:
    """Per-item generated lists (original order), failures, and counts."""

    queries: dict[int, list[str]]
    failures: list[tuple[int, str]]
    stats: dict[str, Any]
    backend: str
    model: str


def ask_item(
    backend: RemoteBackend, item: ItemInfo, prompt: str, config: QueriesConfig,
    sleep: Callable[[float], Any], rng: random.Random, stop: threading.Event,
) -> ItemOutcome:
    """Ask for one item until a valid answer, max_retries retries or ``stop``; fatal errors raise."""
    outcome = ItemOutcome(item.item_id, None)
    for attempt in range(config.max_retries + 1):
        if stop.is_set():
            outcome.error = outcome.error or "interrupted"
            break
        outcome.requests += 1
        try:
            reply = backend.request(prompt, config.n_generated)
        except Exception as error:  # noqa: BLE001 - classified below; BaseException (Ctrl-C) passes
            kind = classify_error(error)
            message = backend.redact(f"{type(error).__name__}: {error}")[:300]
            if kind == "fatal":
                key = f"the key in {backend.key_source}" if backend.key_source else "queries.api_key_env (no key sent)"
                raise QueryGenerationError(
                    f"{backend.name} refused the request ({message}); check {key}, "
                    f"the model name queries.model={config.model!r} and queries.base_url"
                ) from None
            outcome.events["transient_error" if kind == "transient" else "request_error"] += 1
            outcome.error = message
            if kind == "item":
                return outcome
            if attempt < config.max_retries:
                sleep(retry_delay(error, attempt, config, rng))
            continue
        outcome.input_tokens += reply.input_tokens
        outcome.output_tokens += reply.output_tokens
        try:
            outcome.queries = parse_answer(reply.text, config.n_generated, item.title)
            return outcome
        except InvalidAnswer as invalid:
            outcome.events[f"invalid_{invalid.reason}"] += 1
            outcome.error = str(invalid)[:300]
    return outcome


def answer_item(
    cache: AnswerCache, backend: RemoteBackend, item: ItemInfo, prompt: str, hash_: str, config: QueriesConfig,
    sleep: Callable[[float], Any], rng: random.Random, stop: threading.Event, wait: bool,
) -> ItemOutcome:
    """One item under its claim: the answer another run wrote meanwhile, else ask and write it.

    The answer is written before the claim is let go, so a run waiting for the item finds it.
    """
    key = (item.item_id, backend.model, hash_)
    try:
        with cache.claim(key, wait, stop) as claimed:
            if not claimed:
                return ItemOutcome(item.item_id, None, held_elsewhere=True)
            cache.refresh()
            cached = cache.get(*key)
            if cached is not None and len(cached) == config.n_generated:
                return ItemOutcome(item.item_id, cached, from_cache=True)
            outcome = ask_item(backend, item, prompt, config, sleep, rng, stop)
            if outcome.queries is not None:
                cache.append(item.item_id, backend.name, backend.model, hash_, outcome.queries)
            return outcome
    except BaseException:
        stop.set()  # a fatal error (a bad key fails every item) ends the run: no other request starts
        raise


def ask_missing(
    todo: list[tuple[ItemInfo, str, str]], cache: AnswerCache, backend: RemoteBackend, config: QueriesConfig,
    seed: int, sleep: Callable[[float], Any] | None,
) -> Iterator[ItemOutcome]:
    """Outcomes for each (item, prompt, prompt hash) of todo, as they complete.

    An item another run is asking for goes to the back of the queue, then is waited for. On
    Ctrl-C (or a fatal error) no request or retry starts any more; the requests in flight end
    and their answers are written before it propagates (a second Ctrl-C abandons them).
    """
    stop = threading.Event()
    sleep = sleep or stop.wait  # a backoff ends at once on stop
    rng = random.Random(seed)
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=config.concurrency)

    def submit(entry: tuple[ItemInfo, str, str], wait: bool) -> concurrent.futures.Future:
        return executor.submit(answer_item, cache, backend, *entry, config, sleep, rng, stop, wait)

    pending: dict[concurrent.futures.Future, tuple[ItemInfo, str, str]] = {}
    try:
        # Submitting inside the try: workers start on the first items while later ones are still
        # being queued, so a Ctrl-C can land here too, and must still stop and drain them.
        for entry in todo:
            pending[submit(entry, wait=False)] = entry
        while pending:
            # With a timeout: a Ctrl-C is seen even while no answer comes.
            done, _ = concurrent.futures.wait(pending, 0.5, concurrent.futures.FIRST_COMPLETED)
            for future in done:
                entry = pending.pop(future)
                outcome = future.result()  # a fatal error propagates from here
                if outcome.held_elsewhere:
                    pending[submit(entry, wait=True)] = entry
                else:
                    yield outcome
    finally:
        stop.set()
        executor.shutdown(wait=True, cancel_futures=True)


def generate_queries(
    items: pd.DataFrame | list[ItemInfo], config: QueriesConfig, seed: int, backend: Any | None = None,
    cache_dir: Path | None = None, sleep: Callable[[float], Any] | None = None,
) -> QueryRun:
    """Queries for every item: the template backend directly, a remote one through the cache.

    ``sleep`` replaces the wait between retries (by default one that Ctrl-C cuts short).
    """
    started = time.perf_counter()
    infos = items_from_frame(items) if isinstance(items, pd.DataFrame) else list(items)
    backend = backend or create_backend(config, seed)
    events: Counter = Counter()
    queries: dict[int, list[str]] = {}
    failures: list[tuple[int, str]] = []
    stats: dict[str, Any] = {"items": len(infos), "requests": 0, "cached_items": 0, "asked_items": 0,
                             "input_tokens": 0, "output_tokens": 0}

    if not backend.remote:
        for item in progress(infos, desc="template queries", unit="item"):
            try:
                generated, rejected = backend.generate(item, config.n_generated)
            except InvalidAnswer as invalid:
                events[f"invalid_{invalid.reason}"] += 1
                failures.append((item.item_id, str(invalid)))
                continue
            events.update(rejected)
            queries[item.item_id] = generated
    else:
        if cache_dir is None:
            raise QueryGenerationError("a remote backend needs a cache folder (queries.cache_dir)")
        cache = AnswerCache(cache_dir)
        try:
            todo = []
            for item in infos:
                prompt = build_prompt(item, config.n_generated)
                hash_ = prompt_hash(prompt)
                cached = cache.get(item.item_id, backend.model, hash_)
                if cached is not None and len(cached) == config.n_generated:
                    queries[item.item_id] = cached
                else:
                    todo.append((item, prompt, hash_))
            cached_at_start = len(queries)
            logger.info("%s/%s: %d items cached, %d to ask", backend.name, backend.model, cached_at_start, len(todo))
            answered_elsewhere = 0
            with (
                contextlib.closing(ask_missing(todo, cache, backend, config, seed, sleep)) as outcomes,
                progress(total=len(todo), desc=f"{backend.name} queries", unit="item") as bar,
            ):
                for outcome in outcomes:
                    answered_elsewhere += outcome.from_cache
                    events.update(outcome.events)
                    stats["requests"] += outcome.requests
                    stats["input_tokens"] += outcome.input_tokens
                    stats["output_tokens"] += outcome.output_tokens
                    if outcome.queries is not None:
                        queries[outcome.item_id] = outcome.queries
                    else:
                        failures.append((outcome.item_id, outcome.error or "no valid answer"))
                    bar.update(1)
        finally:
            cache.close()
        stats["cached_items"] = cached_at_start + answered_elsewhere
        stats["asked_items"] = len(todo) - answered_elsewhere

    failures.sort()
    stats.update({k: int(v) for k, v in sorted(events.items())})
    stats["failed_items"] = len(failures)
    stats["failure_rate"] = len(failures) / max(1, len(infos))
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return QueryRun(queries=queries, failures=failures, stats=stats, backend=backend.name, model=backend.model)


def check_failure_rate(run: QueryRun, config: QueriesConfig, cache_dir: Path | None = None) -> None:
    """Fail, naming the items, when more items than queries.max_failure_rate got no queries."""
    rate = run.stats["failure_rate"]
    if rate <= config.max_failure_rate:
        return
    shown = ", ".join(f"{item_id} ({reason})" for item_id, reason in run.failures[:5])
    kept = f"; the {len(run.queries):,} answers obtained are kept in {cache_dir / CACHE_FILE}" if cache_dir else ""
    raise QueryGenerationError(
        f"{len(run.failures):,} of {run.stats['items']:,} items ({rate:.1%}) got no valid queries, above "
        f"queries.max_failure_rate={config.max_failure_rate}{kept}; rerun to ask only for the missing items. "
        f"First failures: {shown}"
    )
