"""Training and held-out examples: search queries, rec next-item windows, DSI indexing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from semid.generator.table import IdTable, task_space

SEARCH_PREFIX = "search: "
REC_PREFIX = "recommend: "
INDEX_PREFIX = "item: "




@dataclass(frozen=True)
class Example:
    task: str  # search | rec | index
    source: str
    target_item: int


def search_examples(queries: pd.DataFrame) -> list[Example]:
    return [
        Example("search", SEARCH_PREFIX + text, int(item))
        for text, item in zip(queries["text"], queries["item_id"])
    ]


def rec_source(table: IdTable, history: Sequence[int]) -> str:
    space = task_space(table.spaces, "rec")
    return REC_PREFIX + " ".join(table.sid(space, int(item)) for item in history)


def user_histories(interactions: pd.DataFrame, splits: Sequence[str]) -> dict[int, list[int]]:
    """user -> items of the given splits in chronological order."""
    rows = interactions[interactions["split"].isin(splits)].sort_values(["user_id", "position"])
    return {int(user): group.tolist() for user, group in rows.groupby("user_id", sort=True)["item_id"]}


def rec_train_examples(
    interactions: pd.DataFrame,
    table: IdTable,
    history_length: int,
    stride: int = 1,
    max_windows_per_user: int = 0,
) -> list[Example]:
    """Sliding next-item windows over TRAIN histories only; the newest windows first when capped."""
    examples = []
    for history in user_histories(interactions, ["train"]).values():
        targets = list(range(len(history) - 1, 0, -stride))  # newest target first
        if max_windows_per_user:
            targets = targets[:max_windows_per_user]
        for t in reversed(targets):
            window = history[max(0, t - history_length) : t]
            examples.append(Example("rec", rec_source(table, window), int(history[t])))
    return examples


def rec_heldout_examples(
    interactions: pd.DataFrame, table: IdTable, history_length: int, split: str
) -> list[Example]:
    """One example per user: the history before the user's ``split`` item (valid or test), last H."""
    before = {"valid": ["train"], "test": ["train", "valid"]}[split]
    histories = user_histories(interactions, before)
    targets = interactions[interactions["split"] == split].set_index("user_id")["item_id"]
    examples = []
    for user, target in targets.sort_index().items():
        history = histories.get(int(user), [])[-history_length:]
        if history:
            examples.append(Example("rec", rec_source(table, history), int(target)))
    return examples


def indexing_examples(items: pd.DataFrame) -> list[Example]:
    return [
        Example("index", INDEX_PREFIX + text, int(item))
        for text, item in zip(items["item_text"], items["item_id"])
    ]


def build_examples(
    config,
    table: IdTable,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    train_queries: pd.DataFrame,
    valid_queries: pd.DataFrame,
    seed: int,
) -> tuple[list[Example], list[Example]]:
    """(train, valid): search + rec (+ indexing) from the train split; valid from the valid split."""
    train = search_examples(train_queries) + rec_train_examples(
        interactions, table, config.history_length, config.rec_window_stride, config.rec_max_windows_per_user
    )
    if config.indexing_examples:
        train += indexing_examples(items)
    valid = search_examples(valid_queries) + rec_heldout_examples(
        interactions, table, config.history_length, "valid"
    )
    if config.max_valid_examples and len(valid) > config.max_valid_examples:
        rng = np.random.default_rng(seed)
        valid = [valid[i] for i in sorted(rng.choice(len(valid), config.max_valid_examples, replace=False))]
    return train, valid


def tokenizer_corpus(items: pd.DataFrame, train_queries: pd.DataFrame) -> list[str]:
    """What a scratch tokenizer learns from: item texts, train queries and the task prefixes."""
    prefixes = [SEARCH_PREFIX, REC_PREFIX, INDEX_PREFIX] * 50  # frequent enough to become whole pieces
    return [*items["item_text"].tolist(), *train_queries["text"].tolist(), *prefixes]

