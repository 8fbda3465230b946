"""DVC stage: items + train interactions + train queries -> data/embeddings/ + metrics/embed.json."""

from __future__ import annotations

import hashlib
import json
import shutil
import time

import pandas as pd

from semid.artifacts import EMBEDDER_CHECKPOINTS, EMBEDDINGS, EMBED_METRICS, PREPARED, QUERIES
from semid.config import check_item_count
from semid.data import load_interactions, load_items
from semid.distributed import is_main_process, relaunch
from semid.embed import EmbeddingInputs, dense_ceilings, embed_items, write_embeddings
from semid.io import write_json
from semid.queries import load_queries
from semid.seeding import pin_threads
from semid.stages.code_deps import code_digest
from semid.stages.common import stage_main, stage_setup
from semid.tracking import stage_run


def run_fingerprint(params, *frames: pd.DataFrame) -> str:
    """A short hash of the params, the code and the input tables a fine-tune reads."""
    digest = hashlib.sha256(json.dumps(params.flat(["base", "embedding", "embed"]), sort_keys=True, default=str).encode())
    digest.update(code_digest("train_embedder").encode())
    for frame in frames:
        digest.update(pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy().tobytes())
    return digest.hexdigest()[:12]


@stage_main
def main() -> None:
    params, layout = stage_setup()
    pin_threads(params.base.threads)
    config = params.embed
    items = load_items(layout.at(PREPARED))
    check_item_count(params, len(items))  # embed.eval_k, quantize.codebook_size: before any fine-tune
    relaunch("semid.stages.train_embedder", config.processes)  # embed.processes > 1: under torchrun
    interactions = load_interactions(layout.at(PREPARED))
    train_queries = load_queries(layout.at(QUERIES), "train")
    fingerprint = run_fingerprint(params, items[["item_id", "item_text"]], interactions, train_queries)
    inputs = EmbeddingInputs(
        items=items,
        train_interactions=interactions[interactions["split"] == "train"],
        train_queries=train_queries,
        config=config,
        seed=params.base.seed,
        # Checkpoints of another setup must never be resumed: the folder is keyed by a hash of
        # everything the fine-tune reads; it is removed once the stage succeeds.
        work_dir=layout.root("train_embedder") / EMBEDDER_CHECKPOINTS / f"{params.embedding}-{fingerprint}",
    )
    with stage_run("train_embedder", params, keys=["base", "embedding", "embed"]) as run:
        start = time.perf_counter()
        result = embed_items(params.embedding, inputs)
        seconds = time.perf_counter() - start
        if not is_main_process():  # the fine-tune is done; rank 0 evaluates and writes
            return
        metrics = {
            "method": params.embedding,
            "seconds": seconds,
            **{f"dim_{space}": int(v.shape[1]) for space, v in result.spaces.items()},
            **result.info,
            **dense_ceilings(result, items, interactions, load_queries(layout.at(QUERIES), "valid"), config, params.base.seed),
        }
        write_embeddings(result, items, params.embedding, config.model, layout.at(EMBEDDINGS))
        write_json(layout.at(EMBED_METRICS), metrics)
        run.log_metrics(metrics)
    # Only now: a tracking error above keeps the checkpoints, so the rerun resumes, not re-fine-tunes.
    shutil.rmtree(inputs.work_dir, ignore_errors=True)
    shown = {k: metrics.get(k) for k in ("search_recall_at_30", "rec_recall_at_30", "popularity_rec_recall_at_30")}
    print(f"{params.embedding}: {seconds:.0f}s; validation ceilings {shown}")


if __name__ == "__main__":
    main()
