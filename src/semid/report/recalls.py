"""Search/rec Recall@30 of the key points (rqkmeans, rqvae_naive, rqvae) from DVC experiments,
running the missing ones through the DVC queue (semid.grid)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from semid.experiments import ExperimentError, show
from semid.grid import GridPoint, run_grid
from semid.results import best_per_point

KEY_QUANTIZERS = ("rqkmeans", "rqvae_naive", "rqvae")


def key_point_recalls(root: Path, embedding: str, data_label: str, run_missing: bool, jobs: int = 1) -> dict[str, dict[str, Any]]:
    """{quantizer: recalls} for the key quantizers on ``embedding`` from `dvc exp show`; with
    ``run_missing`` the missing points are queued and run first (semid.grid)."""
    def collect() -> dict:
        try:
            return best_per_point(show(root, all_commits=True))
        except ExperimentError as error:  # not a DVC repo, or DVC cannot read it: report without recalls
            print(f"no experiments read ({error}); the report has no Recall@30 column", flush=True)
            return {}

    points = collect()
    missing = [q for q in KEY_QUANTIZERS if (data_label, embedding, q) not in points]
    if missing and run_missing:
        print(f"running the missing key points through the DVC queue: {', '.join(missing)}", flush=True)
        run_grid(root, [GridPoint(embedding, q) for q in missing], jobs)
        points = collect()
    recalls = {}
    for quantizer in KEY_QUANTIZERS:
        result = points.get((data_label, embedding, quantizer))
        if result is None:
            continue
        rec_n = sum(int(result.metric("rec", f"examples_{s}") or 0) for s in ("head", "torso")) or None
        search_n = result.metric("search", "examples") or (result.params.get("evaluate") or {}).get("search_queries") or None
        recalls[quantizer] = {
            "search": result.metric("search", "recall_at_30"),
            "rec": result.metric("rec", "recall_at_30"),
            "rec_head": result.metric("rec", "recall_at_30_head"),
            "rec_torso": result.metric("rec", "recall_at_30_torso"),
            "search_n": int(search_n) if search_n else None,
            "rec_n": rec_n,
            "epochs": result.metric("train_t5", "epochs_done"),
            "experiment": result.name,
            # The best a generator that reproduces the dense ranking could do with these IDs
            # (metrics/id_ceiling.json): how much of a point's loss its ID table alone explains.
            **{
                f"{task}_{kind}": result.metric("id_ceiling", f"{task}_{key}")
                for task in ("search", "rec")
                for kind, key in (("ceiling", "recall_at_30"), ("ceiling_l1", "recall_at_30_level1"), ("dense", "dense_recall_at_30"))
            },
        }
    return recalls
