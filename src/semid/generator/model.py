"""The model: one T5 for search and recommendation over semantic IDs: vocabulary, examples, training, decoding.

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

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, T5Config, T5Tokenizer

from semid.generator.inputs import MARKERS, TEXT_TOKEN, TextEncoderInputs, TokenizerInputs
from semid.generator.t5 import SemanticIdT5
from semid.generator.table import GeneratorError, IdTable
from semid.generator.text_encoder import FrozenTextEncoder
from semid.io import atomic_dir
from semid.seeding import pin_threads

MODEL_DIR = "model"
META_FILE = "semid_generator.json"
SCRATCH = "scratch"
# T5's fixed special tokens; a scratch tokenizer keeps the same layout so both paths agree.
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def configure_torch(threads: int) -> None:
    """Pin the CPU threads (``pin_threads``; 0 = the libraries' defaults) and flush denormal floats to zero.

    Oversubscribed cores make small models crawl, and results are bit-identical only at one
    thread count. Denormals: training the small generator drives some values (Adam's second
    moments of rare ID tokens, attention products) into the denormal range, where x86 float
    arithmetic is ~100x slower; measured on 2 cores, rec batches trained at ~75 examples/s
    with them and ~370 without. The flag is per thread and a thread pool made earlier keeps
    its own, so call this before any torch work in the process.
    """
    torch.set_flush_denormal(True)
    if threads > 0:
        pin_threads(threads)


# --------------------------------------------------------------------------- tokenizer and model


def train_text_tokenizer(texts: Iterable[str], vocab_size: int):
    """A T5-layout Unigram tokenizer trained offline on our own texts (pad=0, eos=1, unk=2)."""
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
        [table.token(space, level + 1, c) for level, c in enumerate(table.codes[space][item_id])]
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


def _scratch_config(config, vocab_size: int, tokenizer, text_state_dim: int = 0):
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
        text_state_dim=int(text_state_dim),
        # where the decoder's table starts from query centroids, rec histories keep a random one
        separate_encoder_embeddings=bool(text_state_dim) and config.id_embedding_init == "query_centroids",
        text_token_id=int(tokenizer.convert_tokens_to_ids(TEXT_TOKEN)) if text_state_dim else -1,
    )


def id_only_tokenizer(table: IdTable):
    """A T5-layout tokenizer with no text pieces: the special tokens, task markers, ``<text>`` and
    the ID tokens. Text reaches the model as encoder states, so a text vocabulary would only cost
    softmax width."""
    tokenizer = T5Tokenizer(vocab=[(PAD, 0.0), (EOS, 0.0), (UNK, 0.0), ("\u2581", -1.0)], extra_ids=0)
    tokenizer.add_tokens([*MARKERS.values(), TEXT_TOKEN])
    add_id_tokens(tokenizer, table)
    return tokenizer


def rec_levels(config, table: IdTable) -> list[int] | None:
    """ID levels a rec history shows: all, or all but the de-duplication level (an arbitrary
    number within a bucket that carries nothing about the item)."""
    if config.rec_input_dedup or not table.meta.get("dedup"):
        return None
    return list(range(1, table.levels))


def make_inputs(meta: dict[str, Any], tokenizer, text_encoder=None):
    """The encoder-input reader a saved or new generator's meta describes."""
    if not meta.get("text_encoder"):
        return TokenizerInputs(tokenizer, meta["max_input_tokens"])
    if text_encoder is None:
        text_encoder = FrozenTextEncoder(meta["text_encoder"], meta["text_max_tokens"])
    return TextEncoderInputs(
        tokenizer, text_encoder, meta["max_input_tokens"], meta["text_input"] == "pooled", meta.get("rec_levels")
    )


def generator_meta(config, table: IdTable) -> dict[str, Any]:
    """What decoding needs to know besides the weights (saved beside them)."""
    reads_text = config.model == SCRATCH and bool(config.text_encoder)
    return {
        "id_tokens": table.tokens(),
        "id_table": table.fingerprint(),
        "spaces": list(table.spaces),
        "codebook_sizes": list(table.codebook_sizes),
        "history_length": config.history_length,
        "max_input_tokens": config.max_input_tokens,
        "base_model": config.model,
        "text_encoder": config.text_encoder if reads_text else "",
        "text_input": config.text_input if reads_text else "",
        "text_max_tokens": config.text_max_tokens,
        "rec_levels": rec_levels(config, table) if reads_text else None,
    }


def create_model(config, table: IdTable, corpus: Iterable[str], seed: int):
    """(model, tokenizer, inputs): a pretrained T5 with the ID tokens added, or a small T5 from
    scratch that reads a frozen text encoder's states (``generator.text_encoder``) or, without one,
    text tokenized by a vocabulary trained on our own texts."""
    transformers.set_seed(seed)
    meta = generator_meta(config, table)
    if config.model == SCRATCH and meta["text_encoder"]:
        tokenizer = id_only_tokenizer(table)
        inputs = make_inputs(meta, tokenizer)
        model = SemanticIdT5(_scratch_config(config, len(tokenizer), tokenizer, inputs.text_encoder.dim))
    elif config.model == SCRATCH:
        tokenizer = train_text_tokenizer(corpus, config.text_vocab_size)
        add_id_tokens(tokenizer, table)
        model = SemanticIdT5(_scratch_config(config, len(tokenizer), tokenizer))
        inputs = make_inputs(meta, tokenizer)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(config.model)
            model = SemanticIdT5.from_pretrained(config.model)
        except (OSError, ValueError) as error:
            raise GeneratorError(
                f"generator.model={config.model!r} could not be loaded ({str(error).splitlines()[0]}); use a local "
                f"folder holding a T5 checkpoint, a Hub name with network access, or {SCRATCH!r}"
            ) from error
        add_id_tokens(tokenizer, table)
        model.resize_token_embeddings(len(tokenizer))
        inputs = make_inputs(meta, tokenizer)
    check_round_trip(tokenizer, table)
    return model, tokenizer, inputs


def init_id_embeddings(model, tokenizer, table: IdTable, item_vectors: dict[int, np.ndarray]) -> int:
    """Start each ID token's decoder embedding (tied with the output layer) at the projected mean
    text vector of its items.

    ``item_vectors`` holds an item's mean pooled text state over its train queries, in the frozen
    encoder's space, the space the model's ``text_projection`` reads; so at step 0 the decoder
    scores a code by how close its items' queries lie to the input, much as dense retrieval would.
    Only the decoder's table: the encoder reads rec histories through its own, random one
    (``SemanticIdT5.encoder_embeddings``); measured on ml-latest-small, one shared table started
    this way slowed rec learning (rec R@30 0.080 vs 0.100 after 1,500 steps) while search gained
    (0.189 vs 0.137). The de-duplication level
    numbers items within a bucket and carries no meaning: it keeps its random start. Rows are
    centred and scaled to the RMS of the random ones, level by level, so the logits keep their
    scale. Returns the number of tokens set.
    """
    weight = model.get_input_embeddings().weight  # the decoder's, tied with the output layer
    scale = weight.detach().pow(2).mean().sqrt()
    levels = table.levels - 1 if table.meta.get("dedup") else table.levels
    set_rows = []
    for space in table.spaces:
        for level in range(levels):
            members: dict[int, list[np.ndarray]] = {}
            for item_id, codes in table.codes[space].items():
                if item_id in item_vectors:
                    members.setdefault(codes[level], []).append(item_vectors[item_id])
            if len(members) < 2:
                continue
            rows = [tokenizer.convert_tokens_to_ids(table.token(space, level + 1, code)) for code in sorted(members)]
            centroids = np.asarray([np.mean(members[code], axis=0) for code in sorted(members)], dtype=np.float32)
            with torch.no_grad():
                projected = model.text_projection(torch.from_numpy(centroids))
                # Per level: what all codes of a level share says nothing about any one of them, and
                # a later level's residual differences are small next to the first level's.
                projected = projected - projected.mean(0)
                projected = projected * (scale / projected.pow(2).mean().sqrt())
                weight[torch.tensor(rows)] = projected.to(weight.dtype)
            set_rows.extend(rows)
    return len(set_rows)


def save_generator(model, tokenizer, table: IdTable, config, folder: Path, stats: dict[str, Any]) -> None:
    """Weights, tokenizer and meta. ``stats`` must hold no timings: this folder is a DVC output whose
    hash should depend on the params and inputs alone."""
    meta = {**generator_meta(config, table), "train": stats}
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
    inputs: Any  # TokenizerInputs | TextEncoderInputs
    tries: dict[str, Any] = field(default_factory=dict, repr=False)  # per ID space, built by decoding

    @property
    def history_length(self) -> int:
        return int(self.meta["history_length"])

    def model_inputs(self, sources: Sequence[str]) -> dict[str, Any]:
        """Encoder inputs for ``model.generate(**inputs)`` / ``model.get_encoder()(**inputs)``, on the
        model's device: ``input_ids`` or ``inputs_embeds``, with ``attention_mask``."""
        return self.inputs.batch(sources, self.model)


def load_generator(folder: Path, table: IdTable, device: str | None = None) -> Generator:
    """Load a trained generator; fail clearly when it was trained on another ID vocabulary or table."""
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
    model = SemanticIdT5.from_pretrained(folder)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise GeneratorError(f"model in {folder} has fewer embeddings than its tokenizer has tokens")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    inputs = make_inputs(meta, tokenizer)
    if getattr(inputs, "text_encoder", None) is not None:
        inputs.text_encoder.model.to(device)
        inputs.text_encoder.device = device
    return Generator(model, tokenizer, table, meta, inputs)
