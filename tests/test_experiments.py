"""The grid through DVC's queue on a tiny real config, and the paper profile's dry run (slow)."""

from __future__ import annotations

import sys

import mlflow
import pytest
from conftest import REPO_ROOT, SHARED_MOVIELENS, TINY, dvc, run, set_params, stage_env

from semid.experiments import show
from semid.grid import grid_points
from semid.paper_dry_run import paper_dry_run
from semid.results import best_per_point


def test_grid_points_are_the_cross_product_and_names_are_checked():
    points = grid_points(["content", "multitask"], ["rqkmeans", "rqvae"])
    assert [p.name for p in points] == ["content-rqkmeans", "content-rqvae", "multitask-rqkmeans", "multitask-rqvae"]
    assert points[1].params() == ["embedding=content", "quantizer=rqvae"]
    with pytest.raises(Exception, match="quantizer='rqvaee' is not valid; choose one of: rqkmeans"):
        grid_points(["content"], ["rqvaee"])


@pytest.mark.slow
def test_queued_grid_points_give_two_experiments_and_one_mlflow_store(dvc_repo):
    set_params(dvc_repo, **TINY)
    dvc(dvc_repo, "repro", "train_embedder")  # upstream once; queued experiments reuse it
    env = stage_env(dvc_repo)
    run(["git", "add", "-A"], dvc_repo, env)
    run(["git", "commit", "-qm", "tiny config, upstream outputs"], dvc_repo, env)
    env["PYTHONPATH"] = str(REPO_ROOT / "src")
    grid = [sys.executable, "-m", "semid.grid", "--embeddings", "content", "--quantizers", "rqkmeans rqvae", "-j", "2"]
    out = run(grid, dvc_repo, env)
    assert "queued content-rqkmeans" in out.stdout and "queued content-rqvae" in out.stdout


    found = {r.name: r for r in show(dvc_repo, all_commits=True)}
    kmeans, vae = found["content-rqkmeans"], found["content-rqvae"]
    # each experiment ran with its own params (not the workspace's): different quantizers, codes
    assert (kmeans.quantizer, vae.quantizer) == ("rqkmeans", "rqvae")
    assert kmeans.finished and vae.finished
    assert kmeans.metrics["ids"] != vae.metrics["ids"]
    assert len(best_per_point(found.values())) == 2


    client = mlflow.tracking.MlflowClient(f"sqlite:///{dvc_repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("semid")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    stages_by_exp = {}
    for r in runs:
        stages_by_exp.setdefault(r.data.tags.get("DVC_EXP_NAME"), set()).add(r.data.tags.get("DVC_STAGE"))
    for name in ("content-rqkmeans", "content-rqvae"):
        assert {"quantize", "train_t5", "evaluate"} <= stages_by_exp.get(name, set()), stages_by_exp
    assert not list((dvc_repo / ".dvc" / "tmp").rglob("mlflow.db")), "a run wrote a store in a temp copy"

    # a second `make grid` skips what is done
    again = run(grid, dvc_repo, env)
    assert "nothing to run" in again.stdout

    out = run([sys.executable, "-m", "semid.results"], dvc_repo, env)
    table = (dvc_repo / "results" / "table.md").read_text()
    assert "`content-rqkmeans`" in table and "`content-rqvae`" in table
    assert (dvc_repo / "results" / "tradeoff.png").exists() and (dvc_repo / "results" / "quantizers.png").exists()


@pytest.mark.slow
def test_paper_profile_dry_run_wires_every_stage(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("SEMID_MOVIELENS_MIRROR", str(SHARED_MOVIELENS))  # as `make` sets it
    metrics = paper_dry_run(tmp_path, sample_items=400, t5_steps=2, search_queries=20)
    assert metrics["data"]["items"] == 400
    assert metrics["queries"]["queries_train"] >= 10 * 390  # the paper's 10 train queries per item
    assert metrics["queries"]["queries_valid"] == 0
    assert 0 <= metrics["search"]["recall_at_30"] <= 1 and 0 <= metrics["rec"]["recall_at_30"] <= 1
    lock = (tmp_path / "repo" / "dvc.lock").read_text()
    assert "google/flan-t5-base" not in lock and "tiny-flan-t5" in lock and "num_beam_groups: 30" in lock
