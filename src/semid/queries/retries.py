"""A failed request: is it worth retrying, and how long to wait before the next try.

Rate limits (429), server errors (5xx) and timeouts are retried after the wait the service asks
for (Retry-After), else with exponential backoff and full jitter.
"""

from __future__ import annotations

import email.utils
import math
import random
import re
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from semid.config import QueriesConfig


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
