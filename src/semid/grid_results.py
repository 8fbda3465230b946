"""The grid's finished runs as committed in main (``grid/runs/``), and their statistics.

Each finished point x seed has ``grid/runs/<embedding>-<quantizer>-s<seed>/metrics/`` (the files the
default pipeline writes in ``metrics/``, plus ``hit_ranks.csv``: the generator's rank of every test
query's and user's target); the embedder's own metrics sit in ``grid/runs/embed/<embedding>-s<seed>``.
A run counts as finished when its evaluate outputs (search.json, rec.json, hit_ranks.csv) are there;
a point may have fewer seeds than the grid, or none.

Every cell of ``make results`` is a :class:`semid.significance.PointSummary` of a point's per-unit hits
at k = 30 over its seeds, and every comparison a paired t-test over the seeds both rows have.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from semid.artifacts import GRID_RUNS, grid_embedding_name, grid_run_name
from semid.config import EMBEDDING_METHODS, QUANTIZERS
from semid.paper_grid import DEFAULT_SEEDS
from semid.significance import (
    ALPHA, PairedTest, PointSummary, SignificanceError, bonferroni, hits_at_k, paired_t_test, pool_seeds,
    summarize,
)

K = 30
# column -> (task, segment); the segment restricts rec users to those whose target is a head / torso item.
COLUMNS: dict[str, tuple[str, str | None]] = {
    "search": ("search", None),
    "rec": ("rec", None),
    "rec_head": ("rec", "head"),
    "rec_torso": ("rec", "torso"),
}
COLUMN_LABELS = {"search": "search", "rec": "rec", "rec_head": "rec head", "rec_torso": "rec torso"}
EVALUATE_FILES = ("search.json", "rec.json", "hit_ranks.csv")


@dataclass(frozen=True)
class SeedRun:
    """One finished point x seed: its metrics files (by stem) and per-unit hit ranks."""

    embedding: str
    quantizer: str
    seed: int
    metrics: dict[str, dict]
    embed_metrics: dict  # the embedder's embed.json ({} when absent: content has no fine-tune of its own)
    hit_ranks: pd.DataFrame = field(repr=False)

    def hits(self, column: str) -> pd.Series:
        """1/0 per unit (query id or user id) for the target within the top K, for one table column."""
        task, segment = COLUMNS[column]
        rows = self.hit_ranks[self.hit_ranks["task"] == task]
        if segment is not None:
            rows = rows[rows["segment"] == segment]
        return hits_at_k(rows.set_index("unit")["hit_rank"], K)

    def metric(self, name: str, key: str) -> float | None:
        value = self.metrics.get(name, {}).get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @cached_property
    def point_seconds(self) -> float:
        """Wall time of the point's own stages (quantize, train_t5, evaluate's decoding): the keys ending
        in ``seconds`` (never the ``per_second`` rates), and evaluate's decoding as examples / inputs per
        second (evaluate writes no duration)."""
        total = 0.0
        for name in ("ids", "train_t5"):
            values = self.metrics.get(name, {}).items()
            total += sum(v for k, v in values if k.endswith("seconds") and _number(v))
        for task in ("search", "rec"):
            examples, rate = self.metric(task, "examples"), self.metric(task, "inputs_per_second")
            if examples and rate:
                total += examples / rate
        return total

    @property
    def embed_seconds(self) -> float:
        """The embedder's total (its ``seconds`` includes the encode time it also reports)."""
        value = self.embed_metrics.get("seconds")
        return float(value) if _number(value) else 0.0


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def load_run(folder: Path, embedding: str, quantizer: str, seed: int, runs: Path) -> SeedRun:
    metrics_dir = folder / "metrics"
    metrics = {p.stem: _read_json(p) for p in sorted(metrics_dir.glob("*.json"))}
    ranks = pd.read_csv(metrics_dir / "hit_ranks.csv", dtype={"task": str, "unit": str, "segment": str},
                        keep_default_na=False, na_values={"hit_rank": [""]})
    embed = _read_json(runs / "embed" / grid_embedding_name(embedding, seed) / "metrics" / "embed.json")
    return SeedRun(embedding, quantizer, seed, metrics, embed, ranks)


@dataclass(frozen=True)
class Grid:
    """Every finished run under ``grid/runs``, by point, and the seeds the grid has."""

    points: dict[tuple[str, str], dict[int, SeedRun]]
    seeds: tuple[int, ...]  # every seed some point has finished, at least the grid's default ones

    def runs(self, embedding: str, quantizer: str) -> dict[int, SeedRun]:
        return self.points.get((embedding, quantizer), {})

    @property
    def seconds(self) -> float:
        """The whole grid: each point's own stages, plus each embedder run once (shared by its quantizers)."""
        embedders: dict[tuple[str, int], float] = {}
        total = 0.0
        for runs in self.points.values():
            for run in runs.values():
                total += run.point_seconds
                embedders[(run.embedding, run.seed)] = run.embed_seconds
        return total + sum(embedders.values())


def load_grid(root: Path, default_seeds: tuple[int, ...] = DEFAULT_SEEDS) -> Grid:
    """Every finished run under ``root/grid/runs`` (folders named otherwise, or without evaluate's
    outputs, are skipped: a run still going or cut short is not a result)."""
    runs_dir = root / GRID_RUNS
    points: dict[tuple[str, str], dict[int, SeedRun]] = {}
    for embedding in EMBEDDING_METHODS:
        for quantizer in QUANTIZERS:
            prefix = grid_run_name(embedding, quantizer, "")
            for folder in sorted(runs_dir.glob(f"{prefix}*")):
                seed = folder.name.removeprefix(prefix)
                if not seed.isdigit() or not all((folder / "metrics" / n).exists() for n in EVALUATE_FILES):
                    continue
                run = load_run(folder, embedding, quantizer, int(seed), runs_dir)
                points.setdefault((embedding, quantizer), {})[int(seed)] = run
    seeds = set(default_seeds) | {s for runs in points.values() for s in runs}
    return Grid(points, tuple(sorted(seeds)))


def summarize_point(runs: dict[int, SeedRun], column: str) -> PointSummary | None:
    """A point's cell: mean, sd over seeds and 95% interval of its per-unit hits (None: no seed, or
    no unit in the column, e.g. no head user)."""
    per_seed = [runs[s].hits(column) for s in sorted(runs)]
    if not per_seed or not len(per_seed[0]):
        return None
    try:
        return summarize(per_seed)
    except SignificanceError as error:  # seeds scored on different units: say which point, stop
        run = next(iter(runs.values()))
        raise SignificanceError(f"grid point {run.embedding}/{run.quantizer}, {column}: {error}") from error


@dataclass(frozen=True)
class Comparison:
    """One row against its reference row on one column: a paired t-test on the seeds both have."""

    row: tuple[str, str]  # (embedding, quantizer)
    reference: tuple[str, str]
    column: str
    seeds: tuple[int, ...]
    test: PairedTest | None  # None: not computable, see `problem`
    problem: str = ""
    p_corrected: float = math.nan
    not_run: tuple[tuple[str, str], ...] = ()  # the rows (of row, reference) with no finished seed
    # Row minus reference in each seed alone. The pooled test treats the seeds' units as its sample and
    # does not model seed-to-seed variance; these show whether a difference holds in every seed.
    per_seed: tuple[float, ...] = ()

    @property
    def significant(self) -> bool:
        return self.test is not None and self.p_corrected < ALPHA

    @property
    def seeds_agreeing(self) -> int:
        """How many seeds alone differ in the pooled difference's direction (0 when there is none)."""
        if self.test is None or self.test.difference == 0:
            return 0
        return sum(math.copysign(1, d) == math.copysign(1, self.test.difference) for d in self.per_seed if d != 0)

    @property
    def direction(self) -> int:
        """+1 where the row is significantly above its reference, -1 below, 0 otherwise."""
        if not self.significant:
            return 0
        return 1 if self.test.difference > 0 else -1



def compare(grid: Grid, row: tuple[str, str], reference: tuple[str, str], column: str) -> Comparison:
    """The paired test of ``row`` against ``reference`` (both (embedding, quantizer)) over the seeds both
    have finished; a missing row or seed, or units that differ, give a Comparison without a test."""
    mine, theirs = grid.runs(*row), grid.runs(*reference)
    seeds = tuple(sorted(set(mine) & set(theirs)))
    if not mine or not theirs:
        not_run = tuple(point for point, runs in ((row, mine), (reference, theirs)) if not runs)
        problem = " and ".join("/".join(point) for point in not_run) + " not run yet"
        return Comparison(row, reference, column, seeds, None, problem, not_run=not_run)
    if not seeds:
        return Comparison(row, reference, column, seeds, None, "no seed finished by both")
    try:
        pooled = [pool_seeds([runs[s].hits(column) for s in seeds]) for runs in (mine, theirs)]
        per_seed = tuple(float(mine[s].hits(column).mean() - theirs[s].hits(column).mean()) for s in seeds)
        return Comparison(row, reference, column, seeds, paired_t_test(*pooled), per_seed=per_seed)
    except SignificanceError as error:
        return Comparison(row, reference, column, seeds, None, str(error))


def correct(comparisons: list[Comparison]) -> list[Comparison]:
    """Bonferroni over every comparison that has a test (the family the table reports)."""
    tested = [c for c in comparisons if c.test is not None]
    corrected = iter(bonferroni([c.test.p for c in tested]))
    return [
        dataclasses.replace(c, p_corrected=next(corrected)) if c.test else c
        for c in comparisons
    ]
