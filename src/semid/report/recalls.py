"""Search/rec Recall@30 of the key points (rqkmeans, rqvae_naive, rqvae): from the grid in main
(``make grid``: seeds, paired tests) where it has them, else from DVC experiments, running the
missing ones through the DVC queue (semid.grid)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from semid.experiments import ExperimentError, show
from semid.findings import MULTITASK, REFERENCE_QUANTIZER, TASKS, comparison_family
from semid.grid import GridPoint, run_grid
from semid.grid_results import Grid, load_grid, summarize_point
from semid.results import best_per_point

KEY_QUANTIZERS = ("rqkmeans", "rqvae_naive", "rqvae")
# The paper's quantizer table (and its 0.002) is on multi-task embeddings: the end-to-end rows and
# the answer's recall sentences come from that block of the grid.
GRID_EMBEDDING = MULTITASK
CEILING_KEYS = (("ceiling", "recall_at_30"), ("ceiling_l1", "recall_at_30_level1"), ("dense", "dense_recall_at_30"))


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


def _mean(values: list[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return sum(found) / len(found) if found else None


def grid_recalls(grid: Grid, embedding: str = GRID_EMBEDDING) -> dict[str, dict[str, Any]]:
    """{quantizer: recalls} of the key quantizers the grid has finished on ``embedding``: means over
    seeds, each seed's level-1 code use, and each RQ-VAE's paired test against RQ-KMeans as
    ``make results`` reports it (the same family and Bonferroni correction, so the p-values agree
    with results/table.md)."""
    family = comparison_family(grid)
    recalls = {}
    for quantizer in KEY_QUANTIZERS:
        runs = grid.runs(embedding, quantizer)
        if not runs:
            continue
        seeds = sorted(runs)

        def mean(name: str, key: str) -> float | None:
            return _mean([runs[s].metric(name, key) for s in seeds])

        found: dict[str, Any] = {
            column: (summary.mean if (summary := summarize_point(runs, column)) else None)
            for column in ("search", "rec", "rec_head", "rec_torso")
        }
        found.update({
            "seeds": len(seeds),
            "level1_usage": [runs[s].metric("ids", "codebook_usage_level_1") for s in seeds],
            "epochs": mean("train_t5", "epochs_done"),
            "experiment": f"grid/runs/{embedding}-{quantizer}-s{{{','.join(map(str, seeds))}}}",
            "source": "grid",
            **{f"{task}_{kind}": mean("id_ceiling", f"{task}_{key}") for task in TASKS for kind, key in CEILING_KEYS},
        })
        if quantizer != REFERENCE_QUANTIZER:
            for test in family:
                if test.row == (embedding, quantizer) and test.reference == (embedding, REFERENCE_QUANTIZER) \
                        and test.column in TASKS and test.test is not None:
                    found[f"{test.column}_test"] = {
                        "difference": test.test.difference, "p_corrected": test.p_corrected,
                        "significant": test.significant, "seeds": len(test.seeds),
                        "family": sum(c.test is not None for c in family),
                    }
        recalls[quantizer] = found
    return recalls


def end_to_end_recalls(root: Path, fallback: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], str]:
    """(recalls, embedding): the grid's on GRID_EMBEDDING where it has RQ-KMeans and the fixed
    RQ-VAE, else ``fallback`` (DVC experiments on the report's own embeddings) and ""."""
    found = grid_recalls(load_grid(root))
    if REFERENCE_QUANTIZER in found and "rqvae" in found:
        return found, GRID_EMBEDDING
    return fallback, ""
