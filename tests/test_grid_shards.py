"""The grid across machines: the shard split, bad SHARD values, and (slow) a real cluster of three
clones around a bare git repo (origin) and a local folder as the DVC remote."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, dvc, run, set_params, stage_env
from test_dvc_wrapper import DVC_YAML, STAND_IN

from semid import experiments
from semid.config import EMBEDDING_METHODS, QUANTIZERS
from semid.grid import Shard, grid_points, parse_shard
from semid.io import SemidError

GRID = [sys.executable, "-m", "semid.grid"]


def test_shards_split_the_grid_in_order_once_each_point():
    points = grid_points()
    assert len(points) == len(EMBEDDING_METHODS) * len(QUANTIZERS)
    for count in (1, 2, 3, 5, 7, len(points), len(points) + 2):
        shares = [parse_shard(f"{i}/{count}").of(points) for i in range(1, count + 1)]
        flat = [p for share in shares for p in share]
        assert sorted(p.name for p in flat) == sorted(p.name for p in points), count
        assert len({p.name for p in flat}) == len(points)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1  # as even as it gets
    two = grid_points(["content", "multitask"], ["rqkmeans", "rqvae"])
    assert [p.name for p in Shard(1, 2).of(two)] == ["content-rqkmeans", "multitask-rqkmeans"]
    assert [p.name for p in Shard(2, 2).of(two)] == ["content-rqvae", "multitask-rqvae"]
    assert parse_shard(" 2/3 ") == Shard(2, 3) and str(Shard(2, 3)) == "2/3"


@pytest.mark.parametrize("bad", ["3/2", "0/2", "x", "1/0", "1", "-1/2", "1/2/3", "", "a/b"])
def test_bad_shard_is_refused(bad):
    with pytest.raises(SemidError, match=rf"shard '{bad}' is not valid; give i/n"):
        parse_shard(bad)


@pytest.mark.parametrize("bad", ["3/2", "0/2", "x"])
def test_bad_shard_on_the_command_line_is_one_line_and_exit_2_before_any_work(bad, tmp_path):
    # tmp_path is no project: any work (dvc, git) would fail differently
    result = run([*GRID, "--shard", bad], tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: shard '{bad}' is not valid; give i/n, machine i of n with 1 <= i <= n (e.g. 1/3, 2/3, 3/3)"
    ]
    assert result.stdout == ""


def test_dry_prints_the_shard(tmp_path):
    dry = [*GRID, "--shard", "2/2", "--dry", "--embeddings", "content", "--quantizers", "rqkmeans rqvae rlfq"]
    out = run(dry, tmp_path)
    assert out.stdout.split() == ["content-rqvae"]


def test_push_and_pull_check_their_remotes_before_any_work(dvc_repo, tmp_path):
    env = stage_env(dvc_repo)
    shard = [*GRID, "--shard", "1/2", "--embeddings", "content", "--quantizers", "rqkmeans"]
    result = run([*shard, "--push", "nowhere"], dvc_repo, env, check=False)
    assert result.returncode == 2 and "cannot read git remote 'nowhere'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr

    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", str(origin)], tmp_path, env)
    run(["git", "remote", "add", "origin", str(origin)], dvc_repo, env)
    result = run([*shard, "--push", "origin"], dvc_repo, env, check=False)
    assert result.returncode == 2 and "no default DVC remote" in result.stderr, result.stderr
    assert not [e for e in experiments.show(dvc_repo) if e.is_experiment], "work started anyway"

    dvc(dvc_repo, "remote", "add", "--local", "-d", "store", str(tmp_path / "store"))
    result = run([*GRID, "--pull", "origin"], dvc_repo, env, check=False)
    assert result.returncode == 2, result.stderr
    assert "git remote 'origin' holds no experiments" in result.stderr, result.stderr


def test_push_keeps_another_machines_run_and_pull_brings_heads_experiments_with_outputs(tmp_path):
    """The one-stage stand-in pipeline of test_dvc_wrapper: three clones, one bare origin, one DVC
    remote; machines push distinct names of one commit, a clashing name is refused, a third pulls."""
    origin, store = tmp_path / "origin.git", tmp_path / "store"
    run(["git", "init", "-q", "--bare", "--initial-branch", "main", str(origin)], tmp_path)
    one = tmp_path / "one"
    one.mkdir()
    (one / "params.yaml").write_text("quantizer: rqkmeans\nembedding: content\n")
    (one / "stand_in.py").write_text(STAND_IN)
    (one / "dvc.yaml").write_text(DVC_YAML)
    env = stage_env(one)
    run(["git", "init", "-q", "--initial-branch", "main"], one, env)
    dvc(one, "init", "-q")
    run(["git", "add", "-A"], one, env)
    run(["git", "commit", "-qm", "stand-in"], one, env)
    run(["git", "remote", "add", "origin", str(origin)], one, env)
    run(["git", "push", "-q", "origin", "main"], one, env)
    dvc(one, "remote", "add", "--local", "-d", "store", str(store))
    two, three = _clone(origin, tmp_path / "two", store), _clone(origin, tmp_path / "three", store)
    head = run(["git", "rev-parse", "HEAD"], one).stdout.strip()

    dvc(one, "exp", "run", "-n", "content-rqvae", "-S", "quantizer=rqvae")
    experiments.push(one, "origin", ["content-rqvae"])
    dvc(two, "exp", "run", "-n", "content-rlfq", "-S", "quantizer=rlfq")
    experiments.push(two, "origin", ["content-rlfq"])  # the same commit, another name: both kept
    dvc(two, "exp", "run", "-n", "content-rqvae", "-S", "quantizer=dictlearn")
    first = {e.name: e.rev for e in experiments.remote_experiments(one, "origin")}
    clash = "already holds another run named content-rqvae on commit"
    with pytest.raises(experiments.ExperimentError, match=clash):
        experiments.push(two, "origin", ["content-rqvae"])
    remote = {e.name: e for e in experiments.remote_experiments(three, "origin")}
    assert {n: e.rev for n, e in remote.items()} == first and set(first) == {"content-rqvae", "content-rlfq"}
    assert {e.baseline for e in remote.values()} == {head}

    # machine 2 pulling keeps its own content-rqvae and says so
    with pytest.raises(experiments.ExperimentError, match="kept this clone's own content-rqvae"):
        experiments.pull(two, "origin")

    pulled = experiments.pull(three, "origin")
    assert sorted(e.name for e in pulled) == ["content-rlfq", "content-rqvae"]
    shown = {e.name: e for e in experiments.show(three) if e.is_experiment}
    assert set(shown) == {"content-rlfq", "content-rqvae"}
    assert shown["content-rqvae"].rev == first["content-rqvae"]
    # the outputs came too: read from the local cache only
    experiments.get(three, shown["content-rqvae"].rev, ["out"], tmp_path / "got")
    assert (tmp_path / "got" / "out" / "quantizer.txt").read_text() == "rqvae"

    (three / "README").write_text("a newer commit\n")
    run(["git", "add", "README"], three, env)
    run(["git", "commit", "-qm", "newer"], three, env)
    elsewhere = rf"no experiments of HEAD .*only of commit {head[:7]}"
    with pytest.raises(experiments.ExperimentError, match=elsewhere):
        experiments.pull(three, "origin")


def _shard_outputs(machines: dict[str, subprocess.Popen], repos: dict[str, Path], timeout_s: float) -> dict[str, str]:
    """Each shard's output. Both shards take ~3 min here; one still running after ``timeout_s``
    fails the test with each queue's state, its processes and workers killed, rather than holding
    the test run (once, on CI, this test ran past the whole run's 90 min limit)."""
    deadline = time.monotonic() + timeout_s
    try:
        return {shard: process.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
                for shard, process in machines.items()}
    except subprocess.TimeoutExpired:
        states = {}
        for shard, repo in repos.items():
            status = subprocess.run([sys.executable, "-m", "dvc", "queue", "status"], cwd=repo,
                                    capture_output=True, text=True, timeout=120, check=False)
            states[shard] = status.stdout + status.stderr
        for process in machines.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for repo in repos.values():
            subprocess.run([sys.executable, "-m", "dvc", "queue", "stop", "--kill"], cwd=repo,
                           capture_output=True, timeout=120, check=False)
        pytest.fail(f"a shard still ran after {timeout_s:.0f}s; `dvc queue status` per shard: {states}")


def _clone(origin: Path, path: Path, store: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(path)], path.parent, stage_env(path))
    dvc(path, "remote", "add", "--local", "-d", "store", str(store))  # absolute: one folder for all
    return path


@pytest.mark.slow
def test_two_machines_run_their_shards_and_a_third_gathers_every_point(dvc_repo, tmp_path):
    started = time.monotonic()
    origin, store = tmp_path / "origin.git", tmp_path / "dvc-store"
    run(["git", "init", "-q", "--bare", "--initial-branch", "main", str(origin)], tmp_path)
    # Machine 1 commits the tiny config with the shared stages (up to the embedder) and pushes both,
    # so machine 2 fetches them rather than recomputing.
    one = dvc_repo
    env_one = stage_env(one)
    set_params(one, **TINY)
    run(["git", "branch", "-M", "main"], one, env_one)
    dvc(one, "remote", "add", "--local", "-d", "store", str(store))
    dvc(one, "repro", "train_embedder")
    run(["git", "add", "-A"], one, env_one)
    run(["git", "commit", "-qm", "tiny config, shared stages"], one, env_one)
    dvc(one, "push")
    run(["git", "remote", "add", "origin", str(origin)], one, env_one)
    run(["git", "push", "-q", "origin", "main"], one, env_one)
    two = _clone(origin, tmp_path / "two", store)
    three = _clone(origin, tmp_path / "three", store)
    head = run(["git", "rev-parse", "HEAD"], one).stdout.strip()
    shared = time.monotonic() - started

    # Both shards at once, as two machines would: same baseline commit, one remote.
    grid = [*GRID, "--embeddings", "content", "--quantizers", "rqkmeans rqvae", "--push", "origin"]
    machines = {
        shard: subprocess.Popen([*grid, "--shard", shard], cwd=repo, env=stage_env(repo), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        for shard, repo in (("1/2", one), ("2/2", two))
    }
    outputs = _shard_outputs(machines, {"1/2": one, "2/2": two}, timeout_s=1200)
    for shard, process in machines.items():
        assert process.returncode == 0, f"shard {shard}:\n{outputs[shard]}"
    assert "queued content-rqkmeans" in outputs["1/2"] and "content-rqvae" not in outputs["1/2"]
    assert "queued content-rqvae" in outputs["2/2"] and "content-rqkmeans" not in outputs["2/2"]
    assert "pushed 1 experiments to origin: content-rqvae" in outputs["2/2"]
    # machine 2 restored the shared stages from the DVC remote instead of running them
    logs = dvc(two, "queue", "logs", "content-rqvae").stdout
    assert "train_embedder" in logs and "Running stage 'train_embedder'" not in logs, logs
    grid_time = time.monotonic() - started - shared

    remote = {e.name: e for e in experiments.remote_experiments(one, "origin")}
    assert set(remote) == {"content-rqkmeans", "content-rqvae"}
    assert {e.baseline for e in remote.values()} == {head}

    # The same name from another machine is refused, and the remote keeps the first one.
    dvc(two, "exp", "rename", "content-rqvae", "content-rqkmeans")
    with pytest.raises(experiments.ExperimentError, match="already holds another run named content-rqkmeans"):
        experiments.push(two, "origin", ["content-rqkmeans"])
    after = {e.name: e.rev for e in experiments.remote_experiments(one, "origin")}
    assert after["content-rqkmeans"] == remote["content-rqkmeans"].rev

    # Machine 3 pulls every experiment of the commit, with their outputs.
    env_three = stage_env(three)
    out = run([*GRID, "--pull", "origin"], three, env_three)
    assert "pulled 2 experiments" in out.stdout, out.stdout
    shown = {e.name: e for e in experiments.show(three) if e.is_experiment}  # `dvc exp show`: HEAD's
    assert set(shown) == {"content-rqkmeans", "content-rqvae"}
    assert all(e.finished and e.baseline == head for e in shown.values())
    assert (shown["content-rqkmeans"].quantizer, shown["content-rqvae"].quantizer) == ("rqkmeans", "rqvae")

    run([sys.executable, "-m", "semid.results"], three, env_three)
    table = (three / "results" / "table.md").read_text()
    assert "`content-rqkmeans`" in table and "`content-rqvae`" in table

    search = [sys.executable, "-m", "semid.cli", "search", "a heist that goes wrong",
              "--exp", "content-rqvae", "-k", "5", "--json", "--root", str(three)]
    answer = json.loads(run(search, three, env_three).stdout)
    assert answer["run"].startswith("experiment content-rqvae") and answer["results"], answer
    assert all(isinstance(hit["item_id"], int) for hit in answer["results"])
    print(f"shared stages {shared:.0f}s, both shards at once {grid_time:.0f}s, "
          f"total {time.monotonic() - started:.0f}s")
