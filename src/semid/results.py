"""Every experiment side by side: results/table.md, results/tradeoff.png, results/quantizers.png.

``make results`` (``python -m semid.results``) reads ``dvc exp show --json -A`` through
semid.experiments (every experiment of every commit DVC lists, plus the workspace, each with its
params as the stages see them) and lays out the paper's two tables: embedding methods (with
RQ-KMeans IDs) and quantizers on one embedding, with the paper's numbers beside ours.
The paper's numbers come from another setup (ML-25M, Gemini queries, flan-t5-base) and are
labelled so; they show the direction of effects, not a target to match.

Per grid point the newest experiment wins; the workspace fills points no experiment covers.
Runs whose data or other settings differ are kept apart by the "data" column.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import yaml

from semid.config import EMBEDDING_METHODS, QUANTIZERS, workspace_root
from semid.experiments import Experiment, parse_show, show
from semid.io import atomic_path

PAPER_COLUMNS = {"embeddings": ["search", "rec", "rec_head", "rec_torso"], "quantizers": ["search", "rec"]}


def load_paper_results() -> dict:
    """semid/reference/paper_results.yaml: the paper's Recall@30 tables and where they come from
    (its ``source``); each table's columns are checked against the order this module reads."""
    paper = yaml.safe_load(resources.files("semid").joinpath("reference", "paper_results.yaml").read_text(encoding="utf-8"))
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
REFERENCE_QUANTIZER = "rqkmeans"  # the quantizer of the paper's embedding table


def _point_key(result: Experiment) -> tuple[str, str, str]:
    return (result.data_label, result.embedding, result.quantizer)


def best_per_point(results: Iterable[Experiment]) -> dict[tuple[str, str, str], Experiment]:
    """One finished result per (data, embedding, quantizer): the newest experiment or commit; the
    workspace only where nothing else covers the point."""
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


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _data_groups(points: dict[tuple[str, str, str], Experiment]) -> list[str]:
    counts: dict[str, int] = {}
    for data, _, _ in points:
        counts[data] = counts.get(data, 0) + 1
    return sorted(counts, key=lambda d: -counts[d])


def quantizer_table_embedding(points: dict[tuple[str, str, str], Experiment], data: str) -> str | None:
    """The embedding with the most quantizers finished (the paper's multi-task one wins ties)."""
    counts: dict[str, int] = {}
    for d, embedding, _ in points:
        if d == data:
            counts[embedding] = counts.get(embedding, 0) + 1
    if not counts:
        return None
    return max(counts, key=lambda e: (counts[e], e == PAPER_QUANTIZER_EMBEDDING, e == "content"))


def _ids_metric(result: Experiment, key: str) -> float | None:
    """An ids.json diagnostic; for `separate` (one table per space) the mean of both spaces."""
    direct = result.metric("ids", key)
    if direct is not None:
        return direct
    values = [v for v in (result.metric("ids", f"{s}_{key}") for s in ("search", "rec")) if v is not None]
    return sum(values) / len(values) if values else None


def _point_cells(ours: "Experiment | None", values) -> list[str]:
    """Four formatted metric cells and the experiment's name, or dashes and "not run"."""
    if ours is None:
        return ["—"] * 4 + ["not run"]
    return [*map(_fmt, values(ours)), f"`{ours.name}`"]


def embedding_table(points: dict, data: str) -> list[str]:
    lines = [
        f"#### Embedding methods ({METHOD_LABELS[REFERENCE_QUANTIZER]} IDs), Recall@30 — ours on {data}",
        "",
        "| embedding | search | rec | rec head | rec torso | experiment "
        f"| search ({PAPER_LABEL}) | rec (paper) | rec head (paper) | rec torso (paper) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    # The paper spells our prefix_share "prefix-share": one row for both.
    methods = [*EMBEDDING_METHODS, *[m for m in PAPER_EMBEDDINGS if m.replace("-", "_") not in EMBEDDING_METHODS]]
    for method in methods:
        ours = points.get((data, method, REFERENCE_QUANTIZER))
        paper = PAPER_EMBEDDINGS.get(method.replace("_", "-"), PAPER_EMBEDDINGS.get(method, (None,) * 4))
        if ours is None and all(v is None for v in paper):
            continue
        cells = _point_cells(ours, lambda r: [r.metric("search", "recall_at_30"), r.metric("rec", "recall_at_30"),
                                              r.metric("rec", "recall_at_30_head"),
                                              r.metric("rec", "recall_at_30_torso")])
        if method == "prefix-share" and ours is None:
            cells[-1] = "not in semid's grid"
        lines.append(f"| {METHOD_LABELS[method]} | " + " | ".join([*cells, *map(_fmt, paper)]) + " |")
    return lines


def quantizer_table(points: dict, data: str) -> list[str]:
    embedding = quantizer_table_embedding(points, data)
    if embedding is None:
        return []
    note = "" if embedding == PAPER_QUANTIZER_EMBEDDING else f" (the paper's are on {METHOD_LABELS[PAPER_QUANTIZER_EMBEDDING]})"
    lines = [
        f"#### Quantizers on {METHOD_LABELS[embedding]} embeddings, Recall@30 — ours on {data}{note}",
        "",
        "| quantizer | search | rec | collisions | usage L1 | experiment | search (paper) | rec (paper) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for quantizer in QUANTIZERS:
        ours = points.get((data, embedding, quantizer))
        paper = PAPER_QUANTIZERS.get(quantizer, (None, None))
        if ours is None and paper == (None, None):
            continue
        cells = _point_cells(ours, lambda r: [r.metric("search", "recall_at_30"), r.metric("rec", "recall_at_30"),
                                              _ids_metric(r, "collision_rate"), _ids_metric(r, "codebook_usage_level_1")])
        lines.append(f"| {METHOD_LABELS[quantizer]} | " + " | ".join([*cells, *map(_fmt, paper)]) + " |")
    return lines


def all_points_table(points: dict) -> list[str]:
    lines = [
        "#### Every finished grid point",
        "",
        "| data | embedding | quantizer | search R@10 | search R@30 | rec R@10 | rec R@30 | BM25 search R@30 "
        "| popularity rec R@30 | generator epochs | experiment |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
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


def _loss_cells(result: Experiment, task: str) -> list[str]:
    """dense, ID ceiling, level-1 ceiling, generator, lost by the IDs, lost by the generator."""
    dense = result.metric("id_ceiling", f"{task}_dense_recall_at_30")
    ceiling = result.metric("id_ceiling", f"{task}_recall_at_30")
    level1 = result.metric("id_ceiling", f"{task}_recall_at_30_level1")
    generator = result.metric(task, "recall_at_30")
    by_ids = dense - ceiling if dense is not None and ceiling is not None else None
    by_generator = ceiling - generator if ceiling is not None and generator is not None else None
    return [_fmt(v) for v in (dense, ceiling, level1, generator, by_ids, by_generator)]


def loss_table(points: dict) -> list[str]:
    """Where each point's Recall@30 is lost: dense − ceiling by the IDs, ceiling − generator by the generator."""
    lines = [
        "#### Where the recall is lost (Recall@30)",
        "",
        "\"ceiling\": the best any generator could do with the point's IDs — the dense ranking (the run's "
        "query encoder; rec: mean of the history's item vectors) written as IDs without the "
        "de-duplication level, each shared ID's items in an unknown order (expected recall); \"L1\": the "
        "first level alone. \"lost by IDs\" = dense − ceiling, \"lost by generator\" = ceiling − generator "
        "(metrics/id_ceiling.json; — where the experiment predates it). The ceiling bounds a generator that "
        "reproduces the dense ranking, not every generator: \"lost by generator\" is negative where the trained "
        "generator ranks better than the dense kNN (rec with content embeddings, for one).",
        "",
        "| data | embedding | quantizer | search dense | search ceiling | search ceiling L1 | search generator "
        "| search lost by IDs | search lost by generator | rec dense | rec ceiling | rec ceiling L1 "
        "| rec generator | rec lost by IDs | rec lost by generator | experiment |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (data, embedding, quantizer), result in sorted(points.items()):
        cells = [*_loss_cells(result, "search"), *_loss_cells(result, "rec")]
        lines.append(f"| {data} | {embedding} | {quantizer} | " + " | ".join(cells) + f" | `{result.name}` |")
    return lines


def render_table(points: dict) -> str:
    """results/table.md: per data setting, the paper's two tables with its numbers beside ours."""
    out = [
        "# semid results",
        "",
        "Generated by `make results` from `dvc exp show` (every experiment plus the workspace). "
        f"Columns marked *paper* are Penha et al. 2025 ({PAPER_LABEL}): they show the direction "
        "of effects, not numbers to match. Our search numbers use the offline template queries "
        "unless the data column says otherwise. \"generator epochs\": how far train_t5 got in its budget; "
        "the embedded default's 7-minute CPU budget (~1.7 epochs) leaves the generator far from converged "
        "for search (README, train_t5: \"How much of the CPU generator's weakness is budget\").",
        "",
    ]
    if not points:
        out.append("No finished experiment yet: run `make grid` (or `dvc repro`), then `make results`.")
        return "\n".join(out) + "\n"
    for data in _data_groups(points):
        out += [f"## {data}", ""]
        out += embedding_table(points, data) + [""]
        out += quantizer_table(points, data) + [""]
    out += all_points_table(points) + [""]
    out += loss_table(points)
    return "\n".join(out) + "\n"


def plot_tradeoff(points: dict, path: Path) -> None:
    """Search vs rec Recall@30 per grid point (ours), beside the paper's embedding methods."""
    # Deferred (~0.5 s): the table alone, as the tests and `semid.results` imports need it, plots nothing.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ours_ax, paper_ax) = plt.subplots(1, 2, figsize=(11, 4.6))
    markers = dict(zip(QUANTIZERS, "os^Dv"))
    colours = dict(zip([*EMBEDDING_METHODS, "prefix-share"], plt.get_cmap("tab10").colors))
    data = _data_groups(points)[0] if points else None
    for (d, embedding, quantizer), result in sorted(points.items()):
        if d != data:
            continue
        x, y = result.metric("search", "recall_at_30"), result.metric("rec", "recall_at_30")
        ours_ax.scatter(x, y, marker=markers[quantizer], color=colours[embedding], s=60)
        ours_ax.annotate(f"{embedding}/{quantizer}", (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ours_ax.set_title(f"ours: {data or 'no finished experiment'}", fontsize=9)
    for method, (search, rec, _, _) in PAPER_EMBEDDINGS.items():
        paper_ax.scatter(search, rec, marker="o", facecolors="none", edgecolors=colours[method], s=60)
        paper_ax.annotate(METHOD_LABELS[method], (search, rec), fontsize=7, xytext=(4, 3), textcoords="offset points")
    paper_ax.set_title(f"{PAPER_LABEL} (RQ-KMeans IDs)", fontsize=9)
    for ax in (ours_ax, paper_ax):
        ax.set_xlabel("search Recall@30")
        ax.set_ylabel("rec Recall@30")
        ax.grid(alpha=0.3)
    fig.suptitle("Search vs recommendation trade-off per embedding method")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def plot_quantizers(points: dict, path: Path) -> None:
    """Per-level code usage and collision rate per quantizer (from metrics/ids.json)."""
    # Deferred (~0.5 s): the table alone, as the tests and `semid.results` imports need it, plots nothing.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = _data_groups(points)[0] if points else None
    embedding = quantizer_table_embedding(points, data) if data else None
    rows = [(q, points[(data, embedding, q)]) for q in QUANTIZERS if (data, embedding, q) in points]
    levels = 0
    for _, result in rows:
        while _ids_metric(result, f"codebook_usage_level_{levels + 1}") is not None:
            levels += 1
    fig, (usage_ax, collision_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(levels, 1)
    positions = np.arange(len(rows))
    for level in range(1, levels + 1):
        values = [_ids_metric(r, f"codebook_usage_level_{level}") or 0.0 for _, r in rows]
        usage_ax.bar(positions + (level - 1) * width, values, width, label=f"level {level}")
    usage_ax.set_xticks(positions + width * (levels - 1) / 2, [q for q, _ in rows], rotation=20)
    usage_ax.set_ylabel("share of codebook used")
    usage_ax.set_ylim(0, 1.05)
    if levels:
        usage_ax.legend(fontsize=8)
    collision_ax.bar(positions, [_ids_metric(r, "collision_rate") or 0.0 for _, r in rows], color="tab:red")
    collision_ax.set_xticks(positions, [q for q, _ in rows], rotation=20)
    collision_ax.set_ylabel("items sharing their code tuple")
    collision_ax.set_ylim(0, 1.05)
    title = f"{embedding} embeddings, {data}" if rows else "no finished experiment"
    fig.suptitle(f"Code use per level and collision rate per quantizer ({title})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def write_results(results: Sequence[Experiment], out_dir: Path) -> dict[tuple[str, str, str], Experiment]:
    """Write table.md, tradeoff.png and quantizers.png into ``out_dir``; returns the chosen points."""
    points = best_per_point(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "table.md") as tmp:
        tmp.write_text(render_table(points))
    for name, plot in (("tradeoff.png", plot_tradeoff), ("quantizers.png", plot_quantizers)):
        with atomic_path(out_dir / name) as tmp:
            plot(points, tmp)
    return points


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-show-json", type=Path, help="a saved `dvc exp show --json` (default: run it)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    root = workspace_root()
    if args.exp_show_json:
        found = parse_show(json.loads(args.exp_show_json.read_text()))
    else:
        found = show(root, all_commits=True)
    out = args.out if args.out.is_absolute() else root / args.out
    points = write_results(found, out)
    print(f"{len(points)} grid point(s) -> {out / 'table.md'}, {out / 'tradeoff.png'}, {out / 'quantizers.png'}")


if __name__ == "__main__":
    main()
