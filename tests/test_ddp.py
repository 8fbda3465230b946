"""Data-parallel training on CPU: train_t5 and the embedder fine-tune under torchrun (gloo, two
processes), through the stage param (as `dvc exp run -S generator.processes=2` launches it) and
through a torchrun a user starts by hand. Real MovieLens rows, the real MiniLM, a real MLflow
SQLite store in the test repo."""

from __future__ import annotations

import json
import re
import sqlite3
import sys

import pytest

from conftest import TINY, dvc, run, set_params, stage_env
from semid.artifacts import EMBEDDER_CHECKPOINTS
from semid.distributed import trainer_arguments
from semid.schema import ConfigError

# Two processes share the 2 cores: one thread each, and fewer examples for each to encode with
# MiniLM (every rank encodes the whole training set before its share of the batches).
SMALL = {
    **TINY,
    "base": {"threads": 1},
    "generator": {**TINY["generator"], "rec_max_windows_per_user": 1, "max_valid_examples": 50},
}
RANK_LINE = re.compile(
    r"\[rank (\d)/2\] (?:(\w+): )?trained (\d+) steps of (\d+) examples \(global batch (\d+)\); "
    r"trainer world size (\d+); weights (\w+)"
)


def rank_reports(output: str) -> dict[int, dict]:
    """rank -> what it said it trained (one line per rank, from semid.distributed.report_training)."""
    found = {}
    for match in RANK_LINE.finditer(output):
        rank, name, steps, share, batch, world, weights = match.groups()
        assert int(rank) not in found, f"rank {rank} reported twice:\n{output}"
        found[int(rank)] = {"name": name, "steps": int(steps), "share": int(share), "batch": int(batch),
                            "world": int(world), "weights": weights}
    return found


def mlflow_runs(repo, stage: str) -> list[tuple[str, str]]:
    """(run id, status) of every run of ``stage`` in the test repo's MLflow store."""
    with sqlite3.connect(repo / "mlflow.db") as db:
        return db.execute("SELECT run_uuid, status FROM runs WHERE name LIKE ?", (f"{stage}:%",)).fetchall()


def mlflow_metric(repo, run_id: str, key: str) -> float:
    with sqlite3.connect(repo / "mlflow.db") as db:
        return db.execute("SELECT value FROM latest_metrics WHERE run_uuid = ? AND key = ?", (run_id, key)).fetchone()[0]


@pytest.mark.slow  # ~2 min on 2 idle cores: four upstream stages, then three processes import torch
def test_generator_trains_on_two_processes_from_its_param_and_rank_0_writes(dvc_repo):
    set_params(dvc_repo, **SMALL)
    dvc(dvc_repo, "repro", "quantize")
    result = dvc(dvc_repo, "exp", "run", "-S", "generator.processes=2", "train_t5")
    output = result.stdout + result.stderr

    ranks = rank_reports(output)
    assert sorted(ranks) == [0, 1], output
    for report in ranks.values():  # each rank took every step on half of each 128-example batch
        assert (report["steps"], report["share"], report["batch"], report["world"]) == (10, 64, 128, 2)
    # DDP kept the ranks in step: after 10 steps on different halves, the same weights
    assert ranks[0]["weights"] == ranks[1]["weights"]

    metrics = json.loads((dvc_repo / "metrics/train_t5.json").read_text())
    assert (metrics["steps"], metrics["processes"], metrics["global_batch_size"]) == (10, 2, 128)
    assert metrics["epochs_done"] == pytest.approx(10 * 128 / metrics["train_examples"])
    assert output.count(" steps = ") == 1  # the stage's summary line: rank 0 alone
    generator = dvc_repo / "models/generator"
    assert not (generator / "checkpoints").exists() and not list(generator.glob(".*.tmp"))
    (run_id, status), = mlflow_runs(dvc_repo, "train_t5")  # one run, not one per rank
    assert status == "FINISHED" and mlflow_metric(dvc_repo, run_id, "steps") == 10

    # the saved generator loads and decodes (`semid search`; the evaluate stage would take ~1 min more)
    answer = run([sys.executable, "-m", "semid.cli", "search", "a heist gone wrong", "-k", "5", "--json"],
                 dvc_repo, stage_env(dvc_repo))
    found = json.loads(answer.stdout)
    assert found["method"] == "generative" and len({hit["item_id"] for hit in found["results"]}) == 5


def test_multitask_embedder_under_a_hand_started_torchrun(dvc_repo):
    """The multi-node route: the user runs torchrun; the stage takes its world size (the param
    stays 1). Both pair sets of multitask alternate by global batch, each split over the ranks."""
    set_params(dvc_repo, **SMALL, embedding="multitask",
               embed={"max_steps": 4, "batch_size": 16, "checkpoint_steps": 4, "eval_max_queries": 100})
    dvc(dvc_repo, "repro", "gen_queries")
    result = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                  "-m", "semid.stages.train_embedder"], dvc_repo, stage_env(dvc_repo))
    output = result.stdout + result.stderr

    ranks = rank_reports(output)
    assert sorted(ranks) == [0, 1], output
    for report in ranks.values():
        assert (report["name"], report["steps"], report["share"], report["batch"], report["world"]) == (
            "multitask", 4, 8, 16, 2)
    assert ranks[0]["weights"] == ranks[1]["weights"]

    metrics = json.loads((dvc_repo / "metrics/embed.json").read_text())
    assert metrics["multitask_train_steps"] == 4
    assert (metrics["multitask_processes"], metrics["multitask_global_batch_size"]) == (2, 16)
    assert 0 <= metrics["search_recall_at_30"] <= 1  # rank 0 encoded with the fine-tuned model
    (run_id, status), = mlflow_runs(dvc_repo, "train_embedder")
    assert status == "FINISHED" and mlflow_metric(dvc_repo, run_id, "multitask_train_steps") == 4
    checkpoints = dvc_repo / EMBEDDER_CHECKPOINTS
    assert not checkpoints.exists() or not any(checkpoints.iterdir())  # removed once rank 0 wrote

    # the saved query encoder loads and encodes
    probe = "from semid.embed import load_query_encoder; print(load_query_encoder('data/embeddings').encode(['a heist']).shape)"
    assert run([sys.executable, "-c", probe], dvc_repo, stage_env(dvc_repo)).stdout.strip() == "(1, 384)"


@pytest.mark.parametrize("stage, section", [("train_t5", "generator"), ("train_embedder", "embed")])
def test_a_batch_the_processes_cannot_split_fails_in_one_line(dvc_repo, stage, section):
    set_params(dvc_repo, **{section: {"batch_size": 5, "processes": 2}})
    result = run([sys.executable, "-m", f"semid.stages.{stage}"], dvc_repo, stage_env(dvc_repo), check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {section}.batch_size=5 is not divisible by {section}.processes=2 (each step's batch is split "
        f"evenly across the processes); choose a {section}.batch_size that is a multiple of 2"
    )
    assert "torch.distributed.run" not in result.stderr  # refused before any process started


def test_a_world_size_that_cannot_split_the_batch_is_refused(monkeypatch):
    """A hand-started torchrun whose world size does not divide the batch (the param never saw it)."""
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match=r"generator.batch_size=128 is not divisible by the world size .*=3"):
        trainer_arguments(128, "generator.batch_size")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert trainer_arguments(128, "generator.batch_size")["per_device_train_batch_size"] == 128
