"""Dense ceilings of every embedding method on the workspace's prepared data and queries.

    python bench/embed_ceilings.py [--methods content,search,...]

Runs each method with the params.yaml `embed` settings (as the train_embedder stage would) and
prints a markdown table: validation search / rec Recall@30 from the embedding alone, and seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from semid.artifacts import PREPARED, QUERIES
from semid.config import load_params
from semid.data import load_interactions, load_items
from semid.embed import METHODS, EmbeddingInputs, dense_ceilings, embed_items
from semid.queries import load_queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    params = load_params()
    items, interactions = load_items(PREPARED.at()), load_interactions(PREPARED.at())
    train_queries, valid_queries = load_queries(QUERIES.at(), "train"), load_queries(QUERIES.at(), "valid")
    rows = []
    for method in args.methods.split(","):
        with tempfile.TemporaryDirectory() as work:
            inputs = EmbeddingInputs(items, interactions[interactions["split"] == "train"], train_queries,
                                     params.embed, params.base.seed, Path(work))
            start = time.perf_counter()
            result = embed_items(method, inputs)
            seconds = time.perf_counter() - start
        ceilings = dense_ceilings(result, items, interactions, valid_queries, params.embed, params.base.seed)
        rows.append((method, ceilings.get("search_recall_at_30"), ceilings["rec_recall_at_30"],
                     ceilings["popularity_rec_recall_at_30"], seconds))
        print(rows[-1], flush=True)
    print("\n| embedding | search R@30 | rec R@30 | popularity rec R@30 | seconds |\n| --- | --- | --- | --- | --- |")
    for method, search, rec, popularity, seconds in rows:
        shown = "n/a" if search is None else f"{search:.3f}"
        print(f"| {method} | {shown} | {rec:.3f} | {popularity:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
