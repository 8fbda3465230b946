"""Pieces shared by the Hugging Face trainers (sentence-transformers, Seq2SeqTrainer)."""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback


class TimeBudgetCallback(TrainerCallback):
    """Stop training (and save) once ``max_minutes`` of wall time have passed; 0 = no budget.

    A step budget alone does not keep the CPU default within minutes on slower machines; the
    model saved at the stop is a valid (if less trained) result, and the step count is logged.
    """

    def __init__(self, max_minutes: float):
        self.max_seconds = max_minutes * 60
        self.started = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.max_seconds and time.monotonic() - self.started > self.max_seconds:
            control.should_training_stop = True
            control.should_save = True
        return control


def latest_checkpoint(output_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` folder under ``output_dir``, to resume an interrupted run."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    return str(checkpoints[-1]) if checkpoints else None
