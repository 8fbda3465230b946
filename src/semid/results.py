"""The paper's two tables from the grid committed in main: results/table.md, results/tradeoff.png,
results/quantizers.png.

``make results`` (``python -m semid.results``) reads every finished run under ``grid/runs/``
(semid.grid_results), summarizes each point over its seeds (mean ± sd, 95% interval), runs the paired
tests of the table and decides the paper's three findings (semid.findings), with the prose from
semid/templates/results_findings.md. A fresh clone of main gives the same grid sections. The paper's
numbers come from another setup (ML-25M, Gemini queries, flan-t5-base) and are labelled so; they show
the direction of effects, not a target to match.

The last section lists one-off ``dvc exp run`` experiments (``dvc exp show -A`` through
semid.experiments): they are machine-local and one seed each, so they stay out of the tests.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import yaml

from semid.config import EMBEDDING_METHODS, QUANTIZERS, workspace_root
from semid.experiments import Experiment, ExperimentError, parse_show, show
from semid.findings import (
    DEGENERATE_RQVAE, QUANTIZER_BLOCKS, REFERENCE_QUANTIZER, SINGLE_TASK_REFERENCE, TASKS, Finding,
    comparison_family, decide, lowest_search_quantizer,
)
from semid.grid_results import COLUMN_LABELS, COLUMNS, Comparison, Grid, load_grid, summarize_point
from semid.io import atomic_path
from semid.paper_grid import paper_points
from semid.significance import ALPHA, PointSummary

PAPER_COLUMNS = {"embeddings": ["search", "rec", "rec_head", "rec_torso"], "quantizers": ["search", "rec"]}
TEMPLATE = "results_findings.md"


def load_paper_results() -> dict:
    """semid/reference/paper_results.yaml: the paper's Recall@30 tables and where they come from
    (its ``source``); each table's columns are checked against the order this module reads."""
    text = resources.files("semid").joinpath("reference", "paper_results.yaml").read_text(encoding="utf-8")
    paper = yaml.safe_load(text)
    for table, columns in PAPER_COLUMNS.items():
        rows = paper[table]["rows"]
        if paper[table]["columns"] != columns or any(len(numbers) != len(columns) for numbers in rows.values()):
            raise ValueError(f"paper_results.yaml: table {table!r} must have the columns {columns} in every row")
    return paper


_PAPER = load_paper_results()
PAPER_LABEL: str = _PAPER["label"]
# embedding method -> (search, rec all, rec head, rec torso); None where the paper gives no number.
PAPER_EMBEDDINGS: dict[str, tuple[float | None, float | None, float | None, float | None]] = {
    method: tuple(numbers) for method, numbers in _PAPER["embeddings"]["rows"].items()
}
PAPER_QUANTIZER_EMBEDDING: str = _PAPER["quantizers"]["embedding"]
# quantizer on the paper's multi-task embeddings -> (search, rec)
PAPER_QUANTIZERS: dict[str, tuple[float, float]] = {
    quantizer: tuple(numbers) for quantizer, numbers in _PAPER["quantizers"]["rows"].items()
}
for _ours, _papers in _PAPER["quantizers"].get("same_as", {}).items():
    PAPER_QUANTIZERS[_ours] = PAPER_QUANTIZERS[_papers]

METHOD_LABELS = {
    "content": "content",
    "search": "search-tuned",
    "rec": "rec (ENMF)",
    "separate": "separate",
    "prefix_share": "prefix-share",
    "prefix-share": "prefix-share",
    "concat": "fused concat",
    "svd": "fused SVD",
    "multitask": "multi-task",
    "rqkmeans": "RQ-KMeans",
    "rqvae": "RQ-VAE (fixed recipe)",
    "rqvae_naive": "RQ-VAE (library defaults)",
    "dictlearn": "MiniBatchDictionaryLearning",
    "rlfq": "ResidualLFQ",
}


def _point_key(result: Experiment) -> tuple[str, str, str]:
    return (result.data_label, result.embedding, result.quantizer)


def best_per_point(results: Iterable[Experiment]) -> dict[tuple[str, str, str], Experiment]:
    """One finished one-off result per (data, embedding, quantizer): the newest experiment or commit;
    the workspace only where nothing else covers the point."""
    chosen: dict[tuple[str, str, str], Experiment] = {}
    for result in results:
        if not result.finished:
            continue
        key = _point_key(result)
        current = chosen.get(key)
        if current is None or (current.is_workspace and not result.is_workspace):
            chosen[key] = result
        elif not result.is_workspace and (result.timestamp or "") > (current.timestamp or ""):
            chosen[key] = result
    return chosen


@functools.cache
def _snippets():
    # Deferred: semid.report's package imports this module (the paper's numbers), so a top-level
    # import of its template mechanism would be circular.
    from semid.report.template import parse_snippets

    return parse_snippets(resources.files("semid").joinpath("templates", TEMPLATE).read_text(encoding="utf-8"))


def say(name: str, **fields) -> str:
    """The snippet ``name`` of semid/templates/results_findings.md with its placeholders filled."""
    return _snippets()[name].substitute(fields)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return f"{value:.3g}"


def _name(point: tuple[str, str]) -> str:
    return "/".join(point)


def _cell(summary: PointSummary | None, mark: str) -> str:
    """mean ± sd over seeds [95% interval] and the test's mark; "—" for a point not run."""
    if summary is None:
        return "—"
    spread = f" ± {summary.sd_over_seeds:.3f}" if summary.seeds > 1 else ""
    return f"{summary.mean:.3f}{spread} [{_fmt(summary.ci_low)}, {_fmt(summary.ci_high)}]{mark}"


Tests = dict[tuple[tuple[str, str], tuple[str, str], str], Comparison]


def _mark(tests: Tests, row: tuple[str, str], reference: tuple[str, str], column: str) -> str:
    if row == reference:
        return " ref"
    test = tests.get((row, reference, column))
    if test is None or test.direction == 0:
        return ""
    return " ▲" if test.direction > 0 else " ▼"


def _seeds(runs: dict, grid: Grid) -> str:
    return f"{len(runs)} of {len(grid.seeds)}" if runs else "not run yet"


def _mean_over_seeds(runs: dict, value) -> float | None:
    """Mean of ``value(run)`` over the point's seeds; None where a seed lacks it."""
    values = [value(run) for run in runs.values()]
    return None if not values or any(v is None for v in values) else sum(values) / len(values)


def _ids_metric(run, key: str) -> float | None:
    """An ids.json diagnostic; for `separate` (one table per space) the mean of both spaces."""
    direct = run.metric("ids", key)
    if direct is not None:
        return direct
    values = [v for v in (run.metric("ids", f"{s}_{key}") for s in ("search", "rec")) if v is not None]
    return sum(values) / len(values) if values else None


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(cells: Sequence[str]) -> list[str]:
    return [_row(cells), "|" + " --- |" * len(cells)]


def embedding_table(grid: Grid, tests: Tests) -> list[str]:
    rq = REFERENCE_QUANTIZER
    columns = [COLUMN_LABELS[c] for c in COLUMNS]
    lines = [say("embedding_table"), "", *_header(["embedding", *columns, "seeds", *(f"{c} (paper)" for c in columns)])]
    for method in EMBEDDING_METHODS:
        runs = grid.runs(method, rq)
        cells = [_cell(summarize_point(runs, c), _mark(tests, (method, rq), (SINGLE_TASK_REFERENCE[c], rq), c))
                 for c in COLUMNS]
        paper = PAPER_EMBEDDINGS.get(method.replace("_", "-"), (None,) * len(COLUMNS))
        lines.append(_row([METHOD_LABELS[method], *cells, _seeds(runs, grid), *map(_fmt, paper)]))
    return lines


def quantizer_table(grid: Grid, tests: Tests, embedding: str) -> list[str]:
    with_paper = embedding == PAPER_QUANTIZER_EMBEDDING
    paper_note = "" if with_paper else (
        f" The paper's quantizer table is on {METHOD_LABELS[PAPER_QUANTIZER_EMBEDDING]} embeddings only.")
    header = ["quantizer", "search", "rec", "seeds", "collisions", "usage L1"]
    header += ["search (paper)", "rec (paper)"] if with_paper else []
    lines = [say("quantizer_table", embedding=METHOD_LABELS[embedding], paper_note=paper_note), "", *_header(header)]
    reference = (embedding, REFERENCE_QUANTIZER)
    for quantizer in QUANTIZERS:
        runs = grid.runs(embedding, quantizer)
        cells = [_cell(summarize_point(runs, c), _mark(tests, (embedding, quantizer), reference, c)) for c in TASKS]
        cells += [_seeds(runs, grid), _fmt(_mean_over_seeds(runs, lambda r: _ids_metric(r, "collision_rate"))),
                  _fmt(_mean_over_seeds(runs, lambda r: _ids_metric(r, "codebook_usage_level_1")))]
        if with_paper:
            cells += map(_fmt, PAPER_QUANTIZERS.get(quantizer, (None, None)))
        lines.append(_row([METHOD_LABELS[quantizer], *cells]))
    return lines


def tests_table(family: list[Comparison]) -> list[str]:
    m = sum(c.test is not None for c in family)
    header = ["row", "reference", "column", "seeds", "units", "difference", "t", "p", f"p × {m} (Bonferroni)", "",
              "per seed (seeds agreeing)"]
    lines = [say("tests_table", m=m), "", *_header(header)]
    for c in family:
        head = [_name(c.row), _name(c.reference), COLUMN_LABELS[c.column], ",".join(map(str, c.seeds)) or "—"]
        if c.test is None:
            lines.append(_row([*head, *["—"] * 5, c.problem, "—"]))
            continue
        mark = {1: "▲", -1: "▼", 0: ""}[c.direction]
        lines.append(_row([*head, str(c.test.units), f"{c.test.difference:+.4f}", f"{c.test.t:.2f}", _p(c.test.p),
                           _p(c.p_corrected), mark, _per_seed(c)]))
    return lines


def _per_seed(c: Comparison) -> str:
    differences = ", ".join(f"{d:+.3f}" for d in c.per_seed)
    return f"{differences} ({c.seeds_agreeing} of {len(c.per_seed)})"


def _test_text(c: Comparison) -> str:
    return say("test", row=_name(c.row), reference=_name(c.reference), column=COLUMN_LABELS[c.column],
               difference=f"{c.test.difference:+.3f}", p=_p(c.p_corrected), agreeing=c.seeds_agreeing,
               n=len(c.per_seed))


def render_finding(finding: Finding, grid: Grid) -> str:
    tests = "; ".join(_test_text(c) for c in finding.tests if c.test is not None)
    lowest = lowest_search_quantizer(grid, QUANTIZER_BLOCKS[0])
    reason = say(f"reason{finding.number}.{finding.case}", tests=tests,
                 tested=say("tested", tests=tests) if tests else "",
                 significant=say("significant", tests=tests) if tests else "",
                 missing=say("missing", items="; ".join(finding.missing)) if finding.missing else "",
                 lowest=METHOD_LABELS[lowest] if lowest else "none run")
    return say(f"finding.{finding.number}", verdict=finding.verdict, reason=reason)


def _loss_cells(runs: dict, task: str) -> list[str]:
    """dense, ID ceiling, level-1 ceiling, generator, lost by the IDs, lost by the generator."""
    def mean(name, key):
        return _mean_over_seeds(runs, lambda r: r.metric(name, key))

    dense = mean("id_ceiling", f"{task}_dense_recall_at_30")
    ceiling = mean("id_ceiling", f"{task}_recall_at_30")
    level1, generator = mean("id_ceiling", f"{task}_recall_at_30_level1"), mean(task, "recall_at_30")
    by_ids = dense - ceiling if dense is not None and ceiling is not None else None
    by_generator = ceiling - generator if ceiling is not None and generator is not None else None
    return [_fmt(v) for v in (dense, ceiling, level1, generator, by_ids, by_generator)]


def _finished_points(grid: Grid) -> list[tuple[str, str]]:
    order = {p: i for i, p in enumerate(paper_points())}
    return sorted(grid.points, key=lambda p: (order.get(p, len(order)), p))


def loss_table(grid: Grid) -> list[str]:
    per_task = ["dense", "ceiling", "ceiling L1", "generator", "lost by IDs", "lost by generator"]
    header = ["embedding", "quantizer", "seeds", *(f"{task} {c}" for task in TASKS for c in per_task)]
    lines = [say("loss_table"), "", *_header(header)]
    for point in _finished_points(grid):
        runs = grid.points[point]
        lines.append(_row([*point, _seeds(runs, grid), *_loss_cells(runs, "search"), *_loss_cells(runs, "rec")]))
    return lines


def time_table(grid: Grid) -> list[str]:
    finished = sum(len(r) for r in grid.points.values())
    total = grid.seconds
    lines = [say("time_table", total=f"{total:,.0f} s ({total / 3600:.1f} h)", finished=finished), "",
             *_header(["embedding", "quantizer", "seeds", "embedder s", "quantize + train_t5 + evaluate s", "total s"])]
    for point in _finished_points(grid):
        runs = grid.points[point].values()
        embed, own = sum(r.embed_seconds for r in runs), sum(r.point_seconds for r in runs)
        lines.append(_row([*point, str(len(runs)), f"{embed:,.0f}", f"{own:,.0f}", f"{embed + own:,.0f}"]))
    return lines


def experiments_section(experiments: Sequence[Experiment] | None, problem: str = "") -> list[str]:
    points = best_per_point(experiments or [])
    if not points:
        return [say("experiments"), "", say("no_experiments", reason=problem or "none finished")]
    header = ["data", "embedding", "quantizer", "search R@10", "search R@30", "rec R@10", "rec R@30",
              "BM25 search R@30", "popularity rec R@30", "generator epochs", "experiment"]
    lines = [say("experiments"), "", *_header(header)]
    for (data, embedding, quantizer), result in sorted(points.items()):
        lines.append(
            f"| {data} | {embedding} | {quantizer} | {_fmt(result.metric('search', 'recall_at_10'))} "
            f"| {_fmt(result.metric('search', 'recall_at_30'))} | {_fmt(result.metric('rec', 'recall_at_10'))} "
            f"| {_fmt(result.metric('rec', 'recall_at_30'))} "
            f"| {_fmt(result.metric('baselines', 'bm25_search_recall_at_30'))} "
            f"| {_fmt(result.metric('baselines', 'popularity_rec_recall_at_30'))} "
            f"| {_fmt(result.metric('train_t5', 'epochs_done'), 2)} | `{result.name}` |"
        )
    return lines


def render_table(grid: Grid, experiments: Sequence[Experiment] | None = None, experiments_problem: str = "") -> str:
    """results/table.md: findings, the paper's two tables with its numbers beside ours, every test,
    where the recall is lost, wall time, and the one-off experiments."""
    family = comparison_family(grid)
    tests: Tests = {(c.row, c.reference, c.column): c for c in family}
    m = sum(c.test is not None for c in family)
    finished = sum(len(r) for r in grid.points.values())
    out = [say("header", finished=finished, planned=len(paper_points()) * len(grid.seeds),
               seeds=", ".join(map(str, grid.seeds)), paper_label=PAPER_LABEL), ""]
    findings = "\n".join(render_finding(f, grid) for f in decide(grid, family))
    out += [say("findings", findings=findings), ""]
    out += embedding_table(grid, tests) + [""]
    for embedding in QUANTIZER_BLOCKS:
        out += quantizer_table(grid, tests, embedding) + [""]
    out += [say("legend", m=m, planned_seeds=len(grid.seeds), alpha=ALPHA, rules=say("rules")), ""]
    out += tests_table(family) + [""]
    out += loss_table(grid) + [""]
    out += time_table(grid) + [""]
    out += experiments_section(experiments, experiments_problem)
    return "\n".join(out) + "\n"


def _plt():
    # Deferred (~0.5 s): the table alone, as the tests and `semid.results` imports need it, plots nothing.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _errorbar(summary: PointSummary) -> float | list[list[float]]:
    if math.isnan(summary.ci_low):
        return 0.0
    return [[summary.mean - summary.ci_low], [summary.ci_high - summary.mean]]


def plot_tradeoff(grid: Grid, path: Path) -> None:
    """Search vs rec Recall@30 per grid point with 95% intervals, beside the paper's embedding methods."""
    plt = _plt()
    fig, (ours_ax, paper_ax) = plt.subplots(1, 2, figsize=(11, 4.6))
    markers = dict(zip(QUANTIZERS, "os^Dv"))
    colours = dict(zip(EMBEDDING_METHODS, plt.get_cmap("tab10").colors))
    colours["prefix-share"] = colours["prefix_share"]  # the paper's spelling
    for embedding, quantizer in _finished_points(grid):
        runs = grid.runs(embedding, quantizer)
        search, rec = summarize_point(runs, "search"), summarize_point(runs, "rec")
        if search is None or rec is None:
            continue
        ours_ax.errorbar(search.mean, rec.mean, xerr=_errorbar(search), yerr=_errorbar(rec),
                         fmt=markers[quantizer], color=colours[embedding], ms=6, capsize=2, lw=0.8)
        ours_ax.annotate(f"{embedding}/{quantizer}", (search.mean, rec.mean), fontsize=7, xytext=(4, 3),
                         textcoords="offset points")
    ours_ax.set_title(f"ours: grid, mean over seeds, 95% intervals ({len(grid.points)} points)", fontsize=9)
    for method, (search, rec, _, _) in PAPER_EMBEDDINGS.items():
        paper_ax.scatter(search, rec, marker="o", facecolors="none", edgecolors=colours[method], s=60)
        paper_ax.annotate(METHOD_LABELS[method], (search, rec), fontsize=7, xytext=(4, 3),
                          textcoords="offset points")
    paper_ax.set_title(f"{PAPER_LABEL} (RQ-KMeans IDs)", fontsize=9)
    for ax in (ours_ax, paper_ax):
        ax.set_xlabel("search Recall@30")
        ax.set_ylabel("rec Recall@30")
        ax.grid(alpha=0.3)
    fig.suptitle("Search vs recommendation trade-off per grid point")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def plot_quantizers(grid: Grid, path: Path) -> None:
    """Search and rec Recall@30 per quantizer with 95% intervals, one panel per embedding of the table."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(QUANTIZER_BLOCKS), figsize=(11, 4.2), sharey=True)
    positions = np.arange(len(QUANTIZERS))
    width = 0.38
    for ax, embedding in zip(axes, QUANTIZER_BLOCKS):
        for offset, column, colour in ((-width / 2, "search", "tab:blue"), (width / 2, "rec", "tab:orange")):
            summaries = [summarize_point(grid.runs(embedding, q), column) for q in QUANTIZERS]
            means = [s.mean if s else math.nan for s in summaries]  # nan: no bar, no error bar
            low = [s.mean - s.ci_low if s and not math.isnan(s.ci_low) else 0.0 for s in summaries]
            high = [s.ci_high - s.mean if s and not math.isnan(s.ci_high) else 0.0 for s in summaries]
            ax.bar(positions + offset, means, width, yerr=[low, high], capsize=3, color=colour, label=column)
        labels = [q if grid.runs(embedding, q) else f"{q}\n(not run)" for q in QUANTIZERS]
        ax.set_xticks(positions, labels, rotation=20)
        ax.set_xlim(-0.6, len(QUANTIZERS) - 0.4)  # keep the slots of points not run
        ax.set_title(f"{METHOD_LABELS[embedding]} embeddings", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("Recall@30 (mean over seeds, 95% interval)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Quantizers: search and rec Recall@30 ({DEGENERATE_RQVAE}: RQ-VAE with library defaults)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def write_results(grid: Grid, out_dir: Path, experiments: Sequence[Experiment] | None = None,
                  experiments_problem: str = "") -> None:
    """Write table.md, tradeoff.png and quantizers.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "table.md") as tmp:
        tmp.write_text(render_table(grid, experiments, experiments_problem))
    for name, plot in (("tradeoff.png", plot_tradeoff), ("quantizers.png", plot_quantizers)):
        with atomic_path(out_dir / name) as tmp:
            plot(grid, tmp)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="the project (default: the one around the current folder)")
    parser.add_argument("--exp-show-json", type=Path, help="a saved `dvc exp show --json` (default: run it)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    if args.root is not None and not args.root.is_dir():
        parser.error(f"--root {args.root} is not a folder; give the project's folder (the one with grid/runs)")
    if args.exp_show_json is not None and not args.exp_show_json.is_file():
        parser.error(f"--exp-show-json {args.exp_show_json} is not a file; give a saved `dvc exp show --json`")
    root = (args.root or workspace_root()).resolve()
    grid = load_grid(root)
    experiments, problem = None, ""
    try:
        if args.exp_show_json:
            experiments = parse_show(json.loads(args.exp_show_json.read_text()))
        else:
            experiments = show(root, all_commits=True)
    except ExperimentError as error:  # no DVC repo, or DVC cannot read it: the grid tables still stand
        problem = str(error).splitlines()[0] if str(error) else type(error).__name__
    out = args.out if args.out.is_absolute() else root / args.out
    write_results(grid, out, experiments, problem)
    finished = sum(len(r) for r in grid.points.values())
    print(f"{len(grid.points)} grid point(s), {finished} run(s) -> {out / 'table.md'}, {out / 'tradeoff.png'}, "
          f"{out / 'quantizers.png'}")


if __name__ == "__main__":
    main()
