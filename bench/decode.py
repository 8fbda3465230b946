"""Generator speed: training examples/s, and beam-search inputs/s of the trie-constrained decoder
against the one it replaced, on the same model and the same inputs.

Reads the pipeline's artifacts (data/prepared, data/queries, data/ids; `dvc repro quantize`
first), builds the train_t5 examples from params.yaml's `generator` section, trains a fresh model
for --steps steps (examples/s; --train-examples N trains on a seeded sample of N examples, which
saves the text states of the rest), then decodes the same --inputs search and rec inputs with:

- callback: the previous decoder (tests/decode_reference.py): Hugging Face's per-beam
  `prefix_allowed_tokens_fn` over an IdTrie built afresh at each call;
- tensor: `generate_items`, the trie as a logits processor of tensor gathers, built once per generator;
- free: `generate_items` without the trie (what the model and beam search alone cost);
- diverse (with --groups, or when the evaluate section has beam groups): the group beam search
  against the previous Python-loop version.

Every decoder runs once untimed first (warm caches, text states), then --repeats times in turn
with the others; a row shows the best run. "agree" is the share of inputs whose ranked items (and
their scores) are exactly the callback's. --single N also decodes N search inputs one per call, as
a server answers them. Text states of a text-encoder generator are cached by the warm-up run, so
the timings are of decoding alone. Prints one table; nothing is written to the repo.

    python bench/decode.py --threads 1 --steps 40 --train-examples 4000 --inputs 128 --single 32
    # with the paper's diverse search
    python bench/decode.py --threads 1 --groups 30 --diverse-beams 60 --penalty 0.25
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from _generator_inputs import add_arguments, load_inputs

from semid.generator import (
    MODEL_DIR,
    configure_torch,
    diverse_beam_search,
    generate_items,
    load_generator,
    task_space,
    train_generator,
)
from semid.generator.trie import IdTrie, space_trie

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from decode_reference import callback_generate_items, loop_diverse_beam_search  # noqa: E402

Ranked = tuple[list[list[int]], list[list[float]]]


def best_seconds(decoders: dict[str, Callable[[], Ranked]], repeats: int) -> tuple[dict, dict]:
    """(label -> best wall seconds, label -> output) over ``repeats`` interleaved runs, after one
    untimed run each."""
    outputs = {label: decode() for label, decode in decoders.items()}
    seconds = {label: float("inf") for label in decoders}
    for _ in range(repeats):
        for label, decode in decoders.items():
            started = time.perf_counter()
            decode()
            seconds[label] = min(seconds[label], time.perf_counter() - started)
    return seconds, outputs


def agreement(got: Ranked, want: Ranked) -> str:
    same_items = sum(a == b for a, b in zip(got[0], want[0]))
    same_both = sum(a == b and s == t for a, b, s, t in zip(got[0], want[0], got[1], want[1]))
    return f"agree {same_items}/{len(want[0])} items, {same_both}/{len(want[0])} +scores"


REFERENCE = {"tensor": "callback", "diverse tensor": "diverse loop"}  # new decoder -> the one it replaced


def note(label: str, outputs: dict[str, Ranked]) -> str:
    if label in REFERENCE:
        return agreement(outputs[label], outputs[REFERENCE[label]])
    return "reference" if label in REFERENCE.values() else ""


def one_per_call(decoders: list[Callable[[], Ranked]]) -> Callable[[], Ranked]:
    def decode() -> Ranked:
        ranked, scores = [], []
        for one in decoders:
            items, item_scores = one()
            ranked += items
            scores += item_scores
        return ranked, scores

    return decode


def diverse_decoders(generator, sources, task, beams, groups, penalty, batch_size) -> dict:
    """The group beam search, new and previous, over the same batches; (items-as-IDs, scores) per input."""
    trie = space_trie(generator, task_space(generator.table.spaces, task))

    def run(search) -> Callable[[], Ranked]:
        def decode() -> Ranked:
            ranked, scores = [], []
            for start in range(0, len(sources), batch_size):
                batch = generator.model_inputs(sources[start : start + batch_size])
                with torch.no_grad():
                    ids, id_scores = search(generator.model, batch, trie, beams, groups, penalty)
                ranked += ids
                scores += id_scores
            return ranked, scores

        return decode

    return {"diverse loop": run(loop_diverse_beam_search), "diverse tensor": run(diverse_beam_search)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    parser.add_argument("--steps", type=int, default=40, help="training steps to time")
    parser.add_argument("--train-examples", type=int, default=0, help="train on a sample (0 = all)")
    parser.add_argument("--inputs", type=int, default=128, help="inputs per task to decode")
    parser.add_argument("--beams", type=int, default=30, help="beams (k = min(beams, evaluate.k))")
    parser.add_argument("--groups", type=int, default=0, help="diverse beam groups (0 = evaluate's)")
    parser.add_argument("--diverse-beams", type=int, default=60, help="beams of the diverse search")
    parser.add_argument("--penalty", type=float, default=None, help="diversity penalty (evaluate's)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per decoder (best shown)")
    parser.add_argument("--single", type=int, default=0, help="also decode this many inputs one per call")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()

    inputs = load_inputs(args)
    params, table, train = inputs.params, inputs.table, inputs.train
    if args.train_examples:
        train = random.Random(params.base.seed).sample(train, min(args.train_examples, len(train)))
    config = replace(params.generator, max_steps=args.steps, max_minutes=0.0, save_steps=10**9)
    configure_torch(args.threads)
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        stats = train_generator(config, table, train, [], inputs.corpus, Path(out), 0)
        print(f"setup + training: {time.monotonic() - started:.1f} s")
        generator = load_generator(Path(out) / MODEL_DIR, table)
    evaluation = params.evaluate
    k, beams, batch_size = min(args.beams, evaluation.k), args.beams, evaluation.batch_size
    groups = args.groups or evaluation.num_beam_groups
    penalty = evaluation.diversity_penalty if args.penalty is None else args.penalty
    per_task = {
        "search": [e.source for e in inputs.train if e.task == "search"][: args.inputs],
        "rec": [e.source for e in inputs.train if e.task == "rec"][-args.inputs :],
    }
    started = time.perf_counter()
    IdTrie(generator.tokenizer, table, table.spaces[0])
    trie_ms = 1000 * (time.perf_counter() - started)

    def tensor(sources, task, constrained=True) -> Callable[[], Ranked]:
        def decode() -> Ranked:
            decoded = generate_items(
                generator, sources, task, k=k, num_beams=beams, constrained=constrained, batch_size=batch_size
            )
            return decoded.ranked_items, decoded.scores

        return decode

    def callback(sources, task) -> Callable[[], Ranked]:
        return lambda: callback_generate_items(generator, sources, task, k, beams, batch_size)

    speed = f"{stats['train_examples_per_second']:.0f} examples/s"
    rows = [("train", speed, f"batch {config.batch_size}", "")]
    plain = f"{beams} beams, k={k}"
    for task, sources in per_task.items():
        decoders = {
            "callback": callback(sources, task),
            "tensor": tensor(sources, task),
            "free": tensor(sources, task, constrained=False),
        }
        if groups > 1:
            diverse = (args.diverse_beams, groups, penalty, batch_size)
            decoders |= diverse_decoders(generator, sources, task, *diverse)
        seconds, outputs = best_seconds(decoders, args.repeats)
        for label, spent in seconds.items():
            setting = f"{args.diverse_beams} beams / {groups} groups" if "diverse" in label else plain
            speed = f"{len(sources) / spent:.1f} inputs/s"
            rows.append((f"{task} {label}", speed, setting, note(label, outputs)))
    if args.single:
        sources = per_task["search"][: args.single]
        one_by_one = {
            "callback": one_per_call([callback([s], "search") for s in sources]),
            "tensor": one_per_call([tensor([s], "search") for s in sources]),
        }
        seconds, outputs = best_seconds(one_by_one, args.repeats)
        for label, spent in seconds.items():
            latency = f"{1000 * spent / len(sources):.1f} ms/input"
            rows.append((f"search 1/call {label}", latency, plain, note(label, outputs)))
    device = str(generator.model.device)
    print(
        f"model: {stats['parameters'] / 1e6:.2f}M parameters, vocabulary {stats['vocab_size']}, "
        f"{len(train):,} train examples; {len(table.codes[table.spaces[0]]):,} IDs, "
        f"IdTrie build {trie_ms:.0f} ms; "
        f"decoding on {device}, {torch.get_num_threads()} torch threads, batches of {batch_size}"
    )
    for row in rows:
        print(" | ".join(f"{cell:<24}" for cell in row))


if __name__ == "__main__":
    main()
