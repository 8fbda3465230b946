"""The method grid (embedding x quantizer) through DVC's experiment queue.

``make grid`` (``python -m semid.grid``) queues one experiment per grid point with
``dvc exp run --queue -S embedding=... -S quantizer=...``, starts ``dvc queue start -j N``
workers and waits until the queue is empty (all through semid.experiments). Queued experiments
log to the main repo's MLflow store, which is created here before any worker starts, since SQLite
races when parallel workers create it.

Points already finished on the current commit (an experiment of the same name) are skipped, so
adding a method to the grid runs only what is new; ``--force`` reruns them.

Across machines (``make grid SHARD=i/n``): machine i of n runs ``points[i-1::n]`` of the grid in its
fixed order, so every machine computes the same split without talking to the others, and with
``--push REMOTE`` pushes its finished points with ``dvc exp push`` (experiments to the git remote,
outputs to the default DVC remote). Names are one per point, so machines never clash on a shared
commit. ``--pull REMOTE`` (``make pull-grid``) gathers them on any clone. All machines must be on
one commit: experiments hang off their baseline commit, and ``dvc exp show`` lists HEAD's.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from semid import experiments
from semid.config import EMBEDDING_METHODS, QUANTIZERS, check_choice, workspace_root
from semid.io import SemidError, user_errors_exit
from semid.tracking import init_store, tracking_enabled


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


@dataclass(frozen=True)
class Shard:
    """Machine ``index`` (1-based) of ``count``: every count-th point, starting at the index-th."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def of(self, points: Sequence[GridPoint]) -> list[GridPoint]:
        return list(points[self.index - 1 :: self.count])


def parse_shard(text: str) -> Shard:
    """``"i/n"`` -> Shard(i, n), 1 <= i <= n; anything else fails with one line naming it."""
    index, slash, count = text.strip().partition("/")
    if slash and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count):
        return Shard(int(index), int(count))
    raise SemidError(f"shard {text!r} is not valid; give i/n, machine i of n with 1 <= i <= n (e.g. 1/3, 2/3, 3/3)")


def queue_points(
    root: Path, points: Sequence[GridPoint], extra_params: Sequence[str] = (), force: bool = False
) -> list[GridPoint]:
    """Queue the points not yet run on this commit (all of them with ``force``); returns those queued."""
    done = {e.name for e in experiments.show(root) if e.is_experiment}  # any state, as DVC lists them
    queued = []
    for point in points:
        if point.name in done:
            if not force:
                print(f"skip {point.name}: already an experiment of this commit (--force reruns it)")
                continue
            # `exp run --force` would also rerun every unchanged stage; drop the old result instead.
            experiments.remove(root, point.name)
        experiments.queue(root, point.name, [*point.params(), *extra_params])
        print(f"queued {point.name}")
        queued.append(point)
    return queued


def run_grid(
    root: Path,
    points: Sequence[GridPoint],
    jobs: int = 1,
    extra_params: Sequence[str] = (),
    force: bool = False,
    poll_seconds: float = 10.0,
) -> dict[str, str]:
    """Create the MLflow store, queue the points, run the queue and wait for it."""
    if tracking_enabled():
        init_store(root)
    queued = queue_points(root, points, extra_params, force)
    if not queued:
        print("nothing to run: every point is already an experiment of this commit")
        return {}
    return experiments.run_queue(root, jobs, [p.name for p in queued], poll_seconds)


def finished_names(root: Path, points: Sequence[GridPoint]) -> list[str]:
    """The points that are finished experiments of HEAD (run now or earlier), in grid order."""
    done = {e.name for e in experiments.show(root) if e.is_experiment and e.finished}
    return [p.name for p in points if p.name in done]


def run_shard(
    root: Path,
    points: Sequence[GridPoint],
    git_remote: str | None,
    jobs: int = 1,
    extra_params: Sequence[str] = (),
    force: bool = False,
) -> list[str]:
    """Run ``points`` (a shard) as :func:`run_grid` does, then push every finished one to ``git_remote``
    (also those finished before, and those that did finish when others failed; with ``force``, the
    reruns replace the remote's runs of the same name). Returns the pushed."""
    if git_remote and not experiments.fetch_head(root):
        print("some of HEAD's outputs are not on the DVC remote: the stages that make them run here")
    failure: experiments.ExperimentError | None = None
    try:
        run_grid(root, points, jobs, extra_params, force)
    except experiments.ExperimentError as error:
        failure = error
    pushed = []
    if git_remote:
        pushed = finished_names(root, points)
        experiments.push(root, git_remote, pushed, force)
        print(f"pushed {len(pushed)} experiments to {git_remote}: {' '.join(pushed) or 'none'}")
    if failure:
        raise failure
    return pushed


def check_remotes(root: Path, git_remote: str) -> None:
    """Before any work: the git remote answers and a default DVC remote is set."""
    experiments.remote_experiments(root, git_remote)
    if experiments.default_cache_remote(root) is None:
        raise SemidError(f"no default DVC remote in {root}: {experiments.NO_CACHE_REMOTE}")


def pull_grid(root: Path, git_remote: str, all_commits: bool = False) -> None:
    check_remotes(root, git_remote)
    pulled = experiments.pull(root, git_remote, all_commits)
    by_commit: dict[str, list[str]] = {}
    for e in pulled:
        by_commit.setdefault(e.baseline[:7], []).append(e.name)
    for commit, names in by_commit.items():
        print(f"pulled {len(names)} experiments of {commit} from {git_remote}: {' '.join(sorted(names))}")
    print("`make results` gathers the table; `semid search QUERY --exp NAME` serves one")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", default=" ".join(EMBEDDING_METHODS), help="space-separated methods")
    parser.add_argument("--quantizers", default=" ".join(QUANTIZERS), help="space-separated quantizers")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="dvc queue start -j N")
    parser.add_argument("-S", "--set-param", action="append", default=[], help="extra -S key=value for every point")
    parser.add_argument("--force", action="store_true", help="rerun points already run (and push over them)")
    parser.add_argument("--dry", action="store_true", help="print the points (of the shard) and exit")
    parser.add_argument("--shard", help="i/n: run machine i's share of n (every n-th point from the i-th)")
    parser.add_argument("--push", metavar="GIT_REMOTE", help="push the finished points (dvc exp push)")
    parser.add_argument("--pull", metavar="GIT_REMOTE", help="only pull HEAD's experiments (dvc exp pull)")
    parser.add_argument("--all-commits", action="store_true", help="with --pull: every commit's experiments")
    args = parser.parse_args(argv)

    with user_errors_exit():
        if args.pull:
            pull_grid(workspace_root(), args.pull, args.all_commits)
            return
        points = grid_points(args.embeddings.split(), args.quantizers.split())
        if args.shard:
            points = parse_shard(args.shard).of(points)
        if args.dry:
            print("\n".join(p.name for p in points))
            return
        root = workspace_root()
        if args.push:
            check_remotes(root, args.push)
        started = time.monotonic()
        if args.shard or args.push:
            run_shard(root, points, args.push, args.jobs, args.set_param, args.force)
        else:
            run_grid(root, points, args.jobs, args.set_param, args.force)
        print(f"grid done in {time.monotonic() - started:,.0f}s; `make results` gathers the table")


if __name__ == "__main__":
    main()
