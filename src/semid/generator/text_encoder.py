"""A frozen pretrained text encoder whose token states feed the generator's encoder.

A T5 trained from scratch on ~30k template queries has to learn language before it can learn
which words point to which IDs, and on two CPU cores that takes ~20 epochs (README, "Generator
learning curve"). Starting from a pretrained encoder's token states removes that step. The encoder
is the *base* model named in ``generator.text_encoder`` (all-MiniLM-L6-v2 by default), the same
at every grid point, never the run's fine-tuned embedder: the grid compares semantic IDs, as the
paper does with flan-t5-base held fixed. Frozen, each distinct text is encoded once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from semid.io import progress, progress_enabled
from semid.models import resolve_sentence_model

# Query texts are ~7 word pieces; item texts are cut here (the generator sees the start of the text).
ENCODE_BATCH = 256


class FrozenTextEncoder:
    """Token states (or their mean) of a BERT-style sentence-transformer, loaded offline.

    States are kept per process for each (model, length, pooling): a frozen encoder gives a text
    the same states every time, and a bench or test suite that trains several generators on the
    same queries would otherwise encode them again for each."""

    _states: dict[tuple[str, int, bool], dict[str, np.ndarray]] = {}

    def __init__(self, name: str, max_tokens: int, device: str = "cpu"):
        folder = resolve_sentence_model(name)
        self.name = name
        self.max_tokens = int(max_tokens)
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).to(device).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self._torch = torch

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], pooled: bool, desc: str = "text states") -> list[np.ndarray]:
        """Per text, a float16 array (tokens, dim), or (1, dim) mean-pooled; each distinct text once.

        Texts are batched by length so short queries are not padded to the longest item text.
        """
        states = self._states.setdefault((self.name, self.max_tokens, pooled), {})
        distinct = sorted(set(texts) - states.keys(), key=lambda t: (len(t), t))
        batches = range(0, len(distinct), ENCODE_BATCH)
        with self._torch.inference_mode():
            for start in progress(batches, desc=desc, unit="batch", disable=len(batches) < 4 or not progress_enabled()):
                chunk = distinct[start : start + ENCODE_BATCH]
                batch = self.tokenizer(
                    chunk, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state.float()  # (b, tokens, dim)
                mask = batch["attention_mask"]
                if pooled:
                    summed = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
                    rows = [row.unsqueeze(0) for row in summed]
                else:
                    rows = [row[: int(n)] for row, n in zip(hidden, mask.sum(1))]
                for text, row in zip(chunk, rows):
                    states[text] = row.cpu().numpy().astype(np.float16)
        return [states[text] for text in texts]
