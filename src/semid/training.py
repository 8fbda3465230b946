"""Pieces shared by the Hugging Face trainers (sentence-transformers, Seq2SeqTrainer)."""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from semid.io import SemidError


class WallClockLimitExceeded(SemidError):
    """A training run passed its wall-clock guard; its last checkpoint is kept for a rerun."""


class WallClockGuard(TrainerCallback):
    """A safety limit, not a budget: runs end at the step count their params fix, so the same
    params train the same model on any machine. Past ``max_minutes`` (0 = no limit) the run saves
    a checkpoint and stops, and ``check`` fails the stage with a message; a rerun resumes."""

    def __init__(self, max_minutes: float, param: str):
        self.max_seconds = max_minutes * 60
        self.param = param
        self.started = time.monotonic()
        self.exceeded = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.max_seconds and time.monotonic() - self.started > self.max_seconds:
            self.exceeded = True
            control.should_training_stop = True
            control.should_save = True
        return control

    def check(self, steps_done: int, max_steps: int) -> None:
        if self.exceeded:
            raise WallClockLimitExceeded(
                f"training passed {self.param}={self.max_seconds / 60:g} minutes after {steps_done} of {max_steps} "
                f"steps; the checkpoint is kept, so rerun to resume, or raise {self.param} (0 = no limit)"
            )


def latest_checkpoint(output_dir: Path) -> str | None:
    """The newest complete ``checkpoint-N`` under ``output_dir`` (one a kill interrupted while it was
    being written lacks ``trainer_state.json``, written last, and is skipped)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    complete = [p for p in output_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    checkpoints = sorted(complete, key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    return str(checkpoints[-1]) if checkpoints else None
