"""The generator: one sequence-to-ID model for search and recommendation over semantic IDs.

- ``table``: the semantic IDs it reads and writes (checked against the items);
- ``examples``: search, rec and indexing examples;
- ``model``: vocabulary, model creation, save and load;
- ``train``: Hugging Face ``Seq2SeqTrainer`` training with step budgets and resumable checkpoints;
- ``trie``: the valid IDs as a prefix trie and the logits processor that constrains beam search to it;
- ``diverse_beam``: group beam search with a diversity penalty over the trie;
- ``decode``: items ranked from (constrained or diverse) beam search.
"""

from semid.generator.decode import Decoded, generate_items
from semid.generator.diverse_beam import diverse_beam_search
from semid.generator.examples import (
    INDEX_PREFIX,
    REC_PREFIX,
    SEARCH_PREFIX,
    Example,
    build_examples,
    indexing_examples,
    rec_heldout_examples,
    rec_source,
    rec_train_examples,
    search_examples,
    tokenizer_corpus,
    user_histories,
)
from semid.generator.model import (
    MODEL_DIR,
    SCRATCH,
    Generator,
    add_id_tokens,
    check_round_trip,
    create_model,
    load_generator,
    configure_torch,
    target_token_ids,
    train_text_tokenizer,
)
from semid.generator.table import TASKS, GeneratorError, IdTable, build_id_table, load_id_table, task_space
from semid.generator.train import train_generator
from semid.generator.trie import IdTrie

__all__ = [name for name in dir() if not name.startswith("_")]
