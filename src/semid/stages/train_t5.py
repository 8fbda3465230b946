"""DVC stage: semantic IDs + queries + histories -> models/generator (one T5 for search and rec)."""

from __future__ import annotations


import pandas as pd

from semid.artifacts import GENERATOR, IDS, PREPARED, QUERIES, TRAIN_CURVE, TRAIN_METRICS
from semid.data import load_interactions, load_items
from semid.distributed import is_main_process, relaunch
from semid.generator import build_examples, load_id_table, configure_torch, tokenizer_corpus, train_generator
from semid.io import atomic_path, write_json
from semid.queries import load_queries
from semid.stages.code_deps import code_digest
from semid.stages.common import stage_main, stage_setup
from semid.tracking import stage_run


@stage_main
def main() -> None:
    params, layout = stage_setup()
    config, seed = params.generator, params.base.seed
    relaunch("semid.stages.train_t5", config.processes)  # generator.processes > 1: under torchrun
    configure_torch(params.base.threads)
    with stage_run("train_t5", params, keys=["base", "generator"]) as run:
        items, interactions = load_items(layout.at(PREPARED)), load_interactions(layout.at(PREPARED))
        table = load_id_table(layout.at(IDS), items["item_id"])
        train_queries, valid_queries = load_queries(layout.at(QUERIES), "train"), load_queries(layout.at(QUERIES), "valid")
        train, valid = build_examples(config, table, items, interactions, train_queries, valid_queries, seed)
        stats = train_generator(
            config, table, train, valid, tokenizer_corpus(items, train_queries), layout.at(GENERATOR), seed,
            code_version=code_digest("train_t5"),
        )
        curve = stats.pop("curve")
        if not is_main_process():
            return
        with atomic_path(layout.at(TRAIN_CURVE)) as tmp:
            pd.DataFrame(curve, columns=["step", "epoch", "train_loss", "valid_loss"]).to_csv(tmp, index=False)
        write_json(layout.at(TRAIN_METRICS), stats)
        run.log_metrics(stats)
    print(
        f"{stats['train_examples']:,} examples ({stats['train_search_examples']:,} search, "
        f"{stats['train_rec_examples']:,} rec, {stats['train_index_examples']:,} indexing); "
        f"{stats['steps']:,} steps = {stats['epochs_done']:.2f} epochs in {stats['train_seconds']:.0f} s "
        f"({stats['train_examples_per_second']:.0f} examples/s); train loss {stats['train_loss']:.3f}, "
        f"valid loss {stats.get('valid_loss', float('nan')):.3f}"
    )


if __name__ == "__main__":
    main()
