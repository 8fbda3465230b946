"""Generator speed: training examples/s and constrained vs unconstrained beam-search inputs/s.

Reads the pipeline's artifacts (data/prepared, data/queries, data/ids; `dvc repro quantize`
first), builds the train_t5 examples from params.yaml's `generator` section, trains a fresh model
for --steps steps (examples/s), then decodes the same --inputs search and rec inputs with and
without the ID trie (inputs/s, invalid-ID rate). Prints one table; nothing is written to the repo.

    python bench/decode.py --steps 40 --inputs 128
    python bench/decode.py --threads 1 --set generator.d_model=256 --set generator.d_ff=1024
    # a T5-base-sized scratch model with the paper profile's decoding (60 beams / 30 groups), on a GPU:
    python bench/decode.py --set base.profile=paper --set generator.model=scratch --set generator.d_model=768 \
        --set generator.d_ff=2048 --set generator.num_layers=12 --set generator.num_decoder_layers=12 \
        --set generator.num_heads=12
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--queries", default="data/queries")
    parser.add_argument("--ids", default="data/ids")
    parser.add_argument("--steps", type=int, default=40, help="training steps to time")
    parser.add_argument("--inputs", type=int, default=128, help="inputs per task to decode")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--set", action="append", default=[], metavar="generator.KEY=VALUE")
    args = parser.parse_args()

    from semid.config import load_params
    from semid.data import load_interactions, load_items
    from semid.generate import (
        MODEL_DIR,
        build_examples,
        generate_items,
        load_generator,
        load_id_table,
        set_threads,
        tokenizer_corpus,
        train_generator,
    )
    from semid.queries import load_queries

    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    params = load_params(overrides=overrides)
    config = replace(params.generator, max_steps=args.steps, max_minutes=0.0, save_steps=10**9)
    set_threads(args.threads)
    items, interactions = load_items(Path(args.prepared)), load_interactions(Path(args.prepared))
    table = load_id_table(Path(args.ids), items["item_id"])
    train_queries = load_queries(Path(args.queries), "train")
    train, _ = build_examples(
        config,
        table,
        items,
        interactions,
        train_queries,
        load_queries(Path(args.queries), "valid"),
        params.base.seed,
    )
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        stats = train_generator(
            config, table, train, [], tokenizer_corpus(items, train_queries), Path(out), 0
        )
        print(f"setup + training: {time.monotonic() - started:.1f} s")
        generator = load_generator(Path(out) / MODEL_DIR, table)
    search_inputs = [e.source for e in train if e.task == "search"][: args.inputs]
    rec_inputs = [e.source for e in train if e.task == "rec"][-args.inputs :]
    k = params.evaluate.k
    rows = [
        ("train", f"{stats['train_examples_per_second']:.0f} examples/s", f"batch {config.batch_size}", "")
    ]
    evaluation = params.evaluate
    # (label, beams, groups, penalty, constrained); the evaluation's own diverse search when it has groups
    settings = [("constrained", evaluation.num_beams, 1, 0.0, True), ("free", evaluation.num_beams, 1, 0.0, False)]
    if evaluation.num_beam_groups > 1:
        settings.append(
            ("diverse", evaluation.num_beams, evaluation.num_beam_groups, evaluation.diversity_penalty, True)
        )
    for task, inputs in (("search", search_inputs), ("rec", rec_inputs)):
        for label, beams, groups, penalty, constrained in settings:
            decoded = generate_items(
                generator,
                inputs,
                task,
                k=k,
                num_beams=beams,
                num_beam_groups=groups,
                diversity_penalty=penalty,
                constrained=constrained,
                batch_size=evaluation.batch_size,
            )
            rows.append(
                (
                    f"{task} {label}",
                    f"{decoded.inputs_per_second:.1f} inputs/s",
                    f"{beams} beams" + (f" / {groups} groups" if groups > 1 else "") + f", k={k}",
                    f"invalid {decoded.invalid_id_rate:.3f}",
                )
            )
    print(
        f"model: {stats['parameters'] / 1e6:.2f}M parameters, vocabulary {stats['vocab_size']}, "
        f"{len(train):,} train examples"
    )
    for row in rows:
        print(" | ".join(f"{cell:<22}" for cell in row))


if __name__ == "__main__":
    main()
