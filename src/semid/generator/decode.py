"""Decoding: beam search constrained to the valid IDs (``trie``), or the diverse group search
(``diverse_beam``), and items ranked from the beams.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessorList

from semid.generator.diverse_beam import diverse_beam_search
from semid.generator.model import Generator
from semid.generator.table import GeneratorError, task_space
from semid.generator.trie import IdTrie, space_trie, trie_logits_processor
from semid.io import progress


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
