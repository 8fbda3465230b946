"""Checks on what a request gives: k, a query, a method, item and user ids, a query file.

A leaf module (the standard library and ``semid.io``), so the CLI checks a request before anything
heavy loads; the checks that need the catalogue take it as an argument.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semid.io import SemidError

if TYPE_CHECKING:
    import pandas as pd

METHODS = ("generative", "dense")


class ServeError(SemidError):
    """A bad request (empty query, k <= 0, unknown ids) or a run without trained outputs."""


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ServeError(f"k must be a positive integer, got {k!r}")
    return k


def check_query(query: Any) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ServeError(f"empty query {query!r}: give the text to search for")
    return query.strip()


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ServeError(f"method={method!r} is not valid; choose one of: {', '.join(METHODS)}")
    return method


_ITEM_ID = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses


def item_id_of(value: Any) -> int | None:
    """An item or user id as written (5, "5", " 5 ") as an int; None for anything else ("-5", "²", 5.5, True)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):  # Python and NumPy integers
        return int(value) if value >= 0 else None
    text = value.strip() if isinstance(value, str) else None
    return int(text) if text and _ITEM_ID.fullmatch(text) else None


def parse_item_ids(text: str) -> list[int]:
    """"1,260,1196" -> [1, 260, 1196]; anything that is no integer is named."""
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    bad = [part for part in parts if item_id_of(part) is None]
    if bad:
        raise ServeError(
            f"item ids must be integers separated by commas, got {', '.join(map(repr, bad))} (e.g. 1,260,1196)"
        )
    if not parts:
        raise ServeError("no item ids given: pass them as --items 1,260,1196")
    return [int(part) for part in parts]


def check_items(item_ids: Sequence[Any], known: Collection[int], source: str, items_path: str) -> list[int]:
    """The ids as ints, or a ServeError naming every id that is not in the catalogue ``known``."""
    ids = list(item_ids)
    if not ids:
        raise ServeError("empty history: give at least one item id")
    parsed, unknown = [], []
    for item in ids:
        item_id = item_id_of(item)
        if item_id is None or item_id not in known:
            unknown.append(item)
        else:
            parsed.append(item_id)
    if unknown:
        raise ServeError(
            f"unknown item id(s) {', '.join(map(str, unknown))}: not among the {len(known):,} items of "
            f"{source} ({items_path})"
        )
    return parsed


def check_user(user_id: Any, histories: Mapping[int, list[int]], source: str) -> int:
    """The user id as an int, or a ServeError where the user has no train interactions."""
    try:
        user = int(user_id)
    except (TypeError, ValueError):
        user = None
    if user is None or isinstance(user_id, bool) or user not in histories:
        raise ServeError(
            f"unknown user id {user_id!r}: {len(histories):,} users have train interactions "
            f"(ids {min(histories)}..{max(histories)}) in {source}"
        )
    return user


# --------------------------------------------------------------------------- query files (score-queries)


def check_query_frame(frame: pd.DataFrame) -> pd.DataFrame:
    missing = [column for column in ("item_id", "query") if column not in frame.columns]
    if missing:
        raise ServeError(
            f"the query file lacks column(s) {', '.join(missing)}; it needs item_id,query "
            f"(has: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    return frame


def check_query_rows(
    frame: pd.DataFrame, known: Collection[int]
) -> tuple[list[int], list[str], list[dict[str, Any]]]:
    """(target item ids, query texts, skipped rows) of an item_id,query frame.

    Rows whose item id is not in the catalogue (or not an integer) or whose query is empty are
    skipped and listed ({"row": 0-based row, "item_id": as given, "reason": ...}), never dropped
    silently; a frame with nothing left is an error.
    """
    targets, texts, skipped = [], [], []
    for row, (item, text) in enumerate(zip(frame["item_id"], frame["query"])):
        item_text, item_id = str(item).strip(), item_id_of(item)
        if item_id is None or item_id not in known:
            skipped.append({"row": row, "item_id": item_text, "reason": "unknown item id"})
        elif not isinstance(text, str) or not text.strip():
            skipped.append({"row": row, "item_id": item_text, "reason": "empty query"})
        else:
            targets.append(item_id)
            texts.append(text.strip())
    if not targets:
        raise ServeError(f"none of the {len(frame)} rows has a known item id and a query; nothing to score")
    return targets, texts, skipped


def read_query_file(path: str | Path) -> pd.DataFrame:
    """A CSV (or .parquet) of item_id,query rows, ids kept as written so bad ones can be named."""
    # score-queries alone reads tables before the model loads: pandas costs ~0.4 s to import.
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ServeError(f"query file {path} not found")
    if path.suffix == ".parquet":
        from semid.data import read_parquet

        return read_parquet(path)
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ServeError(f"cannot read {path} as CSV with columns item_id,query: {error}") from error
