"""The learned (torch) quantizers' one training loop, and what it is made of.

:class:`LearnedQuantizer` owns everything a fit does besides the model and its loss: seeding,
input scaling, Adam, the learning-rate schedule, seeded batches, the step loop, the divergence
check and the training curve (the DVC plot ``metrics/quantize_curve.csv``). A subclass
(:mod:`.rqvae`, :mod:`.rlfq`) supplies four hooks: build the model, the loss of one batch,
encode, decode.

Why a hand-written loop rather than a library trainer (Hugging Face ``Trainer``, Lightning): a
fit is a few hundred steps over an in-memory array, seconds on a CPU; a trainer would bring
data loaders, callbacks and its own seeding and logging, and the curve's code usage needs an
encode of the probe rows between steps. Here every random draw is in view, so the same seed
gives the same codes bit for bit.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Collection, Protocol

import numpy as np

from semid.quantize import InputScaler, QuantizeError, check_codes, check_embeddings
from semid.seeding import seed_everything

PROBE_ROWS = 4096  # rows encoded at each curve point to measure code usage


class LoopOptions(Protocol):
    """The options fields the loop reads (RQVAEOptions and RLFQOptions both have them)."""

    input_scaling: str
    steps: int
    lr: float
    lr_schedule: str
    warmup_steps: int
    batch_size: int
    log_every: int


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
    import torch  # deferred: see LearnedQuantizer.fit

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


class LearnedQuantizer:
    """A :class:`~semid.quantize.Quantizer` trained by gradient steps; subclasses fill the hooks.

    The model works in the scaled space (:class:`~semid.quantize.InputScaler`); ``encode`` and
    ``decode`` map in and out of it, so the hooks only ever see scaled tensors.
    """

    name: str  # in error messages

    def __init__(self, levels: int, codebook_size: int, seed: int, options: LoopOptions):
        self.levels, self.codebook_size, self.seed, self.options = levels, codebook_size, seed, options
        self.curve: list[dict] = []  # rows: step, loss, recon_loss, commit_loss, usage_level_*, seconds
        self._model = None
        self._scaler: InputScaler | None = None

    # --- hooks --------------------------------------------------------------------------------
    def _build(self, dim: int) -> Any:
        """A fresh ``nn.Module`` for inputs of width ``dim`` (drawn from the seeded global RNG)."""
        raise NotImplementedError

    def _forward_loss(self, model, batch) -> tuple[Any, Any]:
        """(reconstruction loss, commitment/auxiliary loss) of ``batch`` (b, dim); they are summed."""
        raise NotImplementedError

    def _encode_scaled(self, model, data) -> np.ndarray:
        """(n, levels) int64 codes of scaled rows ``data`` (n, dim); must leave ``model`` in eval mode."""
        raise NotImplementedError

    def _decode_scaled(self, model, codes) -> Any:
        """Scaled reconstruction (n, dim) of int64 ``codes`` (n, levels); runs under no_grad."""
        raise NotImplementedError

    # --- the loop -----------------------------------------------------------------------------
    def fit(
        self,
        x: np.ndarray,
        checkpoints: Collection[int] = (),
        on_checkpoint: Callable[[int, Any, Any], None] | None = None,
    ) -> "LearnedQuantizer":
        """Train on ``x``. After each step count in ``checkpoints`` the loop calls
        ``on_checkpoint(steps_done, model, scaled_data)`` (semid.collapse_map reads diagnostics
        along the way); it must not draw random numbers or change the model, so the codes stay
        those of a fit without it."""
        import torch  # deferred: semid.quantize is imported by params loading, torch costs seconds

        x = check_embeddings(x, self.codebook_size)
        o = self.options
        self._model = None  # a fit that fails leaves the quantizer unfitted, not half-trained
        # Order matters for the bits: the model's initial weights come from the global RNG seeded
        # here; batches and the probe from their own generator, drawn probe first.
        seed_everything(self.seed)
        self._scaler = InputScaler(o.input_scaling).fit(x)
        data = torch.from_numpy(self._scaler.transform(x))
        model = self._build(x.shape[1])
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=o.lr)
        generator = torch.Generator().manual_seed(self.seed)
        probe = data[torch.randperm(len(data), generator=generator)[:PROBE_ROWS]]
        self.curve = []
        started = time.perf_counter()
        for step, rows in enumerate(batch_indices(len(data), o.batch_size, o.steps, generator)):
            model.train()  # the probe encode below switches to eval
            for group in optimizer.param_groups:
                group["lr"] = o.lr * lr_factor(o.lr_schedule, step, o.steps, o.warmup_steps)
            recon_loss, commit_loss = self._forward_loss(model, data[rows])
            loss = recon_loss + commit_loss
            if not torch.isfinite(loss):
                raise QuantizeError(f"{self.name} training diverged at step {step} (loss {loss.item()}); lower lr")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % o.log_every == 0 or step == o.steps - 1:
                codes = self._encode_scaled(model, probe)
                self.curve.append(curve_row(step, loss, recon_loss, commit_loss, codes, self.codebook_size,
                                            time.perf_counter() - started))
            if on_checkpoint is not None and step + 1 in checkpoints:
                on_checkpoint(step + 1, model, data)
        model.eval()
        self._model = model
        return self

    # --- the Quantizer protocol's other half --------------------------------------------------
    def _require_fit(self) -> None:
        if self._model is None:
            raise QuantizeError(f"{self.name}: call fit() before encode()/decode()")

    def encode(self, x: np.ndarray) -> np.ndarray:
        import torch  # deferred: see fit

        self._require_fit()
        return self._encode_scaled(self._model, torch.from_numpy(self._scaler.transform(check_embeddings(x))))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        import torch  # deferred: see fit

        self._require_fit()
        codes = check_codes(codes, self.levels, self.codebook_size)
        with torch.no_grad():
            scaled = self._decode_scaled(self._model, torch.from_numpy(codes)).cpu().numpy()
        return self._scaler.inverse(scaled)
