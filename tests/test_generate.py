"""The generator on real inputs: 50 popular ml-latest-small items, MiniLM + faiss RQ semantic IDs."""

from __future__ import annotations

import json
import time

import numpy as np
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
from transformers import TrainerCallback

from semid.evaluate import hit_rank, recall_at_k
from semid.generator import (
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
    rec_source,
    rec_train_examples,
    search_examples,
    target_token_ids,
    train_generator,
    train_text_tokenizer,
)
from semid.io import SemidError
from semid.training import WallClockLimitExceeded


# Two shared cores: one torch thread per test process avoids oversubscription stalls.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


class _Interrupt(Exception):
    pass


class _KillAt(TrainerCallback):
    """Stands in for a kill: the run dies after step ``step`` (checkpoints up to then are on disk)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Interrupt


def test_interrupted_training_resumes_to_the_same_weights_and_restarts_on_another_setup(world, trained, tmp_path):
    table, examples, corpus = world["table"], trained["examples"], trained["corpus"]
    config = tiny_scratch_config(max_steps=6, save_steps=1)
    with pytest.raises(_Interrupt):
        train_generator(config, table, examples, [], corpus, tmp_path / "run", 0, callbacks=[_KillAt(3)])
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir()
    resumed = train_generator(config, table, examples, [], corpus, tmp_path / "run", 0)
    assert resumed["resumed"] == 1 and resumed["steps"] == 6
    # the finished run keeps only the model: checkpoints would make identical runs hash differently
    assert not (tmp_path / "run" / "checkpoints").exists()
    straight = train_generator(config, table, examples, [], corpus, tmp_path / "straight", 0)
    assert straight["resumed"] == 0
    assert _weights(tmp_path / "run") == _weights(tmp_path / "straight")
    with pytest.raises(_Interrupt):
        train_generator(config, table, examples, [], corpus, tmp_path / "other", 0, callbacks=[_KillAt(5)])
    other = train_generator(
        tiny_scratch_config(max_steps=6, save_steps=2, learning_rate=1e-3), table, examples, [], corpus,
        tmp_path / "other", 0,
    )
    assert other["resumed"] == 0


def test_checkpoints_of_other_code_are_not_resumed_and_a_killed_save_leaves_nothing(world, trained, tmp_path):
    table, examples, corpus = world["table"], trained["examples"], trained["corpus"]
    config = tiny_scratch_config(max_steps=4, save_steps=1)
    with pytest.raises(_Interrupt):
        train_generator(config, table, examples, [], corpus, tmp_path, 0, callbacks=[_KillAt(3)], code_version="a")
    # what a kill inside save_generator's atomic_dir leaves in the persisted output folder
    (tmp_path / ".model.x1y2.tmp").mkdir()
    (tmp_path / ".model.x1y2.tmp" / "model.safetensors").write_bytes(b"half")
    edited = train_generator(config, table, examples, [], corpus, tmp_path, 0, code_version="b")
    assert edited["resumed"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [MODEL_DIR]


def _weights(out) -> dict[str, bytes]:
    from safetensors.torch import load_file

    return {k: v.numpy().tobytes() for k, v in load_file(out / MODEL_DIR / "model.safetensors").items()}


def _folder_digest(folder) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


class _Slow(TrainerCallback):
    """A busy machine: every step takes longer."""

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.05)


def test_same_params_give_the_same_bits_on_a_slow_machine(world, trained, tmp_path):
    table, examples, corpus = world["table"], trained["examples"], trained["corpus"]
    config = tiny_scratch_config(max_steps=8)
    fast = train_generator(config, table, examples, examples[:10], corpus, tmp_path / "fast", 0)
    slow = train_generator(config, table, examples, examples[:10], corpus, tmp_path / "slow", 0, callbacks=[_Slow()])
    assert fast["steps"] == slow["steps"] == 8
    assert slow["train_seconds"] > fast["train_seconds"]  # the hog did slow it, and changed nothing else
    assert _folder_digest(tmp_path / "fast" / MODEL_DIR) == _folder_digest(tmp_path / "slow" / MODEL_DIR)
    meta = json.loads((tmp_path / "fast" / MODEL_DIR / "semid_generator.json").read_text())
    assert not set(meta["train"]) & {"train_seconds", "train_examples_per_second", "text_state_seconds"}


def test_validation_during_training_does_not_change_the_model(world, trained, tmp_path):
    table, examples, corpus = world["table"], trained["examples"], trained["corpus"]
    watched = tiny_scratch_config(max_steps=9, eval_steps=2)
    train_generator(watched, table, examples, examples[:20], corpus, tmp_path / "watched", 0)
    train_generator(tiny_scratch_config(max_steps=9, eval_steps=0), table, examples, examples[:20], corpus,
                    tmp_path / "unwatched", 0)
    assert _weights(tmp_path / "watched") == _weights(tmp_path / "unwatched")


def test_wall_clock_guard_fails_the_run_and_keeps_its_checkpoint(world, trained, tmp_path):
    table, examples, corpus = world["table"], trained["examples"], trained["corpus"]
    config = tiny_scratch_config(max_steps=50, save_steps=1000, max_minutes=0.001)  # 60 ms
    with pytest.raises(WallClockLimitExceeded, match=r"generator.max_minutes=0.001 minutes after \d+ of 50 steps"):
        train_generator(config, table, examples, [], corpus, tmp_path, 0, callbacks=[_Slow()])
    assert list((tmp_path / "checkpoints").glob("checkpoint-*"))


def test_loss_curve_goes_to_the_stage_mlflow_run(world, trained, tmp_path):
    import mlflow

    table, examples, corpus = world["table"], trained["examples"], trained["corpus"]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("curve", artifact_location=(tmp_path / "art").as_uri())
    config = tiny_scratch_config(max_steps=8, logging_steps=2, eval_steps=4)
    with mlflow.start_run(experiment_id=experiment) as run:
        stats = train_generator(config, table, examples, examples[:10], corpus, tmp_path / "out", 0)
    assert [row["step"] for row in stats["curve"]] == [2, 4, 6, 8]
    assert all("train_loss" in row for row in stats["curve"]) and "valid_loss" in stats["curve"][1]
    client = mlflow.tracking.MlflowClient()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [2, 4, 6, 8]
    assert len(client.get_metric_history(run.info.run_id, "eval_loss")) >= 2
    assert len(client.search_runs([experiment])) == 1  # the curve joined the stage's run, no second run


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
    loaded, tokenizer, _ = create_model(config, world["table"], [], seed=0)
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


def test_text_encoder_inputs_match_between_training_and_decoding(world, trained):
    """One reader builds the encoder input for training rows and for decoding batches: a task
    marker, then the text's states (one per MiniLM word piece, or their mean), or a history's ID
    tokens without the de-duplication level."""
    import torch

    from semid.generator.inputs import TextEncoderInputs
    from semid.generator.train import RowCollator

    generator = load_generator(trained["out"] / MODEL_DIR, world["table"], device="cpu")
    tokenizer, table, pooled_reader = generator.tokenizer, world["table"], generator.inputs
    token_reader = TextEncoderInputs(tokenizer, pooled_reader.text_encoder, 128, pooled=False, rec_levels=[1, 2])
    query = world["queries"]["text"].iloc[0]
    history = [int(i) for i in world["items"]["item_id"].iloc[:3]]
    sources = [f"search: {query}", rec_source(table, history)]
    marker, text = tokenizer.convert_tokens_to_ids("<search>"), tokenizer.convert_tokens_to_ids("<text>")

    search_row, rec_row = token_reader.rows(sources)
    pieces = len(pooled_reader.text_encoder.tokenizer(query)["input_ids"])  # with [CLS] and [SEP]
    assert search_row["input_ids"].tolist() == [marker] + [text] * pieces
    # int32 rows, not Python int lists: ~10M of them are held through an ML-25M run
    assert search_row["input_ids"].dtype == rec_row["input_ids"].dtype == np.int32
    assert search_row["text_states"].shape == (pieces + 1, 384) and not search_row["text_states"][0].any()
    pooled_row = pooled_reader.rows(sources[:1])[0]
    assert pooled_row["input_ids"].tolist() == [marker, text]
    assert abs(pooled_row["text_states"][1].astype(float) - search_row["text_states"][1:].astype(float).mean(0)).max() < 1e-2
    assert table.levels == 3 and generator.meta["rec_levels"] == [1, 2]
    expected = [tokenizer.convert_tokens_to_ids("<recommend>")] + [
        tokenizer.convert_tokens_to_ids(f"<sid_{level + 1}_{table.codes['joint'][item][level]}>")
        for item in history
        for level in range(2)
    ]
    assert rec_row["input_ids"].tolist() == expected

    for reader in (token_reader, pooled_reader):
        batch = reader.batch(sources, generator.model)
        rows = reader.rows(sources)
        collated = RowCollator(tokenizer.pad_token_id)([{**row, "labels": [1]} for row in rows])
        with torch.no_grad():
            embeds = generator.model.embed_inputs(collated["input_ids"], collated["text_states"])
        assert torch.equal(batch["inputs_embeds"], embeds)
        assert torch.equal(batch["attention_mask"], collated["attention_mask"])


def test_scratch_vocabulary_generator_without_text_encoder(world, trained, tmp_path):
    """generator.text_encoder="" keeps the earlier path: a T5 with its own text vocabulary."""
    examples, corpus = trained["examples"], trained["corpus"]
    config = tiny_scratch_config(text_encoder="", max_steps=3)
    stats = train_generator(config, world["table"], examples, [], corpus, tmp_path, seed=0)
    assert stats["vocab_size"] > len(world["table"].tokens()) + 100  # text pieces + ID tokens
    generator = load_generator(tmp_path / MODEL_DIR, world["table"], device="cpu")
    assert "input_ids" in generator.model_inputs([examples[0].source])
    decoded = generate_items(generator, [examples[0].source], "search", k=5, num_beams=5)
    assert len(decoded.ranked_items[0]) == 5


def test_query_centroid_init_gives_similar_codes_similar_embeddings(world):
    """Each non-dedup ID token's decoder embedding starts at the projected mean text of its items'
    queries, centred and scaled per level; the de-duplication level and the encoder's own table
    (rec histories) keep their random start."""
    import numpy as np
    import torch

    from semid.generator.train import encode_examples, query_centroids

    table = world["table"]
    config = tiny_scratch_config(id_embedding_init="query_centroids")
    model, tokenizer, reader = create_model(config, table, [], seed=0)
    encoder_before = model.encoder_embeddings.weight.detach().clone()
    examples = search_examples(world["queries"])
    centroids = query_centroids(encode_examples(reader, tokenizer, table, examples), examples)
    assert set(centroids) == set(world["items"]["item_id"])  # every item has queries here
    before = model.get_input_embeddings().weight.detach().clone()

    from semid.generator.model import init_id_embeddings

    used = {level: sorted({codes[level - 1] for codes in table.codes["joint"].values()}) for level in (1, 2, 3)}
    assert init_id_embeddings(model, tokenizer, table, centroids) == len(used[1]) + len(used[2])
    after = model.get_output_embeddings().weight.detach()  # tied: the decoder's input table too
    assert torch.equal(model.encoder_embeddings.weight, encoder_before)
    ids = {level: [tokenizer.convert_tokens_to_ids(f"<sid_{level}_{c}>") for c in used[level]] for level in (1, 2, 3)}
    assert torch.equal(after[ids[3]], before[ids[3]])  # dedup level untouched
    scale = before.pow(2).mean().sqrt()
    for level in (1, 2):
        rows = after[ids[level]]
        assert rows.mean(0).abs().max() < 1e-5 and abs(rows.pow(2).mean().sqrt() - scale) < 1e-4
    # two level-1 codes whose items' queries lie close get close embeddings (vs a far pair)
    level1 = {c: np.mean([centroids[i] for i, codes in table.codes["joint"].items() if codes[0] == c], axis=0)
              for c in used[1]}
    text_sim = np.corrcoef(np.stack(list(level1.values())))
    embed_sim = np.corrcoef(after[ids[1]].numpy())
    upper = np.triu_indices(len(level1), 1)
    assert np.corrcoef(text_sim[upper], embed_sim[upper])[0, 1] > 0.5


def test_examples_digest_hashes_one_example_at_a_time_as_the_joined_text_did():
    """Checkpoints keyed by the old one-string digest still resume: same bytes, same hash."""
    import hashlib

    from semid.generator.examples import Example
    from semid.generator.train import examples_digest

    examples = [Example("search", "search: a film about ducks", 1), Example("rec", "recommend: <sid_1_2>", 7)]
    joined = "\n".join(f"{e.source}\t{e.target_item}" for e in examples)
    assert examples_digest(examples) == hashlib.sha256(joined.encode()).hexdigest()[:16]
    assert examples_digest(examples[::-1]) != examples_digest(examples)
