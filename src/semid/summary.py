"""Print the pipeline's metrics files as a short summary (`make reproduce` ends with this)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from semid.config import find_root

# What to show per metrics file, in pipeline order; other keys stay in the files.
HEADLINES: dict[str, list[str]] = {
    "data.json": ["users", "items", "interactions", "density", "train_interactions", "test_interactions"],
    "queries.json": ["queries_train", "queries_valid", "queries_test", "title_leak_rate", "failed_items"],
    "embed.json": ["search_recall_at_30", "rec_recall_at_30"],
    "ids.json": ["collision_rate", "codebook_usage_level_1", "neighbour_preservation"],
    "search.json": ["recall_at_10", "recall_at_30", "ndcg_at_30", "mrr"],
    "rec.json": ["recall_at_10", "recall_at_30", "ndcg_at_30", "mrr"],
    "baselines.json": ["bm25_search_recall_at_30", "dense_search_recall_at_30", "dense_rec_recall_at_30",
                       "popularity_rec_recall_at_30"],
}


def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summarize(metrics_dir: Path) -> str:
    lines = []
    for name, keys in HEADLINES.items():
        path = metrics_dir / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        shown = [k for k in keys if k in data]
        lines.append(f"{name[:-5]:>10}: " + ", ".join(f"{k}={format_value(data[k])}" for k in shown))
    return "\n".join(lines) if lines else f"no metrics under {metrics_dir} yet; run `dvc repro`"


def main() -> None:
    print(summarize(find_root() / "metrics"))


if __name__ == "__main__":
    sys.exit(main())
