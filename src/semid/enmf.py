"""ENMF: Efficient Neural Matrix Factorization without sampling (Chen et al., TOIS 2020).

The user-based variant, as in RecBole's ``ENMF``: score ``y(u, i) = h . (p_u * q_i)``, trained on
*all* items per user with a weighted squared loss, where observed items weigh ``1`` and every
unobserved item ``c0`` (``negative_weight``). The trick that makes "all items" cheap: the
all-item term does not loop over items,

    sum_u sum_i c0 * y(u,i)^2 = c0 * sum_{d,d'} (h h^T)_{dd'} (P^T P)_{dd'} (Q^T Q)_{dd'},

so each batch costs O((|B| + |I|) d^2) whatever the number of items. The observed items then
correct it: ``sum_{i in R_u} (1 - c0) y^2 - 2 y``.

RecBole 1.2.1 would pull ray 2.6.3, tensorboard and plotly into the lock for one model, and needs
its own dataset files and config; this is a compact implementation of the same loss instead. Item embeddings for semantic IDs are ``q_i * h``, the
vectors whose dot product with a user vector is the model's score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch


@dataclass(frozen=True)
class ENMFSettings:
    dim: int = 64
    epochs: int = 100
    batch_size: int = 256  # users per batch
    lr: float = 0.01
    negative_weight: float = 0.1  # c0: the weight of every unobserved (user, item) pair
    dropout: float = 0.3  # on user vectors, as RecBole
    weight_decay: float = 0.0


def train_enmf(
    train: pd.DataFrame, item_ids: np.ndarray, settings: ENMFSettings, seed: int, progress=None
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Fit ENMF on (user_id, item_id) rows. Returns (item vectors (n_items, d), user vectors, losses).

    Items with no train interaction keep their (small, random) initial vector shrunk by the
    all-item term: ENMF knows nothing about them, and says so by scoring them near zero.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    item_index = {int(item): row for row, item in enumerate(item_ids)}
    known = train[train["item_id"].isin(item_index)]
    users = np.sort(known["user_id"].unique())
    user_index = {int(u): row for row, u in enumerate(users)}
    # Observed pairs as flat index arrays: a batch gathers its users' pairs, no padded matrix
    # (a padded history is as wide as the heaviest user and dominates the cost).
    pair_users = torch.tensor(known["user_id"].map(user_index).to_numpy(np.int64))
    pair_items = torch.tensor(known["item_id"].map(item_index).to_numpy(np.int64))
    n_items, n_users = len(item_ids), len(users)

    user_emb = torch.nn.Embedding(n_users, settings.dim)
    item_emb = torch.nn.Embedding(n_items, settings.dim)
    for table in (user_emb, item_emb):
        torch.nn.init.normal_(table.weight, std=0.01, generator=generator)
    h = torch.nn.Parameter(torch.full((settings.dim, 1), 0.1))
    dropout = torch.nn.Dropout(settings.dropout)
    parameters = [*user_emb.parameters(), *item_emb.parameters(), h]
    optimizer = torch.optim.Adam(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    c0 = settings.negative_weight
    in_batch = torch.zeros(n_users, dtype=torch.bool)

    losses: list[float] = []
    epochs = range(settings.epochs) if progress is None else progress(range(settings.epochs), desc="ENMF")
    for _ in epochs:
        order = torch.randperm(n_users, generator=generator)
        epoch_loss = 0.0
        for start in range(0, n_users, settings.batch_size):
            batch = order[start : start + settings.batch_size]
            p_all = dropout(user_emb.weight)  # (U, d): one dropout mask shared by both terms
            p = p_all[batch]  # (B, d)
            in_batch[:] = False
            in_batch[batch] = True
            mask = in_batch[pair_users]
            pos_scores = ((p_all[pair_users[mask]] * item_emb(pair_items[mask])) @ h).squeeze(-1)  # (pairs,)
            q_all = item_emb.weight
            all_term = ((h @ h.T) * (p.T @ p) * (q_all.T @ q_all)).sum()
            loss = c0 * all_term + ((1 - c0) * pos_scores.pow(2) - 2 * pos_scores).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item()
        losses.append(epoch_loss / n_users)

    with torch.no_grad():
        items = (item_emb.weight * h.T).numpy().astype(np.float32)
        user_vectors = user_emb.weight.numpy().astype(np.float32)
    return items, user_vectors, losses
