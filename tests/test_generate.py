"""The generator on real inputs: 50 popular ml-latest-small items, MiniLM + faiss RQ semantic IDs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from generator_fixtures import (
    residual_semantic_ids,
    small_world,
    tiny_scratch_config,
    write_ids,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from semid.evaluate import hit_rank, recall_at_k
from semid.generate import (
    MODEL_DIR,
    GeneratorError,
    IdTrie,
    add_id_tokens,
    build_id_table,
    check_round_trip,
    create_model,
    generate_items,
    load_generator,
    load_id_table,
    rec_heldout_examples,
    rec_train_examples,
    search_examples,
    target_token_ids,
    train_generator,
    train_text_tokenizer,
)
from semid.io import SemidError


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Two shared cores: one torch thread per test process avoids oversubscription stalls.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(ml_small_raw, tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    items, interactions, queries, table, vectors = small_world(ml_small_raw, folder)
    return {
        "folder": folder,
        "items": items,
        "interactions": interactions,
        "queries": queries,
        "table": table,
        "vectors": vectors,
    }


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """A tiny scratch T5 trained on the 50 items' queries and train histories."""
    out = tmp_path_factory.mktemp("generator")
    table, items = world["table"], world["items"]
    # all the queries plus a few rec windows (so rec decoding has real inputs), ~40 passes over them
    examples = (
        search_examples(world["queries"])
        + rec_train_examples(world["interactions"], table, history_length=5, max_windows_per_user=1)[:30]
    )
    corpus = [*items["item_text"], *world["queries"]["text"]]
    stats = train_generator(
        tiny_scratch_config(max_steps=100), table, examples, examples[:20], corpus, out, seed=0
    )
    return {"out": out, "stats": stats, "examples": examples, "corpus": corpus}


@pytest.fixture(scope="module")
def tokenizer(world):
    tok = train_text_tokenizer([*world["items"]["item_text"], *world["queries"]["text"]], 300)
    add_id_tokens(tok, world["table"])
    return tok


def test_id_tokens_round_trip_and_survive_save(world, tokenizer, tmp_path):
    from transformers import AutoTokenizer

    check_round_trip(tokenizer, world["table"])
    tokenizer.save_pretrained(tmp_path)
    check_round_trip(AutoTokenizer.from_pretrained(tmp_path), world["table"])
    item = int(world["items"]["item_id"].iloc[0])
    sid = world["table"].sid("joint", item)
    assert tokenizer.convert_ids_to_tokens(tokenizer(sid).input_ids)[:-1] == sid.replace("><", "> <").split(
        " "
    )


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_trie_admits_exactly_the_valid_ids(world, tokenizer, data):
    table = world["table"]
    trie = IdTrie(tokenizer, table, "joint")
    valid = {tuple(target_token_ids(tokenizer, table, "joint", i)) for i in table.codes["joint"]}
    alphabet = sorted({t for s in valid for t in s})
    # Half the draws walk the trie (deep valid prefixes), half are arbitrary token strings.
    if data.draw(st.booleans()):
        prefix: list[int] = []
        for _ in range(data.draw(st.integers(0, trie.length))):
            options = trie.allowed(prefix)
            if options == [trie.pad]:
                break
            prefix.append(data.draw(st.sampled_from(options)))
    else:
        prefix = data.draw(st.lists(st.sampled_from(alphabet), max_size=trie.length))
    expected = sorted(
        {s[len(prefix)] for s in valid if len(s) > len(prefix) and s[: len(prefix)] == tuple(prefix)}
    )
    assert trie.allowed(prefix) == (expected or [trie.pad])
    if tuple(prefix) in valid:
        assert trie.lookup(prefix) is not None and trie.allowed(prefix) == [trie.pad]


def test_rec_examples_use_train_histories_only(world):
    interactions, table = world["interactions"], world["table"]
    train_examples = rec_train_examples(interactions, table, history_length=5)
    held_out = interactions[interactions["split"] != "train"]
    held_out_pairs = set(zip(held_out["user_id"], held_out["item_id"]))
    train_pairs = interactions[interactions["split"] == "train"]
    per_user = train_pairs.groupby("user_id").size()
    assert len(train_examples) == int((per_user - 1).clip(lower=0).sum())
    assert all(e.source.startswith("recommend: ") and e.source.count("<sid_1_") <= 5 for e in train_examples)
    # a valid example's history is the user's whole train prefix, and its target is the valid item
    valid_examples = rec_heldout_examples(interactions, table, 5, "valid")
    valid_items = interactions[interactions["split"] == "valid"]["item_id"].tolist()
    assert sorted(e.target_item for e in valid_examples) == sorted(valid_items)
    capped = rec_train_examples(interactions, table, history_length=5, max_windows_per_user=2)
    assert len(capped) == int((per_user - 1).clip(lower=0, upper=2).sum())
    # held-out rows change nothing: the examples are those of the train rows alone
    assert held_out_pairs and train_examples == rec_train_examples(train_pairs, table, history_length=5)


def test_model_learns_the_training_queries(world, trained):
    stats = trained["stats"]
    assert stats["steps"] == 100 and stats["train_search_examples"] == len(world["queries"])
    generator = load_generator(trained["out"] / MODEL_DIR, world["table"], device="cpu")
    search = [e for e in trained["examples"] if e.task == "search"]
    decoded = generate_items(generator, [e.source for e in search], "search", k=30, num_beams=30)
    ranks = [hit_rank(r, e.target_item) for r, e in zip(decoded.ranked_items, search)]
    assert recall_at_k(ranks, 30) >= 0.9
    # with 50 items a random ranking has Recall@30 = 0.6; Recall@10 (random 0.2) shows real learning
    assert recall_at_k(ranks, 10) >= 0.8
    items = set(world["items"]["item_id"])
    assert decoded.invalid_id_rate == 0.0
    assert all(len(r) == 30 and len(set(r)) == 30 and set(r) <= items for r in decoded.ranked_items)


def test_rec_decoding_excludes_history_and_free_decoding_counts_invalid_ids(world, trained):
    generator = load_generator(trained["out"] / MODEL_DIR, world["table"], device="cpu")
    rec = [e for e in trained["examples"] if e.task == "rec"][:6]
    seen = [{int(world["items"]["item_id"].iloc[n])} for n in range(6)]
    decoded = generate_items(generator, [e.source for e in rec], "rec", k=10, num_beams=20, exclude=seen)
    assert all(not (set(r) & s) and len(r) == 10 for r, s in zip(decoded.ranked_items, seen))
    free = generate_items(generator, [e.source for e in rec], "rec", k=10, num_beams=10, constrained=False)
    assert free.sequences_returned == 60 and 0.0 <= free.invalid_id_rate <= 1.0
    items = set(world["items"]["item_id"])
    assert all(set(r) <= items for r in free.ranked_items)


def test_diverse_beam_search_returns_real_items_from_every_group(world, trained):
    generator = load_generator(trained["out"] / MODEL_DIR, world["table"], device="cpu")
    sources = [e.source for e in trained["examples"] if e.task == "search"][:3]
    # 60 beams as in the paper; 3 groups, since 30 groups of 2 beams cannot spread over a 50-item trie
    decoded = generate_items(
        generator, sources, "search", k=30, num_beams=60, num_beam_groups=3, diversity_penalty=0.25
    )
    items = set(world["items"]["item_id"])
    assert decoded.invalid_id_rate == 0.0
    assert all(len(r) == 30 and len(set(r)) == 30 and set(r) <= items for r in decoded.ranked_items)
    with pytest.raises(GeneratorError, match="multiple of num_beam_groups"):
        generate_items(generator, sources, "search", k=30, num_beams=31, num_beam_groups=3)


def test_training_resumes_from_its_checkpoint_and_restarts_on_another_setup(world, trained, tmp_path):
    table, examples, corpus = world["table"], trained["examples"], trained["corpus"]
    config = tiny_scratch_config(max_steps=4, save_steps=2)
    first = train_generator(config, table, examples, [], corpus, tmp_path, seed=0)
    assert first["resumed"] == 0 and (tmp_path / "checkpoints" / "checkpoint-4").is_dir()
    more = train_generator(
        tiny_scratch_config(max_steps=6, save_steps=2), table, examples, [], corpus, tmp_path, 0
    )
    assert more["resumed"] == 1 and more["steps"] == 6
    other = train_generator(
        tiny_scratch_config(max_steps=6, save_steps=2, learning_rate=1e-3),
        table,
        examples,
        [],
        corpus,
        tmp_path,
        0,
    )
    assert other["resumed"] == 0


def test_pretrained_checkpoint_path_loads_a_saved_t5(world, tmp_path):
    """A tiny random T5 + T5 tokenizer saved to a folder go through the same code as flan-t5."""
    from transformers import T5Config, T5ForConditionalGeneration

    base = train_text_tokenizer([*world["items"]["item_text"], *world["queries"]["text"]], 300)
    model = T5ForConditionalGeneration(
        T5Config(
            vocab_size=len(base),
            d_model=32,
            d_ff=64,
            d_kv=8,
            num_layers=1,
            num_heads=4,
            decoder_start_token_id=base.pad_token_id,
            pad_token_id=base.pad_token_id,
            eos_token_id=base.eos_token_id,
        )
    )
    model.save_pretrained(tmp_path / "tiny-t5")
    base.save_pretrained(tmp_path / "tiny-t5")
    config = tiny_scratch_config(model=str(tmp_path / "tiny-t5"), max_steps=2)
    loaded, tokenizer = create_model(config, world["table"], [], seed=0)
    assert len(tokenizer) == len(base) + len(world["table"].tokens())
    assert loaded.get_input_embeddings().num_embeddings >= len(tokenizer)
    examples = search_examples(world["queries"])
    stats = train_generator(config, world["table"], examples, [], [], tmp_path / "out", seed=0)
    assert stats["steps"] == 2
    generator = load_generator(tmp_path / "out" / MODEL_DIR, world["table"], device="cpu")
    decoded = generate_items(generator, [examples[0].source], "search")
    assert set(decoded.ranked_items[0]) <= set(world["items"]["item_id"])


def test_unknown_pretrained_model_fails_clearly(world, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GeneratorError, match="generator.model='no-such/t5-model' could not be loaded"):
        create_model(tiny_scratch_config(model="no-such/t5-model"), world["table"], [], seed=0)


def test_id_table_that_does_not_match_the_items_fails(world, tmp_path):
    ids = pd.read_parquet(world["folder"] / "ids" / "semantic_ids.parquet")
    meta = json.loads((world["folder"] / "ids" / "meta.json").read_text())
    with pytest.raises(GeneratorError, match=r"do not match the items: 1 items without an ID"):
        build_id_table(ids.iloc[1:], meta, world["items"]["item_id"])
    with pytest.raises(GeneratorError, match=r"1 IDs for unknown items"):
        build_id_table(ids, meta, world["items"]["item_id"].iloc[1:])
    with pytest.raises(SemidError, match="run the quantize stage first"):
        load_id_table(tmp_path / "missing", world["items"]["item_id"])


def test_checkpoint_from_another_vocabulary_fails_clearly(world, trained, tmp_path):
    items = world["items"]
    other_frame, other_meta = residual_semantic_ids(
        world["vectors"], items["item_id"].to_numpy(), levels=3, nbits=3
    )
    other = load_id_table(write_ids(tmp_path / "other", other_frame, other_meta), items["item_id"])
    with pytest.raises(GeneratorError, match="trained on a different ID vocabulary"):
        load_generator(trained["out"] / MODEL_DIR, other, device="cpu")
    # same tokens, other assignment: the IDs of two items swapped
    frame = pd.read_parquet(world["folder"] / "ids" / "semantic_ids.parquet")
    frame.loc[[0, 1], "codes"] = frame.loc[[1, 0], "codes"].to_numpy()
    meta = json.loads((world["folder"] / "ids" / "meta.json").read_text())
    swapped = load_id_table(write_ids(tmp_path / "swapped", frame, meta), items["item_id"])
    with pytest.raises(GeneratorError, match="trained on other semantic IDs"):
        load_generator(trained["out"] / MODEL_DIR, swapped, device="cpu")
