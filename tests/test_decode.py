"""Fast constrained decoding against the decoders it replaces, on a tiny T5 trained on real inputs
(50 popular ml-latest-small items, MiniLM + faiss RQ semantic IDs).

The references (tests/decode_reference.py) are the previous implementations: Hugging Face beam
search with the per-beam ``prefix_allowed_tokens_fn`` callback, and the Python-loop group beam
search. The new decoders must give the same items, scores and order.
"""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch
from decode_reference import callback_generate_items, loop_diverse_beam_search
from generator_fixtures import small_world, tiny_scratch_config
from hypothesis import given, settings, strategies as st
from transformers.generation.logits_process import PrefixConstrainedLogitsProcessor

from semid.generator import (
    MODEL_DIR,
    Generator,
    IdTrie,
    add_id_tokens,
    decode,
    diverse_beam_search,
    generate_items,
    load_generator,
    rec_train_examples,
    search_examples,
    train_generator,
    train_text_tokenizer,
)
from semid.generator.decode import FILL_ROUNDS
from semid.generator.trie import TrieTables, space_trie, trie_logits_processor


# Two shared cores: one torch thread per test process avoids oversubscription stalls.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(ml_small_raw, tmp_path_factory):
    items, interactions, queries, table, _ = small_world(ml_small_raw, tmp_path_factory.mktemp("world"))
    return {"items": items, "interactions": interactions, "queries": queries, "table": table}


@pytest.fixture(scope="module")
def examples(world) -> list:
    """All the queries and a few train histories: the training set, and the inputs decoded here."""
    interactions, table = world["interactions"], world["table"]
    return (
        search_examples(world["queries"])
        + rec_train_examples(interactions, table, history_length=5, max_windows_per_user=1)[:30]
    )


# The two ways a scratch T5 reads its source: a frozen text encoder's states (``inputs_embeds``)
# or a text vocabulary of its own (``input_ids``).
ENCODER_INPUTS = {"text_encoder": {}, "tokenizer": {"text_encoder": ""}}


@pytest.fixture(scope="module", params=list(ENCODER_INPUTS))
def generator(request, world, examples, tmp_path_factory) -> Generator:
    """A tiny scratch T5 trained briefly: peaked enough that beams differ in score, loose enough
    that inputs get different rankings."""
    out = tmp_path_factory.mktemp("generator")
    corpus = [*world["items"]["item_text"], *world["queries"]["text"]]
    config = tiny_scratch_config(max_steps=40, **ENCODER_INPUTS[request.param])
    train_generator(config, world["table"], examples, [], corpus, out, seed=0)
    return load_generator(out / MODEL_DIR, world["table"], device="cpu")


@pytest.fixture(scope="module")
def sources(examples):
    def of_task(task: str, n: int) -> list[str]:
        return [e.source for e in examples if e.task == task][:n]

    return of_task


@pytest.fixture(scope="module")
def tokenizer(world):
    tok = train_text_tokenizer([*world["items"]["item_text"], *world["queries"]["text"]], 300)
    add_id_tokens(tok, world["table"])
    return tok


# --------------------------------------------------------------------------- beam search


@pytest.mark.parametrize("task", ["search", "rec"])
@pytest.mark.parametrize("num_beams", [10, 30, 64])  # 64 > the 50 valid IDs
@pytest.mark.parametrize("with_exclude", [False, True])
def test_generate_items_matches_the_callback_decoder(
    world, generator, sources, task, num_beams, with_exclude
):
    inputs = sources(task, 7)
    k = min(num_beams, 30)
    exclude = None
    if with_exclude:  # per input: its 1st and 3rd best items (none for every third input), and one other
        best, _ = callback_generate_items(generator, inputs, task, k, num_beams, 8)
        other = world["items"]["item_id"].tolist()
        exclude = [set(best[n][0:3:2] if n % 3 else ()) | {other[n]} for n in range(len(inputs))]
    # batches of 3 leave a last batch of 1: the constraint must split beams per input correctly
    decoded = generate_items(generator, inputs, task, k=k, num_beams=num_beams, batch_size=3, exclude=exclude)
    ranked, scores = callback_generate_items(generator, inputs, task, k, num_beams, 3, exclude)
    full = [len(r) == k for r in ranked]
    assert [r for r, f in zip(decoded.ranked_items, full) if f] == [r for r, f in zip(ranked, full) if f]
    assert [s for s, f in zip(decoded.scores, full) if f] == [s for s, f in zip(scores, full) if f]
    assert all(full) == (exclude is None or num_beams > 30)  # 64 beams: every ranking full at first
    # a ranking short of seen items: the reference's ranking, then filled up to k by wider beams
    for got, got_scores, want, want_scores in zip(decoded.ranked_items, decoded.scores, ranked, scores):
        assert len(got) == k and (got[: len(want)], got_scores[: len(want)]) == (want, want_scores)
    assert decoded.invalid_id_rate == 0.0
    assert all(len(r) >= k - len(seen) for r, seen in zip(ranked, exclude or [set()] * len(ranked)))
    assert len({tuple(r) for r in ranked}) > 1  # the model tells the inputs apart
    assert all(not math.isnan(s) for row in decoded.scores for s in row)
    if exclude is not None:
        assert all(not (set(r) & seen) for r, seen in zip(decoded.ranked_items, exclude))


def test_rec_ranking_holds_every_unseen_item_when_fewer_than_k_remain(generator, sources):
    """A user who saw nearly the whole 50-item world: the 30 best beams may all be seen items, so
    the decoder decodes that input again, wider, until its ranking holds every unseen item."""
    inputs = sources("rec", 3)
    every_id = len(space_trie(generator, "joint").items)
    best_first, _ = callback_generate_items(generator, inputs, "rec", every_id, every_id, 8)
    assert all(len(ranking) == every_id for ranking in best_first)  # every item, best first
    # two users who saw all but their 3 (and 1) least likely items; one who saw 2 items
    exclude = [set(best_first[0][:-3]), set(best_first[1][:-1]), set(best_first[2][:2])]
    decoded = generate_items(generator, inputs, "rec", k=30, num_beams=30, batch_size=2, exclude=exclude)
    assert [set(r) for r in decoded.ranked_items[:2]] == [set(best_first[0][-3:]), set(best_first[1][-1:])]
    assert decoded.invalid_id_rate == 0.0
    # what the 30 beams found stays first (the third user's 2 seen items cost it up to 2 of them)
    today = callback_generate_items(generator, inputs, "rec", 30, 30, 2, exclude)
    for ranking, scores, first, first_scores in zip(decoded.ranked_items, decoded.scores, *today):
        assert (ranking[: len(first)], scores[: len(first)]) == (first, first_scores)
    assert len(decoded.ranked_items[2]) == 30 and len(today[0][2]) >= 28
    # diverse beam search: the input still gets its unseen items
    diverse = generate_items(
        generator, inputs[:1], "rec", k=30, num_beams=30, num_beam_groups=3, diversity_penalty=0.25,
        exclude=exclude[:1],
    )
    assert set(diverse.ranked_items[0]) == set(best_first[0][-3:])


@pytest.mark.parametrize("rounds", [FILL_ROUNDS, 1])  # 1: the only round decodes at the guaranteed width
def test_rec_ranking_is_filled_to_k_when_the_beams_land_on_seen_items(
    generator, sources, monkeypatch, rounds
):
    """A user whose history holds most of what the model ranks first: of the k beams, most bring seen
    items. The ranking still holds k unseen items, the first of them those the k beams found (and
    with their scores); a user whose beams were not spent decodes exactly as before."""
    monkeypatch.setattr(decode, "FILL_ROUNDS", rounds)
    inputs = sources("rec", 3)
    k = 10
    best_first, _ = callback_generate_items(generator, inputs, "rec", 50, 50, 8)
    # input 0: 28 of its best 30 seen (its 4th and 9th best not); input 2: 24 of its best 30
    exclude = [set(best_first[0][:30]) - {best_first[0][3], best_first[0][8]}, set(), set(best_first[2][:24])]
    today, today_scores = callback_generate_items(generator, inputs, "rec", k, k, 3, exclude)
    assert len(today[0]) < k // 2 and len(today[2]) < k // 2  # the beams went to seen items
    assert len(today[1]) == k
    decoded = generate_items(generator, inputs, "rec", k=k, num_beams=k, batch_size=3, exclude=exclude)
    for ranking, scores, first, first_scores, seen in zip(
        decoded.ranked_items, decoded.scores, today, today_scores, exclude
    ):
        assert len(ranking) == len(set(ranking)) == k and not set(ranking) & seen
        assert (ranking[: len(first)], scores[: len(first)]) == (first, first_scores)
    assert decoded.ranked_items[1] == today[1] and decoded.scores[1] == today_scores[1]
    assert decoded.invalid_id_rate == 0.0
    # diverse beam search: the same, its own first items kept

    diverse = generate_items(
        generator, inputs, "rec", k=k, num_beams=k, num_beam_groups=5, diversity_penalty=0.25, exclude=exclude
    )
    trie = space_trie(generator, "joint")
    with torch.no_grad():
        groups, _ = diverse_beam_search(generator.model, generator.model_inputs(inputs), trie, k, 5, 0.25)
    for ranking, sequences, seen in zip(diverse.ranked_items, groups, exclude):
        found = [item for sequence in sequences for item in trie.lookup(sequence) if item not in seen]
        first = list(dict.fromkeys(found))
        assert len(ranking) == k and not set(ranking) & seen and ranking[: len(first)] == first
    assert len(first) < k  # the last input's diverse beams came back short too


def test_both_kinds_of_encoder_input_are_decoded(generator, sources):
    """The text-encoder generator feeds ``inputs_embeds`` (no ``input_ids``: decoding must not need
    them), the tokenizer one ``input_ids``; the tests above ran on both."""
    batch = generator.model_inputs(sources("search", 2))
    reads_text = bool(generator.meta.get("text_encoder"))
    assert ("inputs_embeds" in batch, "input_ids" in batch) == (reads_text, not reads_text)


def test_unconstrained_decoding_still_works(world, generator, sources):
    free = generate_items(generator, sources("rec", 5), "rec", k=10, num_beams=10, constrained=False)
    assert free.sequences_returned == 50 and 0.0 <= free.invalid_id_rate <= 1.0
    assert all(set(r) <= set(world["items"]["item_id"]) for r in free.ranked_items)


@pytest.mark.parametrize(
    ("task", "num_beams", "num_groups", "penalty"),
    [
        ("search", 60, 3, 0.25),
        ("rec", 60, 30, 0.25),  # 30 groups of 2 over 50 IDs: groups must fall back to taken prefixes
        ("search", 8, 4, 0.0),
        ("rec", 6, 2, 2.0),
        ("search", 5, 1, 0.0),
    ],
)
def test_diverse_beam_search_equals_the_loop_implementation(
    generator, sources, task, num_beams, num_groups, penalty
):
    trie = IdTrie(generator.tokenizer, generator.table, "joint")
    batch = generator.model_inputs(sources(task, 6))
    with torch.no_grad():
        got = diverse_beam_search(generator.model, batch, trie, num_beams, num_groups, penalty)
        want = loop_diverse_beam_search(generator.model, batch, trie, num_beams, num_groups, penalty)
    assert got == want  # same IDs, same float scores, same order
    assert all(trie.lookup(sequence) for row in got[0] for sequence in row)
    assert len({tuple(map(tuple, row)) for row in got[0]}) > 1


# --------------------------------------------------------------------------- the tables


class ScatteredIds:
    """A tokenizer stand-in giving the ID tokens scattered, interleaved ids (with gaps), so the
    tables cannot lean on a level's tokens being contiguous."""

    def __init__(self, tokenizer, table, seed: int):
        self.eos_token_id, self.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
        tokens = table.tokens()
        ids = random.Random(seed).sample(range(3, 3 + 5 * len(tokens)), len(tokens))
        self.ids = dict(zip(tokens, ids))
        self.vocab_size = 3 + 5 * len(tokens)

    def convert_tokens_to_ids(self, tokens):
        return [self.ids[t] for t in tokens]


def _draw_prefix(data, trie: IdTrie, depth: int, noise: list[int]) -> list[int]:
    """``depth`` tokens: a walk down the trie for a drawn number of steps, then arbitrary tokens."""
    prefix: list[int] = []
    for _ in range(data.draw(st.integers(0, depth))):
        options = trie.allowed(prefix)
        if options == [trie.pad]:
            break
        prefix.append(data.draw(st.sampled_from(options)))
    return prefix + [data.draw(st.sampled_from(noise)) for _ in range(depth - len(prefix))]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_tables_admit_exactly_the_tries_tokens(world, tokenizer, data):
    """The mask (and the logits processor built on it) against ``IdTrie.allowed`` and Hugging Face's
    own callback processor, on random prefixes on and off the trie."""
    table = world["table"]
    scattered = data.draw(st.booleans())
    tok = ScatteredIds(tokenizer, table, data.draw(st.integers(0, 10**6))) if scattered else tokenizer
    trie = IdTrie(tok, table, "joint")
    vocab = tok.vocab_size if scattered else len(tokenizer)
    alphabet = sorted({t for s in trie.items for t in s})
    noise = [*alphabet, trie.pad, trie.eos, vocab - 1, 7]
    depth = data.draw(st.integers(0, trie.length + 1))
    num_beams, inputs = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))
    prefixes = [_draw_prefix(data, trie, depth, noise) for _ in range(num_beams * inputs)]

    rows = torch.tensor(prefixes, dtype=torch.long).reshape(len(prefixes), depth)
    mask = TrieTables.from_trie(trie).allowed_mask(rows, vocab)
    for prefix, row in zip(prefixes, mask):
        assert row.nonzero().flatten().tolist() == trie.allowed(prefix)

    decoder_ids = torch.tensor([[trie.pad, *p] for p in prefixes])
    scores = torch.randn((len(prefixes), vocab), generator=torch.Generator().manual_seed(depth))
    if data.draw(st.booleans()):  # an input whose allowed tokens all score -inf gets them forced
        scores[:num_beams] = -math.inf
    ours = trie_logits_processor(TrieTables.from_trie(trie), num_beams)(decoder_ids, scores.clone())
    theirs = PrefixConstrainedLogitsProcessor(trie.prefix_allowed_tokens_fn(), num_beams)(decoder_ids, scores)
    assert torch.equal(ours, theirs)


def test_trie_and_tables_are_built_once_per_generator_and_space(generator, sources, monkeypatch):
    trie = space_trie(generator, "joint")
    tables = trie.tables("cpu")
    assert space_trie(generator, "joint") is trie and trie.tables(torch.device("cpu")) is tables
    built, build = [], IdTrie.__init__

    def counted(self, *args):
        built.append(args)
        build(self, *args)

    monkeypatch.setattr(IdTrie, "__init__", counted)
    generate_items(generator, sources("search", 2), "search", k=5, num_beams=5)
    generate_items(generator, sources("rec", 2), "rec", k=5, num_beams=5)
    assert built == [] and space_trie(generator, "joint") is trie and trie.tables("cpu") is tables
    # another generator (here: the same model with another table object) gets its own trie
    other = dataclasses.replace(generator, table=dataclasses.replace(generator.table), tries={})
    other_trie = space_trie(other, "joint")
    assert other_trie is not trie and other_trie.items == trie.items
