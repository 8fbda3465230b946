"""Per-quantizer options: plain frozen dataclasses, torch-free so that loading params stays cheap.

``params.yaml`` holds ``quantize.<quantizer>: {key: value}`` overrides; :func:`build_options`
lays them over the preset defined here and validates the result. The two RQ-VAE presets
differ only in these options, so every remedy is one ``-S quantize.rqvae_naive.<key>=...`` away.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from semid.schema import build_section, check_choice, check_range

INPUT_SCALINGS = ("none", "center", "standardize", "global_scale")
LR_SCHEDULES = ("constant", "cosine", "warmup_cosine")


@dataclass(frozen=True)
class RQKMeansOptions:
    """faiss.ResidualQuantizer: nbits = log2(codebook_size) per level."""

    beam_size: int = 1  # max_beam_size: 1 = greedy residual k-means; larger = beam search over codes
    kmeans_iters: int = 25  # k-means iterations per level (faiss cp.niter)
    # l2-normalise inputs before fitting/encoding; decode then rescales to the mean training norm.
    normalize_input: bool = False
    refine_codebooks: bool = False  # faiss Train_refine_codebook: jointly refine all levels after training

    def validate(self) -> None:
        check_range("quantize.rqkmeans.beam_size", self.beam_size, 1, 256)
        check_range("quantize.rqkmeans.kmeans_iters", self.kmeans_iters, 1)


@dataclass(frozen=True)
class RQVAEOptions:
    """MLP encoder -> vector_quantize_pytorch.ResidualVQ -> MLP decoder; one field per remedy."""

    hidden_dims: tuple[int, ...] = (512, 256, 128)  # encoder widths (the decoder mirrors them)
    latent_dim: int = 32  # TIGER's latent size
    # Remedies (each a separate switch so an ablation is one -S away):
    kmeans_init: bool = False  # library default: codebooks start kaiming-uniform
    kmeans_iters: int = 10
    threshold_ema_dead_code: float = 0.0  # library default 0: dead codes are never revived
    rotation_trick: bool = True  # library default (True for dim > 1)
    input_scaling: str = "none"  # none | center | standardize | global_scale
    recon_loss: str = "mean"  # mean | sum over dimensions (sum keeps commitment from swamping it)
    commitment_weight: float = 1.0  # library default
    ema_decay: float = 0.8  # library default codebook EMA decay
    steps: int = 1000
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine | warmup_cosine
    warmup_steps: int = 100
    batch_size: int = 256
    log_every: int = 50  # steps between training-curve rows

    def validate(self) -> None:
        name = "quantize.rqvae"
        check_range(f"{name}.latent_dim", self.latent_dim, 1)
        for width in self.hidden_dims:
            check_range(f"{name}.hidden_dims[]", width, 1)
        check_range(f"{name}.kmeans_iters", self.kmeans_iters, 1)
        check_range(f"{name}.threshold_ema_dead_code", self.threshold_ema_dead_code, 0.0)
        check_choice(f"{name}.input_scaling", self.input_scaling, INPUT_SCALINGS)
        check_choice(f"{name}.recon_loss", self.recon_loss, ("mean", "sum"))
        check_range(f"{name}.commitment_weight", self.commitment_weight, 0.0)
        check_range(f"{name}.ema_decay", self.ema_decay, 0.0, 1.0)
        check_range(f"{name}.steps", self.steps, 1)
        check_range(f"{name}.lr", self.lr, 0.0)
        check_choice(f"{name}.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_range(f"{name}.warmup_steps", self.warmup_steps, 0)
        check_range(f"{name}.batch_size", self.batch_size, 2)
        check_range(f"{name}.log_every", self.log_every, 1)


# What a careful reader of the paper would run: vector-quantize-pytorch's defaults (no k-means
# init, no dead-code revival, rotation trick on, commitment weight 1, EMA decay 0.8), raw unit-norm
# inputs, PyTorch's usual mean-squared-error, Adam at a constant 1e-3.
RQVAE_NAIVE = RQVAEOptions()

# The recipe that the ablation (bench/rqvae_ablation.py, README "quantize") arrived at.
RQVAE_FIXED = dataclasses.replace(
    RQVAE_NAIVE,
    kmeans_init=True,  # measured neutral once inputs are scaled; kept as TIGER's cheap insurance
    # threshold_ema_dead_code stays 0: reviving dead codes from batch samples RAISED collisions
    # (0.30 -> 0.49 with threshold 2) once the loss scale was fixed.
    input_scaling="standardize",
    recon_loss="sum",
    commitment_weight=0.25,
    lr_schedule="warmup_cosine",
)


@dataclass(frozen=True)
class DictLearnOptions:
    """sklearn MiniBatchDictionaryLearning, one dictionary per level on the residuals."""

    alpha: float = 0.1  # sparsity penalty while learning the atoms
    max_iter: int = 3  # passes over the data (each costs ~30 s on 10k x 384 on a busy 2-core box)
    batch_size: int = 256

    def validate(self) -> None:
        check_range("quantize.dictlearn.alpha", self.alpha, 0.0)
        check_range("quantize.dictlearn.max_iter", self.max_iter, 1)
        check_range("quantize.dictlearn.batch_size", self.batch_size, 2)


@dataclass(frozen=True)
class RLFQOptions:
    """vector_quantize_pytorch.ResidualLFQ behind its learned linear projection (dim -> bits)."""

    input_scaling: str = "standardize"
    entropy_loss_weight: float = 0.1  # library default
    commitment_loss_weight: float = 0.25
    diversity_gamma: float = 1.0
    steps: int = 1000
    lr: float = 1e-3
    lr_schedule: str = "warmup_cosine"
    warmup_steps: int = 100
    batch_size: int = 256
    log_every: int = 50

    def validate(self) -> None:
        name = "quantize.rlfq"
        check_choice(f"{name}.input_scaling", self.input_scaling, INPUT_SCALINGS)
        check_range(f"{name}.entropy_loss_weight", self.entropy_loss_weight, 0.0)
        check_range(f"{name}.commitment_loss_weight", self.commitment_loss_weight, 0.0)
        check_range(f"{name}.steps", self.steps, 1)
        check_range(f"{name}.lr", self.lr, 0.0)
        check_choice(f"{name}.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_range(f"{name}.batch_size", self.batch_size, 2)
        check_range(f"{name}.log_every", self.log_every, 1)


# quantizer name -> (options class, preset the params overrides are laid over)
PRESETS: dict[str, tuple[type, Any]] = {
    "rqkmeans": (RQKMeansOptions, RQKMeansOptions()),
    "rqvae": (RQVAEOptions, RQVAE_FIXED),
    "rqvae_naive": (RQVAEOptions, RQVAE_NAIVE),
    "dictlearn": (DictLearnOptions, DictLearnOptions()),
    "rlfq": (RLFQOptions, RLFQOptions()),
}


def build_options(quantizer: str, overrides: dict[str, Any] | None = None) -> Any:
    """The preset of ``quantizer`` with ``overrides`` (from ``quantize.<quantizer>``) applied."""
    check_choice("quantizer", quantizer, PRESETS)
    cls, preset = PRESETS[quantizer]
    values = {**dataclasses.asdict(preset), **(overrides or {})}
    return build_section(f"quantize.{quantizer}", cls, values)
