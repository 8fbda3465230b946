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

from _generator_inputs import add_arguments, load_inputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    parser.add_argument("--steps", type=int, default=40, help="training steps to time")
    parser.add_argument("--inputs", type=int, default=128, help="inputs per task to decode")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()

    from semid.generate import MODEL_DIR, generate_items, load_generator, set_threads, train_generator

    inputs = load_inputs(args)
    params, table, train = inputs.params, inputs.table, inputs.train
    config = replace(params.generator, max_steps=args.steps, max_minutes=0.0, save_steps=10**9)
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        stats = train_generator(config, table, train, [], inputs.corpus, Path(out), 0)
        print(f"setup + training: {time.monotonic() - started:.1f} s")
        generator = load_generator(Path(out) / MODEL_DIR, table)
    search_sources = [e.source for e in train if e.task == "search"][: args.inputs]
    rec_sources = [e.source for e in train if e.task == "rec"][-args.inputs :]
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
    for task, sources in (("search", search_sources), ("rec", rec_sources)):
        for label, beams, groups, penalty, constrained in settings:
            decoded = generate_items(
                generator,
                sources,
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
