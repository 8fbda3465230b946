"""The paper's three findings, decided from the grid's paired tests: the family of comparisons that
``make results`` reports and corrects together, and the decision rules (the one place they live; the
legend of results/table.md states them in words, from semid/templates/results_findings.md).

The findings (Penha et al. 2025): (1) single-task IDs are best on their own task and degrade the other
badly; (2) among multi-task methods the multi-task bi-encoder is best; (3) among quantizers RQ-KMeans
is the clear winner and RQ-VAE is degenerate, especially for search.
"""

from __future__ import annotations

from dataclasses import dataclass

from semid.config import EMBEDDING_METHODS, QUANTIZERS
from semid.grid_results import COLUMNS, Comparison, Grid, compare, correct, summarize_point

REFERENCE_QUANTIZER = "rqkmeans"  # the quantizer of the paper's embedding table
# column -> the single-task embedding each row of the embedding table is tested against
SINGLE_TASK_REFERENCE = {"search": "search", "rec": "rec", "rec_head": "rec", "rec_torso": "rec"}
MULTITASK = "multitask"
OTHER_MULTI_TASK_METHODS = ("concat", "svd", "separate", "prefix_share")
QUANTIZER_BLOCKS = ("multitask", "content")  # the quantizer table's embeddings; finding 3 rests on the first
TASKS = ("search", "rec")
# The paper's "RQ-VAE" gives no recipe; ours with the library's defaults is the one it describes.
DEGENERATE_RQVAE = "rqvae_naive"

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"


def comparison_family(grid: Grid) -> list[Comparison]:
    """Every paired test of the table, Bonferroni-corrected together: each embedding against the
    single-task embedding of the column's task (RQ-KMeans IDs), each quantizer against RQ-KMeans on
    the same embedding, and the multi-task bi-encoder against each other multi-task method."""
    rq = REFERENCE_QUANTIZER
    family = []
    for embedding in EMBEDDING_METHODS:
        for column in COLUMNS:
            reference = SINGLE_TASK_REFERENCE[column]
            if embedding != reference:
                family.append(compare(grid, (embedding, rq), (reference, rq), column))
    for embedding in QUANTIZER_BLOCKS:
        for quantizer in QUANTIZERS:
            if quantizer != rq:
                family += [compare(grid, (embedding, quantizer), (embedding, rq), c) for c in TASKS]
    for other in OTHER_MULTI_TASK_METHODS:
        family += [compare(grid, (MULTITASK, rq), (other, rq), c) for c in TASKS]
    return correct(family)


@dataclass(frozen=True)
class Finding:
    number: int
    verdict: str
    tests: tuple[Comparison, ...]  # the tests that decide it
    missing: tuple[str, ...] = ()  # the points not run yet (or tests not computable) it still needs
    why: str = ""  # names the reason where one verdict has several (finding 3's "not_lowest")

    @property
    def case(self) -> str:
        """The reason's snippet: the verdict, or "missing" where it is inconclusive for want of runs."""
        if self.why:
            return self.why
        return "missing" if self.verdict == INCONCLUSIVE and self.missing else self.verdict.replace(" ", "_")


Point = tuple[str, str]


def _find(family: list[Comparison], row: Point, reference: Point, column: str) -> Comparison:
    return next(c for c in family if (c.row, c.reference, c.column) == (row, reference, column))


def _missing(tests: list[Comparison]) -> tuple[str, ...]:
    """The points not run yet that ``tests`` need, then the tests that failed for another reason."""
    points = ["/".join(point) for c in tests for point in c.not_run]
    other = [f"{'/'.join(c.row)} vs {'/'.join(c.reference)} on {c.column}: {c.problem}"
             for c in tests if c.test is None and not c.not_run]
    return tuple(dict.fromkeys([*points, *other]))


def finding_single_task(family: list[Comparison]) -> Finding:
    """(1) Not reproduced when some embedding is significantly better than a single-task embedding on
    that embedding's own task (search column vs `search`, rec column vs `rec`); else inconclusive while
    a test is missing; reproduced when each single-task embedding is significantly worse than the other
    one on the other's task (rec IDs on search, search IDs on rec); else inconclusive."""
    rq = REFERENCE_QUANTIZER
    own = [c for c in family if c.row[1] == rq and c.reference == (SINGLE_TASK_REFERENCE.get(c.column), rq)
           and c.column in TASKS]
    beaten = [c for c in own if c.direction > 0]
    cross = [_find(family, ("rec", rq), ("search", rq), "search"),
             _find(family, ("search", rq), ("rec", rq), "rec")]
    if beaten:
        return Finding(1, NOT_REPRODUCED, tuple(beaten))
    if _missing(own):
        return Finding(1, INCONCLUSIVE, tuple(c for c in own if c.significant), _missing(own))
    if all(c.direction < 0 for c in cross):
        return Finding(1, REPRODUCED, tuple(cross))
    return Finding(1, INCONCLUSIVE, tuple(cross))


def finding_multitask_best(family: list[Comparison]) -> Finding:
    """(2) Per other multi-task method, the multi-task bi-encoder wins when it is significantly better on
    search or rec and significantly worse on neither, and loses the other way round. Not reproduced when
    it loses to one; else inconclusive while a test is missing; reproduced when it wins against all four;
    else inconclusive."""
    rq = REFERENCE_QUANTIZER
    pairs = {other: [_find(family, (MULTITASK, rq), (other, rq), c) for c in TASKS]
             for other in OTHER_MULTI_TASK_METHODS}
    directions = {other: {c.direction for c in tests} for other, tests in pairs.items()}
    wins = [other for other, d in directions.items() if 1 in d and -1 not in d]
    losses = [other for other, d in directions.items() if -1 in d and 1 not in d]
    if losses:
        return Finding(2, NOT_REPRODUCED, tuple(c for other in losses for c in pairs[other] if c.direction < 0))
    everything = [c for tests in pairs.values() for c in tests]
    if _missing(everything):
        return Finding(2, INCONCLUSIVE, tuple(c for c in everything if c.significant), _missing(everything))
    if len(wins) == len(pairs):
        return Finding(2, REPRODUCED, tuple(everything))
    undecided = [c for other, tests in pairs.items() if other not in wins for c in tests]
    return Finding(2, INCONCLUSIVE, tuple(undecided))


def finding_quantizers(family: list[Comparison], grid: Grid) -> Finding:
    """(3) On multi-task embeddings: not reproduced when some quantizer is significantly better than
    RQ-KMeans on search or rec; else inconclusive while a test is missing; reproduced when RQ-KMeans is
    significantly better than every other quantizer on both tasks and RQ-VAE with the library's
    defaults has the lowest search Recall@30 of all; else inconclusive."""
    embedding = QUANTIZER_BLOCKS[0]
    tests = [c for c in family if c.row[0] == embedding and c.reference == (embedding, REFERENCE_QUANTIZER)]
    better = [c for c in tests if c.direction > 0]
    if better:
        return Finding(3, NOT_REPRODUCED, tuple(better))
    if _missing(tests):
        return Finding(3, INCONCLUSIVE, tuple(c for c in tests if c.significant), _missing(tests))
    if not all(c.direction < 0 for c in tests):
        return Finding(3, INCONCLUSIVE, tuple(c for c in tests if c.direction == 0))
    if lowest_search_quantizer(grid, embedding) != DEGENERATE_RQVAE:
        naive_search = (c for c in tests if c.row[1] == DEGENERATE_RQVAE and c.column == "search")
        return Finding(3, INCONCLUSIVE, tuple(naive_search), why="not_lowest")
    return Finding(3, REPRODUCED, tuple(tests))


def lowest_search_quantizer(grid: Grid, embedding: str) -> str | None:
    summaries = {q: summarize_point(grid.runs(embedding, q), "search") for q in QUANTIZERS}
    means = {q: s.mean for q, s in summaries.items() if s is not None}
    return min(means, key=means.get) if means else None


def decide(grid: Grid, family: list[Comparison]) -> list[Finding]:
    return [finding_single_task(family), finding_multitask_best(family), finding_quantizers(family, grid)]
