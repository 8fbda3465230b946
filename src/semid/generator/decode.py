"""Decoding: beam search constrained to the valid IDs, and items ranked from the beams.

The trie constraint runs as tensor gathers over a per-depth child table (``TrieTables``), not as a
Python callback per beam per step; a generator's tries (and their tables, per device) are built
once and reused by every later ``generate_items`` call, e.g. a server's one-query requests.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from semid.generator.model import Generator, target_token_ids
from semid.generator.table import GeneratorError, IdTable, task_space
from semid.io import progress

if TYPE_CHECKING:
    import torch


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
        import torch

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
        )  # fmt: skip

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
        import torch

        allowed = self.allowed_tokens(prefixes)
        mask = torch.zeros((prefixes.shape[0], vocab_size), dtype=torch.bool, device=prefixes.device)
        return mask.scatter_(1, allowed, True)


def _depth_tables(parent: torch.Tensor, token: torch.Tensor, parents: int, pad: int) -> tuple:
    """One depth's tables from its edges (child ``c`` is ``token[c]`` below ``parent[c]``; children
    grouped by parent, tokens ascending): see ``TrieTables``."""
    import torch

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


@functools.cache
def _logits_processor_type() -> type:
    # Made on first use: importing transformers (and torch) at import time would slow every CLI call.
    from transformers import LogitsProcessor

    return type("TrieLogitsProcessor", (TrieConstraint, LogitsProcessor), {})


def trie_logits_processor(tables: TrieTables, num_beams: int) -> TrieConstraint:
    """A ``transformers.LogitsProcessor`` restricting ``num_beams``-beam search to the trie."""
    return _logits_processor_type()(tables, num_beams)


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
    ranked: list[int] | None = None,
    scores: list[float] | None = None,
) -> tuple[list[int], list[float], int, int]:
    """Distinct items of the sequences in beam order (IDs shared by several items expand in item order),
    each with its sequence's score, appended in place to ``ranked`` and ``scores`` (new lists if
    None) up to k items, skipping ``exclude`` and what ``ranked`` holds; also the number of invalid
    sequences, and of sequences lost to ``exclude`` (invalid, or every item of the ID excluded)."""
    ranked = [] if ranked is None else ranked
    scores = [] if scores is None else scores
    excluded, taken, invalid, lost = exclude or set(), set(ranked), 0, 0
    for position, sequence in enumerate(sequences):
        items = trie.lookup(sequence)
        if items is None:
            invalid += 1
            lost += 1
            continue
        unseen = [item for item in items if item not in excluded]
        lost += not unseen
        for item in unseen:
            if item not in taken and len(ranked) < k:
                taken.add(item)
                ranked.append(item)
                scores.append(float(sequence_scores[position]) if sequence_scores is not None else math.nan)
    return ranked, scores, invalid, lost


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

    ``exclude`` (one set per source) drops items from that source's ranking, e.g. a user's history.
    A ranking left with fewer than min(k, unseen items in the catalogue) items, its beams spent on
    excluded items, is filled up by decoding that source again with wider beams (``_fill_short``);
    every other source is decoded as without ``exclude``, its excluded items then dropped.
    """
    import torch

    if num_beams < k and num_beam_groups == 1:
        raise GeneratorError(f"num_beams={num_beams} cannot return k={k} IDs; use num_beams >= k")
    if num_beam_groups > 1 and not constrained:
        raise GeneratorError("diverse beam search runs over the ID trie only; set constrained=true")
    started = time.monotonic()
    trie = space_trie(generator, task_space(generator.table.spaces, task))
    # A beam wider than the number of valid IDs would have to fill up with invalid ones.
    beams = min(num_beams, len(trie.items)) if constrained and num_beam_groups == 1 else num_beams
    returned = beams if exclude is not None or num_beam_groups > 1 else min(beams, k)
    model = generator.model
    ranked, ranked_scores, lost, total, invalid = [], [], [], 0, 0
    for start in progress(range(0, len(sources), batch_size), desc=f"decode {task}", unit="batch"):
        batch = generator.model_inputs(sources[start : start + batch_size])
        with torch.no_grad():
            if num_beam_groups > 1:
                per_input, per_input_scores = diverse_beam_search(
                    model, batch, trie, beams, num_beam_groups, diversity_penalty
                )
            else:
                per_input, per_input_scores = _beam_search(model, batch, trie, beams, returned, constrained)
        for offset, (sequences, scores) in enumerate(zip(per_input, per_input_scores)):
            seen = exclude[start + offset] if exclude is not None else None
            items, item_scores, bad, spent = _rank_items(trie, sequences, k, seen, scores)
            ranked.append(items)
            ranked_scores.append(item_scores)
            lost.append(spent)
            total += len(sequences)
            invalid += bad
    if exclude is not None and constrained:
        more, more_invalid = _fill_short(
            generator, sources, trie, k, exclude, ranked, ranked_scores, lost, beams, batch_size * beams
        )
        total, invalid = total + more, invalid + more_invalid
    return Decoded(ranked, total, invalid, time.monotonic() - started, ranked_scores)


# Rounds of ``_fill_short``; the last decodes at the width that guarantees a full ranking.
FILL_ROUNDS = 4


def _fill_short(
    generator: Generator,
    sources: Sequence[str],
    trie: IdTrie,
    k: int,
    exclude: Sequence[set[int]],
    ranked: list[list[int]],
    ranked_scores: list[list[float]],
    lost: list[int],
    beams: int,
    rows: int,
) -> tuple[int, int]:
    """Fill the rankings that came back short, in place; returns the sequences decoded and how many
    were invalid.

    A ranking is short when it holds fewer than min(k, the input's unseen items in the catalogue)
    items: its beams landed on excluded (seen) items. Such an input is decoded again, with the other
    short ones (batched by beam count, about ``rows`` beams a batch), its beams widened by the beams
    its latest decode (``beams`` wide at first) lost to excluded items (``lost``), for up to
    ``FILL_ROUNDS`` rounds. The last round decodes at k + the input's seen count (capped at every
    ID): at most the seen count of those beams can end on seen items, so every ranking ends full.

    Widened by the beams lost rather than by the shortfall: the extra beams land on seen items
    about as often as the first ones did, so beams + shortfall mostly comes back short again and
    costs another round, a whole decode each. On the default model's 610 test users (50 beams, k=30,
    181 short) beams + lost filled every ranking in 201 input decodes over 2 rounds; beams +
    shortfall took 302 over 4 rounds, the last at up to 2,560 beams: 1.7 times the sequences.

    The new items are appended after those the first decode found, in the wider decode's order, so
    a ranking's first positions are the same as without the fill. Not re-ranked as a whole: a wider
    beam search finds some IDs that narrow beams pruned (it is no superset of a narrower one), and
    re-ranking would give the short rankings (heavy users) a head from another search than every
    full ranking's, moving their Recall@10 and NDCG for a reason that is no better model; appended,
    the fill changes only positions that were empty. The fill is plain beam search after a diverse
    (group) one too: the guarantee above holds for plain beams, whose returned IDs are distinct.
    """
    import torch

    catalogue = len(trie.item_ids)
    seen_count = {i: len(trie.item_ids & exclude[i]) for i, items in enumerate(ranked) if len(items) < k}
    target = {i: min(k, catalogue - seen) for i, seen in seen_count.items()}
    short = [i for i in seen_count if len(ranked[i]) < target[i]]
    width_of = dict.fromkeys(short, beams)  # the beams of each input's latest decode
    total = invalid = 0
    for round_ in range(FILL_ROUNDS):
        if not short:
            break
        by_width: dict[int, list[int]] = {}
        for i in short:
            full = min(_bucketed(k + seen_count[i]), len(trie.items))  # enough for any ranking to fill
            widened = min(_bucketed(max(width_of[i] + lost[i], k)), full)
            by_width.setdefault(full if round_ == FILL_ROUNDS - 1 else widened, []).append(i)
        for width, positions in sorted(by_width.items()):
            chunk_size = max(1, rows // width)  # as many beams per batch as the first decode
            for start in range(0, len(positions), chunk_size):
                chunk = positions[start : start + chunk_size]
                batch = generator.model_inputs([sources[i] for i in chunk])
                with torch.no_grad():
                    per_input, per_input_scores = _beam_search(
                        generator.model, batch, trie, width, width, constrained=True
                    )
                for i, sequences, scores in zip(chunk, per_input, per_input_scores):
                    _, _, bad, lost[i] = _rank_items(
                        trie, sequences, k, exclude[i], scores, ranked[i], ranked_scores[i]
                    )
                    width_of[i] = width
                    total += len(sequences)
                    invalid += bad
        short = [i for i in short if len(ranked[i]) < target[i]]
    return total, invalid


def _bucketed(beams: int) -> int:
    """``beams`` rounded up to one of four widths per doubling (80, 96, 112, 128, 160, ...): at
    most a quarter more beams, so that the short inputs of a round share a few batches; one
    Hugging Face beam search per input or two costs several times what a shared batch does."""
    step = 2 ** max(0, beams.bit_length() - 3)
    return -(-beams // step) * step


def _beam_search(
    model, batch: dict[str, Any], trie: IdTrie, beams: int, returned: int, constrained: bool
) -> tuple[list[list[list[int]]], list[list[float]]]:
    """Hugging Face beam search, on the trie when ``constrained``: per input, its ``returned``
    sequences (decoder start dropped) and their length-normalised log-probabilities."""
    from transformers import LogitsProcessorList

    constraint = [trie_logits_processor(trie.tables(model.device), beams)] if constrained else []
    output = model.generate(
        **batch,
        num_beams=beams,
        num_return_sequences=returned,
        max_new_tokens=trie.length,
        do_sample=False,
        early_stopping=True,
        logits_processor=LogitsProcessorList(constraint),
        return_dict_in_generate=True,
        output_scores=True,
    )
    sequences = output.sequences[:, 1:].tolist()
    scores = output.sequences_scores
    scores = scores.tolist() if scores is not None else [math.nan] * len(sequences)
    inputs = range(len(sequences) // returned)
    return (
        [sequences[i * returned : (i + 1) * returned] for i in inputs],
        [scores[i * returned : (i + 1) * returned] for i in inputs],
    )


@dataclass
class _GroupBeams:
    """Every input's group beams at one depth; a slot is empty (``alive`` False) where a group
    found fewer candidates than beams."""

    tokens: torch.Tensor  # (inputs, groups, beams, depth) ID tokens so far
    scores: torch.Tensor  # (inputs, groups, beams) summed log-probabilities, float32
    nodes: torch.Tensor  # (inputs, groups, beams) trie node of the tokens (TrieTables numbering)
    alive: torch.Tensor  # (inputs, groups, beams)

    @classmethod
    def empty(cls, shape: tuple[int, int, int], depth: int, dead_node: int, device) -> _GroupBeams:
        import torch

        return cls(
            torch.zeros((*shape, depth), dtype=torch.long, device=device),
            torch.zeros(shape, dtype=torch.float32, device=device),
            torch.full(shape, dead_node, dtype=torch.long, device=device),
            torch.zeros(shape, dtype=torch.bool, device=device),
        )


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
    if num_beams % num_groups:
        raise GeneratorError(f"num_beams={num_beams} must be a multiple of num_beam_groups={num_groups}")
    if min(map(len, trie.items)) != trie.length:
        raise GeneratorError("diverse beam search needs IDs of one length (every level, then EOS)")
    encoder_out = model.get_encoder()(**batch)
    encoded = (encoder_out.last_hidden_state, batch["attention_mask"])
    tables = trie.tables(encoded[0].device)
    shape = (batch["attention_mask"].shape[0], num_groups, num_beams // num_groups)
    beams = _GroupBeams.empty(shape, 0, tables.nodes[0], encoded[0].device)
    beams.nodes[...] = 0  # every group starts from the root alone
    beams.alive[:, :, 0] = True
    for depth in range(trie.length):
        following = _GroupBeams.empty(shape, depth + 1, tables.nodes[depth + 1], encoded[0].device)
        _diverse_step(model, encoded, tables, beams, following, diversity_penalty)
        beams = following
    return _ranked_group_beams(beams)


def _diverse_step(
    model, encoded, tables: TrieTables, beams: _GroupBeams, following: _GroupBeams, penalty: float
) -> None:
    """Extend every group by one token, group after group, into ``following``."""
    import torch

    inputs = beams.scores.shape[0]
    device = beams.scores.device
    # per input: how often earlier groups chose each token at this step, and which prefixes they hold
    used = torch.zeros((inputs, model.config.vocab_size), dtype=torch.float32, device=device)
    next_nodes = tables.nodes[following.tokens.shape[-1]] + 1
    taken = torch.zeros((inputs, next_nodes), dtype=torch.bool, device=device)
    for group in range(beams.scores.shape[1]):
        candidates = _group_candidates(model, encoded, tables, beams, group, used, penalty)
        _choose(candidates, beams, following, group, used, taken)


@dataclass
class _Candidates:
    """One group's extensions per input, flattened beam-major then by allowed token (the order in
    which equal scores stay): (inputs, beams * width) each."""

    raw: torch.Tensor  # summed log-probability
    penalised: torch.Tensor  # minus the diversity penalty, what ranks them
    token: torch.Tensor
    node: torch.Tensor
    real: torch.Tensor  # False for empty beam slots and table padding
    width: int  # allowed tokens per beam


def _group_candidates(
    model, encoded, tables: TrieTables, beams: _GroupBeams, group: int, used, penalty: float
) -> _Candidates:
    import torch

    hidden, mask = encoded
    depth = beams.tokens.shape[-1]
    inputs, slots = beams.alive[:, group].nonzero(as_tuple=True)  # rows input-major, as before
    start = torch.full((len(inputs), 1), model.config.decoder_start_token_id, device=hidden.device)
    prefixes = torch.cat([start, beams.tokens[inputs, group, slots]], dim=1)
    logits = model(
        encoder_outputs=(hidden[inputs],), attention_mask=mask[inputs], decoder_input_ids=prefixes
    ).logits[:, -1, :]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    parents = beams.nodes[inputs, group, slots]
    tokens = tables.allowed_token[depth][parents]
    raw = beams.scores[inputs, group, slots][:, None] + log_probs.gather(1, tokens)
    penalised = raw - penalty * used[inputs[:, None], tokens]
    shape = (beams.alive.shape[0], beams.alive.shape[2], tokens.shape[1])  # (inputs, beams, width)

    def grid(values, fill):
        full = torch.full(shape, fill, dtype=values.dtype, device=values.device)
        full[inputs, slots] = values
        return full.flatten(1)

    return _Candidates(
        grid(raw, -math.inf), grid(penalised, -math.inf), grid(tokens, tables.pad),
        grid(tables.allowed_child[depth][parents], tables.nodes[depth + 1]),
        grid(tables.allowed_real[depth][parents], False), tokens.shape[1],
    )  # fmt: skip


def _choose(
    candidates: _Candidates, beams: _GroupBeams, following: _GroupBeams, group: int, used, taken
) -> None:
    """The group's best candidates by penalised score, preferring prefixes no earlier group holds
    (duplicates waste returned slots) but falling back to them while the level has too few codes
    to fill every group; records their tokens in ``used`` and prefixes in ``taken``."""
    import torch

    per_group = beams.scores.shape[2]
    # Two stable sorts: by score, then by class (fresh, taken, not a candidate): the same order as
    # sorting by score alone and listing the fresh before the taken.
    by_score = candidates.penalised.masked_fill(~candidates.real, -math.inf)
    by_score = by_score.sort(dim=1, descending=True, stable=True).indices
    fresh = ~taken.gather(1, candidates.node)
    rank_class = torch.where(candidates.real, (~fresh).long(), 2).gather(1, by_score)
    by_class = rank_class.sort(dim=1, stable=True)
    best = by_score.gather(1, by_class.indices[:, :per_group])
    chosen = by_class.values[:, :per_group] < 2
    rows = torch.arange(best.shape[0], device=best.device)[:, None]
    tokens = candidates.token.gather(1, best)
    parent_prefixes = beams.tokens[rows, group, best // candidates.width]
    following.tokens[:, group] = torch.cat([parent_prefixes, tokens[..., None]], dim=-1)
    nodes = candidates.node.gather(1, best).masked_fill(~chosen, taken.shape[1] - 1)  # empty: dead node
    following.scores[:, group] = candidates.raw.gather(1, best)
    following.nodes[:, group] = nodes
    following.alive[:, group] = chosen
    used.scatter_add_(1, tokens, chosen.float())
    taken.scatter_(1, nodes, True)  # the dead node is never a candidate


def _ranked_group_beams(beams: _GroupBeams) -> tuple[list[list[list[int]]], list[list[float]]]:
    """Per input, all groups' IDs ranked by length-normalised log-probability (as HF beam search)."""
    length = beams.tokens.shape[-1]
    results, result_scores = [], []
    flat = (beams.tokens.flatten(1, 2), beams.scores.flatten(1), beams.alive.flatten(1))
    for tokens, scores, alive in zip(*(t.tolist() for t in flat)):
        finished = [(score / max(1, length), prefix) for prefix, score, a in zip(tokens, scores, alive) if a]
        finished.sort(key=lambda c: -c[0])
        results.append([prefix for _, prefix in finished])
        result_scores.append([score for score, _ in finished])
    return results, result_scores
