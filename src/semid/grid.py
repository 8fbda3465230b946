"""The method grid (embedding x quantizer) through DVC's experiment queue.

``make grid`` (``python -m semid.grid``) queues one experiment per grid point with
``dvc exp run --queue -S embedding=... -S quantizer=...``, starts ``dvc queue start -j N``
workers and waits until the queue is empty. Every queued experiment runs in a temporary copy of
the repo (``.dvc/tmp/exps/``); stages there read that copy's params (semid.config.workspace_root)
and log to the main repo's MLflow store (DVC sets ``DVC_ROOT`` to the repo that queued them,
semid.tracking), which is created here before any worker starts, since SQLite races when parallel
workers create it.

Points already finished on the current commit (an experiment of the same name) are skipped, so
adding a method to the grid runs only what is new; ``--force`` reruns them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from semid.config import EMBEDDING_METHODS, QUANTIZERS, check_choice
from semid.io import SemidError, user_errors_exit


class GridError(SemidError):
    """A grid that cannot be queued or an experiment that failed."""


@dataclass(frozen=True)
class GridPoint:
    embedding: str
    quantizer: str

    @property
    def name(self) -> str:
        """The DVC experiment name: readable in `dvc exp show`, unique per point."""
        return f"{self.embedding}-{self.quantizer}"

    def params(self) -> list[str]:
        return [f"embedding={self.embedding}", f"quantizer={self.quantizer}"]


def grid_points(embeddings: Iterable[str] = EMBEDDING_METHODS, quantizers: Iterable[str] = QUANTIZERS) -> list[GridPoint]:
    """Every (embedding, quantizer) pair, in the order given; unknown names fail with the choices."""
    embeddings, quantizers = list(embeddings), list(quantizers)
    for name in embeddings:
        check_choice("embedding", name, EMBEDDING_METHODS)
    for name in quantizers:
        check_choice("quantizer", name, QUANTIZERS)
    return [GridPoint(e, q) for e, q in itertools.product(embeddings, quantizers)]


def dvc_command(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the DVC of this interpreter in ``root``; a failure raises with DVC's own message."""
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise GridError(f"dvc {' '.join(args)} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    return result


def baseline_experiment_names(root: Path) -> set[str]:
    """Names of the experiments whose baseline is the current commit."""
    shown = json.loads(dvc_command(root, "exp", "show", "--json").stdout or "[]")
    names: set[str] = set()
    for commit in shown:
        if commit.get("rev") == "workspace":
            continue
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                if rev.get("name"):
                    names.add(rev["name"])
        break  # the first non-workspace entry is HEAD, the baseline of new experiments
    return names


def queue_points(
    root: Path, points: Sequence[GridPoint], extra_params: Sequence[str] = (), force: bool = False
) -> list[GridPoint]:
    """Queue the points not yet run on this commit (all of them with ``force``); returns those queued."""
    done = baseline_experiment_names(root)
    queued = []
    for point in points:
        if point.name in done:
            if not force:
                print(f"skip {point.name}: already an experiment of this commit (--force reruns it)")
                continue
            # `exp run --force` would also rerun every unchanged stage; drop the old result instead.
            dvc_command(root, "exp", "remove", point.name)
        args = ["exp", "run", "--queue", "--name", point.name]
        for param in [*point.params(), *extra_params]:
            args += ["-S", param]
        dvc_command(root, *args)
        print(f"queued {point.name}")
        queued.append(point)
    return queued


def queue_status(root: Path) -> list[dict]:
    """[{'name', 'status'}] of every task DVC's queue knows (Queued, Running, Success, Failed)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [{"name": e["name"], "status": e["status"]} for e in repo.experiments.celery_queue.status()]


def start_workers(root: Path, jobs: int) -> None:
    # Not through pipes: the workers it spawns inherit them, and reading to EOF would wait for the queue.
    started_workers = subprocess.run(
        [sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    if started_workers.returncode != 0:
        raise GridError(f"dvc queue start -j {jobs} failed ({started_workers.returncode}); try it by hand")


def run_queue(root: Path, jobs: int, names: Sequence[str], poll_seconds: float = 10.0, timeout_s: float = 0) -> dict[str, str]:
    """Start ``jobs`` queue workers and wait until none of ``names`` is queued or running.

    Returns {name: final status}. Raises GridError naming the failed experiments (their logs:
    ``dvc queue logs <name>``).
    """
    start_workers(root, jobs)
    started = time.monotonic()
    wanted = set(names)
    last = ""
    idle_polls = 0
    while True:
        latest: dict[str, str] = {}
        running = 0
        for entry in queue_status(root):
            running += entry["status"] == "Running"
            if entry["name"] in wanted:
                latest[entry["name"]] = entry["status"]
        pending = sorted(n for n in wanted if latest.get(n, "Queued") in ("Queued", "Running"))
        # A worker can exit with tasks still queued (celery's filesystem broker replays an old
        # shutdown broadcast to the next worker that starts); with nothing running for a while,
        # start workers again rather than wait forever.
        idle_polls = idle_polls + 1 if pending and not running else 0
        if idle_polls >= max(3, int(60 / max(poll_seconds, 1e-3))):
            print("queued experiments but no worker running: starting workers again", flush=True)
            start_workers(root, jobs)
            idle_polls = 0
        line = ", ".join(f"{n}: {latest.get(n, 'Queued')}" for n in sorted(wanted))
        if line != last:
            print(f"[{time.monotonic() - started:,.0f}s] {line}", flush=True)
            last = line
        if not pending:
            break
        if timeout_s and time.monotonic() - started > timeout_s:
            raise GridError(f"queue still busy after {timeout_s:.0f}s: {', '.join(pending)} (`dvc queue status`)")
        time.sleep(poll_seconds)
    # No `dvc queue stop`: workers exit by themselves once the queue is empty, and the shutdown it
    # broadcasts stays in the filesystem broker, where it stops the next grid's worker after one task.
    failed = sorted(n for n, status in latest.items() if status != "Success")
    if failed:
        raise GridError(f"experiments failed: {', '.join(failed)}; see `dvc queue logs <name>`")
    return latest


def run_grid(
    root: Path,
    points: Sequence[GridPoint],
    jobs: int = 1,
    extra_params: Sequence[str] = (),
    force: bool = False,
    poll_seconds: float = 10.0,
) -> dict[str, str]:
    """Create the MLflow store, queue the points, run the queue and wait for it."""
    from semid.tracking import init_store, tracking_enabled

    if tracking_enabled():
        init_store(root)
    queued = queue_points(root, points, extra_params, force)
    if not queued:
        print("nothing to run: every point is already an experiment of this commit")
        return {}
    return run_queue(root, jobs, [p.name for p in queued], poll_seconds)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", default=" ".join(EMBEDDING_METHODS), help="space-separated methods")
    parser.add_argument("--quantizers", default=" ".join(QUANTIZERS), help="space-separated quantizers")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="dvc queue start -j N")
    parser.add_argument("-S", "--set-param", action="append", default=[], help="extra -S key=value for every point")
    parser.add_argument("--force", action="store_true", help="rerun points that already have an experiment")
    parser.add_argument("--dry", action="store_true", help="print the points and exit")
    args = parser.parse_args(argv)
    from semid.config import workspace_root

    with user_errors_exit():
        points = grid_points(args.embeddings.split(), args.quantizers.split())
        if args.dry:
            print("\n".join(p.name for p in points))
            return
        started = time.monotonic()
        run_grid(workspace_root(), points, args.jobs, args.set_param, args.force)
        print(f"grid done in {time.monotonic() - started:,.0f}s; `make results` gathers the table")


if __name__ == "__main__":
    main()
