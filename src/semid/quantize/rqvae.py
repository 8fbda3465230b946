"""RQ-VAE: MLP encoder -> vector_quantize_pytorch.ResidualVQ -> MLP decoder.

Trained on reconstruction + commitment loss (the library's EMA k-means update moves the
codebooks) by the shared loop (:class:`semid.quantize.training.LearnedQuantizer`). Every known
remedy for codebook collapse is a separate option (:class:`semid.quantize.options.RQVAEOptions`),
and the two presets ``rqvae_naive`` (library defaults) and ``rqvae`` (the fixed recipe) differ
only in those options.
"""

from __future__ import annotations

import numpy as np

from semid.quantize.options import RQVAEOptions
from semid.quantize.training import LearnedQuantizer


def mlp(widths: list[int]):
    """Linear layers with ReLU between them (none after the last)."""
    from torch import nn

    layers: list = []
    for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAEQuantizer(LearnedQuantizer):
    name = "rqvae"
    options: RQVAEOptions

    def _build(self, dim: int):
        import torch
        from torch import nn
        from vector_quantize_pytorch import ResidualVQ

        o = self.options
        widths = [dim, *o.hidden_dims, o.latent_dim]
        model = nn.Module()
        model.encoder = mlp(widths)
        model.decoder = mlp(widths[::-1])
        model.rvq = ResidualVQ(
            dim=o.latent_dim,
            num_quantizers=self.levels,
            codebook_size=self.codebook_size,
            kmeans_init=o.kmeans_init,
            kmeans_iters=o.kmeans_iters,
            threshold_ema_dead_code=o.threshold_ema_dead_code,
            rotation_trick=o.rotation_trick,
            commitment_weight=o.commitment_weight,
            decay=o.ema_decay,
        )
        return model.to(torch.float32)

    def _forward_loss(self, model, batch):
        quantized, _, commit_losses = model.rvq(model.encoder(batch))
        squared = (model.decoder(quantized) - batch) ** 2
        recon_loss = squared.sum(dim=1).mean() if self.options.recon_loss == "sum" else squared.mean()
        return recon_loss, commit_losses.sum()

    def _encode_scaled(self, model, data) -> np.ndarray:
        import torch

        model.eval()
        with torch.no_grad():
            _, indices, _ = model.rvq(model.encoder(data))
        return indices.cpu().numpy().astype(np.int64)

    def _decode_scaled(self, model, codes):
        return model.decoder(model.rvq.get_output_from_indices(codes))
