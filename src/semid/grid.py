"""The method grid (embedding x quantizer) through DVC's experiment queue.

``make grid`` (``python -m semid.grid``) queues one experiment per grid point with
``dvc exp run --queue -S embedding=... -S quantizer=...``, starts ``dvc queue start -j N``
workers and waits until the queue is empty (all through semid.experiments). Queued experiments
log to the main repo's MLflow store, which is created here before any worker starts, since SQLite
races when parallel workers create it.

Points already finished on the current commit (an experiment of the same name) are skipped, so
adding a method to the grid runs only what is new; ``--force`` reruns them.
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
from semid.io import user_errors_exit
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", default=" ".join(EMBEDDING_METHODS), help="space-separated methods")
    parser.add_argument("--quantizers", default=" ".join(QUANTIZERS), help="space-separated quantizers")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="dvc queue start -j N")
    parser.add_argument("-S", "--set-param", action="append", default=[], help="extra -S key=value for every point")
    parser.add_argument("--force", action="store_true", help="rerun points that already have an experiment")
    parser.add_argument("--dry", action="store_true", help="print the points and exit")
    args = parser.parse_args(argv)

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
