"""``SemanticIdT5``: a T5 whose encoder can also read a frozen text encoder's states.

Positions holding the ``<text>`` token take ``text_projection(state)`` instead of the token's
embedding, so one encoder sequence mixes a task marker, text states and semantic-ID tokens, and
Hugging Face ``generate`` (with ``inputs_embeds``), ``Seq2SeqTrainer``, ``save_pretrained`` and
``from_pretrained`` all work unchanged. With ``text_state_dim = 0`` (flan-t5, the scratch
tokenizer) it is a plain T5.
"""

from __future__ import annotations

import torch
from transformers import T5ForConditionalGeneration


class SemanticIdT5(T5ForConditionalGeneration):
    def __init__(self, config):
        super().__init__(config)
        state_dim = int(getattr(config, "text_state_dim", 0) or 0)
        self.text_projection = torch.nn.Linear(state_dim, config.d_model) if state_dim else None
        # The encoder's own token table (rec histories, markers), apart from the decoder's tied
        # input/output table: transformers 5 always ties T5's head to ``shared``, and a start
        # that helps the output (query centroids) slowed rec when the history inputs shared it.
        self.encoder_embeddings = (
            torch.nn.Embedding(config.vocab_size, config.d_model)
            if getattr(config, "separate_encoder_embeddings", False)
            else None
        )
        if self.encoder_embeddings is not None:
            torch.nn.init.normal_(self.encoder_embeddings.weight, std=config.initializer_factor)

    def embed_inputs(self, input_ids: torch.Tensor, text_states: torch.Tensor | None) -> torch.Tensor:
        """(batch, length, d_model) encoder input: token embeddings, text states at ``<text>``."""
        embedded = (self.encoder_embeddings or self.shared)(input_ids)
        if text_states is None or self.text_projection is None:
            return embedded
        projected = self.text_projection(text_states.to(embedded.dtype))
        is_text = (input_ids == self.config.text_token_id).unsqueeze(-1)
        return torch.where(is_text, projected, embedded)

    def forward(
        self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, text_states=None, **kwargs
    ):
        if inputs_embeds is None and input_ids is not None and (text_states is not None or self.encoder_embeddings):
            inputs_embeds, input_ids = self.embed_inputs(input_ids, text_states), None
        return super().forward(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, labels=labels, **kwargs
        )
