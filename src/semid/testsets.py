"""The held-out test sets every scorer ranks against: one builder per task, one head/torso split.

- search: test queries of known items, a seeded subsample (``search_test_set``).
- rec: one example per user with a held-out item (``rec_test_set``): the history is every item
  of the user before it, the input the last H of them. Two stages read it, with different
  parameters (kept, so that neither stage's numbers moved when they started sharing it):

  | stage                       | target split | input (``recent``)   | users with no earlier item |
  | --------------------------- | ------------ | -------------------- | -------------------------- |
  | evaluate (generator, baselines) | test     | last ``history_length`` | dropped (``min_history=1``) |
  | train_embedder's ceilings   | valid        | the whole history    | kept, as a zero vector (``min_history=0``) |

  In both, the whole history is what "seen" items are removed from rankings by.
- head / torso: "head" is the top ``fraction`` of items by train interactions.

(The generator's own validation examples, ``semid.generator.examples.rec_heldout_examples``, are
the valid-split rows of the same definition; they feed the trainer's loss, not a metric.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from semid.metrics import EvaluationError


def search_test_set(queries: pd.DataFrame, item_ids: Sequence[int], sample: int, seed: int) -> pd.DataFrame:
    """Queries of known items, a seeded subsample of ``sample`` rows (0 = all)."""
    known = queries[queries["item_id"].isin({int(i) for i in item_ids})]
    if known.empty:
        raise EvaluationError("the search test set is empty: no test query names a known item")
    if sample and len(known) > sample:
        known = known.sample(n=sample, random_state=seed)
    return known.reset_index(drop=True)


def rec_test_set(
    interactions: pd.DataFrame,
    history_length: int | None,
    target_split: str = "test",
    min_history: int = 1,
    required: bool = True,
) -> pd.DataFrame:
    """Per user with a ``target_split`` item: user_id, history (all earlier items), recent (the
    last ``history_length`` of them; None = all), target_item. Users with fewer than
    ``min_history`` earlier items are left out; an empty set raises unless ``required`` is False."""
    ordered = interactions.sort_values(["user_id", "position"])
    rows = []
    for user, group in ordered.groupby("user_id", sort=True):
        target = group[group["split"] == target_split]
        if target.empty:
            continue
        before = group[group["position"] < target["position"].iloc[0]]["item_id"].astype(int).tolist()
        if len(before) >= min_history:
            rows.append(
                {
                    "user_id": int(user),
                    "history": before,
                    "recent": before[-history_length:] if history_length else before,
                    "target_item": int(target["item_id"].iloc[0]),
                }
            )
    if not rows and required:
        raise EvaluationError(
            f"the rec {target_split} set is empty: no user has a {target_split} item after a history"
        )
    return pd.DataFrame(rows, columns=["user_id", "history", "recent", "target_item"])


def train_popularity(interactions: pd.DataFrame, item_ids: Sequence[int]) -> np.ndarray:
    """Train interactions per item, aligned with ``item_ids``."""
    counts = interactions[interactions["split"] == "train"]["item_id"].value_counts()
    return np.asarray([int(counts.get(int(i), 0)) for i in item_ids], dtype=np.int64)


def head_items(interactions: pd.DataFrame, item_ids: Sequence[int], fraction: float) -> set[int]:
    """The top ``fraction`` of the catalogue by train interactions (ties broken by item id)."""
    counts = train_popularity(interactions, item_ids)
    n_head = max(1, math.ceil(fraction * len(item_ids))) if fraction > 0 else 0
    order = np.lexsort((np.asarray(item_ids), -counts))[:n_head]
    return {int(item_ids[i]) for i in order}
