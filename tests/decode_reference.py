"""The decoders that semid.generator.decode replaced, kept as references: tests/test_decode.py
checks the new ones give the same items, scores and order, and bench/decode.py times both.

- ``callback_generate_items``: ``generate_items`` with Hugging Face's per-beam
  ``prefix_allowed_tokens_fn`` over an IdTrie built afresh at each call;
- ``loop_diverse_beam_search``: the group beam search with Python loops per row and token.
"""

from __future__ import annotations

import torch

from semid.generator import IdTrie, task_space


def callback_generate_items(generator, sources, task, k, num_beams, batch_size, exclude=None):
    """generate_items as it was (num_beam_groups=1): a fresh IdTrie per call and Hugging Face's
    per-beam ``prefix_allowed_tokens_fn``; (ranked items, their scores) per input."""
    trie = IdTrie(generator.tokenizer, generator.table, task_space(generator.table.spaces, task))
    beams = min(num_beams, len(trie.items))
    returned = beams if exclude is not None else min(beams, k)
    ranked, ranked_scores = [], []
    for start in range(0, len(sources), batch_size):
        batch = generator.model_inputs(sources[start : start + batch_size])
        with torch.no_grad():
            output = generator.model.generate(
                **batch, num_beams=beams, num_return_sequences=returned, max_new_tokens=trie.length,
                do_sample=False, early_stopping=True, return_dict_in_generate=True, output_scores=True,
                prefix_allowed_tokens_fn=trie.prefix_allowed_tokens_fn(),
            )
        sequences, scores = output.sequences[:, 1:].tolist(), output.sequences_scores.tolist()
        for offset in range(len(sequences) // returned):
            seen = set(exclude[start + offset]) if exclude is not None else set()
            items, item_scores = [], []
            for row in range(offset * returned, (offset + 1) * returned):
                for item in trie.lookup(sequences[row]) or []:
                    if item not in seen:
                        seen.add(item)
                        items.append(item)
                        item_scores.append(scores[row])
            ranked.append(items[:k])
            ranked_scores.append(item_scores[:k])
    return ranked, ranked_scores


def loop_diverse_beam_search(model, batch, trie: IdTrie, num_beams, num_groups, diversity_penalty):
    """The previous diverse_beam_search: Python loops per row and token."""
    per_group = num_beams // num_groups
    encoder_out = model.get_encoder()(**batch)
    hidden, mask = encoder_out.last_hidden_state, batch["attention_mask"]
    n_inputs = hidden.shape[0]
    start = model.config.decoder_start_token_id
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
                if prefix and prefix[-1] == trie.eos:
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
        finished.sort(key=lambda c: -c[0])
        results.append([list(prefix) for _, prefix in finished])
        result_scores.append([score for score, _ in finished])
    return results, result_scores
