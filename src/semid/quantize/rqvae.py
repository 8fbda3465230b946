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
    from torch import nn  # deferred: see semid.quantize.training

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
        # deferred: semid.quantize is imported by params loading, torch costs seconds
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
        import torch  # deferred: see _build

        model.eval()
        with torch.no_grad():
            _, indices, _ = model.rvq(model.encoder(data))
        return indices.cpu().numpy().astype(np.int64)

    def _decode_scaled(self, model, codes):
        return model.decoder(model.rvq.get_output_from_indices(codes))

    def latent_diagnostics(self, model, data) -> dict:
        """Where the latents of scaled rows ``data`` sit against the codebooks (the collapse
        mechanism): codes (n, levels), mean latent norm, mean distance of a latent to its level-1
        codeword, mean norm of all / of the used level-1 codewords. Leaves ``model`` in eval mode."""
        import torch  # deferred: see semid.quantize.training

        model.eval()
        with torch.no_grad():
            latents = model.encoder(data)
            _, indices, _ = model.rvq(latents)
            first = model.rvq.codebooks[0]  # (codebook_size, latent_dim)
            codes = indices.cpu().numpy().astype(np.int64)
            assigned = first[indices[:, 0]]
            used = np.unique(codes[:, 0])
            return {
                "codes": codes,
                "latent_norm": float(latents.norm(dim=1).mean()),
                "latent_spread": float((latents - latents.mean(dim=0)).norm(dim=1).mean()),  # about their centroid
                "latent_to_code_distance": float((latents - assigned).norm(dim=1).mean()),
                "codeword_norm": float(first.norm(dim=1).mean()),
                "used_codeword_norm": float(first[torch.from_numpy(used)].norm(dim=1).mean()),
            }
