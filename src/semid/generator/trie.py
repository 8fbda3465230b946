"""The ID trie: the valid IDs of a space as a prefix trie, its tensor tables, and the logits processor
that restricts Hugging Face beam search to it.

The constraint runs as tensor gathers over a per-depth child table (``TrieTables``), not as a Python
callback per beam per step; a generator's tries (and their tables, per device) are built once and
reused by every later decode, e.g. a server's one-query requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor

from semid.generator.model import Generator, target_token_ids
from semid.generator.table import IdTable

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
        self.item_ids = frozenset(item for items in self.items.values() for item in items)
        self._tables: dict[str, TrieTables] = {}

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that extend ``prefix`` towards a valid ID; only padding once an ID is complete."""
        return self.children.get(tuple(prefix), [self.pad])

    def prefix_allowed_tokens_fn(self):
        """``allowed`` as Hugging Face's per-beam callback: the slow reference the tests and
        bench/decode.py compare ``TrieTables`` with."""

        def allowed(batch_id: int, decoder_ids) -> list[int]:
            return self.allowed(decoder_ids[1:].tolist())  # drop the decoder start token

        return allowed

    def lookup(self, generated: Sequence[int]) -> list[int] | None:
        """Items of a generated sequence (cut at EOS), or None when it is no valid ID."""
        tokens = list(generated)
        if self.eos in tokens:
            tokens = tokens[: tokens.index(self.eos) + 1]
        return self.items.get(tuple(tokens))

    def tables(self, device: Any = "cpu") -> TrieTables:
        """The trie as tensors on ``device``, built on first use and kept."""
        key = str(device)
        if "cpu" not in self._tables:
            self._tables["cpu"] = TrieTables.from_trie(self)
        if key not in self._tables:
            self._tables[key] = self._tables["cpu"].to(device)
        return self._tables[key]


def space_trie(generator: Generator, space: str) -> IdTrie:
    """The generator's IdTrie of ``space``, built on first use and kept on the generator: a trie
    takes ~0.1 s to build on ml-latest-small, more than a whole one-query decode."""
    if space not in generator.tries:
        generator.tries[space] = IdTrie(generator.tokenizer, generator.table, space)
    return generator.tries[space]


@dataclass
class TrieTables:
    """An IdTrie as dense tensors, one table per decoding depth, so that the nodes and allowed
    tokens of a whole batch of beams come from a few gathers.

    Nodes are numbered per depth (the prefixes of that length, in trie order); row ``nodes[d]`` of
    each depth-``d`` table is the dead node, where every prefix off the trie goes. Token ids are
    mapped to per-depth columns rather than assumed contiguous per level, so any vocabulary works.
    """

    pad: int
    length: int  # tokens of a complete ID (levels + EOS)
    nodes: list[int]  # per depth 0..length: live nodes (the dead node is number nodes[d])
    token_column: list[torch.Tensor]  # [d][token id] -> column of child_node[d]; unknown -> last
    child_node: list[torch.Tensor]  # [d][node, column] -> node at depth d + 1
    allowed_token: list[torch.Tensor]  # [d][node, j] -> j-th allowed token (row padded by repeats)
    allowed_child: list[torch.Tensor]  # [d][node, j] -> the node that token leads to
    allowed_real: list[torch.Tensor]  # [d][node, j] -> False where j is padding (or the token is pad)

    @classmethod
    def from_trie(cls, trie: IdTrie) -> TrieTables:
        nodes, per_depth = [1], []
        parents: list[tuple[int, ...]] = [()]
        for _ in range(trie.length):
            edges = [(row, token) for row, p in enumerate(parents) for token in trie.children.get(p, [])]
            parents = [(*parents[row], token) for row, token in edges]
            parent, token = torch.tensor(edges, dtype=torch.long).reshape(-1, 2).unbind(1)
            per_depth.append(_depth_tables(parent, token, nodes[-1], trie.pad))
            nodes.append(len(parents))
        return cls(trie.pad, trie.length, nodes, *map(list, zip(*per_depth)))

    def to(self, device: Any) -> TrieTables:
        def moved(tables: list[torch.Tensor]) -> list[torch.Tensor]:
            return [t.to(device) for t in tables]

        return TrieTables(
            self.pad, self.length, self.nodes, moved(self.token_column), moved(self.child_node),
            moved(self.allowed_token), moved(self.allowed_child), moved(self.allowed_real),
        )

    def node_of(self, prefixes: torch.Tensor) -> torch.Tensor:
        """Node (at depth ``prefixes.shape[1] <= length``) of each row of decoded ID tokens."""
        node = prefixes.new_zeros(prefixes.shape[0])
        for depth in range(prefixes.shape[1]):
            columns = self.token_column[depth]
            tokens = prefixes[:, depth].clamp(0, len(columns) - 1)
            node = self.child_node[depth][node, columns[tokens]]
        return node

    def allowed_tokens(self, prefixes: torch.Tensor) -> torch.Tensor:
        """(rows, width) tokens that may follow each prefix, repeats allowed; ``[pad]`` once an ID
        is complete or the prefix is off the trie (as ``IdTrie.allowed``)."""
        depth = prefixes.shape[1]
        if depth >= self.length:
            return prefixes.new_full((prefixes.shape[0], 1), self.pad)
        return self.allowed_token[depth][self.node_of(prefixes)]

    def allowed_mask(self, prefixes: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """(rows, vocab_size) True where a token may follow the row's prefix."""

        allowed = self.allowed_tokens(prefixes)
        mask = torch.zeros((prefixes.shape[0], vocab_size), dtype=torch.bool, device=prefixes.device)
        return mask.scatter_(1, allowed, True)


def _depth_tables(parent: torch.Tensor, token: torch.Tensor, parents: int, pad: int) -> tuple:
    """One depth's tables from its edges (child ``c`` is ``token[c]`` below ``parent[c]``; children
    grouped by parent, tokens ascending): see ``TrieTables``."""

    children = len(token)
    alphabet, column = torch.unique(token, return_inverse=True)
    token_column = torch.full((int(token.max()) + 2,), len(alphabet), dtype=torch.long)
    token_column[alphabet] = torch.arange(len(alphabet))
    child_node = torch.full((parents + 1, len(alphabet) + 1), children, dtype=torch.long)
    child_node[parent, column] = torch.arange(children)
    count = torch.bincount(parent, minlength=parents + 1)
    first = torch.cumsum(count, 0) - count
    width = max(1, int(count.max()))
    # Padding slots repeat the parent's last child, so scattering a row's tokens into a mask adds
    # nothing; a parent without children (and the dead row) allows only pad, which leads nowhere.
    last = (first + count - 1).clamp(min=0)
    child = torch.minimum(first[:, None] + torch.arange(width), last[:, None])
    has_children = (count > 0)[:, None]
    allowed_token = torch.where(has_children, token[child], pad)
    allowed_child = torch.where(has_children, child, children)
    allowed_real = torch.arange(width) < count[:, None]
    return token_column, child_node, allowed_token, allowed_child, allowed_real


class TrieConstraint:
    """The ID trie as a logits processor: every token that does not extend a beam's prefix towards
    a valid ID scores -inf (``TrieTables`` does what ``IdTrie.allowed`` does, for all beams at once).

    ``input_ids`` holds the decoder tokens only (decoder start first), for ``input_ids`` and
    ``inputs_embeds`` encoders alike. Use ``trie_logits_processor`` to get it as the
    ``transformers.LogitsProcessor`` that ``generate`` takes.
    """

    def __init__(self, tables: TrieTables, num_beams: int):
        self.tables = tables
        self.num_beams = num_beams

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        allowed = self.tables.allowed_mask(input_ids[:, 1:], scores.shape[-1])
        constrained = scores.masked_fill(~allowed, -math.inf)
        # As Hugging Face's PrefixConstrainedLogitsProcessor: an input whose beams have every allowed
        # token at -inf gets those tokens at 0 instead, so that its beams still end on valid IDs.
        stuck = constrained.amax(dim=-1).isneginf().view(-1, self.num_beams).all(dim=-1)
        if not stuck.any():  # the usual case; skips a pass over the scores
            return constrained
        return constrained.masked_fill(stuck.repeat_interleave(self.num_beams)[:, None] & allowed, 0.0)


class TrieLogitsProcessor(TrieConstraint, LogitsProcessor):
    """``TrieConstraint`` as the ``transformers.LogitsProcessor`` that ``generate`` takes."""


def trie_logits_processor(tables: TrieTables, num_beams: int) -> TrieConstraint:
    """A ``transformers.LogitsProcessor`` restricting ``num_beams``-beam search to the trie."""
    return TrieLogitsProcessor(tables, num_beams)
