"""How an example's source becomes encoder input, the same way in training and in decoding.

Sources are the strings of ``semid.generator.examples`` (``"search: <query>"``,
``"recommend: <IDs>"``, ``"item: <item text>"``), so evaluation, serving and the paper's
pretrained-T5 path share one format. Two readers:

- ``TokenizerInputs``: a T5 with a text vocabulary (flan-t5, or the scratch tokenizer) tokenizes
  the source.
- ``TextEncoderInputs``: text goes through a frozen pretrained encoder (``FrozenTextEncoder``);
  the T5 sees a task marker, then one ``<text>`` placeholder per text state (the model swaps in
  the projected state), while a rec history stays what it is, its items' semantic-ID tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from semid.generator.examples import INDEX_PREFIX, REC_PREFIX, SEARCH_PREFIX
from semid.generator.table import GeneratorError

TEXT_TOKEN = "<text>"
# One marker per kind of input: the encoder must know which task it is asked.
MARKERS = {SEARCH_PREFIX: "<search>", REC_PREFIX: "<recommend>", INDEX_PREFIX: "<item>"}
ID_TOKEN = re.compile(r"<[a-z]+_(\d+)_\d+>")


def split_source(source: str) -> tuple[str, str]:
    """(prefix, rest) of an example source; fails on a source of no known task."""
    for prefix in MARKERS:
        if source.startswith(prefix):
            return prefix, source[len(prefix) :]
    raise GeneratorError(f"source {source[:40]!r} starts with none of {list(MARKERS)}")


class TokenizerInputs:
    """Sources tokenized by the generator's own tokenizer (text-vocabulary T5)."""

    def __init__(self, tokenizer, max_input_tokens: int):
        self.tokenizer = tokenizer
        self.max_input_tokens = int(max_input_tokens)

    def rows(self, sources: Sequence[str]) -> list[dict[str, Any]]:
        if not sources:
            return []
        encoded = self.tokenizer(list(sources), truncation=True, max_length=self.max_input_tokens)
        return [{"input_ids": ids} for ids in encoded["input_ids"]]

    def batch(self, sources: Sequence[str], model) -> dict[str, Any]:
        """Padded encoder input for ``model.generate``: ``input_ids`` + ``attention_mask``."""
        encoded = self.tokenizer(
            list(sources), truncation=True, max_length=self.max_input_tokens, padding=True, return_tensors="pt"
        )
        return dict(encoded.to(model.device))


class TextEncoderInputs:
    """Text through a frozen encoder, rec histories as ID tokens; one row layout for train and decode."""

    def __init__(
        self,
        tokenizer,
        text_encoder,
        max_input_tokens: int,
        pooled: bool,
        rec_levels: Sequence[int] | None = None,
    ):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.max_input_tokens = int(max_input_tokens)
        self.pooled = pooled
        # 1-based ID levels a rec history shows; None = all (e.g. leave out the de-duplication level)
        self.rec_levels = set(rec_levels) if rec_levels is not None else None
        self.text_token_id = tokenizer.convert_tokens_to_ids(TEXT_TOKEN)
        self.marker_ids = {prefix: tokenizer.convert_tokens_to_ids(m) for prefix, m in MARKERS.items()}

    def _history_ids(self, rest: str) -> list[int]:
        tokens = [m.group(0) for m in ID_TOKEN.finditer(rest)
                  if self.rec_levels is None or int(m.group(1)) in self.rec_levels]
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        if self.tokenizer.unk_token_id in ids:
            raise GeneratorError(f"rec input holds IDs the generator does not know: {rest[:60]!r}")
        return ids[-(self.max_input_tokens - 1) :]  # keep the newest items

    def rows(self, sources: Sequence[str]) -> list[dict[str, Any]]:
        """Per source: ``input_ids`` (int32) and, for text, ``text_states`` (float16, aligned with input_ids).

        Built one source at a time: at ML-25M scale (~10M rec windows) a list of every split source
        and rows of Python ints were ~1.5 KB of the ~2.1 KB per example the stage peaked at
        (bench/results/train_t5_memory.md); only the few text sources are gathered, to encode them
        in batches.
        """
        texts = [split_source(s)[1] for s in sources if not s.startswith(REC_PREFIX)]
        states = iter(self.text_encoder.encode(texts, self.pooled) if texts else [])
        del texts
        rows = []
        for source in sources:
            prefix, rest = split_source(source)
            marker = self.marker_ids[prefix]
            if prefix == REC_PREFIX:
                rows.append({"input_ids": np.array([marker, *self._history_ids(rest)], dtype=np.int32)})
                continue
            text_states = next(states)[: self.max_input_tokens - 1]
            aligned = np.zeros((len(text_states) + 1, text_states.shape[1]), dtype=np.float16)
            aligned[1:] = text_states
            input_ids = np.full(len(text_states) + 1, self.text_token_id, dtype=np.int32)
            input_ids[0] = marker
            rows.append({"input_ids": input_ids, "text_states": aligned})
        return rows

    def batch(self, sources: Sequence[str], model) -> dict[str, Any]:
        """Padded encoder input for ``model.generate``: ``inputs_embeds`` + ``attention_mask``."""
        input_ids, attention_mask, text_states = pad_rows(self.rows(sources), self.tokenizer.pad_token_id)
        device = model.device
        with torch.no_grad():
            embeds = model.embed_inputs(input_ids.to(device), None if text_states is None else text_states.to(device))
        return {"inputs_embeds": embeds, "attention_mask": attention_mask.to(device)}


def pad_rows(rows: Sequence[dict[str, Any]], pad_id: int):
    """(input_ids, attention_mask, text_states or None) as right-padded tensors."""
    length = max(len(r["input_ids"]) for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    with_text = [r for r in rows if r.get("text_states") is not None]
    text_states = (
        torch.zeros((len(rows), length, with_text[0]["text_states"].shape[1])) if with_text else None
    )
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[i, :n] = torch.as_tensor(row["input_ids"], dtype=torch.long)
        attention_mask[i, :n] = 1
        if text_states is not None and row.get("text_states") is not None:
            text_states[i, :n] = torch.from_numpy(row["text_states"].astype(np.float32))
    return input_ids, attention_mask, text_states
