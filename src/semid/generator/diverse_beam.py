"""Diverse (group) beam search over the ID trie, with a Hamming diversity penalty between groups.

A decoder of its own rather than Hugging Face's group beam search: it runs on the trie's tensor
tables and keeps the groups' beams on distinct IDs wherever the codebooks allow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from semid.generator.table import GeneratorError
from semid.generator.trie import IdTrie, TrieTables


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
    )


def _choose(
    candidates: _Candidates, beams: _GroupBeams, following: _GroupBeams, group: int, used, taken
) -> None:
    """The group's best candidates by penalised score, preferring prefixes no earlier group holds
    (duplicates waste returned slots) but falling back to them while the level has too few codes
    to fill every group; records their tokens in ``used`` and prefixes in ``taken``."""

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
