"""``gen_queries --dry-run``: the requests and rough tokens a run would make, nothing asked."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from semid.queries.cache import AnswerCache
from semid.queries.prompt import ItemInfo, build_prompt, items_from_frame, prompt_hash

if TYPE_CHECKING:
    from semid.config import QueriesConfig


def estimate(items: pd.DataFrame | list[ItemInfo], config: QueriesConfig, backend: Any, cache_dir: Path | None) -> dict[str, Any]:
    """Requests and rough tokens a run would make (about 4 characters per token)."""
    infos = items_from_frame(items) if isinstance(items, pd.DataFrame) else list(items)
    result = {"backend": backend.name, "model": backend.model, "items": len(infos), "cached_items": 0,
              "requests": 0, "input_tokens": 0, "output_tokens": 0}
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
