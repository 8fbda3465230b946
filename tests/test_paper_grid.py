"""The paper's grid in main: grid/dvc.yaml rendered from the default pipeline, `--grid` stage runs,
and a sitting that commits each finished point and resumes (real DVC and git repos)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO_ROOT, TINY, dvc, run, set_params, stage_env
from semid import experiments
from semid.artifacts import grid_layout, written_by
from semid.config import EMBEDDING_METHODS, QUANTIZERS
from semid.paper_grid import GRID_STAGES, PRIORITY, GridRun, grid_runs, render_grid_dvc

ROOT_STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def test_the_runs_cover_both_tables_once_with_the_priority_points_first():
    runs = grid_runs((1, 2, 3))
    points = {(r.embedding, r.quantizer) for r in runs}
    assert {(e, "rqkmeans") for e in EMBEDDING_METHODS} <= points
    assert {(e, q) for e in ("multitask", "content") for q in QUANTIZERS} <= points
    assert len(points) == len(EMBEDDING_METHODS) + 2 * len(QUANTIZERS) - 2  # multitask/content x rqkmeans once
    assert len(runs) == 3 * len(points) == len({r.name for r in runs})
    first = runs[: 3 * len(PRIORITY)]
    assert {(r.embedding, r.quantizer) for r in first} == set(PRIORITY)
    assert [r.seed for r in first] == [s for s in (1, 2, 3) for _ in PRIORITY]  # seed by seed


def test_a_filtered_grid_keeps_the_paper_points_only():
    runs = grid_runs((7,), embeddings=["prefix_share", "svd"], quantizers=["rqkmeans", "rqvae"])
    assert [r.name for r in runs] == ["svd-rqkmeans-s7", "prefix_share-rqkmeans-s7"]


def _python(args, cwd, env=None):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, text=True, capture_output=True)


@pytest.mark.parametrize(
    "args, named",
    [
        (["--seeds", "1 x"], "'x'"),
        (["--embeddings", "content bogus"], "'bogus'"),
        (["--quantizers", "rqvea"], "'rqvea'"),
    ],
)
def test_bad_grid_arguments_stop_with_one_line(args, named, tmp_path):
    done = _python(["-m", "semid.paper_grid", *args], tmp_path)
    assert done.returncode == 2
    assert named in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "grid").exists()


@pytest.mark.parametrize(
    "grid, named",
    [(["quantizer=rqvea"], "rqvea"), (["colour=red"], "colour=red"), (["seed=one"], "one"), (["embedding"], "embedding")],
)
def test_a_stage_given_a_bad_grid_point_writes_nothing(dvc_repo, grid, named):
    done = _python(["-m", "semid.stages.quantize", "--grid", *grid], dvc_repo, stage_env(dvc_repo))
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (dvc_repo / "grid").exists() and not (dvc_repo / "data").exists()


def test_the_grid_stages_are_the_default_stages_moved_into_the_points_folders(dvc_repo):
    runs = [GridRun("content", "rqvae", 1), GridRun("multitask", "rqkmeans", 2)]
    rendered = render_grid_dvc(ROOT_STAGES, runs)["stages"]
    for stage in GRID_STAGES:
        source, family = ROOT_STAGES[stage], rendered[stage]
        code = [d for d in source["deps"] if d.startswith("src/")]
        assert [d for d in family["do"]["deps"] if d.startswith("src/")] == code  # one closure, one list
        assert family["do"]["cmd"].startswith(source["cmd"] + " --grid ")
        params = family["do"]["params"]
        assert not {"embedding", "quantizer", "base"} & {p for p in params if isinstance(p, str)}
    assert set(rendered["train_embedder"]["foreach"]) == {"content-s1", "multitask-s2"}
    assert set(rendered["evaluate"]["foreach"]) == {"content-rqvae-s1", "multitask-rqkmeans-s2"}

    (dvc_repo / "grid").mkdir()
    (dvc_repo / "grid/dvc.yaml").write_text(yaml.safe_dump({"stages": rendered}))
    listed = dvc(dvc_repo, "stage", "list", "grid/dvc.yaml").stdout
    assert "grid/dvc.yaml:evaluate@content-rqvae-s1" in listed
    # Each output where the layout puts it: DVC resolved the item's placeholders.
    layout = grid_layout("content", "rqvae", 1)
    for stage in ("quantize", "evaluate"):
        for artifact in written_by(stage):
            if artifact.kind == "out" and artifact.cached:
                assert str(layout.at(artifact)) in listed


def _lock_outs(lock: Path, stage: str) -> dict[str, str]:
    return {o["path"]: o["md5"] for o in yaml.safe_load(lock.read_text())["stages"][stage]["outs"]}


def test_a_clone_counts_a_locked_stage_finished_until_its_code_params_or_command_change(tmp_path):
    """The rule `make grid` uses to skip finished points in a clone without their outputs, on a
    two-stage DVC pipeline: absent files alone keep it finished; anything DVC would rerun for does not."""
    origin, env = tmp_path / "origin", stage_env(tmp_path / "origin")
    origin.mkdir()
    (origin / "step.py").write_text("import sys; open(sys.argv[2], 'w').write(open(sys.argv[1]).read() * 2)\n")
    (origin / "raw.txt").write_text("x")
    (origin / "params.yaml").write_text("n: 1\n")
    stages = {"stages": {
        "double": {"cmd": "python step.py raw.txt doubled.txt", "deps": ["step.py", "raw.txt"], "outs": ["doubled.txt"]},
        "again": {"cmd": "python step.py doubled.txt four.txt", "deps": ["step.py", "doubled.txt"], "params": ["n"],
                  "outs": ["four.txt"]},
    }}
    (origin / "dvc.yaml").write_text(yaml.safe_dump(stages))
    run(["git", "init", "-q"], origin, env)
    dvc(origin, "init", "-q")
    dvc(origin, "repro")
    run(["git", "add", "-A"], origin, env)
    run(["git", "commit", "-qm", "ran"], origin, env)
    assert experiments.locked_but_absent(origin, "again")  # up to date, outputs here
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    assert not (clone / "four.txt").exists()
    assert experiments.locked_but_absent(clone, "again")

    (clone / "params.yaml").write_text("n: 2\n")
    assert not experiments.locked_but_absent(clone, "again")
    run(["git", "checkout", "-q", "params.yaml"], clone, env)
    (clone / "step.py").write_text((clone / "step.py").read_text() + "# changed\n")
    assert not experiments.locked_but_absent(clone, "again")
    run(["git", "checkout", "-q", "step.py"], clone, env)
    stages["stages"]["again"]["cmd"] = "python step.py doubled.txt four.txt  # v2"
    (clone / "dvc.yaml").write_text(yaml.safe_dump(stages))
    assert not experiments.locked_but_absent(clone, "again")


@pytest.mark.slow
def test_a_sitting_commits_each_point_resumes_and_matches_the_default_pipeline(dvc_repo):
    """Two points (one embedding, two quantizers) of a tiny grid: each lands in its own commit with
    its metrics and hit ranks; a second sitting runs nothing; and the point's outputs are
    bit-for-bit those of the default pipeline run with the same embedding, quantizer and seed."""
    repo, env = dvc_repo, stage_env(dvc_repo)
    # base.seed of params.yaml seeds the shared data stages (the queries): the default run below
    # sees the same data only with the same seed.
    set_params(repo, **{**TINY, "base": {"seed": 1}})
    run(["git", "commit", "-qam", "tiny"], repo, env)
    sitting = ["-m", "semid.paper_grid", "--seeds", "1", "--embeddings", "content", "--quantizers", "rqkmeans rqvae"]
    first = _python(sitting, repo, env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    log = run(["git", "log", "--format=%s"], repo, env).stdout.splitlines()
    assert [line.split(" ")[1] for line in log if line.startswith("grid: ")] == ["content-rqvae-s1", "content-rqkmeans-s1"]
    assert run(["git", "status", "--porcelain", "grid"], repo, env).stdout == ""
    for name in ("content-rqkmeans-s1", "content-rqvae-s1"):
        ranks = pd.read_csv(repo / "grid/runs" / name / "metrics/hit_ranks.csv")
        assert set(ranks["task"]) == {"search", "rec"}
        assert (ranks["task"] == "search").sum() == TINY["evaluate"]["search_queries"]
        assert set(ranks.loc[ranks["task"] == "rec", "segment"]) <= {"head", "torso"}
    shown = dvc(repo, "metrics", "show", "--json").stdout
    assert "grid/runs/content-rqvae-s1/metrics/search.json" in shown
    assert "up to date" in dvc(repo, "status", "grid/dvc.yaml").stdout

    again = _python(sitting, repo, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Running stage" not in again.stdout + again.stderr
    assert run(["git", "log", "--format=%s"], repo, env).stdout.splitlines() == log

    # A clone of main has the points' locks and metrics but none of their models or data: it
    # counts them finished instead of redoing them. (main also holds the root dvc.lock of the
    # shared data stages, which a sitting leaves to the user to commit.)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "data stages' lock"], repo, env)
    clone = repo.parent / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], repo.parent, env)
    fresh = _python(sitting, clone, stage_env(clone))
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "Running stage" not in fresh.stdout + fresh.stderr
    assert fresh.stdout.count(": finished (grid/dvc.lock is current") == 2, fresh.stdout[-3000:]
    assert not (clone / "grid/runs/content-rqvae-s1/models/generator").exists()

    set_params(repo, embedding="content", quantizer="rqvae")
    dvc(repo, "repro")
    prefix = "grid/runs/content-rqvae-s1/"
    for stage, outputs in (("train_t5", {"models/generator"}), ("evaluate", {"predictions", "metrics/hit_ranks.csv"})):
        point = _lock_outs(repo / "grid/dvc.lock", f"{stage}@content-rqvae-s1")
        default = _lock_outs(repo / "dvc.lock", stage)
        assert {p.removeprefix(prefix): md5 for p, md5 in point.items() if p.removeprefix(prefix) in outputs} == {
            p: md5 for p, md5 in default.items() if p in outputs
        }, stage
