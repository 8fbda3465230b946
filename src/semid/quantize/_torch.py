"""What the learned quantizers share: the MLP, the learning-rate schedule, batches."""

from __future__ import annotations

import math

import numpy as np


def mlp(widths: list[int]):
    """Linear layers with ReLU between them (none after the last)."""
    from torch import nn

    layers: list = []
    for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def lr_factor(schedule: str, step: int, steps: int, warmup_steps: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based)."""
    if schedule == "constant":
        return 1.0
    warmup = warmup_steps if schedule == "warmup_cosine" else 0
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def batch_indices(n: int, batch_size: int, steps: int, generator) -> "object":
    """Yield ``steps`` index tensors: seeded reshuffled epochs, the last partial batch dropped."""
    import torch

    batch_size = min(batch_size, n)
    order = torch.randperm(n, generator=generator)
    cursor = 0
    for _ in range(steps):
        if cursor + batch_size > n:
            order = torch.randperm(n, generator=generator)
            cursor = 0
        yield order[cursor : cursor + batch_size]
        cursor += batch_size


def code_usage(codes: np.ndarray, codebook_size: int) -> list[float]:
    """Share of each level's codes that ``codes`` (n, levels) uses."""
    return [len(np.unique(codes[:, level])) / codebook_size for level in range(codes.shape[1])]


def curve_row(step: int, loss, recon_loss, commit_loss, codes: np.ndarray, codebook_size: int, seconds: float) -> dict:
    """One row of a learned quantizer's training curve (the DVC plot): losses and code use."""
    return {
        "step": step,
        "loss": float(loss.detach()),
        "recon_loss": float(recon_loss.detach()),
        "commit_loss": float(commit_loss.detach()),
        **{f"usage_level_{i + 1}": u for i, u in enumerate(code_usage(codes, codebook_size))},
        "seconds": seconds,
    }
