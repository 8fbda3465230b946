"""ResidualLFQ: a learned linear projection dim -> bits, then lookup-free quantization per level.

Each level's code is the sign pattern of the (residual) projected vector, so the codebook size
is 2**bits and must be a power of two; codes are halved in scale level by level (the library's
``codebook_scale = 2**-level``). Trained by the shared loop
(:class:`semid.quantize.training.LearnedQuantizer`) on reconstruction (mean squared error, in the
standardised space) + the library's entropy and commitment auxiliary losses.
"""

from __future__ import annotations

import numpy as np

from semid.quantize import check_power_of_two
from semid.quantize.options import RLFQOptions
from semid.quantize.training import LearnedQuantizer


class RLFQQuantizer(LearnedQuantizer):
    name = "rlfq"
    options: RLFQOptions

    def __init__(self, levels: int, codebook_size: int, seed: int, options: RLFQOptions):
        super().__init__(levels, codebook_size, seed, options)
        self.bits = check_power_of_two("rlfq", codebook_size)

    def _build(self, dim: int):
        from vector_quantize_pytorch import ResidualLFQ

        o = self.options
        return ResidualLFQ(
            dim=dim,
            num_quantizers=self.levels,
            codebook_size=self.codebook_size,
            entropy_loss_weight=o.entropy_loss_weight,
            commitment_loss_weight=o.commitment_loss_weight,
            diversity_gamma=o.diversity_gamma,
        )

    # The library wants (batch, seq, dim): each item is a sequence of one.
    def _forward_loss(self, model, batch):
        quantized, _, aux_losses = model(batch[:, None, :])
        return ((quantized[:, 0] - batch) ** 2).mean(), aux_losses.sum()

    def _encode_scaled(self, model, data) -> np.ndarray:
        import torch

        model.eval()
        with torch.no_grad():
            _, indices, _ = model(data[:, None, :])
        return indices[:, 0].cpu().numpy().astype(np.int64)

    def _decode_scaled(self, model, codes):
        return model.get_output_from_indices(codes[:, None, :])[:, 0]
