"""gen_queries: the template stand-in on real items, the LLM backends through fake SDK clients
(the real request-building and parsing code runs), the cache/resume, the key's secrecy, and the
stage under real DVC (the OpenAI backend against a local OpenAI-compatible HTTP server)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import httpx2
import openai
import pandas as pd
import pytest
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from conftest import dvc, run, set_params, stage_env
from fake_openai import OpenAICompatibleServer, chat_completion, good_answer

from semid.config import QUERY_BACKENDS, ConfigError, DataConfig, QueriesConfig, load_params
from semid.data import prepare_movielens
from semid.queries import (
    BACKENDS,
    CACHE_FILE,
    QueryGenerationError,
    TemplateBackend,
    contains_title,
    create_backend,
    estimate,
    generate_queries,
    load_queries,
    normalize,
    parse_answer,
    split_queries,
    title_words,
    write_queries,
    InvalidAnswer,
    check_failure_rate,
)
from semid.tracking import stage_run

SECRET = "sk-test-9f8e7d6c5b4a-do-not-leak"


@pytest.fixture(scope="module")
def items(ml_small_raw) -> pd.DataFrame:
    """The 40 most-rated real movies of ml-latest-small (with their real tags)."""
    return prepare_movielens(ml_small_raw, DataConfig(sample_items=40, sample_items_strategy="popular"), 42).items


def remote_config(backend: str, **changes) -> QueriesConfig:
    base = dict(backend=backend, model="test-model", n_generated=4, n_train=2, n_valid=1, n_test=1,
                concurrency=4, max_retries=2, retry_base_seconds=0.0, retry_max_seconds=0.0)
    base.update(changes)
    config = QueriesConfig(**base)
    config.validate()
    return config




# ----------------------------------------------------------------- fake SDK clients


class FakeGenaiClient:
    """Same surface as google.genai.Client for what we call: client.models.generate_content."""

    def __init__(self, respond):
        self.respond = respond  # (prompt, call number) -> answer text or an exception to raise
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        self.models = self

    def generate_content(self, *, model, contents, config):
        with self.lock:
            self.calls.append({"model": model, "contents": contents, "config": config})
            number = len(self.calls)
        answer = self.respond(contents, number)
        if isinstance(answer, BaseException):
            raise answer
        part = genai_types.Part(text=answer)
        return genai_types.GenerateContentResponse(
            candidates=[genai_types.Candidate(content=genai_types.Content(role="model", parts=[part]))],
            usage_metadata=genai_types.GenerateContentResponseUsageMetadata(prompt_token_count=100, candidates_token_count=50),
        )


class FakeOpenAIClient:
    """Same surface as openai.OpenAI for what we call: client.chat.completions.create."""

    def __init__(self, respond):
        self.respond = respond
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, **kwargs):
        with self.lock:
            self.calls.append(kwargs)
            number = len(self.calls)
        answer = self.respond(kwargs["messages"][0]["content"], number)
        if isinstance(answer, BaseException):
            raise answer
        return chat_completion(answer)


FAKES = {"gemini": FakeGenaiClient, "openai": FakeOpenAIClient}
KEY_ENV = {"gemini": "GEMINI_API_KEY", "openai": "OPENAI_API_KEY"}


def encode(backend: str, queries: list[str]) -> str:
    """Each backend's structured-output shape: a bare array (Gemini), {"queries": [...]} (OpenAI)."""
    return json.dumps(queries if backend == "gemini" else {"queries": queries})


def rate_limit_error(backend: str) -> Exception:
    """The SDK's own 429 error type, as the SDK raises it."""
    if backend == "gemini":
        return genai_errors.ClientError(429, {"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}})
    response = httpx2.Response(429, request=httpx2.Request("POST", "https://api.openai.com/v1/chat/completions"))
    return openai.RateLimitError("Rate limit reached", response=response, body=None)


def auth_error(backend: str) -> Exception:
    if backend == "gemini":
        return genai_errors.ClientError(401, {"error": {"code": 401, "message": "API key not valid", "status": "UNAUTHENTICATED"}})
    response = httpx2.Response(401, request=httpx2.Request("POST", "https://api.openai.com/v1/chat/completions"))
    return openai.AuthenticationError("Incorrect API key provided", response=response, body=None)


def make_backend(backend: str, respond, monkeypatch, **changes):
    monkeypatch.setenv(KEY_ENV[backend], SECRET)
    config = remote_config(backend, **changes)
    fake = FAKES[backend](respond)
    return config, create_backend(config, seed=42, client=fake), fake


# ------------------------------------------------------------------------ template


def test_template_is_deterministic_has_no_title_words_and_the_requested_counts(items):
    config = QueriesConfig()
    first = generate_queries(items, config, seed=42)
    again = generate_queries(items, config, seed=42)
    other_seed = generate_queries(items, config, seed=7)
    assert first.queries == again.queries
    assert first.queries != other_seed.queries
    assert not first.failures and len(first.queries) == len(items)

    titles = dict(zip(items["item_id"], items["title"]))
    for item_id, queries in first.queries.items():
        assert len(queries) == config.n_generated
        assert len({normalize(q) for q in queries}) == config.n_generated
        forbidden = title_words(titles[item_id])
        for query in queries:
            assert not set(normalize(query).split()) & forbidden, (titles[item_id], query)

    splits = split_queries(first, config)
    assert {s: len(f) for s, f in splits.items()} == {"train": 3 * 40, "valid": 40, "test": 40}
    assert set(splits["train"]["backend"]) == {"template"}
    # test queries are the paraphrases of the last original, valid of the one before
    toy_story = first.queries[1]
    assert splits["test"].set_index("item_id").loc[1, "text"] == toy_story[-1]
    assert splits["train"][splits["train"]["item_id"] == 1]["text"].tolist() == toy_story[:3]
    # real tags make it into the queries (Toy Story is tagged "pixar" in ml-latest-small)
    assert any("pixar" in q for q in toy_story)


def test_template_drops_candidates_with_title_words_and_reports_exhausted_items():
    backend = TemplateBackend(QueriesConfig(), seed=1)
    crime = SimpleNamespace(item_id=5, title="Crime Story", year=1990, genres=("Crime",), tags=("crime boss", "mafia"), genome_tags=())
    queries, rejected = backend.generate(crime, 6)
    assert all("crime" not in q and "story" not in q for q in queries)
    bare = SimpleNamespace(item_id=6, title="Black Mirror", year=None, genres=(), tags=(), genome_tags=())
    with pytest.raises(InvalidAnswer, match="template_exhausted"):
        backend.generate(bare, 6)


def test_title_leak_is_case_and_punctuation_insensitive():
    assert contains_title("a film like THE MATRIX!", "Matrix, The")
    assert contains_title("movies like matrix", "Matrix, The")
    assert contains_title("heat, with al pacino", "Heat")
    assert contains_title("cite des enfants perdus", "City of Lost Children, The (Cité des enfants perdus, La)")
    assert contains_title("schindlers list type movie", "Schindler's List")
    assert not contains_title("a heated argument in a diner", "Heat")
    assert not contains_title("it is a scary clown movie", "It")  # stopword-only titles are not checked
    assert title_words("Matrix, The") == {"matrix"}
    with pytest.raises(InvalidAnswer, match="title_leak"):
        parse_answer('["the matrix sequel", "kung fu in a simulation"]', 2, "Matrix, The")
    for bad, reason in [("not json", "not_json"), ('["a"]', "wrong_count"), ('["a", " "]', "empty_query"),
                        ('["A b", "a, b"]', "duplicate_query"), ('{"x": 1, "y": 2}', "not_a_list")]:
        with pytest.raises(InvalidAnswer, match=reason):
            parse_answer(bad, 2, "Heat")
    assert parse_answer('```json\n["a", "b"]\n```', 2, "Heat") == ["a", "b"]


def test_backend_names_match_the_config_choices():
    assert tuple(BACKENDS) == QUERY_BACKENDS


# ------------------------------------------------------------------------- remote


@pytest.mark.parametrize("backend", ["gemini", "openai"])
def test_remote_backend_good_json_builds_the_real_request(backend, items, tmp_path, monkeypatch):
    config, client, fake = make_backend(backend, lambda prompt, n: encode(backend, good_answer(prompt)), monkeypatch)
    run = generate_queries(items.head(5), config, 42, client, tmp_path / "cache")
    assert len(fake.calls) == 5 and not run.failures
    assert run.stats["requests"] == 5 and run.stats["input_tokens"] == 500
    first = fake.calls[0]
    if backend == "gemini":
        assert first["model"] == "test-model"
        assert first["config"].response_mime_type == "application/json"
        assert first["config"].response_schema.type == "ARRAY" and first["config"].response_schema.min_items == 4
        prompts = [c["contents"] for c in fake.calls]
    else:
        assert first["response_format"]["type"] == "json_schema"
        prompts = [c["messages"][0]["content"] for c in fake.calls]
    assert any("Movie: Toy Story (1995)" in p for p in prompts)
    assert all("exactly 4 search queries" in p and "paraphrases" in p and "NOT contain the title" in p for p in prompts)
    toy_story_prompt = next(p for p in prompts if "Toy Story" in p)
    assert run.queries[1] == good_answer(toy_story_prompt)
    lines = (tmp_path / "cache" / CACHE_FILE).read_text().splitlines()
    assert len(lines) == 5 and all(len(json.loads(line)["prompt_hash"]) == 16 for line in lines)


@pytest.mark.parametrize("backend", ["gemini", "openai"])
def test_rate_limit_is_retried_with_backoff(backend, items, tmp_path, monkeypatch):
    def respond(prompt, number):
        return rate_limit_error(backend) if number == 1 else encode(backend, good_answer(prompt))

    config, client, fake = make_backend(backend, respond, monkeypatch, concurrency=1, retry_base_seconds=1.0)
    sleeps = []
    run = generate_queries(items.head(2), config, 42, client, tmp_path, sleep=sleeps.append)
    assert len(fake.calls) == 3 and not run.failures and len(run.queries) == 2
    assert run.stats["transient_error"] == 1 and len(sleeps) == 1 and 0.0 <= sleeps[0] <= 1.0


@pytest.mark.parametrize("backend", ["gemini", "openai"])
def test_malformed_json_is_retried_then_dropped_and_counted(backend, items, tmp_path, monkeypatch):
    broken_id = int(items["item_id"].iloc[1])
    broken_title = items["title"].iloc[1]

    def respond(prompt, number):
        return '["unterminated' if f"Movie: {broken_title} (" in prompt else encode(backend, good_answer(prompt))

    config, client, fake = make_backend(backend, respond, monkeypatch, max_failure_rate=0.5)
    run = generate_queries(items.head(3), config, 42, client, tmp_path)
    assert len(fake.calls) == 2 + config.max_retries + 1
    assert run.failures == [(broken_id, run.failures[0][1])] and "not_json" in run.failures[0][1]
    assert run.stats["invalid_not_json"] == config.max_retries + 1 and run.stats["failed_items"] == 1
    assert broken_id not in run.queries and len(run.queries) == 2


class Interrupted(BaseException):
    """Stands in for Ctrl-C / a killed job in the middle of a run."""


@pytest.mark.parametrize("backend", ["gemini", "openai"])
def test_interrupted_run_resumes_asking_only_for_missing_items(backend, items, tmp_path, monkeypatch):
    subset = items.head(12)
    config, client, fake = make_backend(backend, lambda p, n: encode(backend, good_answer(p)), monkeypatch)
    reference = generate_queries(subset, config, 42, client, tmp_path / "uninterrupted")

    def dies_after_five(prompt, number):
        return Interrupted() if number == 6 else encode(backend, good_answer(prompt))

    interrupted_config = dataclasses.replace(config, concurrency=1)
    _, client, fake = make_backend(backend, dies_after_five, monkeypatch)
    with pytest.raises(Interrupted):
        generate_queries(subset, interrupted_config, 42, client, tmp_path / "resumed")
    assert len((tmp_path / "resumed" / CACHE_FILE).read_text().splitlines()) == 5

    _, client, fake = make_backend(backend, lambda p, n: encode(backend, good_answer(p)), monkeypatch)
    resumed = generate_queries(subset, config, 42, client, tmp_path / "resumed")
    assert len(fake.calls) == 12 - 5
    assert resumed.stats["cached_items"] == 5 and resumed.stats["asked_items"] == 7
    assert resumed.queries == reference.queries
    assert all(split_queries(resumed, config)[s].equals(split_queries(reference, config)[s]) for s in ("train", "valid", "test"))

    _, client, fake = make_backend(backend, lambda p, n: encode(backend, good_answer(p)), monkeypatch)
    generate_queries(subset, config, 42, client, tmp_path / "resumed")
    assert fake.calls == []  # everything cached: nothing asked
    assert estimate(subset, config, client, tmp_path / "resumed")["requests"] == 0


def test_too_many_failures_fail_at_the_end_and_keep_the_successes(items, tmp_path, monkeypatch):
    broken = [f"Movie: {title} (" for title in items["title"].iloc[[0, 3]]]

    def respond(prompt, number):
        return '"not a list"' if any(b in prompt for b in broken) else encode("openai", good_answer(prompt))

    config, client, fake = make_backend("openai", respond, monkeypatch, max_retries=0, max_failure_rate=0.1)
    run = generate_queries(items.head(10), config, 42, client, tmp_path)
    with pytest.raises(QueryGenerationError, match=r"2 of 10 items \(20.0%\).*max_failure_rate=0.1.*kept in") as error:
        check_failure_rate(run, config, tmp_path)
    assert f"{items['item_id'].iloc[0]} (not_a_list" in str(error.value)
    assert len((tmp_path / CACHE_FILE).read_text().splitlines()) == 8


@pytest.mark.parametrize("backend", ["gemini", "openai"])
def test_bad_key_stops_the_run_without_showing_the_key(backend, items, tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    config, client, fake = make_backend(backend, lambda p, n: auth_error(backend), monkeypatch, concurrency=1)
    with pytest.raises(QueryGenerationError, match="refused the request.*check the key in " + KEY_ENV[backend]) as error:
        generate_queries(items.head(4), config, 42, client, tmp_path)
    assert len(fake.calls) == 1
    captured = capsys.readouterr()
    assert SECRET not in str(error.value) + caplog.text + captured.out + captured.err


# --------------------------------------------------------------------------- bad input


def test_bad_input_fails_clearly_before_any_request(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="queries.backend='claude' is not valid; choose one of: template, gemini, openai"):
        load_params(overrides={"queries.backend": "claude"})
    with pytest.raises(ConfigError, match="n_test = 3 \\+ 1 \\+ 7 = 11 is more than queries.n_generated=6"):
        load_params(overrides={"queries.n_test": 7})
    for backend in ("gemini", "openai"):
        for env in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"):
            monkeypatch.delenv(env, raising=False)
        fake = FAKES[backend](lambda p, n: pytest.fail("no request may be made"))
        with pytest.raises(QueryGenerationError, match=f"queries.backend='{backend}' needs an API key .*set {KEY_ENV[backend]}"):
            create_backend(remote_config(backend), 42, client=fake)
        assert fake.calls == []
    named = remote_config("openai", api_key_env="MY_LOCAL_KEY")
    with pytest.raises(QueryGenerationError, match="set MY_LOCAL_KEY"):
        create_backend(named, 42, environ={"OPENAI_API_KEY": "x"})
    assert create_backend(named, 42, environ={"MY_LOCAL_KEY": "x"}).key_source == "MY_LOCAL_KEY"
    with pytest.raises(Exception, match="split 'dev' is not valid"):
        load_queries(tmp_path, "dev")


# ------------------------------------------------------------------ the key stays secret


def test_key_never_reaches_outputs_logs_or_mlflow(items, tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = load_params(overrides={"queries.backend": "gemini", "queries.n_generated": 4, "queries.n_train": 2})
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)

    def respond(prompt, number):
        return rate_limit_error("gemini") if number % 4 == 0 else encode("gemini", good_answer(prompt))

    backend = create_backend(params.queries, 42, client=FakeGenaiClient(respond))
    config = dataclasses.replace(params.queries, retry_base_seconds=0.0)
    with stage_run("gen_queries", params, keys=["base", "queries"]) as run:
        result = generate_queries(items.head(8), config, 42, backend, tmp_path / "cache")
        splits = split_queries(result, config)
        write_queries(splits, tmp_path / "queries", result.failures)
        run.log_metrics(result.stats)
    assert len(load_queries(tmp_path / "queries", "train")) == 16
    captured = capsys.readouterr()
    assert SECRET not in caplog.text + captured.out + captured.err
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


# ------------------------------------------------------------------------- real DVC


def test_stage_under_dvc_reruns_on_its_keys_only_and_never_records_the_key(dvc_repo, monkeypatch):
    set_params(dvc_repo, data={"sample_items": 30, "sample_items_strategy": "popular"})
    monkeypatch.setenv("SEMID_TRACKING", "0")  # MLflow start-up is slow; it is back on for the key check
    out = dvc(dvc_repo, "repro", "gen_queries")
    assert "Running stage 'prepare_movielens'" in out.stdout and "Running stage 'gen_queries'" in out.stdout
    metrics = json.loads((dvc_repo / "metrics" / "queries.json").read_text())
    assert metrics["queries_train"] == 90 and metrics["queries_valid"] == 30 and metrics["queries_test"] == 30
    assert metrics["title_leak_rate"] == 0.0 and metrics["failed_items"] == 0
    train = load_queries(dvc_repo / "data" / "queries", "train")
    assert list(train.columns) == ["query_id", "item_id", "text", "backend"] and train["item_id"].dtype == "int64"

    set_params(dvc_repo, queries={"n_train": 2})
    out = dvc(dvc_repo, "repro", "gen_queries")
    assert "Running stage 'gen_queries'" in out.stdout and "Running stage 'prepare_movielens'" not in out.stdout
    assert len(load_queries(dvc_repo / "data" / "queries", "train")) == 60

    # The OpenAI backend against a local OpenAI-compatible server, the key in the environment.
    server = OpenAICompatibleServer()
    try:
        set_params(dvc_repo, queries={"backend": "openai", "model": "local-model", "base_url": server.url,
                                      "api_key_env": "SEMID_TEST_LLM_KEY"})
        monkeypatch.setenv("SEMID_TEST_LLM_KEY", SECRET)
        monkeypatch.delenv("SEMID_TRACKING")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        dry = dvc_repo_python(dvc_repo, "-m", "semid.stages.gen_queries", "--dry-run")
        assert "30 requests" in dry.stdout and not server.authorizations
        out = dvc(dvc_repo, "repro", "gen_queries")
        assert "Running stage 'gen_queries'" in out.stdout and "Running stage 'prepare_movielens'" not in out.stdout
        assert server.authorizations == [f"Bearer {SECRET}"] * 30
        test = load_queries(dvc_repo / "data" / "queries", "test")
        assert len(test) == 30 and set(test["backend"]) == {"openai"}
        assert len((dvc_repo / "data" / "cache" / "queries" / CACHE_FILE).read_text().splitlines()) == 30
    finally:
        server.close()
    texts = out.stdout + out.stderr + dry.stdout + dry.stderr
    assert SECRET not in texts
    checked = [p for p in dvc_repo.rglob("*") if p.is_file() and ".git" not in p.parts]
    assert dvc_repo / "dvc.lock" in checked and dvc_repo / "mlflow.db" in checked
    for path in checked:
        assert SECRET.encode() not in path.read_bytes(), path
    assert "queries" in (dvc_repo / "dvc.lock").read_text()


def dvc_repo_python(repo: Path, *args: str):
    return run([sys.executable, *args], cwd=repo, env=stage_env(repo))
