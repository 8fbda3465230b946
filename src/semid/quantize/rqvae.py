"""RQ-VAE: MLP encoder -> vector_quantize_pytorch.ResidualVQ -> MLP decoder.

Trained on reconstruction + commitment loss (the library's EMA k-means update moves the
codebooks). Every known remedy for codebook collapse is a separate option
(:class:`semid.quantize.options.RQVAEOptions`), and the two presets ``rqvae_naive`` (library
defaults) and ``rqvae`` (the fixed recipe) differ only in those options.
"""

from __future__ import annotations

import time

import numpy as np

from semid.quantize import InputScaler, QuantizeError, check_codes, check_embeddings
from semid.quantize._torch import batch_indices, curve_row, lr_factor, mlp
from semid.seeding import seed_everything
from semid.quantize.options import RQVAEOptions

PROBE_ROWS = 4096  # rows encoded at each curve point to measure code usage


class RQVAEQuantizer:
    def __init__(self, levels: int, codebook_size: int, seed: int, options: RQVAEOptions):
        self.levels, self.codebook_size, self.seed, self.options = levels, codebook_size, seed, options
        self.curve: list[dict] = []  # training curve rows: step, loss, recon_loss, commit_loss, usage_level_*
        self._model = None

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

    def fit(self, x: np.ndarray) -> "RQVAEQuantizer":
        import torch

        x = check_embeddings(x, self.codebook_size)
        o = self.options
        seed_everything(self.seed)
        self._scaler = InputScaler(o.input_scaling).fit(x)
        data = torch.from_numpy(self._scaler.transform(x))
        model = self._build(x.shape[1])
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=o.lr)
        generator = torch.Generator().manual_seed(self.seed)
        probe = data[torch.randperm(len(data), generator=generator)[:PROBE_ROWS]]
        self.curve = []
        started = time.perf_counter()
        model.train()
        for step, rows in enumerate(batch_indices(len(data), o.batch_size, o.steps, generator)):
            for group in optimizer.param_groups:
                group["lr"] = o.lr * lr_factor(o.lr_schedule, step, o.steps, o.warmup_steps)
            batch = data[rows]
            latent = model.encoder(batch)
            quantized, _, commit_losses = model.rvq(latent)
            recon = model.decoder(quantized)
            squared = (recon - batch) ** 2
            recon_loss = squared.sum(dim=1).mean() if o.recon_loss == "sum" else squared.mean()
            commit_loss = commit_losses.sum()
            loss = recon_loss + commit_loss
            if not torch.isfinite(loss):
                raise QuantizeError(f"rqvae training diverged at step {step} (loss {loss.item()}); lower lr")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % o.log_every == 0 or step == o.steps - 1:
                self._model = model
                codes = self._encode_scaled(probe)
                model.train()
                self.curve.append(curve_row(step, loss, recon_loss, commit_loss, codes, self.codebook_size,
                                            time.perf_counter() - started))
        model.eval()
        self._model = model
        return self

    def _encode_scaled(self, data) -> np.ndarray:
        import torch

        self._model.eval()
        with torch.no_grad():
            _, indices, _ = self._model.rvq(self._model.encoder(data))
        return indices.cpu().numpy().astype(np.int64)

    def _require_fit(self) -> None:
        if self._model is None:
            raise QuantizeError("rqvae: call fit() before encode()/decode()")

    def encode(self, x: np.ndarray) -> np.ndarray:
        import torch

        self._require_fit()
        x = check_embeddings(x)
        return self._encode_scaled(torch.from_numpy(self._scaler.transform(x)))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        import torch

        self._require_fit()
        codes = check_codes(codes, self.levels, self.codebook_size)
        with torch.no_grad():
            quantized = self._model.rvq.get_output_from_indices(torch.from_numpy(codes))
            recon = self._model.decoder(quantized).cpu().numpy()
        return self._scaler.inverse(recon)
