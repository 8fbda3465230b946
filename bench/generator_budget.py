"""Generator learning curve: search and rec Recall@30 against the training budget.

The embedded pipeline gives train_t5 a 7-minute CPU budget (~1.7 epochs on 2 cores), which leaves
the generator undertrained for search. This bench answers "how much of the gap is budget?": it
trains a fresh generator from the pipeline's artifacts (data/prepared, data/queries, data/ids;
`dvc repro quantize` first) for each budget in --epochs, with everything else as in params.yaml,
and scores each on the same test sets and decoding as the evaluate stage (generator only; the
baselines do not depend on the budget). Prints one row per budget and appends it as a JSON line
to --out. Meant for a GPU (it uses one when present); on 2 CPU cores one epoch takes ~4 min.

    python bench/generator_budget.py --epochs 1.67 5 15 --out curve.jsonl
    python bench/generator_budget.py --epochs 3 --set generator.d_model=256 --set generator.num_layers=4
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _generator_inputs import add_arguments, load_inputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    parser.add_argument("--epochs", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--out", type=Path, help="append one JSON line per budget")
    args = parser.parse_args()

    import torch

    from semid.evaluate import (
        decode_rec,
        decode_search,
        hit_rank,
        ranking_metrics,
        rec_test_set,
        search_test_set,
    )
    from semid.generate import MODEL_DIR, load_generator, set_threads, train_generator
    from semid.ids import load_ids_meta
    from semid.queries import load_queries

    inputs = load_inputs(args)
    params, items, interactions, table = inputs.params, inputs.items, inputs.interactions, inputs.table
    train, valid, corpus = inputs.train, inputs.valid, inputs.corpus
    seed, evaluation = params.base.seed, params.evaluate
    set_threads(params.generator.threads)
    search_set = search_test_set(
        load_queries(Path(args.queries), "test"), items["item_id"].to_numpy(), evaluation.search_queries, seed
    )
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"{len(train):,} train examples; device {device}; IDs {load_ids_meta(Path(args.ids))['quantizer']}")

    for epochs in args.epochs:
        config = replace(params.generator, epochs=epochs, max_steps=0, max_minutes=0.0, save_steps=10**9)
        with tempfile.TemporaryDirectory() as out:
            stats = train_generator(config, table, train, valid, corpus, Path(out), seed)
            generator = load_generator(Path(out) / MODEL_DIR, table)
        started = time.monotonic()
        search = decode_search(generator, search_set["text"].tolist(), evaluation)
        search_ranks = [hit_rank(ranked, int(t)) for ranked, t in zip(search.ranked_items, search_set["item_id"])]
        rec_set = rec_test_set(interactions, generator.history_length)
        rec = decode_rec(generator, rec_set["recent"].tolist(), [set(h) for h in rec_set["history"]], evaluation)
        rec_ranks = [hit_rank(ranked, int(t)) for ranked, t in zip(rec.ranked_items, rec_set["target_item"])]
        row = {
            "epochs": epochs,
            "steps": stats["steps"],
            "train_seconds": round(stats["train_seconds"], 1),
            "train_examples_per_second": round(stats["train_examples_per_second"]),
            "train_loss": round(stats["train_loss"], 4),
            "valid_loss": round(stats.get("valid_loss", float("nan")), 4),
            "parameters": stats["parameters"],
            "search": ranking_metrics(search_ranks),
            "rec": ranking_metrics(rec_ranks),
            "search_invalid_id_rate": search.invalid_id_rate,
            "decode_seconds": round(time.monotonic() - started, 1),
            "device": device,
        }
        print(
            f"epochs {epochs:5.2f} ({row['steps']:,} steps, {row['train_seconds']:.0f} s, "
            f"{row['train_examples_per_second']:,} ex/s): valid loss {row['valid_loss']:.3f}; "
            f"search R@30 {row['search']['recall_at_30']:.4f}, rec R@30 {row['rec']['recall_at_30']:.4f} "
            f"(decoding {row['decode_seconds']:.0f} s)",
            flush=True,
        )
        if args.out:
            with args.out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
