"""Training with Hugging Face's Seq2SeqTrainer: a step budget fixed by params, resumable checkpoints,
and the loss curve for MLflow and DVC."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

from semid.distributed import barrier, is_main_process, report_training, trainer_arguments, world_size
from semid.generator.examples import Example
from semid.generator.inputs import pad_rows
from semid.generator.model import (
    MODEL_DIR,
    create_model,
    init_id_embeddings,
    save_generator,
    target_token_ids,
)
from semid.generator.table import GeneratorError, IdTable, task_space
from semid.io import atomic_path, progress_enabled
from semid.training import WallClockGuard, latest_checkpoint

CHECKPOINT_DIR = "checkpoints"
FINGERPRINT_FILE = "fingerprint.json"
# Run-dependent figures: they go to metrics and MLflow, never into the saved model (a DVC output
# whose hash must depend on params and inputs alone).
TIMING_KEYS = ("train_seconds", "train_examples_per_second", "text_state_seconds")


def encode_examples(inputs, tokenizer, table: IdTable, examples: Sequence[Example]) -> list[dict]:
    """Examples -> Seq2SeqTrainer rows: the encoder input of ``inputs`` plus the target ID's tokens."""
    rows = inputs.rows([e.source for e in examples])
    for row, example in zip(rows, examples):
        space = task_space(table.spaces, "rec" if example.task == "rec" else "search")
        # int32 arrays, not lists: every row stays in memory for the whole run, and a list of ~40
        # token ids costs ~2.2 KB against ~0.6 KB (tracemalloc, 50k rec-sized rows). Text-encoder
        # inputs already come as int32 (no copy here); the collator widens them to int64.
        row["input_ids"] = np.asarray(row["input_ids"], dtype=np.int32)
        row["labels"] = np.asarray(target_token_ids(tokenizer, table, space, example.target_item), dtype=np.int32)
    return rows


def examples_digest(examples: Sequence[Example]) -> str:
    """A short hash of the examples' sources and targets, fed one example at a time (one joined
    string of every source would be ~3 GB at ML-25M)."""
    digest = hashlib.sha256()
    for i, example in enumerate(examples):
        digest.update(f"{chr(10) if i else ''}{example.source}\t{example.target_item}".encode())
    return digest.hexdigest()[:16]


def query_centroids(rows: Sequence[dict], examples: Sequence[Example]) -> dict[int, np.ndarray]:
    """item -> mean over its train queries of the query's mean text state (float32, encoder space)."""
    sums: dict[int, list[np.ndarray]] = {}
    for row, example in zip(rows, examples):
        if example.task == "search":
            sums.setdefault(example.target_item, []).append(row["text_states"][1:].astype(np.float32).mean(0))
    return {item: np.mean(vectors, axis=0) for item, vectors in sums.items()}


class RowCollator:
    """Pads rows of either input kind: token ids, optional text states, labels (-100 = ignored)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        input_ids, attention_mask, text_states = pad_rows(rows, self.pad_token_id)
        width = max(len(r["labels"]) for r in rows)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, row in enumerate(rows):
            labels[i, : len(row["labels"])] = torch.as_tensor(row["labels"], dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if text_states is not None:
            batch["text_states"] = text_states
        return batch


def remove_stale_temporaries(folder: Path) -> None:
    """Remove what an interrupted ``atomic_dir``/``atomic_path`` left in ``folder`` (``.*.tmp``)."""
    for leftover in Path(folder).glob(".*.tmp") if Path(folder).is_dir() else []:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def prepare_checkpoints(folder: Path, fingerprint: dict[str, Any]) -> str | None:
    """The checkpoint to resume from, or None; checkpoints of another run setup are removed."""
    marker = folder / FINGERPRINT_FILE
    if folder.exists() and (not marker.exists() or json.loads(marker.read_text()) != fingerprint):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(fingerprint, sort_keys=True))
    return latest_checkpoint(folder)


def _trainer_class():
    class RngNeutralEvalTrainer(Seq2SeqTrainer):
        """Seq2SeqTrainer whose evaluation leaves the global torch RNG as it found it.

        The length-grouped train sampler draws each epoch's order from the global RNG, and a
        mid-run evaluation consumed from it (measured: 9 steps with an evaluation every 2 gave
        other weights than without), so ``eval_steps`` changed the model it only meant to watch.
        """

        def evaluate(self, *args, **kwargs):
            state = torch.get_rng_state()
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                torch.set_rng_state(state)

    return RngNeutralEvalTrainer


def loss_curve(log_history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows (step, epoch, train_loss, valid_loss) from the trainer's log history, one per step
    that logged either (resumed runs keep the history of their checkpoint)."""
    by_step: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        if "loss" not in entry and "eval_loss" not in entry:
            continue
        row = by_step.setdefault(int(entry["step"]), {"step": int(entry["step"]), "epoch": entry.get("epoch")})
        if "loss" in entry:
            row["train_loss"] = float(entry["loss"])
        if "eval_loss" in entry:
            row["valid_loss"] = float(entry["eval_loss"])
    return [by_step[step] for step in sorted(by_step)]


def _report_to() -> list[str]:
    """Hugging Face's MLflow integration, only inside the stage's own run (it then logs the curve
    into that run instead of starting a second one)."""
    # Deferred: mlflow costs ~1.8 s to import (bench/import_costs.py), paid here only when training.
    try:
        import mlflow
    except ImportError:
        return []
    return ["mlflow"] if mlflow.active_run() is not None else []


def train_generator(
    config,
    table: IdTable,
    train_examples: Sequence[Example],
    valid_examples: Sequence[Example],
    corpus: Sequence[str],
    out_dir: Path,
    seed: int,
    callbacks: Sequence[Any] = (),
    code_version: str = "",
) -> dict[str, Any]:
    """Train for ``config.max_steps`` (0: ``config.epochs``) with Seq2SeqTrainer, resumable from
    out_dir/checkpoints; save the model to out_dir/model. Returns the figures for metrics,
    including the loss curve under ``"curve"``. ``code_version`` (a hash of the source that
    trains) keys the checkpoints, so an edited trainer never resumes the old one's weights."""
    if not train_examples:
        raise GeneratorError("no training examples: the train queries and train histories are empty")
    out_dir = Path(out_dir)
    model, tokenizer, inputs = create_model(config, table, corpus, seed)
    started = time.monotonic()
    train_rows = encode_examples(inputs, tokenizer, table, train_examples)
    valid_rows = encode_examples(inputs, tokenizer, table, valid_examples)
    text_state_seconds = time.monotonic() - started
    if config.id_embedding_init == "query_centroids":
        if not hasattr(inputs, "text_encoder"):
            raise GeneratorError("generator.id_embedding_init=query_centroids needs generator.text_encoder")
        init_id_embeddings(model, tokenizer, table, query_centroids(train_rows, train_examples))

    # What a checkpoint must share with this run to be resumed: config (but not the budgets),
    # the code, the tokenizer, the ID table and the examples. Anything else starts afresh.
    budgets = {"max_steps", "max_minutes", "save_steps"}
    fingerprint = {
        "config": {k: v for k, v in asdict(config).items() if k not in budgets},
        "code": code_version,
        "tokenizer": hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:16],
        "ids": table.fingerprint(),
        "examples": examples_digest(train_examples),
        "seed": seed,
    }
    checkpoint_dir = out_dir / CHECKPOINT_DIR
    evaluating = bool(valid_rows) and config.eval_steps > 0
    # Built first: under torchrun, creating the arguments joins the process group (barrier below).
    args = Seq2SeqTrainingArguments(
        output_dir=str(checkpoint_dir),
        **trainer_arguments(config.batch_size, "generator.batch_size"),
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        optim="adamw_torch",
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps > 0 else -1,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_schedule,
        # Search inputs are ~8 positions, rec inputs ~40: batches of like lengths pad far less.
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=config.eval_steps if evaluating else None,
        report_to=_report_to(),
        seed=seed,
        data_seed=seed,
        disable_tqdm=not progress_enabled(),
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        remove_unused_columns=False,  # text_states reach the model through **kwargs-free forward args
        label_names=["labels"],
        bf16=bool(config.bf16 and torch.cuda.is_available()),
    )
    if is_main_process():
        # out_dir persists between runs (DVC `persist`), so a save a kill cut short left its temp
        # folder there, and DVC would cache it with the model.
        remove_stale_temporaries(out_dir)
        prepare_checkpoints(checkpoint_dir, fingerprint)
    barrier()  # the other ranks resume from the checkpoint rank 0 kept, or start afresh with it
    resume_from = latest_checkpoint(checkpoint_dir)
    guard = WallClockGuard(config.max_minutes, "generator.max_minutes")
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=valid_rows or None,
        data_collator=RowCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[guard, *callbacks],
    )
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.monotonic() - started
    steps_done = trainer.state.global_step
    report_training(trainer, model, config.batch_size)
    guard.check(steps_done, trainer.state.max_steps)
    stats: dict[str, Any] = {
        "train_examples": len(train_rows),
        "train_search_examples": sum(e.task == "search" for e in train_examples),
        "train_rec_examples": sum(e.task == "rec" for e in train_examples),
        "train_index_examples": sum(e.task == "index" for e in train_examples),
        "valid_examples": len(valid_rows),
        "steps": steps_done,
        "epochs_done": steps_done * config.batch_size / max(1, len(train_rows)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
    }
    if valid_rows:
        stats["valid_loss"] = float(trainer.evaluate()["eval_loss"])
    curve = loss_curve(trainer.state.log_history)
    # The final model's loss on a fixed sample of its training rows, not the trainer's running
    # mean: that one averages only the steps since the last resume, so a killed-and-resumed run
    # reported another train loss (and wrote it into the hashed model meta) than a straight one.
    sample = train_rows[:: max(1, len(train_rows) // max(1, config.max_valid_examples or len(train_rows)))]
    stats["train_loss"] = float(trainer.evaluate(eval_dataset=sample, metric_key_prefix="train")["train_loss"])
    barrier()  # every rank is past its last checkpoint write
    if is_main_process():
        save_generator(model, tokenizer, table, config, out_dir / MODEL_DIR, stats)
        # The model is saved: the checkpoints (with their run-dependent trainer state) would only
        # make the DVC output differ between identical runs.
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    timings = {
        "train_seconds": train_seconds,
        "train_examples_per_second": steps_done * config.batch_size / max(train_seconds, 1e-9),
        "text_state_seconds": text_state_seconds,
        "resumed": int(resume_from is not None),
        # How the global batch was split (run-dependent like the timings: not in the saved model).
        "processes": world_size(),
        "global_batch_size": config.batch_size,
    }
    return {**stats, **timings, "curve": curve}
