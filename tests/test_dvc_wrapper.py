"""semid.experiments, the one DVC wrapper, on a real git + DVC repo with a one-stage stand-in
pipeline: show, resolve, get, the queue; and that no other module reaches DVC on its own."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run, stage_env

from semid import experiments
from semid.experiments import ExperimentError
from semid.grid import GridPoint, queue_points

STAND_IN = """
import json, os, sys, time, yaml
p = yaml.safe_load(open("params.yaml"))
if p["quantizer"] == "broken":
    sys.exit(3)
if p["quantizer"] == "sleepy":
    time.sleep(120)
os.makedirs("metrics", exist_ok=True)
json.dump({"recall_at_30": len(p["quantizer"]) / 100}, open("metrics/search.json", "w"))
os.makedirs("out", exist_ok=True)
open("out/quantizer.txt", "w").write(p["quantizer"])
"""
DVC_YAML = """
stages:
  stand_in:
    cmd: python stand_in.py
    deps: [stand_in.py]
    params: [quantizer]
    outs: [out]
    metrics:
      - metrics/search.json: {cache: false}
"""


def dvc(repo: Path, *args: str) -> str:
    return run([sys.executable, "-m", "dvc", *args], repo, stage_env(repo)).stdout


def git(repo: Path, *args: str) -> str:
    return run(["git", *args], repo, stage_env(repo)).stdout.strip()


def stand_in_repo(repo: Path) -> Path:
    """A git + DVC repo with the one-stage stand-in pipeline, committed once ("first")."""
    repo.mkdir()
    (repo / "params.yaml").write_text("quantizer: rqkmeans\nembedding: content\n")
    (repo / "stand_in.py").write_text(STAND_IN)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """Commit 1 with experiment `twice` (quantizer=rqvae); commit 2 (HEAD) with `twice` again
    (quantizer=rlfq) and `once` (dictlearn)."""
    repo = tmp_path_factory.mktemp("wrapper") / "repo"
    stand_in_repo(repo)
    dvc(repo, "exp", "run", "-n", "twice", "-S", "quantizer=rqvae")
    (repo / "README").write_text("second commit\n")
    git(repo, "add", "README")
    git(repo, "commit", "-qm", "second")
    dvc(repo, "exp", "run", "-n", "twice", "-S", "quantizer=rlfq")
    dvc(repo, "exp", "run", "-n", "once", "-S", "quantizer=dictlearn")
    return repo


def test_show_gives_one_typed_record_per_row(repo):
    head, first = git(repo, "rev-parse", "HEAD"), git(repo, "rev-parse", "HEAD~1")
    of_head = experiments.show(repo)
    assert {(e.name, e.baseline) for e in of_head if e.is_experiment} == {("twice", head), ("once", head)}
    assert [e.name for e in of_head if not e.is_experiment][0] == "workspace"
    everything = experiments.show(repo, all_commits=True)
    assert ("twice", first) in {(e.name, e.baseline) for e in everything}
    once = next(e for e in of_head if e.name == "once")
    assert (once.quantizer, once.embedding, once.state) == ("dictlearn", "content", "success")
    assert once.metric("search", "recall_at_30") == 0.09 and re.fullmatch("[0-9a-f]{40}", once.rev)


def test_resolve_and_get_read_an_experiment_or_rev_from_the_local_cache(repo, tmp_path):
    head = git(repo, "rev-parse", "HEAD")
    assert experiments.resolve(repo, rev="HEAD") == head
    assert experiments.resolve(repo, rev=head[:9]) == head
    # `twice` exists on both commits: HEAD's wins
    twice = experiments.resolve(repo, exp="twice")
    assert experiments.get(repo, twice, ["out", "params.yaml", "no/such/path"], tmp_path) == ["out", "params.yaml"]
    assert (tmp_path / "out" / "quantizer.txt").read_text() == "rlfq"
    assert "quantizer: rlfq" in (tmp_path / "params.yaml").read_text()
    once = experiments.resolve(repo, exp="once")
    experiments.get(repo, once, ["out/quantizer.txt"], tmp_path / "once")
    assert (tmp_path / "once" / "out" / "quantizer.txt").read_text() == "dictlearn"
    with pytest.raises(ExperimentError, match="unknown git rev 'no-such-rev'"):
        experiments.resolve(repo, rev="no-such-rev")
    with pytest.raises(ExperimentError, match="no DVC experiment named 'nope' .*experiments: once, twice$"):
        experiments.resolve(repo, exp="nope")
    with pytest.raises(ExperimentError, match="one of a git rev or an experiment name"):
        experiments.resolve(repo)


def test_a_rev_whose_outputs_are_not_in_the_cache_says_how_to_fetch_them(repo, tmp_path):
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, stage_env(repo))
    head = git(clone, "rev-parse", "HEAD")
    with pytest.raises(ExperimentError, match="dvc fetch --all-commits"):
        experiments.get(clone, head, ["out"], tmp_path / "nothing")


def test_a_queued_grid_runs_skips_what_is_done_and_names_its_failed_experiment(repo, capsys):
    point = GridPoint("content", "rqvae_naive")
    assert queue_points(repo, [point]) == [point]
    experiments.queue(repo, "queued-broken", ["quantizer=broken"])
    states = {e.name: e.state for e in experiments.show(repo) if e.is_experiment}
    assert states[point.name] == states["queued-broken"] == "queued"
    with pytest.raises(ExperimentError, match=r"experiments failed: queued-broken;"):
        experiments.run_queue(repo, 1, [point.name, "queued-broken"], poll_seconds=1, timeout_s=300)
    done = {e.name: e for e in experiments.show(repo) if e.is_experiment}
    assert done[point.name].state == "success" and done["queued-broken"].state == "failed"
    assert done[point.name].quantizer == "rqvae_naive" and not done["queued-broken"].finished
    # a second grid skips the point; --force drops the old result and queues it again
    assert queue_points(repo, [point]) == [] and "skip content-rqvae_naive" in capsys.readouterr().out
    _stop_workers(repo)  # else the idle worker of the run above may take the re-queued point at once
    assert queue_points(repo, [point], force=True) == [point]
    assert {e.name: e.state for e in experiments.show(repo)}[point.name] == "queued"
    experiments.remove(repo, point.name)
    assert point.name not in {e.name for e in experiments.show(repo)}


def _stop_workers(repo: Path, timeout_s: float = 60) -> None:
    dvc(repo, "queue", "stop")
    deadline = time.monotonic() + timeout_s
    while "Worker status: 0 active" not in dvc(repo, "queue", "status") and time.monotonic() < deadline:
        time.sleep(1)


def _queue_workers(repo: Path) -> list[int]:
    """PIDs of this repo's queue workers (`dvc exp queue-worker dvc-exp-<hash of the celery dir>-N`)."""
    node = "dvc-exp-" + hashlib.sha256(str(repo / ".dvc" / "tmp" / "exps" / "celery").encode()).hexdigest()[:6]
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if b"queue-worker" in (text := cmdline.read_bytes()) and node.encode() in text:
                found.append(int(cmdline.parent.name))
    return found


def test_a_worker_killed_under_its_experiment_is_named_not_waited_for(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    stand_in_repo(repo)
    experiments.queue(repo, "sleepy", ["quantizer=sleepy"])
    monkeypatch.setattr(experiments, "WORKER_GRACE_S", 5.0)
    failure: list[BaseException] = []
    waiter = threading.Thread(target=lambda: _capture(failure, experiments.run_queue, repo, 1, ["sleepy"], 1.0))
    waiter.start()
    deadline = time.monotonic() + 120
    while not ({e.name: e.state for e in experiments.show(repo)}.get("sleepy") == "running" and _queue_workers(repo)):
        assert time.monotonic() < deadline, "the experiment never started"
        time.sleep(1)
    for pid in _queue_workers(repo):  # the worker and what it runs, as an OOM kill or a reboot would
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    waiter.join(timeout=240)
    assert not waiter.is_alive(), "run_queue still waits on a task no worker runs"
    assert failure and isinstance(failure[0], ExperimentError), failure
    assert "sleepy show as running but no queue worker is alive" in str(failure[0])


def _capture(into: list[BaseException], call, *args) -> None:
    try:
        call(*args)
    except BaseException as error:  # the thread's outcome, for the test to read
        into.append(error)


def test_only_the_wrapper_reaches_dvc_and_plain_search_imports_none_of_it():
    uses = {}
    for path in sorted((REPO_ROOT / "src" / "semid").rglob("*.py")):
        text = path.read_text()
        found = re.findall(r"^\s*(?:from dvc\S*|import dvc\S*)|\"-m\", \"dvc\"|for-each-ref|refs/exps", text, re.MULTILINE)
        if found:
            uses[str(path.relative_to(REPO_ROOT))] = found
        assert not re.search(r"\bdvc\.repo\b|\bresolve_name\b", text), f"{path}: DVC internals"
    # paper_dry_run builds a throwaway repo and runs `dvc init` / `dvc exp run` in it with its own
    # environment: a scratch pipeline run, not experiment plumbing of this project.
    assert set(uses) <= {"src/semid/experiments.py", "src/semid/paper_dry_run.py"}, uses
    assert all(found == ['"-m", "dvc"'] * len(found) for path, found in uses.items() if "paper_dry_run" in path)
    check = (
        "import sys, semid.cli\n"
        "loaded = [m for m in sys.modules if m == 'dvc' or m.startswith('dvc.') or m == 'semid.experiments']\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, cwd=REPO_ROOT)
