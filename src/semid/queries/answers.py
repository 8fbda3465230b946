"""Validation of a model's answer: a JSON array of exactly N distinct non-empty strings UTF-8
can encode, none containing the title. Each failure names its reason (the counter name)."""

from __future__ import annotations

import json
import re
from typing import Any

from semid.queries.errors import InvalidAnswer
from semid.queries.titles import contains_title, normalize


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
