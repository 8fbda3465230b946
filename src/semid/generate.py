"""One T5 for search and recommendation over semantic IDs: vocabulary, examples, training, decoding.

The generator reads text and writes a semantic ID, one new token per level (``<sid_1_42>``;
``<search_1_42>`` / ``<rec_1_42>`` when the two tasks have their own ID spaces):

- search: ``"search: <query>"``  -> the ID of the item the query was written for;
- rec:    ``"recommend: <IDs of the last H items>"`` -> the ID of the next item;
- optional DSI-style indexing: ``"item: <item text>"`` -> the item's ID.

Targets are built from token ids directly (not by re-tokenizing the ID string), so the decoder's
prefix trie and the training labels agree by construction; the tokenizer round-trip check makes
sure the *inputs* (rec histories written as ID strings) tokenize to the same tokens.

Decoding is beam search constrained by a prefix trie of the valid IDs, so every output is a real
item. transformers 5.x moved group ("diverse") beam search out of the library into a Hub repo
(``transformers-community/group-beam-search``, needs ``trust_remote_code`` and network), so the
diverse variant here is a small group beam search of our own over the same trie (Vijayakumar et
al. 2018, Hamming diversity), which works offline and on any device.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from semid.ids import load_ids_meta, load_semantic_ids
from semid.ids import token as id_token
from semid.io import SemidError, atomic_dir, progress

SEARCH_PREFIX = "search: "
REC_PREFIX = "recommend: "
INDEX_PREFIX = "item: "
TASKS = ("search", "rec")
MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoints"
META_FILE = "semid_generator.json"
FINGERPRINT_FILE = "fingerprint.json"
SCRATCH = "scratch"
# T5's fixed special tokens; a scratch tokenizer keeps the same layout so both paths agree.
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


class GeneratorError(SemidError):
    """The generator's inputs or checkpoint do not fit together."""


# --------------------------------------------------------------------------- semantic IDs


def task_space(spaces: Sequence[str], task: str) -> str:
    """The ID space a task writes: the shared ``joint`` space, else the task's own (``separate``)."""
    if "joint" in spaces:
        return "joint"
    if task in spaces:
        return task
    raise GeneratorError(
        f"no ID space for task {task!r} among spaces {list(spaces)}; expected 'joint' or {task!r}"
    )


@dataclass
class IdTable:
    """Semantic IDs of every item, per space, checked against the items."""

    spaces: tuple[str, ...]
    codebook_sizes: tuple[int, ...]
    codes: dict[str, dict[int, tuple[int, ...]]]  # space -> item_id -> codes (one per level)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    def tokens(self) -> list[str]:
        """Every ID token of every space, in a fixed order (the vocabulary the model adds)."""
        return [
            id_token(space, level + 1, code)
            for space in self.spaces
            for level, size in enumerate(self.codebook_sizes)
            for code in range(size)
        ]

    def sid(self, space: str, item_id: int) -> str:
        return "".join(
            id_token(space, level + 1, code) for level, code in enumerate(self.codes[space][item_id])
        )

    def fingerprint(self) -> str:
        """Hash of the whole item -> ID assignment: a model only fits the table it was trained on."""
        digest = hashlib.sha256()
        for space in self.spaces:
            for item_id in sorted(self.codes[space]):
                digest.update(f"{space}:{item_id}:{self.codes[space][item_id]};".encode())
        return digest.hexdigest()[:16]


def build_id_table(semantic_ids: pd.DataFrame, meta: dict[str, Any], item_ids: Iterable[int]) -> IdTable:
    """Check the ID table against the items (every item once per space, codes in range) and index it."""
    for column in ("item_id", "space", "codes"):
        if column not in semantic_ids.columns:
            raise GeneratorError(f"semantic IDs lack column {column!r}; have {list(semantic_ids.columns)}")
    spaces = tuple(meta.get("spaces") or sorted(semantic_ids["space"].unique()))
    sizes = tuple(int(s) for s in meta["codebook_sizes"])
    expected = {int(i) for i in item_ids}
    codes: dict[str, dict[int, tuple[int, ...]]] = {}
    for space in spaces:
        rows = semantic_ids[semantic_ids["space"] == space]
        table = {int(i): tuple(int(c) for c in cs) for i, cs in zip(rows["item_id"], rows["codes"])}
        if len(table) != len(rows):
            raise GeneratorError(
                f"space {space!r}: {len(rows) - len(table)} items have more than one semantic ID"
            )
        missing, unknown = expected - set(table), set(table) - expected
        if missing or unknown:
            raise GeneratorError(
                f"semantic IDs (space {space!r}) do not match the items: {len(missing)} items without an ID "
                f"(e.g. {sorted(missing)[:5]}), {len(unknown)} IDs for unknown items (e.g. {sorted(unknown)[:5]}); "
                "rerun quantize on the same data/prepared"
            )
        for item_id, item_codes in table.items():
            if len(item_codes) != len(sizes) or any(not 0 <= c < s for c, s in zip(item_codes, sizes)):
                raise GeneratorError(
                    f"item {item_id} has codes {list(item_codes)} that do not fit codebook sizes {list(sizes)}"
                )
        codes[space] = table
    return IdTable(spaces=spaces, codebook_sizes=sizes, codes=codes, meta=dict(meta))


def load_id_table(ids_dir: Path, item_ids: Iterable[int]) -> IdTable:
    """data/ids/{semantic_ids.parquet, meta.json} -> checked IdTable."""
    return build_id_table(load_semantic_ids(ids_dir), load_ids_meta(ids_dir), item_ids)


# --------------------------------------------------------------------------- training examples


@dataclass(frozen=True)
class Example:
    task: str  # search | rec | index
    source: str
    target_item: int


def search_examples(queries: pd.DataFrame) -> list[Example]:
    return [
        Example("search", SEARCH_PREFIX + text, int(item))
        for text, item in zip(queries["text"], queries["item_id"])
    ]


def rec_source(table: IdTable, history: Sequence[int]) -> str:
    space = task_space(table.spaces, "rec")
    return REC_PREFIX + " ".join(table.sid(space, int(item)) for item in history)


def user_histories(interactions: pd.DataFrame, splits: Sequence[str]) -> dict[int, list[int]]:
    """user -> items of the given splits in chronological order."""
    rows = interactions[interactions["split"].isin(splits)].sort_values(["user_id", "position"])
    return {int(user): group.tolist() for user, group in rows.groupby("user_id", sort=True)["item_id"]}


def rec_train_examples(
    interactions: pd.DataFrame,
    table: IdTable,
    history_length: int,
    stride: int = 1,
    max_windows_per_user: int = 0,
) -> list[Example]:
    """Sliding next-item windows over TRAIN histories only; the newest windows first when capped."""
    examples = []
    for history in user_histories(interactions, ["train"]).values():
        targets = list(range(len(history) - 1, 0, -stride))  # newest target first
        if max_windows_per_user:
            targets = targets[:max_windows_per_user]
        for t in reversed(targets):
            window = history[max(0, t - history_length) : t]
            examples.append(Example("rec", rec_source(table, window), int(history[t])))
    return examples


def rec_heldout_examples(
    interactions: pd.DataFrame, table: IdTable, history_length: int, split: str
) -> list[Example]:
    """One example per user: the history before the user's ``split`` item (valid or test), last H."""
    before = {"valid": ["train"], "test": ["train", "valid"]}[split]
    histories = user_histories(interactions, before)
    targets = interactions[interactions["split"] == split].set_index("user_id")["item_id"]
    examples = []
    for user, target in targets.sort_index().items():
        history = histories.get(int(user), [])[-history_length:]
        if history:
            examples.append(Example("rec", rec_source(table, history), int(target)))
    return examples


def indexing_examples(items: pd.DataFrame) -> list[Example]:
    return [
        Example("index", INDEX_PREFIX + text, int(item))
        for text, item in zip(items["item_text"], items["item_id"])
    ]


def build_examples(
    config,
    table: IdTable,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    train_queries: pd.DataFrame,
    valid_queries: pd.DataFrame,
    seed: int,
) -> tuple[list[Example], list[Example]]:
    """(train, valid): search + rec (+ indexing) from the train split; valid from the valid split."""
    train = search_examples(train_queries) + rec_train_examples(
        interactions, table, config.history_length, config.rec_window_stride, config.rec_max_windows_per_user
    )
    if config.indexing_examples:
        train += indexing_examples(items)
    valid = search_examples(valid_queries) + rec_heldout_examples(
        interactions, table, config.history_length, "valid"
    )
    if config.max_valid_examples and len(valid) > config.max_valid_examples:
        rng = np.random.default_rng(seed)
        valid = [valid[i] for i in sorted(rng.choice(len(valid), config.max_valid_examples, replace=False))]
    return train, valid


def tokenizer_corpus(items: pd.DataFrame, train_queries: pd.DataFrame) -> list[str]:
    """What a scratch tokenizer learns from: item texts, train queries and the task prefixes."""
    prefixes = [SEARCH_PREFIX, REC_PREFIX, INDEX_PREFIX] * 50  # frequent enough to become whole pieces
    return [*items["item_text"].tolist(), *train_queries["text"].tolist(), *prefixes]


def set_threads(threads: int) -> None:
    """Pin torch's CPU threads (0 = torch's default); oversubscribed cores make small models crawl."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- tokenizer and model


def train_text_tokenizer(texts: Iterable[str], vocab_size: int):
    """A T5-layout Unigram tokenizer trained offline on our own texts (pad=0, eos=1, unk=2)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    # The same pre-tokenizer T5Tokenizer uses, so the learned pieces are the ones it will find.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=int(vocab_size), special_tokens=[PAD, EOS, UNK], unk_token=UNK, show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    vocab = [(piece, float(score)) for piece, score in json.loads(tokenizer.to_str())["model"]["vocab"]]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def add_id_tokens(tokenizer, table: IdTable) -> None:
    """Add every ID token as one whole token (not special: decoding must keep them)."""
    tokenizer.add_tokens(table.tokens())


def target_token_ids(tokenizer, table: IdTable, space: str, item_id: int) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids(
        [id_token(space, level + 1, c) for level, c in enumerate(table.codes[space][item_id])]
    )
    return [*ids, tokenizer.eos_token_id]


def check_round_trip(tokenizer, table: IdTable) -> None:
    """Every ID string tokenizes to exactly its level tokens and decodes back to itself."""
    unknown = [
        t for t in table.tokens() if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)
    ]
    if unknown:
        raise GeneratorError(f"{len(unknown)} ID tokens are not in the tokenizer (e.g. {unknown[:3]})")
    for space in table.spaces:
        item_ids = sorted(table.codes[space])
        sids = [table.sid(space, i) for i in item_ids]
        encoded = tokenizer(sids, add_special_tokens=True)["input_ids"]
        for item_id, sid, ids in zip(item_ids, sids, encoded):
            if ids != target_token_ids(tokenizer, table, space, item_id):
                raise GeneratorError(
                    f"ID {sid} of item {item_id} tokenizes to {tokenizer.convert_ids_to_tokens(ids)}"
                )
            if tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") != sid:
                raise GeneratorError(f"ID {sid} of item {item_id} does not decode back to itself")


def _scratch_config(config, vocab_size: int, tokenizer):
    from transformers import T5Config

    return T5Config(
        vocab_size=int(vocab_size),
        d_model=int(config.d_model),
        d_ff=int(config.d_ff),
        d_kv=int(config.d_model // config.num_heads),
        num_layers=int(config.num_layers),
        num_decoder_layers=int(config.num_decoder_layers),
        num_heads=int(config.num_heads),
        dropout_rate=float(config.dropout),
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )


def create_model(config, table: IdTable, corpus: Iterable[str], seed: int):
    """(model, tokenizer): a pretrained T5 with the ID tokens added, or a small T5 from scratch."""
    import transformers
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    transformers.set_seed(seed)
    if config.model == SCRATCH:
        tokenizer = train_text_tokenizer(corpus, config.text_vocab_size)
        add_id_tokens(tokenizer, table)
        model = T5ForConditionalGeneration(_scratch_config(config, len(tokenizer), tokenizer))
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(config.model)
            model = T5ForConditionalGeneration.from_pretrained(config.model)
        except (OSError, ValueError) as error:
            raise GeneratorError(
                f"generator.model={config.model!r} could not be loaded ({str(error).splitlines()[0]}); use a local "
                f"folder holding a T5 checkpoint, a Hub name with network access, or {SCRATCH!r}"
            ) from error
        add_id_tokens(tokenizer, table)
        model.resize_token_embeddings(len(tokenizer))
    check_round_trip(tokenizer, table)
    return model, tokenizer


# --------------------------------------------------------------------------- training


def encode_examples(
    tokenizer, table: IdTable, examples: Sequence[Example], max_input_tokens: int
) -> list[dict]:
    """Examples -> {"input_ids", "labels"} rows for Seq2SeqTrainer."""
    if not examples:
        return []
    sources = tokenizer([e.source for e in examples], truncation=True, max_length=max_input_tokens)[
        "input_ids"
    ]
    rows = []
    for example, input_ids in zip(examples, sources):
        space = task_space(table.spaces, "rec" if example.task == "rec" else "search")
        rows.append(
            {"input_ids": input_ids, "labels": target_token_ids(tokenizer, table, space, example.target_item)}
        )
    return rows


def prepare_checkpoints(folder: Path, fingerprint: dict[str, Any]) -> str | None:
    """The checkpoint to resume from, or None; checkpoints of another run setup are removed."""
    from semid.training import latest_checkpoint

    marker = folder / FINGERPRINT_FILE
    if folder.exists() and (not marker.exists() or json.loads(marker.read_text()) != fingerprint):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(fingerprint, sort_keys=True))
    return latest_checkpoint(folder)


def train_generator(
    config,
    table: IdTable,
    train_examples: Sequence[Example],
    valid_examples: Sequence[Example],
    corpus: Sequence[str],
    out_dir: Path,
    seed: int,
) -> dict[str, Any]:
    """Train with Seq2SeqTrainer, resumable from out_dir/checkpoints; save the model to out_dir/model."""
    import torch
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    from semid.io import progress_enabled
    from semid.training import TimeBudgetCallback

    if not train_examples:
        raise GeneratorError("no training examples: the train queries and train histories are empty")
    out_dir = Path(out_dir)
    model, tokenizer = create_model(config, table, corpus, seed)
    train_rows = encode_examples(tokenizer, table, train_examples, config.max_input_tokens)
    valid_rows = encode_examples(tokenizer, table, valid_examples, config.max_input_tokens)

    # What a checkpoint must share with this run to be resumed: config (but not the budgets),
    # the ID table and the examples. Anything else starts afresh.
    budgets = {"max_steps", "max_minutes", "save_steps"}
    fingerprint = {
        "config": {k: v for k, v in asdict(config).items() if k not in budgets},
        "ids": table.fingerprint(),
        "examples": hashlib.sha256(
            "\n".join(f"{e.source}\t{e.target_item}" for e in train_examples).encode()
        ).hexdigest()[:16],
        "seed": seed,
    }
    checkpoint_dir = out_dir / CHECKPOINT_DIR
    resume_from = prepare_checkpoints(checkpoint_dir, fingerprint)

    args = Seq2SeqTrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        optim="adamw_torch",
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps > 0 else -1,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type="linear",
        logging_steps=max(1, config.save_steps // 4),
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        eval_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        disable_tqdm=not progress_enabled(),
        dataloader_num_workers=0,
        bf16=bool(config.bf16 and torch.cuda.is_available()),
    )
    budget = TimeBudgetCallback(config.max_minutes)
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=valid_rows or None,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        processing_class=tokenizer,
        callbacks=[budget],
    )
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.monotonic() - started
    steps_done = trainer.state.global_step
    stats: dict[str, Any] = {
        "train_examples": len(train_rows),
        "train_search_examples": sum(e.task == "search" for e in train_examples),
        "train_rec_examples": sum(e.task == "rec" for e in train_examples),
        "train_index_examples": sum(e.task == "index" for e in train_examples),
        "valid_examples": len(valid_rows),
        "steps": steps_done,
        "epochs_done": steps_done * config.batch_size / max(1, len(train_rows)),
        "train_loss": float(result.training_loss),
        "train_seconds": train_seconds,
        "train_examples_per_second": float(result.metrics.get("train_samples_per_second", 0.0)),
        "stopped_by_time_budget": int(
            bool(budget.max_seconds) and time.monotonic() - budget.started > budget.max_seconds
        ),
        "resumed": int(resume_from is not None),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
    }
    if valid_rows:
        stats["valid_loss"] = float(trainer.evaluate()["eval_loss"])
    save_generator(model, tokenizer, table, config, out_dir / MODEL_DIR, stats)
    return stats


def save_generator(model, tokenizer, table: IdTable, config, folder: Path, stats: dict[str, Any]) -> None:
    meta = {
        "id_tokens": table.tokens(),
        "id_table": table.fingerprint(),
        "spaces": list(table.spaces),
        "codebook_sizes": list(table.codebook_sizes),
        "history_length": config.history_length,
        "max_input_tokens": config.max_input_tokens,
        "base_model": config.model,
        "train": stats,
    }
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=float))


@dataclass
class Generator:
    model: Any
    tokenizer: Any
    table: IdTable
    meta: dict[str, Any]

    @property
    def history_length(self) -> int:
        return int(self.meta["history_length"])


def load_generator(folder: Path, table: IdTable, device: str | None = None) -> Generator:
    """Load a trained generator; fail clearly when it was trained on another ID vocabulary or table."""
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.exists():
        raise GeneratorError(f"{meta_path} not found; run `dvc repro train_t5` first")
    meta = json.loads(meta_path.read_text())
    if meta["id_tokens"] != table.tokens():
        raise GeneratorError(
            f"the generator in {folder} was trained on a different ID vocabulary ({len(meta['id_tokens'])} tokens, "
            f"spaces {meta['spaces']}, codebooks {meta['codebook_sizes']}) than data/ids ({len(table.tokens())} tokens, "
            f"spaces {list(table.spaces)}, codebooks {list(table.codebook_sizes)}); rerun train_t5"
        )
    if meta["id_table"] != table.fingerprint():
        raise GeneratorError(
            f"the generator in {folder} was trained on other semantic IDs (table {meta['id_table']}, "
            f"data/ids has {table.fingerprint()}); rerun train_t5"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = T5ForConditionalGeneration.from_pretrained(folder)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise GeneratorError(f"model in {folder} has fewer embeddings than its tokenizer has tokens")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    return Generator(model, tokenizer, table, meta)


# --------------------------------------------------------------------------- decoding


class IdTrie:
    """Prefix trie over the token-id sequences of one space's valid IDs (each ending in EOS)."""

    def __init__(self, generator_tokenizer, table: IdTable, space: str):
        self.eos = generator_tokenizer.eos_token_id
        self.pad = generator_tokenizer.pad_token_id
        self.items: dict[tuple[int, ...], list[int]] = {}
        for item_id in sorted(table.codes[space]):
            sequence = tuple(target_token_ids(generator_tokenizer, table, space, item_id))
            self.items.setdefault(sequence, []).append(item_id)
        children: dict[tuple[int, ...], set[int]] = {}
        for sequence in self.items:
            for depth in range(len(sequence)):
                children.setdefault(sequence[:depth], set()).add(sequence[depth])
        self.children = {prefix: sorted(tokens) for prefix, tokens in children.items()}
        self.length = max(len(s) for s in self.items)  # levels + EOS

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that extend ``prefix`` towards a valid ID; only padding once an ID is complete."""
        return self.children.get(tuple(prefix), [self.pad])

    def prefix_allowed_tokens_fn(self):
        def allowed(batch_id: int, decoder_ids) -> list[int]:
            return self.allowed(decoder_ids[1:].tolist())  # drop the decoder start token

        return allowed

    def lookup(self, generated: Sequence[int]) -> list[int] | None:
        """Items of a generated sequence (cut at EOS), or None when it is no valid ID."""
        tokens = list(generated)
        if self.eos in tokens:
            tokens = tokens[: tokens.index(self.eos) + 1]
        return self.items.get(tuple(tokens))


@dataclass
class Decoded:
    ranked_items: list[list[int]]  # per input, up to k distinct items, best first
    sequences_returned: int
    sequences_invalid: int
    seconds: float
    # per input, aligned with ranked_items: the length-normalised log-probability of the ID that
    # brought each item (NaN where the decoder reports none, e.g. a single greedy beam)
    scores: list[list[float]] = field(default_factory=list)

    @property
    def invalid_id_rate(self) -> float:
        return self.sequences_invalid / self.sequences_returned if self.sequences_returned else 0.0

    @property
    def inputs_per_second(self) -> float:
        return len(self.ranked_items) / self.seconds if self.seconds else 0.0


def _rank_items(
    trie: IdTrie,
    sequences: Sequence[Sequence[int]],
    k: int,
    exclude: set[int] | None = None,
    sequence_scores: Sequence[float] | None = None,
) -> tuple[list[int], list[float], int]:
    """Distinct items of the sequences in beam order (IDs shared by several items expand in item order),
    each with its sequence's score."""
    ranked, scores, seen, invalid = [], [], set(exclude or ()), 0
    for position, sequence in enumerate(sequences):
        items = trie.lookup(sequence)
        if items is None:
            invalid += 1
            continue
        for item in items:
            if item not in seen:
                seen.add(item)
                ranked.append(item)
                scores.append(float(sequence_scores[position]) if sequence_scores is not None else math.nan)
    return ranked[:k], scores[:k], invalid


def generate_items(
    generator: Generator,
    sources: Sequence[str],
    task: str,
    k: int = 30,
    num_beams: int = 30,
    num_beam_groups: int = 1,
    diversity_penalty: float = 0.0,
    constrained: bool = True,
    batch_size: int = 32,
    exclude: Sequence[set[int]] | None = None,
) -> Decoded:
    """Beam-search each source into up to k distinct items (trie-constrained unless told otherwise).

    ``exclude`` (one set per source) drops items from that source's ranking, e.g. a user's history;
    the caller widens ``num_beams`` so that k remain.
    """
    import torch

    if num_beams < k and num_beam_groups == 1:
        raise GeneratorError(f"num_beams={num_beams} cannot return k={k} IDs; use num_beams >= k")
    if num_beam_groups > 1 and not constrained:
        raise GeneratorError("diverse beam search runs over the ID trie only; set constrained=true")
    space = task_space(generator.table.spaces, task)
    trie = IdTrie(generator.tokenizer, generator.table, space)
    # A beam wider than the number of valid IDs would have to fill up with invalid ones.
    beams = min(num_beams, len(trie.items)) if constrained and num_beam_groups == 1 else num_beams
    returned = beams if exclude is not None or num_beam_groups > 1 else min(beams, k)
    model, tokenizer = generator.model, generator.tokenizer
    ranked, ranked_scores, total, invalid = [], [], 0, 0
    started = time.monotonic()
    for start in progress(range(0, len(sources), batch_size), desc=f"decode {task}", unit="batch"):
        batch = tokenizer(
            list(sources[start : start + batch_size]),
            truncation=True,
            max_length=int(generator.meta["max_input_tokens"]),
            padding=True,
            return_tensors="pt",
        ).to(model.device)
        with torch.no_grad():
            if num_beam_groups > 1:
                per_input, per_input_scores = diverse_beam_search(
                    model, batch, trie, beams, num_beam_groups, diversity_penalty
                )
            else:
                output = model.generate(
                    **batch,
                    num_beams=beams,
                    num_return_sequences=returned,
                    max_new_tokens=trie.length,
                    do_sample=False,
                    early_stopping=True,
                    prefix_allowed_tokens_fn=trie.prefix_allowed_tokens_fn() if constrained else None,
                    return_dict_in_generate=True,
                    output_scores=True,
                )
                sequences = output.sequences[:, 1:].tolist()  # drop the decoder start token
                scores = (
                    output.sequences_scores.tolist()
                    if output.sequences_scores is not None
                    else [math.nan] * len(sequences)
                )
                per_input = [
                    sequences[i * returned : (i + 1) * returned] for i in range(len(sequences) // returned)
                ]
                per_input_scores = [
                    scores[i * returned : (i + 1) * returned] for i in range(len(sequences) // returned)
                ]
        for offset, (sequences, scores) in enumerate(zip(per_input, per_input_scores)):
            seen = exclude[start + offset] if exclude is not None else None
            items, item_scores, bad = _rank_items(trie, sequences, k, seen, scores)
            ranked.append(items)
            ranked_scores.append(item_scores)
            total += len(sequences)
            invalid += bad
    return Decoded(ranked, total, invalid, time.monotonic() - started, ranked_scores)


def diverse_beam_search(
    model, batch, trie: IdTrie, num_beams: int, num_groups: int, diversity_penalty: float
):
    """Group beam search with Hamming diversity over the ID trie: per input, every group's beams and
    their length-normalised log-probabilities.

    IDs are a few tokens long, so each step re-runs the decoder over the whole prefix instead of
    keeping a cache: simpler, and cheap at this length. Groups decode one after another at each
    step; a token already chosen by earlier groups at this step costs ``diversity_penalty`` per use,
    and a group takes a prefix an earlier group holds only when nothing else is left, so the
    beams end as distinct IDs wherever the codebooks allow.
    """
    import torch

    if num_beams % num_groups:
        raise GeneratorError(f"num_beams={num_beams} must be a multiple of num_beam_groups={num_groups}")
    per_group = num_beams // num_groups
    encoder_out = model.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    hidden, mask = encoder_out.last_hidden_state, batch["attention_mask"]
    n_inputs = hidden.shape[0]
    start = model.config.decoder_start_token_id
    # beams[i][g] = list of (token tuple, score); all groups start from the empty prefix.
    beams = [[[((), 0.0)] for _ in range(num_groups)] for _ in range(n_inputs)]
    vocab = model.config.vocab_size
    for _ in range(trie.length):
        step_used = [torch.zeros(vocab) for _ in range(n_inputs)]
        taken: list[set[tuple[int, ...]]] = [set() for _ in range(n_inputs)]
        for group in range(num_groups):
            rows = []
            for i in range(n_inputs):
                for prefix, score in beams[i][group]:
                    rows.append((i, prefix, score))
            prefixes = torch.tensor([[start, *p] for _, p, _ in rows], device=hidden.device)
            index = torch.tensor([i for i, _, _ in rows], device=hidden.device)
            logits = model(
                encoder_outputs=(hidden[index],), attention_mask=mask[index], decoder_input_ids=prefixes
            ).logits[:, -1, :]
            log_probs = torch.log_softmax(logits.float(), dim=-1).cpu()
            candidates: list[list[tuple[float, float, tuple[int, ...]]]] = [[] for _ in range(n_inputs)]
            for row, (i, prefix, score) in enumerate(rows):
                if prefix and prefix[-1] == trie.eos:  # finished: carried over unchanged
                    candidates[i].append((score, score, prefix))
                    continue
                allowed = trie.allowed(prefix)
                if allowed == [trie.pad]:
                    continue
                allowed_t = torch.tensor(allowed)
                new_scores = score + log_probs[row, allowed_t]
                penalised = new_scores - diversity_penalty * step_used[i][allowed_t]
                for token, raw, pen in zip(allowed, new_scores.tolist(), penalised.tolist()):
                    candidates[i].append((pen, raw, (*prefix, token)))
            for i in range(n_inputs):
                ordered = sorted(candidates[i], key=lambda c: -c[0])
                # Prefer prefixes no earlier group holds (duplicates waste returned slots), but fall
                # back to them while the level has too few codes to fill every group.
                fresh = [c for c in ordered if c[2] not in taken[i]]
                best = (fresh + [c for c in ordered if c[2] in taken[i]])[:per_group]
                beams[i][group] = [(prefix, raw) for _, raw, prefix in best] or beams[i][group]
                for _, _, prefix in best:
                    step_used[i][prefix[-1]] += 1
                    taken[i].add(prefix)
        if all(p and p[-1] == trie.eos for i in range(n_inputs) for g in beams[i] for p, _ in g):
            break
    results, result_scores = [], []
    for i in range(n_inputs):
        finished = [(score / max(1, len(prefix)), prefix) for group in beams[i] for prefix, score in group]
        # Rank across groups by length-normalised log-probability, as HF beam search does.
        finished.sort(key=lambda c: -c[0])
        results.append([list(prefix) for _, prefix in finished])
        result_scores.append([score for score, _ in finished])
    return results, result_scores
