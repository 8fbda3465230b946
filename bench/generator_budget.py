"""Generator learning curve: search and rec Recall@30 against training steps, per variant.

Trains a fresh generator from the pipeline's artifacts (data/prepared, data/queries, data/ids;
`dvc repro quantize` first) once per variant, up to the largest of --steps, and at each of
--steps scores it on the evaluate stage's test sets with its decoding (generator only: the
baselines do not depend on the budget). A variant is a name and params overrides; the first
variant given is compared with the others in the same run, so machine load affects all alike.
Prints a row per (variant, steps), appends it as a JSON line to --out.

    python bench/generator_budget.py --steps 300 600 1200 \\
        --variant default \\
        --variant pooled:generator.text_input=pooled \\
        --variant scratch-text:generator.text_encoder=
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from _generator_inputs import add_arguments, load_inputs
from transformers import TrainerCallback

from semid.evaluate import decode_rec, decode_search, hit_rank, ranking_metrics, rec_test_set, search_test_set
from semid.generator import Generator, build_examples, configure_torch, train_generator
from semid.generator.model import generator_meta, make_inputs
from semid.queries import load_queries


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, sets = text.partition(":")
    overrides = {}
    for item in filter(None, sets.split(",")):
        key, _, value = item.partition("=")
        section, _, field = key.partition(".")
        if section != "generator":
            raise SystemExit(f"variant {name!r}: only generator.* keys vary here, got {key!r}")
        overrides[field] = yaml.safe_load(value) if value else ""
    return name, overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 600, 1200])
    parser.add_argument("--variant", action="append", default=[], help="NAME[:generator.KEY=VALUE,...]")
    parser.add_argument("--search-queries", type=int, default=0, help="test queries scored (0 = evaluate's)")
    parser.add_argument("--out", type=Path, help="append one JSON line per (variant, steps)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()


    # First thing: threads made before the denormal flush keep denormals (see configure_torch).
    configure_torch(args.threads)

    inputs = load_inputs(args)
    params, items, interactions, table = inputs.params, inputs.items, inputs.interactions, inputs.table
    seed, evaluation = params.base.seed, params.evaluate
    if args.search_queries:
        evaluation = replace(evaluation, search_queries=args.search_queries)
    train_queries, valid_queries = load_queries(Path(args.queries), "train"), load_queries(Path(args.queries), "valid")
    search_set = search_test_set(
        load_queries(Path(args.queries), "test"), items["item_id"].to_numpy(), evaluation.search_queries, seed
    )
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x {torch.get_num_threads()} threads"
    print(f"{len(inputs.train):,} train examples; {len(search_set):,} test queries; device {device}", flush=True)
    checkpoints = sorted(set(args.steps))

    for name, overrides in map(parse_variant, args.variant or ["default"]):
        config = replace(
            params.generator, **overrides, max_steps=checkpoints[-1], max_minutes=0.0, save_steps=10**9, eval_steps=0
        )
        meta = generator_meta(config, table)
        train, valid = build_examples(config, table, items, interactions, train_queries, valid_queries, seed)
        rows: list[dict] = []

        class Score(TrainerCallback):
            """Decode the test sets at each checkpoint step, inside the one training run."""

            reader = None
            started = time.monotonic()

            def on_train_begin(self, args_, state, control, **kwargs):
                self.started = time.monotonic()

            def on_step_end(self, args_, state, control, model=None, processing_class=None, **kwargs):
                if state.global_step not in checkpoints:
                    return
                train_seconds = time.monotonic() - self.started
                self.reader = self.reader or make_inputs(meta, processing_class)
                generator = Generator(model, processing_class, table, meta, self.reader)
                model.eval()
                decode_started = time.monotonic()
                search = decode_search(generator, search_set["text"].tolist(), evaluation)
                rec_set = rec_test_set(interactions, generator.history_length)
                seen = [set(h) for h in rec_set["history"]]
                rec = decode_rec(generator, rec_set["recent"].tolist(), seen, evaluation)
                model.train()
                row = {
                    "variant": name,
                    "overrides": overrides,
                    "steps": state.global_step,
                    "epochs": round(state.epoch, 3),
                    "train_seconds": round(train_seconds - sum(r["decode_seconds"] for r in rows), 1),
                    "search": ranking_metrics([hit_rank(r, int(t)) for r, t in zip(search.ranked_items, search_set["item_id"])]),
                    "rec": ranking_metrics([hit_rank(r, int(t)) for r, t in zip(rec.ranked_items, rec_set["target_item"])]),
                    "search_inputs_per_second": round(search.inputs_per_second, 1),
                    "decode_seconds": round(time.monotonic() - decode_started, 1),
                    "device": device,
                }
                row["train_examples_per_second"] = round(state.global_step * config.batch_size / max(row["train_seconds"], 1e-9))
                rows.append(row)
                print(
                    f"{name:>16} step {row['steps']:5d} (epoch {row['epochs']:.2f}, {row['train_seconds']:.0f} s train, "
                    f"{row['train_examples_per_second']} ex/s): search R@30 {row['search']['recall_at_30']:.4f}, "
                    f"rec R@30 {row['rec']['recall_at_30']:.4f}",
                    flush=True,
                )
                if args.out:
                    with args.out.open("a") as handle:
                        handle.write(json.dumps(row) + "\n")

        with tempfile.TemporaryDirectory() as out:
            train_generator(config, table, train, valid, inputs.corpus, Path(out), seed, callbacks=[Score()])


if __name__ == "__main__":
    main()
