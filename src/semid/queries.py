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

**Title words.** A query *leaks the title* when the normalised title (lower case, accents and
punctuation removed, a leading article dropped; each alternative title in parentheses counts)
occurs in it as a whole-word phrase. Titles made only of stopwords ("It", "Up") are not
checked: any query would match. The template backend is stricter: it drops every candidate
containing any *title word*, i.e. any token of the title that is not in :data:`STOPWORDS`
(English function words plus a few foreign articles that MovieLens titles use).

The generated list is ordered originals first, then their paraphrases in the same order. The
split takes train from the front, test from the end, valid just before test: with the paper's
20 = 10 + 10, every test query is a paraphrase of a train query, as in the paper.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import email.utils
import fcntl
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
import unicodedata
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol

import pandas as pd

from semid.io import SemidError, atomic_dir, atomic_path, progress

if TYPE_CHECKING:
    from semid.config import QueriesConfig

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
CACHE_FILE = "answers.jsonl"
FAILURES_FILE = "failures.json"
CLAIM_POLL_SECONDS = 0.05  # how often a run waiting for an item another run asks for looks again


class QueryGenerationError(SemidError):
    """A run that cannot start (no key) or must stop (bad key, too many failures)."""


class InvalidAnswer(Exception):
    """An answer that fails validation; ``reason`` is the counter name."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# ------------------------------------------------------------------------------ the prompt

# The one prompt, faithful to the paper's description. Its rendered text is hashed into every
# cache key, so editing it (or the item's metadata) re-asks exactly the affected items.
PROMPT_TEMPLATE = """\
You are helping build a movie search engine. Write exactly {n} search queries that different \
people might type into a search box to find the movie below.

Rules:
- The queries must NOT contain the title of the movie.
- Describe the movie's content, themes and genre: plot elements, setting, characters, mood.
- Queries 1 to {n_original} are independent queries; queries {first_paraphrase} to {n} are \
paraphrases of queries 1 to {n_paraphrase}, in the same order (query {first_paraphrase} \
rephrases query 1, and so on).
- Keep each query short and natural, as people really search.
- Answer with JSON only: an array of exactly {n} distinct strings.

Movie: {title_year}
Genres: {genres}
Tags: {tags}"""


@dataclass(frozen=True)
class ItemInfo:
    """What a backend may know about an item."""

    item_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    tags: tuple[str, ...]
    genome_tags: tuple[str, ...]


def items_from_frame(items: pd.DataFrame) -> list[ItemInfo]:
    """ItemInfo per row of the prepared items table, in its order."""
    return [
        ItemInfo(
            item_id=int(row.item_id),
            title=str(row.title),
            year=None if pd.isna(row.year) else int(row.year),
            genres=tuple(g for g in row.genres if g not in NO_GENRE),
            tags=tuple(row.tags),
            genome_tags=tuple(row.genome_tags),
        )
        for row in items.itertuples(index=False)
    ]


def build_prompt(item: ItemInfo, n: int) -> str:
    """The request text for one item (the title is given so the model knows the movie)."""
    n_paraphrase = n // 2
    themes = list(dict.fromkeys([*item.tags, *item.genome_tags]))
    return PROMPT_TEMPLATE.format(
        n=n,
        n_original=n - n_paraphrase,
        n_paraphrase=n_paraphrase,
        first_paraphrase=n - n_paraphrase + 1,
        title_year=f"{item.title} ({item.year})" if item.year else item.title,
        genres=", ".join(item.genres) or "unknown",
        tags=", ".join(themes) or "none",
    )


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------- title checks

# English function words, plus articles of the other languages MovieLens titles use. A title
# word that is one of these does not stop a template query from using it.
STOPWORDS = frozenset(
    """a an the and or but nor of in on at to for from by with without about into onto over under
    up down out off as than then so too very not no is are was were be been being am do does did
    has have had will would can could shall should may might must it its it's this that these those
    i me my we us our you your he him his she her they them their who whom whose what which when
    where why how all any some each every both few more most other such own same just only also
    here there again once s t vs v part la le les el il lo der die das de du des et""".split()
)
NO_GENRE = frozenset({"(no genres listed)", "unknown"})
_INVERTED_ARTICLE = re.compile(r"^(.*),\s*(the|a|an|la|le|les|l'|el|il|lo|der|die|das|den)$", re.IGNORECASE)
_PARENTHESISED = re.compile(r"\(([^()]*)\)")
# Not "die": "Die Hard" starts with a verb; dropping it would make "hard" the title.
_LEADING_ARTICLE = re.compile(r"^(the|a|an|la|le|les|l|el|il|lo|der|das|den) ")


def normalize(text: str) -> str:
    """Lower case, accents and punctuation removed, apostrophes joined: "Schindler's" -> "schindlers"."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"['’`]", "", text)
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def title_variants(title: str) -> list[str]:
    """The title and its alternatives: 'City of Lost Children, The (Cité des enfants perdus, La)'."""
    alternatives = [a.strip() for a in _PARENTHESISED.findall(title)]
    main = _PARENTHESISED.sub(" ", title).strip()
    variants = []
    for variant in [main, *alternatives]:
        variant = re.sub(r"^a\.?k\.?a\.?\s+", "", variant, flags=re.IGNORECASE).strip()
        inverted = _INVERTED_ARTICLE.match(variant)
        if inverted:
            variant = f"{inverted.group(2)} {inverted.group(1)}"
        if variant:
            variants.append(variant)
    return variants


def title_phrases(title: str) -> list[str]:
    """Normalised title phrases to look for; titles of stopwords only are skipped (see module doc)."""
    phrases = []
    for variant in title_variants(title):
        phrase = _LEADING_ARTICLE.sub("", normalize(variant))
        if phrase and not set(phrase.split()) <= STOPWORDS:
            phrases.append(phrase)
    return phrases


def contains_title(query: str, title: str) -> bool:
    padded = f" {normalize(query)} "
    return any(f" {phrase} " in padded for phrase in title_phrases(title))


def title_words(title: str) -> set[str]:
    """Non-stopword tokens of every variant of the title."""
    return {w for variant in title_variants(title) for w in normalize(variant).split()} - STOPWORDS


def is_utf8_text(text: str) -> bool:
    """False for a string UTF-8 cannot encode: a lone surrogate, which a JSON escape ("\\ud800") can spell."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_queries(queries: Any, n: int, title: str) -> list[str]:
    """The answer as a clean list of n strings, or InvalidAnswer naming what is wrong."""
    if isinstance(queries, dict) and len(queries) == 1:  # {"queries": [...]} from json_schema mode
        queries = next(iter(queries.values()))
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise InvalidAnswer("not_a_list", type(queries).__name__)
    if not all(is_utf8_text(q) for q in queries):
        raise InvalidAnswer("bad_unicode", "a lone surrogate")
    cleaned = [" ".join(q.split()) for q in queries]
    if len(cleaned) != n:
        raise InvalidAnswer("wrong_count", f"{len(cleaned)} instead of {n}")
    if any(not q for q in cleaned):
        raise InvalidAnswer("empty_query")
    normalized = [normalize(q) for q in cleaned]
    if len(set(normalized)) != len(normalized):
        raise InvalidAnswer("duplicate_query")
    if any(contains_title(q, title) for q in cleaned):
        raise InvalidAnswer("title_leak")
    return cleaned


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_answer(text: str | None, n: int, title: str) -> list[str]:
    """Parse a model's text answer (JSON, optionally in a ``` fence) and validate it."""
    if not text or not text.strip():
        raise InvalidAnswer("empty_answer")
    fenced = _FENCE.match(text)
    try:
        data = json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError as error:
        raise InvalidAnswer("not_json", str(error)) from None
    return validate_queries(data, n, title)


# ---------------------------------------------------------------------------- backends


@dataclass
class Reply:
    """One remote answer: its text and the token usage the service reported (0 when unknown)."""

    text: str | None
    input_tokens: int = 0
    output_tokens: int = 0


class QueryBackend(Protocol):
    name: str
    model: str
    remote: bool  # remote backends go through the cache, retries and the thread pool


OPENAI_API_URL = "https://api.openai.com/v1"


def is_openai_api(base_url: str) -> bool:
    """OpenAI's own API over https ("" means it): the only place OPENAI_API_KEY may be sent."""
    if not base_url:
        return True
    parts = urllib.parse.urlsplit(base_url)
    try:
        port = parts.port
    except ValueError:  # not a number
        return False
    return (parts.scheme == "https" and parts.hostname == "api.openai.com" and port in (None, 443)
            and not parts.username)  # fmt: skip


class RemoteBackend:
    """Shared by the LLM backends: key from the environment, one request per item."""

    name = ""
    remote = True
    default_key_envs: tuple[str, ...] = ()

    def __init__(self, config: QueriesConfig, client: Any | None = None, environ: dict[str, str] | None = None):
        self.model = config.model
        self.config = config
        environ = os.environ if environ is None else environ
        key_envs = self.key_envs(config)
        self.key_source = next((e for e in key_envs if environ.get(e)), "")  # "": no key is sent
        self._key = environ[self.key_source] if self.key_source else None
        if key_envs and not self._key:
            hint = " (a local server needs none: leave queries.api_key_env empty)" if self.name == "openai" else ""
            raise QueryGenerationError(
                f"queries.backend={self.name!r} needs an API key in the environment: set "
                f"{' or '.join(key_envs)}{hint}, or use queries.backend=template offline"
            )
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self.make_client(self._key)
            return self._client

    def key_envs(self, config: QueriesConfig) -> tuple[str, ...]:
        """Environment variables the key may come from, first set wins; none: send no key."""
        return (config.api_key_env,) if config.api_key_env else self.default_key_envs

    def make_client(self, key: str | None) -> Any:  # pragma: no cover - needs the network to be useful
        raise NotImplementedError

    def request(self, prompt: str, n: int) -> Reply:
        raise NotImplementedError

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


class GeminiBackend(RemoteBackend):
    """Google Gemini through ``google-genai``, structured output: a JSON array of n strings."""

    name = "gemini"
    default_key_envs = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

    def make_client(self, key: str | None) -> Any:
        from google import genai
        from google.genai import types

        return genai.Client(api_key=key, http_options=types.HttpOptions(timeout=int(self.config.timeout_seconds * 1000)))

    def request(self, prompt: str, n: int) -> Reply:
        from google.genai import types

        schema = types.Schema(type="ARRAY", items=types.Schema(type="STRING"), min_items=n, max_items=n)
        response = self.client.models.generate_content(
            model=self.model,
            contents=prompt,
            config=types.GenerateContentConfig(
                temperature=self.config.temperature, response_mime_type="application/json", response_schema=schema
            ),
        )
        usage = getattr(response, "usage_metadata", None)
        return Reply(
            text=response.text,  # None when the answer was blocked: validated as empty
            input_tokens=int(getattr(usage, "prompt_token_count", 0) or 0),
            output_tokens=int(getattr(usage, "candidates_token_count", 0) or 0),
        )


class OpenAIBackend(RemoteBackend):
    """Any OpenAI-compatible chat endpoint; JSON schema output {"queries": [n strings]}."""

    name = "openai"
    default_key_envs = ("OPENAI_API_KEY",)

    def key_envs(self, config: QueriesConfig) -> tuple[str, ...]:
        """OPENAI_API_KEY goes to OpenAI only: params could point base_url anywhere, and it is a real
        key. Another server's key is named in queries.api_key_env; a local server may need none."""
        if is_openai_api(config.base_url):
            return super().key_envs(config)
        if config.api_key_env in self.default_key_envs:
            raise QueryGenerationError(
                f"queries.api_key_env={config.api_key_env} would send the OpenAI key to queries.base_url, which "
                f"is not OpenAI's API (https://api.openai.com); export that server's key under another name "
                f"and name it in queries.api_key_env"
            )
        return (config.api_key_env,) if config.api_key_env else ()

    def make_client(self, key: str | None) -> Any:
        import openai

        # Both given: left None, the SDK reads OPENAI_API_KEY and OPENAI_BASE_URL itself and could
        # send the one to the other. A server that needs no key gets a placeholder, as Ollama's docs do.
        # Our own loop retries (with the cache in mind); the SDK's would double the attempts.
        return openai.OpenAI(
            api_key=key or "no-key", base_url=self.config.base_url or OPENAI_API_URL, max_retries=0,
            timeout=self.config.timeout_seconds,
        )  # fmt: skip

    def request(self, prompt: str, n: int) -> Reply:
        schema = {
            "type": "object",
            "properties": {"queries": {"type": "array", "items": {"type": "string"}}},
            "required": ["queries"],
            "additionalProperties": False,
        }
        completion = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=self.config.temperature,
            response_format={"type": "json_schema", "json_schema": {"name": "search_queries", "strict": True, "schema": schema}},
        )
        usage = getattr(completion, "usage", None)
        return Reply(
            text=completion.choices[0].message.content if completion.choices else None,
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )


def classify_error(error: Exception) -> str:
    """'transient' (retry with backoff), 'fatal' (stop the run) or 'item' (give up this item).

    Both SDKs carry the HTTP status: google.genai.errors.APIError as ``code``, openai's
    APIStatusError as ``status_code``. Timeouts and connection errors have no status.
    """
    status = getattr(error, "status_code", None)
    if not isinstance(status, int):
        status = getattr(error, "code", None)
    if isinstance(status, int):
        if status in (408, 409, 429) or status >= 500:
            return "transient"
        if status in (401, 403, 404):  # bad key, no access, unknown model: every item would fail
            return "fatal"
        return "item"
    names = {cls.__name__ for cls in type(error).__mro__}
    if isinstance(error, (TimeoutError, ConnectionError)) or any("Timeout" in n or "Connection" in n for n in names):
        return "transient"
    return "item"


# ----------------------------------------------------------------------- template backend

# Surface forms: modifiers that read naturally before "movie"/"film".
GENRE_WORDS = {
    "Action": ("action",),
    "Adventure": ("adventure",),
    "Animation": ("animated", "cartoon"),
    "Children": ("kids", "family"),
    "Children's": ("kids", "family"),
    "Comedy": ("comedy", "funny"),
    "Crime": ("crime",),
    "Documentary": ("documentary",),
    "Drama": ("drama", "dramatic"),
    "Fantasy": ("fantasy",),
    "Film-Noir": ("film noir", "noir"),
    "Horror": ("horror", "scary"),
    "Musical": ("musical",),
    "Mystery": ("mystery",),
    "Romance": ("romance", "romantic"),
    "Sci-Fi": ("sci-fi", "science fiction"),
    "Thriller": ("thriller", "suspense"),
    "War": ("war",),
    "Western": ("western",),
}
GENRE_MOODS = {
    "Action": ("explosive", "fast-paced", "high-octane"),
    "Adventure": ("epic", "thrilling"),
    "Animation": ("colorful", "charming"),
    "Children": ("wholesome", "heartwarming"),
    "Children's": ("wholesome", "heartwarming"),
    "Comedy": ("lighthearted", "hilarious", "feel-good"),
    "Crime": ("gritty", "dark"),
    "Documentary": ("eye-opening", "informative"),
    "Drama": ("emotional", "moving", "serious"),
    "Fantasy": ("magical", "imaginative"),
    "Film-Noir": ("moody", "shadowy"),
    "Horror": ("creepy", "terrifying", "gory"),
    "Musical": ("toe-tapping", "upbeat"),
    "Mystery": ("puzzling", "twisty"),
    "Romance": ("sweet", "heartfelt"),
    "Sci-Fi": ("futuristic", "mind-bending"),
    "Thriller": ("tense", "suspenseful", "gripping"),
    "War": ("harrowing", "intense"),
    "Western": ("rugged", "dusty"),
}
DECADE_WORDS = {1920: "twenties", 1930: "thirties", 1940: "forties", 1950: "fifties", 1960: "sixties",
                1970: "seventies", 1980: "eighties", 1990: "nineties"}  # fmt: skip

# Pattern families by the slots they use. An original and its paraphrase use the same slot
# values through two different patterns of one family (and freshly drawn surface forms).
# Slots: {g}/{h} genre modifiers, {t}/{u} themes (tags), {d} decade, {y} year, {m} mood,
# {movie}/{movies} "movie" or "film".
PATTERN_FAMILIES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("g", "t"): ("{g} {movie} about {t}", "{g} {movie} with {t}", "{t} {g} {movie}", "a {g} {movie} involving {t}",
                 "{g} {movies} featuring {t}", "find me a {g} {movie} about {t}"),
    ("d", "g", "t"): ("{d} {g} {movie} about {t}", "{g} {movie} from the {d} with {t}",
                      "{t} in a {d} {g} {movie}", "{g} {movies} from the {d} featuring {t}"),
    ("t", "u"): ("{movie} with {t} and {u}", "{t} and {u} {movie}", "{movie} about {t}, {u}",
                 "{movies} featuring {u} and {t}"),
    ("d", "t"): ("{d} {movie} about {t}", "{movie} from the {d} with {t}", "{t} {movie} from the {d}"),
    ("t",): ("{movie} about {t}", "{t} {movie}", "{movies} featuring {t}", "{movie} with {t}"),
    ("d", "g"): ("{d} {g} {movie}", "{g} {movies} from the {d}", "{g} {movie} made in the {d}",
                 "a {g} {movie} from the {d}"),
    ("g", "m"): ("{m} {g} {movie}", "looking for a {m} {g} {movie}", "{g} {movie} that is {m}",
                 "something {m}: a {g} {movie}"),
    ("d", "g", "m"): ("{m} {d} {g} {movie}", "{g} {movie} from the {d} that is {m}",
                      "{m} {g} {movies} of the {d}"),
    ("g", "h"): ("{g} {h} {movie}", "{h} {g} {movie}", "a {movie} that is {g} and {h}", "{g} {movie} with {h} elements"),
    ("g", "y"): ("{g} {movie} released in {y}", "{y} {g} {movie}", "{g} {movie} that came out in {y}"),
    ("g",): ("{g} {movie}", "good {g} {movie}", "{g} {movie} to watch tonight", "a {g} {movie}"),
    ("d",): ("{movie} from the {d}", "{d} {movie}", "a {movie} made in the {d}"),
    ("y",): ("{movie} released in {y}", "{y} {movie}", "a {movie} that came out in {y}"),
}  # fmt: skip
_FAMILY_ORDER = list(PATTERN_FAMILIES)
# Tags made of these say nothing a genre slot does not already say ("sci-fi", "cult film").
_GENERIC_WORDS = frozenset({"movie", "movies", "film", "films"} | {
    w for words in GENRE_WORDS.values() for word in words for w in normalize(word).split()})


def _decade_forms(year: int) -> list[str]:
    decade = year // 10 * 10
    forms = [f"{decade}s"]
    if 1920 <= decade <= 1990:
        forms += [f"{decade % 100}s", DECADE_WORDS[decade]]
    return forms


class TemplateBackend:
    """Offline stand-in: queries from metadata and paraphrase patterns (see the module docstring)."""

    name = "template"
    model = "template-v1"
    remote = False

    def __init__(self, config: QueriesConfig, seed: int):
        self.config = config
        self.seed = seed

    def _slot_values(self, item: ItemInfo, forbidden: set[str]) -> dict[str, list[str]]:
        """Canonical slot values available for an item; themes with title words are left out."""

        def clean(values: Iterable[str]) -> list[str]:
            kept = []
            for value in values:
                words = normalize(value).split()
                if (0 < len(words) <= 4 and not set(words) & (forbidden | _GENERIC_WORDS)
                        and value.lower() not in kept):
                    kept.append(value.lower())
            return kept

        genres = [g for g in item.genres if g in GENRE_WORDS]
        values: dict[str, list[str]] = {
            "g": genres,
            "t": clean([*item.tags, *item.genome_tags])[:8],
            "d": [str(item.year // 10 * 10)] if item.year else [],
            "y": [str(item.year)] if item.year else [],
            "m": genres,  # a mood is drawn from a genre's moods
        }
        return values

    def generate(self, item: ItemInfo, n: int) -> tuple[list[str], Counter]:
        """n queries (originals, then paraphrases of the first n//2), or InvalidAnswer if too few.

        Returns the queries and counts of rejected candidates by reason.
        """
        rng = random.Random(f"{self.seed}:{item.item_id}")
        forbidden = title_words(item.title)
        slots = self._slot_values(item, forbidden)
        rejected: Counter = Counter()
        n_paraphrase = n // 2
        n_original = n - n_paraphrase

        combos = []  # (family, {slot: canonical value})
        for family in _FAMILY_ORDER:
            base = [s for s in family if s not in ("h", "u")]
            if any(not slots[s] for s in base):
                continue
            for _ in range(6):
                values = {s: rng.choice(slots[s]) for s in base}
                if "h" in family:
                    others = [g for g in slots["g"] if g != values["g"]]
                    if not others:
                        break
                    values["h"] = rng.choice(others)
                if "u" in family:
                    others = [t for t in slots["t"] if t != values["t"]]
                    if not others:
                        break
                    values["u"] = rng.choice(others)
                combos.append((family, values))
        # The most specific first: the item's own tags, then more slots; seeded order within.
        rng.shuffle(combos)
        combos.sort(key=lambda combo: ("t" not in combo[0], -len(combo[0])))

        seen: set[str] = set()
        originals: list[str] = []
        paraphrases: list[str] = []
        for family, values in combos:
            if len(originals) == n_original:
                break
            first, second = rng.sample(PATTERN_FAMILIES[family], 2)
            pair = []
            for pattern in (first, second):
                query = self._render(pattern, values, forbidden, rng)
                key = normalize(query)
                if set(key.split()) & forbidden:
                    rejected["rejected_title_word"] += 1
                elif key in seen or key in {normalize(q) for q in pair}:
                    rejected["rejected_duplicate"] += 1
                else:
                    pair.append(query)
                    continue
                break
            if len(pair) < 2 and len(originals) < n_paraphrase:
                continue  # an original that needs a paraphrase must come with one
            if not pair:
                continue
            originals.append(pair[0])
            seen.add(normalize(pair[0]))
            if len(originals) <= n_paraphrase:
                paraphrases.append(pair[1])
                seen.add(normalize(pair[1]))
        if len(originals) < n_original:
            raise InvalidAnswer("template_exhausted", f"only {len(originals)} of {n_original} original queries")
        return originals + paraphrases, rejected

    @staticmethod
    def _render(pattern: str, values: dict[str, str], forbidden: set[str], rng: random.Random) -> str:
        # "flick" only when the title itself says movie and film ("... Colon Movie Film for Theaters")
        nouns = [w for w in ("movie", "film") if w not in forbidden] or ["flick"]
        forms = {"movie": rng.choice(nouns), "movies": rng.choice(nouns) + "s"}
        for slot, value in values.items():
            if slot in ("g", "h"):
                forms[slot] = rng.choice(GENRE_WORDS[value])
            elif slot == "m":
                forms[slot] = rng.choice(GENRE_MOODS[value])
            elif slot == "d":
                forms[slot] = rng.choice(_decade_forms(int(value)))
            else:
                forms[slot] = value
        text = " ".join(pattern.format(**forms).split())
        return re.sub(r"\ba (?=[aeiou])", "an ", text)


BACKENDS: dict[str, type] = {"template": TemplateBackend, "gemini": GeminiBackend, "openai": OpenAIBackend}


def create_backend(config: QueriesConfig, seed: int, client: Any | None = None, environ: dict[str, str] | None = None):
    """The backend named by ``queries.backend``; a remote one checks its key here, before any request.

    ``client`` replaces the SDK client (tests pass a fake with the SDK's method surface).
    """
    if config.backend not in BACKENDS:
        raise QueryGenerationError(
            f"queries.backend={config.backend!r} is not valid; choose one of: {', '.join(BACKENDS)}"
        )
    cls = BACKENDS[config.backend]
    if cls is TemplateBackend:
        return TemplateBackend(config, seed)
    return cls(config, client=client, environ=environ)


# --------------------------------------------------------------------------------- cache


CacheKey = tuple[int, str, str]  # (item id, model, prompt hash)


class AnswerCache:
    """Append-only JSONL of valid answers keyed by (item id, model, prompt hash).

    Every answer in it was paid for, so it must survive kills and be shared safely: queued DVC
    experiments all find it under DVC_ROOT and may run at once.

    - Appends hold an exclusive ``flock``, write the whole line (os.write may write less) and
      fsync it. A line left without its newline by a killed writer is cut off first, so it
      cannot swallow the next record.
    - Reading is by bytes, one line at a time: a line that is not a record (torn, not UTF-8, not
      JSON, nested too deep, a string UTF-8 cannot encode) is skipped and counted, never fatal.
    - :meth:`claim` holds an item against other runs while one asks for it: a byte-range lock in
      ``answers.jsonl.lock``, which the kernel drops when its process dies. POSIX record locks
      belong to the process, so they separate runs, not threads; the threads of one run never
      share an item.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / CACHE_FILE
        self.answers: dict[CacheKey, list[str]] = {}
        self.unreadable_lines = 0
        self._read_up_to = 0  # bytes of whole lines read so far
        self._lock = threading.Lock()  # answers and _read_up_to, across this run's threads
        self._claims_fd: int | None = None
        self.refresh()
        if self.unreadable_lines:
            logger.warning("%s: skipped %d unreadable line(s)", self.path, self.unreadable_lines)

    def get(self, item_id: int, model: str, hash_: str) -> list[str] | None:
        return self.answers.get((item_id, model, hash_))

    def refresh(self) -> None:
        """Read the whole lines appended since the last read, by this run or another."""
        with self._lock:
            try:
                with self.path.open("rb") as file:
                    if os.fstat(file.fileno()).st_size < self._read_up_to:  # replaced: read it anew
                        self._read_up_to = 0
                    file.seek(self._read_up_to)
                    new = file.read()
            except FileNotFoundError:
                return
            whole = new[: new.rfind(b"\n") + 1]  # a last line without newline is still being written, or torn
            for line in whole.split(b"\n")[:-1]:
                record = parse_cache_line(line)
                if record:
                    self.answers[record[0]] = record[1]
                elif line.strip():
                    self.unreadable_lines += 1
            self._read_up_to += len(whole)

    def append(self, item_id: int, backend: str, model: str, hash_: str, queries: list[str]) -> None:
        record = {"item_id": item_id, "backend": backend, "model": model, "prompt_hash": hash_,
                  "queries": queries, "time": round(time.time(), 3)}  # fmt: skip
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one writer at a time, threads and runs alike
            created = os.fstat(fd).st_size == 0
            self._cut_torn_tail(fd)
            write_all(fd, line)
            os.fsync(fd)
            if created:  # the file's directory entry must survive a power loss too
                fsync_dir(self.path.parent)
        finally:
            os.close(fd)  # releases the flock
        with self._lock:
            self.answers[(item_id, model, hash_)] = queries

    def _cut_torn_tail(self, fd: int) -> None:
        """Drop bytes after the last newline: a writer was killed mid-line (we hold the flock)."""
        size = end = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        keep = 0
        while end > 0:
            start = max(0, end - 65536)
            newline = os.pread(fd, end - start, start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        logger.warning("%s: cut a torn last line (%d bytes) left by an interrupted run", self.path, size - keep)
        os.ftruncate(fd, keep)

    @contextlib.contextmanager
    def claim(self, key: CacheKey, wait: bool, stop: threading.Event) -> Iterator[bool]:
        """Hold key against other runs; yields False if another run holds it and ``wait`` is False
        (or ``stop`` is set while waiting)."""
        fd = self._claims_file()
        offset = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:7], "big")  # < 2**56: valid
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                break
            except OSError:  # EACCES or EAGAIN: another run is asking for this item
                if not wait or stop.wait(CLAIM_POLL_SECONDS):
                    yield False
                    return
        try:
            yield True
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)

    def _claims_file(self) -> int:
        # One descriptor for the cache's life: closing any descriptor of the file would drop
        # every lock this process holds on it.
        with self._lock:
            if self._claims_fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                claims_path = self.path.with_name(CACHE_FILE + ".lock")
                self._claims_fd = os.open(claims_path, os.O_RDWR | os.O_CREAT, 0o644)
            return self._claims_fd

    def close(self) -> None:
        with self._lock:
            if self._claims_fd is not None:
                os.close(self._claims_fd)
                self._claims_fd = None


def parse_cache_line(line: bytes) -> tuple[CacheKey, list[str]] | None:
    """A cache record's key and queries, or None for a line that is not one."""
    try:
        record = json.loads(line.decode("utf-8"))
        key = (int(record["item_id"]), str(record["model"]), str(record["prompt_hash"]))
        queries = record["queries"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, OverflowError, RecursionError):
        return None
    if not isinstance(queries, list) or not all(isinstance(q, str) and is_utf8_text(q) for q in queries):
        return None
    return key, queries


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written: it may write fewer than asked (signals, full disks)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ the run


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


def backoff_seconds(attempt: int, config: QueriesConfig, rng: random.Random) -> float:
    """Full jitter: uniform(0, base * 2**attempt), capped at retry_max_seconds."""
    return rng.uniform(0.0, min(config.retry_max_seconds, config.retry_base_seconds * 2**attempt))


def retry_delay(error: Exception, attempt: int, config: QueriesConfig, rng: random.Random) -> float:
    """The wait the service asked for (capped at retry_max_seconds), else the backoff."""
    asked = retry_after_seconds(error)
    return backoff_seconds(attempt, config, rng) if asked is None else min(asked, config.retry_max_seconds)


_RETRY_DELAY = re.compile(r"(\d+(?:\.\d+)?)s")


def retry_after_seconds(error: Exception) -> float | None:
    """Seconds a 429/503 asks us to wait, if it says.

    Both SDKs keep the HTTP response on the error (openai's APIStatusError and google-genai's
    APIError as ``response``): its ``retry-after-ms`` (OpenAI's) or ``Retry-After`` header, in
    seconds or as an HTTP date. Gemini says it in the body instead, as a google.rpc.RetryInfo
    ``retryDelay`` ("30s"), which google-genai keeps as ``details``.
    """
    headers = getattr(getattr(error, "response", None), "headers", None) or {}
    candidates = [_seconds(headers.get("retry-after-ms"), scale=0.001), _seconds(headers.get("retry-after"))]
    details = getattr(error, "details", None)
    body = details.get("error", details) if isinstance(details, dict) else None
    for entry in (body.get("details") if isinstance(body, dict) else None) or []:
        delay = _RETRY_DELAY.fullmatch(str(entry.get("retryDelay", ""))) if isinstance(entry, dict) else None
        candidates.append(float(delay.group(1)) if delay else None)
    return next((c for c in candidates if c is not None and math.isfinite(c) and c >= 0), None)


def _seconds(value: str | None, scale: float = 1.0) -> float | None:
    """A delay header's value in seconds: a number (times scale) or an HTTP date from now."""
    if not value:
        return None
    try:
        return float(value) * scale
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def ask_item(
    backend: RemoteBackend, item: ItemInfo, prompt: str, config: QueriesConfig,
    sleep: Callable[[float], Any], rng: random.Random, stop: threading.Event,
) -> ItemOutcome:  # fmt: skip
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
) -> ItemOutcome:  # fmt: skip
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
) -> Iterator[ItemOutcome]:  # fmt: skip
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

    pending = {submit(entry, wait=False): entry for entry in todo}
    try:
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
) -> QueryRun:  # fmt: skip
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
                             "input_tokens": 0, "output_tokens": 0}  # fmt: skip

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


# ------------------------------------------------------------------------ split and write


def split_queries(run: QueryRun, config: QueriesConfig) -> dict[str, pd.DataFrame]:
    """train = the first n_train, test = the last n_test, valid = the n_valid before test."""
    rows: dict[str, list[tuple[str, int, str, str]]] = {split: [] for split in SPLITS}
    n = config.n_generated
    ranges = {
        "train": range(0, config.n_train),
        "valid": range(n - config.n_test - config.n_valid, n - config.n_test),
        "test": range(n - config.n_test, n),
    }
    for item_id in sorted(run.queries):
        generated = run.queries[item_id]
        for split, positions in ranges.items():
            rows[split].extend((f"{item_id}-{i:02d}", item_id, generated[i], run.backend) for i in positions)
    frames = {}
    for split, split_rows in rows.items():
        frame = pd.DataFrame(split_rows, columns=["query_id", "item_id", "text", "backend"])
        frames[split] = frame.astype({"query_id": str, "item_id": "int64", "text": str, "backend": str})
    return frames


def query_metrics(run: QueryRun, splits: dict[str, pd.DataFrame], titles: dict[int, str]) -> dict[str, Any]:
    """Counts per split, mean length, duplicate and title-leak rates, failures, time."""
    everything = pd.concat(splits.values(), ignore_index=True)
    texts = everything["text"].tolist()
    normalized = [normalize(t) for t in texts]
    item_titles = [titles[i] for i in everything["item_id"]]
    n = max(1, len(texts))
    metrics: dict[str, Any] = {f"queries_{split}": int(len(frame)) for split, frame in splits.items()}
    metrics.update(
        items_with_queries=len(run.queries),
        mean_words=sum(len(t.split()) for t in texts) / n,
        duplicate_rate=1 - len(set(normalized)) / n,  # identical queries across items (after normalising)
        title_leak_rate=sum(contains_title(t, title) for t, title in zip(texts, item_titles)) / n,
        title_word_rate=sum(bool(set(q.split()) & title_words(title)) for q, title in zip(normalized, item_titles)) / n,
        backend=run.backend,
        model=run.model,
    )
    metrics.update(run.stats)
    metrics["queries_per_second"] = sum(len(q) for q in run.queries.values()) / max(run.stats["seconds"], 1e-9)
    return metrics


def write_queries(splits: dict[str, pd.DataFrame], folder: Path, failures: list[tuple[int, str]]) -> None:
    with atomic_dir(folder) as tmp:
        for split, frame in splits.items():
            frame.to_parquet(tmp / f"{split}.parquet", index=False)
        write_failures(tmp / FAILURES_FILE, failures)


def write_failures(path: Path, failures: list[tuple[int, str]]) -> None:
    """The items that got no queries, with why: [{"item_id": ..., "reason": ...}]."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps([{"item_id": i, "reason": r} for i, r in failures], indent=1) + "\n")


def load_queries(folder: str | Path, split: str) -> pd.DataFrame:
    """One split of data/queries: query_id, item_id, text, backend."""
    if split not in SPLITS:
        raise SemidError(f"query split {split!r} is not valid; choose one of: {', '.join(SPLITS)}")
    path = Path(folder) / f"{split}.parquet"
    if not path.exists():
        raise SemidError(f"{path} not found; run `dvc repro gen_queries` first")
    return pd.read_parquet(path)


# --------------------------------------------------------------------------- dry run


def estimate(items: pd.DataFrame | list[ItemInfo], config: QueriesConfig, backend: Any, cache_dir: Path | None) -> dict[str, Any]:
    """Requests and rough tokens a run would make (about 4 characters per token)."""
    infos = items_from_frame(items) if isinstance(items, pd.DataFrame) else list(items)
    result = {"backend": backend.name, "model": backend.model, "items": len(infos), "cached_items": 0,
              "requests": 0, "input_tokens": 0, "output_tokens": 0}  # fmt: skip
    if not backend.remote:
        return result
    cache = AnswerCache(cache_dir) if cache_dir else None
    for item in infos:
        prompt = build_prompt(item, config.n_generated)
        if cache and cache.get(item.item_id, backend.model, prompt_hash(prompt)) is not None:
            result["cached_items"] += 1
            continue
        result["requests"] += 1
        result["input_tokens"] += len(prompt) // 4 + 1
        # A query is ~8 words (~11 tokens) plus JSON quoting and separators.
        result["output_tokens"] += config.n_generated * 13 + 5
    return result


def format_estimate(estimate_: dict[str, Any]) -> str:
    if estimate_["requests"] == 0 and estimate_["backend"] == "template":
        return f"template backend: {estimate_['items']:,} items, no requests (offline)"
    return (
        f"{estimate_['backend']}/{estimate_['model']}: {estimate_['items']:,} items, {estimate_['cached_items']:,} "
        f"cached, {estimate_['requests']:,} requests (plus retries), about {estimate_['input_tokens']:,} input and "
        f"{estimate_['output_tokens']:,} output tokens"
    )

