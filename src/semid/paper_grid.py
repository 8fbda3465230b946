"""The paper's grid, kept in main: every point x seed a DVC stage family in ``grid/dvc.yaml``.

``make grid`` (``python -m semid.paper_grid``) renders ``grid/dvc.yaml`` from the default pipeline's
``dvc.yaml`` (same commands, code deps and params, plus ``--grid embedding=E quantizer=Q seed=S``;
outputs in the point's folder, see :func:`semid.artifacts.grid_layout`), then runs
``dvc repro grid/dvc.yaml:evaluate@<point>-s<seed>`` point by point and commits each finished one
(``grid/dvc.lock``, its metrics and per-unit hit ranks) before starting the next; grid/dvc.yaml
gains each run as it starts, so ``dvc status`` lists no point that never ran. So the grid runs
across sittings: a later ``make grid`` finds the finished points current in ``grid/dvc.lock`` and
goes on with the rest, also in a fresh clone that lacks their models and data (it does not redo
them); a fresh clone has every finished point's numbers (``dvc metrics show``, ``make results``)
without running anything.

Why not ``dvc exp run --queue``: queued experiments live as experiment refs on the machine that ran
them, so a clone of main sees none of them; a stage family puts params, lock entries and metrics
of every point in main's history, where ``dvc metrics diff`` between branches compares the table.
(One-off trials and the grid across machines still go through the queue: ``semid.grid``.)

The points are the paper's two tables: every embedding method with RQ-KMeans IDs, every quantizer
on multi-task embeddings, and every quantizer on content embeddings. They run in the order of
:data:`PRIORITY` (the quantizer table and the single- vs multi-task comparison first, seed by seed),
so a sitting cut short leaves the comparisons the paper's findings rest on as complete as it can.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from semid import experiments
from semid.artifacts import grid_embedding_name, grid_layout, grid_run_name, written_by
from semid.config import EMBEDDING_METHODS, QUANTIZERS, check_choice, find_root
from semid.io import SemidError, atomic_path, user_errors_exit
from semid.tracking import init_store, tracking_enabled

GRID_DVC_YAML = Path("grid/dvc.yaml")
GRID_STAGES = ("train_embedder", "quantize", "train_t5", "evaluate")
DEFAULT_SEEDS = (1, 2, 3)
REFERENCE_QUANTIZER = "rqkmeans"
QUANTIZER_TABLE_EMBEDDINGS = ("multitask", "content")
# Run first: what the findings rest on (every quantizer on multi-task; single- vs multi-task).
PRIORITY = (*((("multitask", q) for q in QUANTIZERS)), ("search", REFERENCE_QUANTIZER), ("rec", REFERENCE_QUANTIZER))
# The grid axes the point sets, so the stage's params leave them out (they are in its command).
AXIS_PARAMS = ("embedding", "quantizer")


@dataclass(frozen=True)
class GridRun:
    embedding: str
    quantizer: str
    seed: int

    @property
    def name(self) -> str:
        return grid_run_name(self.embedding, self.quantizer, self.seed)

    @property
    def target(self) -> str:
        return f"{GRID_DVC_YAML}:evaluate@{self.name}"


def paper_points() -> list[tuple[str, str]]:
    """(embedding, quantizer) of the paper's two tables, each once, priority points first."""
    points = [*PRIORITY]
    points += [(e, REFERENCE_QUANTIZER) for e in EMBEDDING_METHODS]
    points += [(e, q) for e in QUANTIZER_TABLE_EMBEDDINGS for q in QUANTIZERS]
    return list(dict.fromkeys(points))


def grid_runs(
    seeds: Sequence[int] = DEFAULT_SEEDS,
    embeddings: Iterable[str] = EMBEDDING_METHODS,
    quantizers: Iterable[str] = QUANTIZERS,
) -> list[GridRun]:
    """Every run of the grid (restricted to ``embeddings`` x ``quantizers``) in running order: the
    priority points seed by seed, then the others seed by seed."""
    embeddings, quantizers = set(embeddings), set(quantizers)
    for name in embeddings:
        check_choice("embedding", name, EMBEDDING_METHODS)
    for name in quantizers:
        check_choice("quantizer", name, QUANTIZERS)
    if not seeds or any(s < 0 for s in seeds):
        raise SemidError(f"seeds {list(seeds)} are not valid; give one or more non-negative integers, e.g. 1 2 3")
    chosen = [p for p in paper_points() if p[0] in embeddings and p[1] in quantizers]
    first = [p for p in chosen if p in PRIORITY]
    rest = [p for p in chosen if p not in PRIORITY]
    return [GridRun(e, q, s) for block in (first, rest) for s in seeds for e, q in block]


def _placeholder_layout():
    return grid_layout("${item.embedding}", "${item.quantizer}", "${item.seed}")


def _relocate(entries: list, stage_roots: dict[str, str]) -> list:
    """dvc.yaml path entries (strings or {path: options}) moved to the folder of the stage that
    writes them; paths no grid stage writes (code, the data stages' outputs) stay."""
    owner = {a.path: a.stage for stage in GRID_STAGES for a in written_by(stage)}

    def move(path: str) -> str:
        stage = owner.get(path)
        return f"{stage_roots[stage]}/{path}" if stage else path

    moved = []
    for entry in entries:
        if isinstance(entry, dict):
            moved.append({move(path): options for path, options in entry.items()})
        else:
            moved.append(move(entry))
    return moved


def _grid_params(params: list) -> list:
    """The default stage's params without the axes, and ``base`` without its seed: both come from the
    point's command, so a one-off `dvc exp run -S base.seed=...` leaves the grid up to date."""
    kept: list = []
    for entry in params:
        if entry in AXIS_PARAMS:
            continue
        if entry == "base":
            kept += ["base.profile", "base.threads"]
            continue
        kept.append(entry)
    return kept


def render_grid_dvc(root_stages: dict[str, Any], runs: Sequence[GridRun]) -> dict[str, Any]:
    """grid/dvc.yaml: one foreach family per grid stage, built from the default pipeline's stage."""
    layout = _placeholder_layout()
    stage_roots = {stage: str(layout.root(stage)) for stage in GRID_STAGES}
    embeddings = {
        grid_embedding_name(r.embedding, r.seed): {"embedding": r.embedding, "seed": r.seed} for r in runs
    }
    points = {r.name: {"embedding": r.embedding, "quantizer": r.quantizer, "seed": r.seed} for r in runs}
    stages = {}
    for stage in GRID_STAGES:
        source = root_stages[stage]
        per_point = stage != "train_embedder"
        coordinates = "embedding=${item.embedding} " + ("quantizer=${item.quantizer} " if per_point else "") + "seed=${item.seed}"
        body: dict[str, Any] = {"cmd": f"{source['cmd']} --grid {coordinates}", "wdir": ".."}
        for section in ("deps", "params", "outs", "metrics", "plots"):
            if section in source:
                body[section] = _grid_params(source[section]) if section == "params" else _relocate(source[section], stage_roots)
        # Copies: a shared dict would come out as a YAML anchor and aliases.
        stages[stage] = {"foreach": copy.deepcopy(points if per_point else embeddings), "do": body}
    return {"stages": stages}


GRID_HEADER = (
    "# The paper's grid (every point x seed), rendered from ../dvc.yaml by `make grid`\n"
    "# (python -m semid.paper_grid --write): edit the default pipeline or semid.paper_grid, not this file.\n"
    "# One point: dvc repro 'grid/dvc.yaml:evaluate@multitask-rqvae-s1'\n"
)


def listed_runs(root: Path) -> list[GridRun]:
    """The runs grid/dvc.yaml lists now (none before the first `make grid`)."""
    path = root / GRID_DVC_YAML
    if not path.exists():
        return []
    points = yaml.safe_load(path.read_text())["stages"]["evaluate"]["foreach"]
    return [GridRun(p["embedding"], p["quantizer"], int(p["seed"])) for p in points.values()]


def write_grid_dvc(root: Path, runs: Sequence[GridRun]) -> bool:
    """(Re)write grid/dvc.yaml with ``runs`` and those it lists already (a sitting with fewer seeds
    never drops finished runs from it); True when it changed."""
    runs = list(dict.fromkeys([*listed_runs(root), *runs]))
    root_stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    text = GRID_HEADER + yaml.safe_dump(render_grid_dvc(root_stages, runs), sort_keys=False, width=200)
    path = root / GRID_DVC_YAML
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return True


def _git(root: Path, *args: str, attempts: int = 30) -> subprocess.CompletedProcess:
    """git, waiting out another git process's index.lock (someone committing beside a long sitting)."""
    for _ in range(attempts):
        done = subprocess.run(["git", *args], cwd=root, text=True, capture_output=True)
        if done.returncode == 0 or "index.lock" not in done.stderr:
            return done
        time.sleep(2)
    return done


def run_paths(run: GridRun) -> list[Path]:
    """What a finished run adds to git: the lock, its folders' metrics and DVC's .gitignore files."""
    layout = grid_layout(run.embedding, run.quantizer, run.seed)
    folders = {layout.root(stage) for stage in GRID_STAGES}
    return [GRID_DVC_YAML, GRID_DVC_YAML.with_name("dvc.lock"), *(folder / "metrics" for folder in sorted(folders)),
            *(path for folder in sorted(folders) for path in (folder / "data/.gitignore", folder / ".gitignore",
                                                                folder / "models/.gitignore"))]


def commit_run(root: Path, run: GridRun, seconds: float) -> bool:
    """Commit the run's files alone (other staged work stays staged); False when nothing changed."""
    paths = [str(p) for p in run_paths(run) if (root / p).exists()]
    _git(root, "add", "--", *paths)
    if not _git(root, "diff", "--cached", "--quiet", "--", *paths).returncode:
        return False
    message = f"grid: {run.name} ({seconds / 60:.1f} min; `make grid` commits each finished point)"
    done = _git(root, "commit", "-q", "-m", message, "--", *paths)
    if done.returncode:
        raise SemidError(f"git commit of {run.name} failed: {done.stderr.strip()}")
    return True


def run_sitting(root: Path, runs: Sequence[GridRun], commit: bool = True) -> None:
    """Run (or find up to date) every run in order, committing each as it finishes."""
    if tracking_enabled():
        init_store(root)  # before the first stage: SQLite races when a stage creates it
    for number, run in enumerate(runs, 1):
        started = time.monotonic()
        write_grid_dvc(root, [run])
        # A clone without the DVC cache of the machine that ran a finished point would otherwise
        # redo it (9 min here) only to restore outputs nothing in the grid's table reads.
        if experiments.locked_but_absent(root, run.target):
            print(f"[{number}/{len(runs)}] {run.name}: finished (grid/dvc.lock is current; "
                  f"`dvc repro {run.target}` restores outputs this clone lacks)", flush=True)
            continue
        print(f"[{number}/{len(runs)}] {run.name}: dvc repro {run.target}", flush=True)
        status = experiments.repro(root, run.target)
        if status:
            raise SemidError(f"{run.name} failed (dvc repro exit {status}); `make grid` resumes from it")
        seconds = time.monotonic() - started
        committed = commit and commit_run(root, run, seconds)
        print(f"[{number}/{len(runs)}] {run.name}: {seconds / 60:.1f} min{', committed' if committed else ''}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default=" ".join(map(str, DEFAULT_SEEDS)), help="space-separated seeds")
    parser.add_argument("--embeddings", default=" ".join(EMBEDDING_METHODS), help="only these embedding methods")
    parser.add_argument("--quantizers", default=" ".join(QUANTIZERS), help="only these quantizers")
    parser.add_argument("--write", action="store_true", help="only add the runs to grid/dvc.yaml (run none)")
    parser.add_argument("--dry", action="store_true", help="print the runs in order and exit")
    parser.add_argument("--no-commit", action="store_true", help="leave finished points uncommitted")
    args = parser.parse_args(argv)
    with user_errors_exit():
        seeds = []
        for text in args.seeds.replace(",", " ").split():
            if not text.isdigit():
                raise SemidError(f"seed {text!r} is not valid; give non-negative integers, e.g. SEEDS='1 2 3'")
            seeds.append(int(text))
        runs = grid_runs(seeds, args.embeddings.split(), args.quantizers.split())
        if args.dry:
            print("\n".join(run.name for run in runs))
            return
        root = find_root()
        if args.write:
            write_grid_dvc(root, runs)
            return
        started = time.monotonic()
        run_sitting(root, runs, commit=not args.no_commit)
        print(f"grid sitting done in {(time.monotonic() - started) / 60:.1f} min; `make results` gathers the table")


if __name__ == "__main__":
    main()
