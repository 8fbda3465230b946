"""Search queries per item (the ``gen_queries`` stage): LLM backends, an offline stand-in, a cache.

The paper (Penha et al. 2025) builds its search task by asking gemini-2.0-flash for 20 queries
per movie that describe its content, themes and genre without the title, half of them
paraphrases of the other half; 10 train, 10 test. Backends, chosen by ``queries.backend``:

- ``gemini``: the ``google-genai`` SDK with structured JSON output (an array of strings); key
  from ``GEMINI_API_KEY`` / ``GOOGLE_API_KEY`` (or the variable named by ``queries.api_key_env``).
- ``openai``: any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server) at
  ``queries.base_url``. ``OPENAI_API_KEY`` is sent to OpenAI's own API only (https://api.openai.com);
  another server gets the variable named by ``queries.api_key_env``, or no key at all.
- ``template`` (offline default): queries assembled from genres, decade, year, user tags and
  genome tags with paraphrase patterns, deterministic from the seed. **A stand-in**: it knows
  nothing about a movie beyond its metadata, so these queries are easier and narrower than an
  LLM's, and numbers measured on them are not comparable to the paper's.

Keys are read from the environment only; they are never logged, written, or put in params (a
``base_url`` carrying credentials is refused).

Every remote answer is validated (JSON array of exactly N distinct non-empty strings UTF-8 can
encode, none containing the title); an invalid answer is re-asked, then the item is dropped and
counted. Valid answers are appended and fsynced, one JSON line each, to a cache keyed by (item
id, model, prompt hash) as they arrive, so a killed, interrupted (Ctrl-C) or failed run loses no
answer it received, and a rerun asks only for what is missing. Runs sharing the cache (queued
experiments) ask for each item once between them (:class:`AnswerCache`). Rate limits (429),
server errors (5xx) and timeouts are retried after the wait the service asks for (Retry-After),
else with exponential backoff and full jitter, up to ``queries.max_retries`` per item.

One module per idea; this package re-exports what the stages, benches and tests use:

- :mod:`.prompt`: what a backend knows about an item, the one prompt and its hash;
- :mod:`.titles`: title matching (when a query leaks the title, title words, stopwords);
- :mod:`.answers`: validation of a model's answer;
- :mod:`.backends`: the backend protocol and the registry by ``queries.backend``;
  :mod:`.template`, :mod:`.gemini`, :mod:`.openai_compatible`: one backend each,
  :mod:`.remote`: what the two LLM backends share, :mod:`.retries`: retry or not, and how long to wait;
- :mod:`.cache`: the answer cache; :mod:`.runner`: a generation run;
- :mod:`.splits`: train / valid / test, written and read; :mod:`.quality`: the stage's metrics;
- :mod:`.dry_run`: requests and tokens a run would make; :mod:`.errors`: how a run fails.
"""

from semid.queries.answers import parse_answer, validate_queries
from semid.queries.backends import BACKENDS, QueryBackend, create_backend
from semid.queries.cache import CACHE_FILE, AnswerCache
from semid.queries.dry_run import estimate, format_estimate
from semid.queries.errors import InvalidAnswer, QueryGenerationError
from semid.queries.gemini import GeminiBackend
from semid.queries.openai_compatible import OpenAIBackend
from semid.queries.prompt import PROMPT_TEMPLATE, ItemInfo, build_prompt, items_from_frame, prompt_hash
from semid.queries.quality import query_metrics
from semid.queries.remote import RemoteBackend, Reply
from semid.queries.runner import QueryRun, check_failure_rate, generate_queries
from semid.queries.splits import (
    FAILURES_FILE,
    SPLITS,
    load_queries,
    split_queries,
    write_failures,
    write_queries,
)
from semid.queries.template import TemplateBackend
from semid.queries.titles import STOPWORDS, contains_title, normalize, title_words

__all__ = [
    "BACKENDS", "CACHE_FILE", "FAILURES_FILE", "PROMPT_TEMPLATE", "SPLITS", "STOPWORDS",
    "AnswerCache", "GeminiBackend", "InvalidAnswer", "ItemInfo", "OpenAIBackend", "QueryBackend",
    "QueryGenerationError", "QueryRun", "RemoteBackend", "Reply", "TemplateBackend",
    "build_prompt", "check_failure_rate", "contains_title", "create_backend", "estimate",
    "format_estimate", "generate_queries", "items_from_frame", "load_queries", "normalize",
    "parse_answer", "prompt_hash", "query_metrics", "split_queries", "title_words",
    "validate_queries", "write_failures", "write_queries",
]
