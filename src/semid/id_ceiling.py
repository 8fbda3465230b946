"""The ID ceiling: the best Recall@k any generator could reach with a given ID table.

A generator writes IDs, not items. Without the de-duplication level an ID names a *bucket*: every
item sharing the code tuple. So the best a generator can do is the dense ranking mapped to
buckets: buckets in order of their best item, each bucket's items in an order the generator
cannot know. This module scores that ranking by its *expected* recall over that unknown order:

- walk the dense ranking (item ids, best first), taking buckets in order of first appearance;
- a bucket B that starts after c earlier positions fills positions c+1 .. c+|B| in a uniformly
  random order, so each of its items is in the top k with probability
  ``max(0, min(|B|, k - c)) / |B|``;
- expected recall of an example is the mean of that probability over its relevant items (an
  item absent from the ranking scores 0). With one relevant item and every bucket of size 1 it is
  exactly ``semid.metrics.recall_at_k`` of the ranking.

Items not in the ranking are in no bucket: rec rankings hold only the user's unseen items (seen
items are removed from every method's ranking, and the generator filters them), so a bucket's
size counts only unseen items. ``evaluate`` computes it on the held-out sets
(metrics/id_ceiling.json): the gap dense − ceiling is lost by the IDs, ceiling − generator by the
generator.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence

import numpy as np


def bucket_ids(codes: Sequence[Sequence[int]], levels: int) -> np.ndarray:
    """An integer bucket per row: rows sharing their first ``levels`` codes share a bucket."""
    keys = np.asarray([tuple(c)[:levels] for c in codes], dtype=np.int64).reshape(len(codes), -1)
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def bucket_positions(ranked_buckets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position of a ranking given as bucket ids: (earlier positions before its bucket
    starts, its bucket's size), buckets taken in order of first appearance."""
    ranked_buckets = np.asarray(ranked_buckets)
    unique, first, inverse, sizes = np.unique(
        ranked_buckets, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.argsort(first, kind="stable")  # buckets by first appearance
    starts = np.empty(len(unique), np.int64)
    starts[order] = np.cumsum(sizes[order]) - sizes[order]
    inverse = inverse.reshape(-1)
    return starts[inverse], sizes[inverse]


def in_top_k_probability(start: np.ndarray, size: np.ndarray, k: int) -> np.ndarray:
    """P(an item of a bucket of ``size`` starting after ``start`` positions lands within the first k)."""
    return np.clip(k - np.asarray(start), 0, np.asarray(size)) / np.asarray(size)


def expected_recall(
    ranking: Sequence[int], bucket_of: Mapping[int, Hashable], relevant: Collection[int], k: int
) -> float:
    """Expected Recall@k of one example when ``ranking`` (item ids, best first) is returned as
    buckets (``bucket_of[item]``), each in a random order; the mean over ``relevant`` items."""
    if not relevant:
        raise ValueError("an example needs at least one relevant item")
    keys = {key: index for index, key in enumerate(dict.fromkeys(bucket_of[item] for item in ranking))}
    ranked_buckets = np.asarray([keys[bucket_of[item]] for item in ranking], np.int64)
    starts, sizes = bucket_positions(ranked_buckets)
    position = {int(item): p for p, item in enumerate(ranking)}
    hits = [
        in_top_k_probability(starts[position[item]], sizes[position[item]], k) if item in position else 0.0
        for item in relevant
    ]
    return float(np.mean(hits))


def ceiling_metrics(
    rankings: Iterable[np.ndarray],
    targets: Sequence[int],
    buckets: Mapping[str, np.ndarray],
    k: int,
) -> dict[str, float]:
    """Dense and ceiling Recall@k over examples with one relevant item each.

    ``rankings`` yields per example the ranked item rows (best first, excluded items already
    dropped); ``targets`` the relevant row; ``buckets`` maps a suffix ("" for the IDs without the
    de-duplication level, "_level1" for the first level alone) to a bucket id per item row.
    Returns ``dense_recall_at_{k}`` (the ranking itself), ``recall_at_{k}{suffix}`` (the
    ceiling) and ``mean_bucket_size{suffix}`` (the size of the target's bucket, unseen items only).
    """
    dense: list[float] = []
    ceiling: dict[str, list[float]] = {suffix: [] for suffix in buckets}
    size_seen: dict[str, list[float]] = {suffix: [] for suffix in buckets}
    n = 0
    for ranking, target in zip(rankings, targets):
        n += 1
        ranking = np.asarray(ranking)
        where = np.flatnonzero(ranking == target)
        dense.append(float(len(where) > 0 and where[0] < k))
        for suffix, bucket_of_row in buckets.items():
            if len(where) == 0:
                ceiling[suffix].append(0.0)
                continue
            ranked_buckets = bucket_of_row[ranking]
            target_bucket = ranked_buckets[where[0]]
            # Only the buckets first seen up to the target's bucket matter: those before it, and its size.
            size = int(np.count_nonzero(ranked_buckets == target_bucket))
            first = int(np.flatnonzero(ranked_buckets == target_bucket)[0])
            before = ranked_buckets[:first]
            start = int(np.count_nonzero(np.isin(ranked_buckets, np.unique(before)))) if first else 0
            ceiling[suffix].append(float(in_top_k_probability(start, size, k)))
            size_seen[suffix].append(size)
    if n != len(targets):
        raise ValueError(f"{n} rankings for {len(targets)} targets")
    metrics = {f"dense_recall_at_{k}": float(np.mean(dense)) if dense else float("nan")}
    for suffix in buckets:
        metrics[f"recall_at_{k}{suffix}"] = float(np.mean(ceiling[suffix])) if dense else float("nan")
        values = size_seen[suffix]
        metrics[f"mean_bucket_size{suffix}"] = float(np.mean(values)) if values else float("nan")
    return metrics
