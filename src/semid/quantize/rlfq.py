"""ResidualLFQ: a learned linear projection dim -> bits, then lookup-free quantization per level.

Each level's code is the sign pattern of the (residual) projected vector, so the codebook size
is 2**bits and must be a power of two; codes are halved in scale level by level (the library's
``codebook_scale = 2**-level``). Trained on reconstruction (mean squared error, in the
standardised space) + the library's entropy and commitment auxiliary losses.
"""

from __future__ import annotations

import time

import numpy as np

from semid.quantize import InputScaler, QuantizeError, check_codes, check_embeddings, check_power_of_two
from semid.quantize._torch import batch_indices, curve_row, lr_factor
from semid.seeding import seed_everything
from semid.quantize.options import RLFQOptions

PROBE_ROWS = 4096


class RLFQQuantizer:
    def __init__(self, levels: int, codebook_size: int, seed: int, options: RLFQOptions):
        self.levels, self.codebook_size, self.seed, self.options = levels, codebook_size, seed, options
        self.bits = check_power_of_two("rlfq", codebook_size)
        self.curve: list[dict] = []
        self._model = None

    def fit(self, x: np.ndarray) -> "RLFQQuantizer":
        import torch
        from vector_quantize_pytorch import ResidualLFQ

        x = check_embeddings(x, self.codebook_size)
        o = self.options
        seed_everything(self.seed)
        self._scaler = InputScaler(o.input_scaling).fit(x)
        data = torch.from_numpy(self._scaler.transform(x))
        model = ResidualLFQ(
            dim=x.shape[1],
            num_quantizers=self.levels,
            codebook_size=self.codebook_size,
            entropy_loss_weight=o.entropy_loss_weight,
            commitment_loss_weight=o.commitment_loss_weight,
            diversity_gamma=o.diversity_gamma,
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=o.lr)
        generator = torch.Generator().manual_seed(self.seed)
        probe = data[torch.randperm(len(data), generator=generator)[:PROBE_ROWS]]
        self.curve = []
        started = time.perf_counter()
        for step, rows in enumerate(batch_indices(len(data), o.batch_size, o.steps, generator)):
            model.train()
            for group in optimizer.param_groups:
                group["lr"] = o.lr * lr_factor(o.lr_schedule, step, o.steps, o.warmup_steps)
            batch = data[rows]
            quantized, _, aux_losses = model(batch[:, None, :])  # the library wants (batch, seq, dim)
            quantized = quantized[:, 0]
            recon_loss = ((quantized - batch) ** 2).mean()
            aux_loss = aux_losses.sum()
            loss = recon_loss + aux_loss
            if not torch.isfinite(loss):
                raise QuantizeError(f"rlfq training diverged at step {step} (loss {loss.item()}); lower lr")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % o.log_every == 0 or step == o.steps - 1:
                self._model = model
                codes = self._encode_scaled(probe)
                self.curve.append(curve_row(step, loss, recon_loss, aux_loss, codes, self.codebook_size,
                                            time.perf_counter() - started))
        model.eval()
        self._model = model
        return self

    def _encode_scaled(self, data) -> np.ndarray:
        import torch

        self._model.eval()
        with torch.no_grad():
            _, indices, _ = self._model(data[:, None, :])
        return indices[:, 0].cpu().numpy().astype(np.int64)

    def _require_fit(self) -> None:
        if self._model is None:
            raise QuantizeError("rlfq: call fit() before encode()/decode()")

    def encode(self, x: np.ndarray) -> np.ndarray:
        import torch

        self._require_fit()
        return self._encode_scaled(torch.from_numpy(self._scaler.transform(check_embeddings(x))))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        import torch

        self._require_fit()
        codes = check_codes(codes, self.levels, self.codebook_size)
        with torch.no_grad():
            out = self._model.get_output_from_indices(torch.from_numpy(codes)[:, None, :])[:, 0].cpu().numpy()
        return self._scaler.inverse(out)
