"""The RQ-VAE diagnosis: from ``rqvae_naive`` to the fixed ``rqvae``, one remedy at a time.

``make report`` (``python -m semid.report``) fits, on the workspace's item embeddings
(``data/embeddings``, the same ones the pipeline quantizes):

- ``rqkmeans`` (the reference) and ``rqvae_naive`` (vector-quantize-pytorch's defaults);
- each remedy of the fixed recipe alone on the naive model, plus remedies tried and left out
  of the recipe (dead-code revival, no rotation trick);
- the path naive -> fixed, adding the recipe's remedies one at a time;
- the fixed recipe minus each remedy (leave-one-out);

and measures per fit: code use per level, collision rate, largest bucket, neighbour preservation
(against a random assignment), reconstruction error and fit time (semid.ids.diagnostics). For the
key points (rqkmeans, rqvae_naive, rqvae) it collects search/rec Recall@30 of the full pipeline
from DVC experiments, queueing the missing ones (``dvc exp run --queue -S quantizer=...``, which
reuse the cached upstream stages). It writes ``reports/rqvae.md`` (tables, plots and an answer
whose every sentence is derived from these measurements) and ``reports/rqvae_ablation.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# A quantizer "collapsed" when its first level uses at most this share of the codebook...
COLLAPSE_USAGE = 0.1
# ...and "works" when it uses at least this share and collides at most this much more than RQ-KMeans.
HEALTHY_USAGE = 0.9
HEALTHY_COLLISION_MARGIN = 0.1
# Epochs below which the embedded generator's search recall was still rising steeply (bench/
# generator_budget.py on ml-latest-small: 0.011 after 5 epochs, 0.046 after 12, 0.134 after 20).
CONVERGED_EPOCHS = 12
# Remedies tried on the naive model that are not in the fixed recipe (README "quantize").
EXTRA_REMEDIES: dict[str, Any] = {"threshold_ema_dead_code": 2.0, "rotation_trick": False}
KEY_QUANTIZERS = ("rqkmeans", "rqvae_naive", "rqvae")


@dataclass(frozen=True)
class Variant:
    """One fit of the ablation: a quantizer and the option overrides laid over its preset."""

    label: str
    quantizer: str
    overrides: dict[str, Any]
    group: str  # reference | naive | alone | path | fixed | leave-one-out


@dataclass
class AblationRow:
    variant: Variant
    metrics: dict[str, float]
    fit_seconds: float
    options: dict[str, Any] = field(default_factory=dict)


def recipe_remedies() -> dict[str, tuple[Any, Any]]:
    """{option: (naive value, fixed value)} for every option where the fixed recipe differs."""
    from semid.quantize.options import RQVAE_FIXED, RQVAE_NAIVE

    return {
        f.name: (getattr(RQVAE_NAIVE, f.name), getattr(RQVAE_FIXED, f.name))
        for f in dataclasses.fields(RQVAE_NAIVE)
        if getattr(RQVAE_NAIVE, f.name) != getattr(RQVAE_FIXED, f.name)
    }


def ablation_variants(leave_one_out: bool = True, extra: bool = True) -> list[Variant]:
    """Every fit of the ablation, in reading order (duplicates are measured once, see run_ablation)."""
    remedies = recipe_remedies()
    rows = [
        Variant("rqkmeans", "rqkmeans", {}, "reference"),
        Variant("rqvae_naive (library defaults)", "rqvae_naive", {}, "naive"),
    ]
    for name, (_, fixed) in remedies.items():
        rows.append(Variant(f"naive + {name}={fixed}", "rqvae_naive", {name: fixed}, "alone"))
    if extra:
        for name, value in EXTRA_REMEDIES.items():
            rows.append(Variant(f"naive + {name}={value} (not in recipe)", "rqvae_naive", {name: value}, "alone"))
    applied: dict[str, Any] = {}
    for step, (name, (_, fixed)) in enumerate(list(remedies.items())[:-1], start=1):
        applied[name] = fixed
        rows.append(Variant(f"path {step}: naive + {', '.join(applied)}", "rqvae_naive", dict(applied), "path"))
    rows.append(Variant("rqvae (fixed recipe)", "rqvae", {}, "fixed"))
    if leave_one_out:
        for name, (naive, _) in remedies.items():
            rows.append(Variant(f"fixed − {name} (= {naive})", "rqvae", {name: naive}, "leave-one-out"))
    return rows


def _options_key(quantizer: str, options: Any) -> str:
    from semid.quantize import REGISTRY

    return json.dumps([REGISTRY[quantizer], dataclasses.asdict(options)], sort_keys=True, default=str)


def run_ablation(
    x: np.ndarray,
    variants: Sequence[Variant],
    levels: int,
    codebook_size: int,
    seed: int,
    neighbours: int = 10,
    base_overrides: dict[str, dict[str, Any]] | None = None,
    on_row=None,
) -> list[AblationRow]:
    """Fit and measure every variant on ``x`` (n_items, dim). ``base_overrides[quantizer]`` (the
    params' ``quantize.<quantizer>`` section) lies under each variant's own overrides, so the
    ablation's ``rqvae`` is the pipeline's. Variants whose resolved options coincide (naive plus
    every remedy is the fixed recipe) are fitted once."""
    from semid.ids import diagnostics
    from semid.quantize import make_quantizer
    from semid.quantize.options import build_options

    measured: dict[str, tuple[dict[str, float], float]] = {}
    rows = []
    for variant in variants:
        overrides = {**(base_overrides or {}).get(variant.quantizer, {}), **variant.overrides}
        options = build_options(variant.quantizer, overrides)
        key = _options_key(variant.quantizer, options)
        if key not in measured:
            started = time.perf_counter()
            quantizer = make_quantizer(variant.quantizer, levels, codebook_size, seed, options).fit(x)
            codes = quantizer.encode(x)  # (n_items, levels)
            fit_seconds = time.perf_counter() - started
            measured[key] = (diagnostics(x, codes, quantizer.decode(codes), codebook_size, neighbours, seed), fit_seconds)
        metrics, fit_seconds = measured[key]
        row = AblationRow(variant, metrics, fit_seconds, dataclasses.asdict(options))
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


# ------------------------------------------------------------------ the answer, from the numbers


def levels_of(metrics: dict[str, float]) -> int:
    level = 0
    while f"codebook_usage_level_{level + 1}" in metrics:
        level += 1
    return level


def collapsed(metrics: dict[str, float]) -> bool:
    return metrics["codebook_usage_level_1"] <= COLLAPSE_USAGE


def healthy(metrics: dict[str, float], reference: dict[str, float]) -> bool:
    return (
        metrics["codebook_usage_level_1"] >= HEALTHY_USAGE
        and metrics["collision_rate"] <= reference["collision_rate"] + HEALTHY_COLLISION_MARGIN
    )


def recall_difference(a: float, b: float, n: int | None) -> tuple[float, float | None]:
    """(a - b, standard error of the difference of two proportions over n examples each)."""
    if not n:
        return a - b, None
    return a - b, math.sqrt(max(a * (1 - a) + b * (1 - b), 1e-12) / n)


def _by_group(rows: Sequence[AblationRow], group: str) -> list[AblationRow]:
    return [r for r in rows if r.variant.group == group]


def _one(rows: Sequence[AblationRow], group: str) -> AblationRow:
    found = _by_group(rows, group)
    if not found:
        raise ValueError(f"the ablation has no {group!r} row")
    return found[0]


def _describe(metrics: dict[str, float], codebook_size: int) -> str:
    used = round(metrics["codebook_usage_level_1"] * codebook_size)
    return (
        f"{used} of {codebook_size} level-1 codes used, collisions {metrics['collision_rate']:.3f}, "
        f"neighbour preservation {metrics['neighbour_preservation']:.3f} (random {metrics['neighbour_preservation_random']:.3f}), "
        f"reconstruction error {metrics['reconstruction_error']:.3f}"
    )


def answer(rows: Sequence[AblationRow], codebook_size: int, recalls: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """The plain answer, one paragraph per question, every claim computed from ``rows``/``recalls``.

    ``recalls``: {quantizer: {"search": float, "rec": float, "search_n": int|None, "rec_n": int|None}}.
    """
    reference = _one(rows, "reference").metrics
    naive = _one(rows, "naive").metrics
    fixed = _one(rows, "fixed").metrics
    alone = _by_group(rows, "alone")
    out = []

    # 1. What made RQ-VAE collapse?
    if collapsed(naive):
        fixes = [r for r in alone if healthy(r.metrics, reference)]
        partial = [r for r in alone if not healthy(r.metrics, reference) and not collapsed(r.metrics)]
        useless = [r for r in alone if collapsed(r.metrics)]
        text = (
            f"**What made RQ-VAE collapse.** With the library defaults RQ-VAE collapsed: {_describe(naive, codebook_size)} "
            f"(RQ-KMeans: {_describe(reference, codebook_size)}). "
        )
        if fixes:
            text += (
                "Alone, " + " and ".join(f"`{_remedy(r)}`" for r in fixes)
                + (" restores" if len(fixes) == 1 else " each restore") + " full code use and "
                "RQ-KMeans-level collisions, so the collapse is caused by what "
                + ("it changes. " if len(fixes) == 1 else "they change. ")
            )
            scale_fix = [r for r in fixes if any(k in r.variant.overrides for k in ("input_scaling", "recon_loss"))]
            if scale_fix:
                text += (
                    "Both fixes of that kind act on the scale of the reconstruction loss (unit-norm sentence embeddings have a "
                    "per-dimension variance near 1/dim, so a per-dimension mean squared error is tiny next to the commitment "
                    "term, and the encoder's cheapest solution is to shrink its latents onto one codeword). "
                    if len(scale_fix) == len(fixes)
                    else ""
                )
        else:
            text += "No single remedy alone restores full code use with RQ-KMeans-level collisions. "
        if partial:
            text += "Partly helping: " + ", ".join(f"`{_remedy(r)}` (collisions {r.metrics['collision_rate']:.3f})" for r in partial) + ". "
        if useless:
            text += "No help at all (still collapsed): " + ", ".join(f"`{_remedy(r)}`" for r in useless) + "."
        out.append(text.strip())
    else:
        out.append(
            f"**What made RQ-VAE collapse.** In this run the naive RQ-VAE did not collapse ({_describe(naive, codebook_size)}); "
            f"RQ-KMeans: {_describe(reference, codebook_size)}. The paper's collapse is not reproduced by these settings."
        )

    # 2. Which fix matters most?
    if alone:
        best_alone = min(alone, key=lambda r: (r.metrics["collision_rate"], -r.metrics["codebook_usage_level_1"]))
        text = (
            f"**Which fix matters most.** Applied alone, `{_remedy(best_alone)}` does the most "
            f"(collisions {naive['collision_rate']:.3f} → {best_alone.metrics['collision_rate']:.3f}, level-1 use "
            f"{naive['codebook_usage_level_1']:.3f} → {best_alone.metrics['codebook_usage_level_1']:.3f}). "
        )
        left_out = _by_group(rows, "leave-one-out")
        if left_out:
            worst = max(left_out, key=lambda r: (r.metrics["collision_rate"], -r.metrics["codebook_usage_level_1"]))
            hurts = worst.metrics["collision_rate"] - fixed["collision_rate"]
            text += (
                f"Removed from the fixed recipe, `{next(iter(worst.variant.overrides))}` hurts most "
                f"(collisions {fixed['collision_rate']:.3f} → {worst.metrics['collision_rate']:.3f}, {hurts:+.3f})"
            )
            redundant = [r for r in left_out if healthy(r.metrics, reference)]
            if redundant and len(redundant) < len(left_out):
                text += "; the recipe stays healthy without " + ", ".join(f"`{next(iter(r.variant.overrides))}`" for r in redundant)
            elif redundant:
                text += "; but the recipe stays healthy without any one of its remedies"
                if sum(healthy(r.metrics, reference) for r in alone) > 1:
                    text += ", since more than one of them suffices alone"
            text += ". "
        path = [r for r in rows if r.variant.group in ("naive", "path", "fixed")]
        turned = next((r for r in path if healthy(r.metrics, reference)), None)
        if turned is not None and turned.variant.group != "naive":
            text += f"On the path from naive to fixed, the model is first healthy at \"{turned.variant.label}\"."
        out.append(text.strip())

    # 3. Does a correctly trained RQ-VAE match RQ-KMeans?
    better = {
        "collisions": fixed["collision_rate"] < reference["collision_rate"],
        "neighbour preservation": fixed["neighbour_preservation"] > reference["neighbour_preservation"],
        "reconstruction error": fixed["reconstruction_error"] < reference["reconstruction_error"],
    }
    wins = [k for k, v in better.items() if v]
    losses = [k for k, v in better.items() if not v]
    text = (
        f"**Does a correctly trained RQ-VAE match RQ-KMeans?** On the code diagnostics the fixed RQ-VAE "
        f"({_describe(fixed, codebook_size)}) is "
        + (
            "ahead of RQ-KMeans on all of collisions, neighbour preservation and reconstruction error"
            if not losses
            else "behind RQ-KMeans on all of them" if not wins
            else f"ahead on {', '.join(wins)} and behind on {', '.join(losses)}"
        )
        + ". "
    )
    if recalls and "rqvae" in recalls and "rqkmeans" in recalls:
        verdicts = []
        for task in ("search", "rec"):
            a, b = recalls["rqvae"].get(task), recalls["rqkmeans"].get(task)
            if a is None or b is None:
                continue
            diff, se = recall_difference(a, b, recalls["rqvae"].get(f"{task}_n"))
            if se is not None and abs(diff) <= 2 * se:
                verdict = "indistinguishable within 2 standard errors"
            else:
                verdict = "RQ-VAE higher" if diff > 0 else "RQ-VAE lower"
            se_text = f", SE {se:.3f}" if se is not None else ""
            verdicts.append(f"{task} Recall@30 {a:.3f} vs {b:.3f} ({diff:+.3f}{se_text}: {verdict})")
        if verdicts:
            epochs = [found["epochs"] for found in recalls.values() if found.get("epochs") is not None]
            budget = (
                f", generators of at most {max(epochs):.2f} epochs: an unconverged budget, see the end-to-end table"
                if epochs and max(epochs) < CONVERGED_EPOCHS
                else ""
            )
            text += f"End to end (one seed{budget}): " + "; ".join(verdicts) + ". "
            lower = [v for v in verdicts if "RQ-VAE lower" in v]
            if lower:
                text += "So RQ-VAE still loses to RQ-KMeans where it says lower, even trained correctly."
            elif all("indistinguishable" in v for v in verdicts):
                text += "So, trained correctly, RQ-VAE matches RQ-KMeans within what one seed can tell apart."
            else:
                text += "So, trained correctly, RQ-VAE does not lose to RQ-KMeans here."
        if "rqvae_naive" in recalls and recalls["rqvae_naive"].get("search") is not None:
            text += (
                f" The naive RQ-VAE reaches search Recall@30 {recalls['rqvae_naive']['search']:.3f} "
                f"and rec {recalls['rqvae_naive'].get('rec', float('nan')):.3f}."
            )
    else:
        text += "Search/rec Recall@30 of the key points were not measured in this report (see the table below)."
    out.append(text.strip())
    return out


def _remedy(row: AblationRow) -> str:
    return ", ".join(f"{k}={v}" for k, v in row.variant.overrides.items())


# ------------------------------------------------------------------ tables, plots, the report


def ablation_table(rows: Sequence[AblationRow]) -> list[str]:
    levels = levels_of(rows[0].metrics)
    header = ["variant", *[f"use L{l}" for l in range(1, levels + 1)], "collisions", "largest bucket",
              "neighbours (random)", "recon err", "fit s"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        m = row.metrics
        label = f"**{row.variant.label}**" if row.variant.group in ("reference", "naive", "fixed") else row.variant.label
        cells = [label, *[f"{m[f'codebook_usage_level_{l}']:.3f}" for l in range(1, levels + 1)],
                 f"{m['collision_rate']:.3f}", str(int(m["largest_bucket"])),
                 f"{m['neighbour_preservation']:.3f} ({m['neighbour_preservation_random']:.3f})",
                 f"{m['reconstruction_error']:.3f}", f"{row.fit_seconds:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_ablation(rows: Sequence[AblationRow], path: Path) -> None:
    """Level-1/2 code use, collision rate and neighbour preservation per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.variant.label for r in rows]
    positions = np.arange(len(rows))
    levels = levels_of(rows[0].metrics)
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.35 * len(rows) + 1.8), sharey=True)
    height = 0.8 / max(levels, 1)
    for level in range(1, levels + 1):
        axes[0].barh(positions + (level - 1) * height, [r.metrics[f"codebook_usage_level_{level}"] for r in rows], height, label=f"level {level}")
    axes[0].set_title("share of codebook used")
    axes[0].legend(fontsize=7)
    axes[1].barh(positions, [r.metrics["collision_rate"] for r in rows], color="tab:red")
    axes[1].set_title("collision rate")
    axes[2].barh(positions, [r.metrics["neighbour_preservation"] for r in rows], color="tab:green", label="observed")
    axes[2].scatter([r.metrics["neighbour_preservation_random"] for r in rows], positions, color="black", marker="|", label="random")
    axes[2].set_title("neighbour preservation (first code)")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlim(0, 1.02)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, labels, fontsize=7)
    axes[0].invert_yaxis()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def recall_table(recalls: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| quantizer | search Recall@30 | rec Recall@30 | rec head | rec torso | generator epochs | experiment |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for quantizer in KEY_QUANTIZERS:
        found = recalls.get(quantizer)
        if not found:
            lines.append(f"| {quantizer} | — | — | — | — | — | not run |")
            continue
        cells = [found.get(k) for k in ("search", "rec", "rec_head", "rec_torso")]
        epochs = found.get("epochs")
        lines.append(
            f"| {quantizer} | " + " | ".join("—" if v is None else f"{v:.3f}" for v in cells)
            + f" | {'—' if epochs is None else f'{epochs:.2f}'} | `{found['experiment']}` |"
        )  # fmt: skip
    trained = [found["epochs"] for found in recalls.values() if found.get("epochs") is not None]
    if trained and max(trained) < CONVERGED_EPOCHS:
        lines += [
            "",
            f"These generators trained {max(trained):.2f} epochs at most (their time budget). Below "
            f"~{CONVERGED_EPOCHS} epochs the generator's search recall is far from converged (README, train_t5: "
            "\"How much of the CPU generator's weakness is budget\"), so end-to-end differences here are "
            "measured under a small fixed budget; the code diagnostics above do not depend on it.",
        ]
    return lines


def render_report(
    rows: Sequence[AblationRow],
    setting: dict[str, Any],
    recalls: dict[str, dict[str, Any]],
    plot_name: str,
) -> str:
    from semid.results import PAPER_LABEL, PAPER_QUANTIZERS

    paper_vae, paper_km = PAPER_QUANTIZERS["rqvae"], PAPER_QUANTIZERS["rqkmeans"]
    lines = [
        "# Why did RQ-VAE collapse? (`make report`)",
        "",
        f"The paper (Penha et al. 2025) measured search Recall@30 {paper_vae[0]:.3f} for RQ-VAE against "
        f"{paper_km[0]:.3f} for RQ-KMeans on multi-task embeddings ({PAPER_LABEL}) and left open why. "
        "This report refits both, and every step between them, on one set of item embeddings.",
        "",
        f"Setting: {setting['items']:,} items × {setting['dim']} dims from {setting.get('source', '`data/embeddings`')} "
        f"(embedding method `{setting['embedding']}`, model {setting['model']}, space `{setting['space']}`), "
        f"{setting['levels']} levels × {setting['codebook_size']} codes, seed {setting['seed']}, "
        f"RQ-VAE steps {setting['steps']}, {setting['threads']} torch thread(s); total {setting['seconds']:,.0f} s. "
        f"Generated {setting['generated']}.",
        "",
        "## The answer",
        "",
        *[p + "\n" for p in answer(rows, setting["codebook_size"], recalls)],
        "## Ablation",
        "",
        "Rows: the reference, the library defaults, each remedy alone on the naive model, the path adding the "
        "recipe's remedies one at a time, the fixed recipe, and the fixed recipe minus each remedy. "
        "\"neighbours\": share of each item's 10 cosine nearest neighbours that share its first code (in brackets "
        "the same for the first codes shuffled). \"recon err\": mean ‖x − x̂‖ / ‖x‖.",
        "",
        *ablation_table(rows),
        "",
        f"![ablation]({plot_name})",
        "",
        "## End to end: search and rec Recall@30 of the key points",
        "",
        "Full pipeline (train_t5 + evaluate on these IDs), from DVC experiments of "
        f"`embedding={setting['embedding']}` (`dvc exp show`); one seed.",
        "",
        *recall_table(recalls),
        "",
        "Criteria used by the answer: *collapsed* = level-1 code use ≤ "
        f"{COLLAPSE_USAGE:.0%}; *healthy* = level-1 code use ≥ {HEALTHY_USAGE:.0%} and collisions at most "
        f"{HEALTHY_COLLISION_MARGIN:.2f} above RQ-KMeans; recall differences within 2 binomial standard errors are "
        "called indistinguishable.",
        "",
    ]
    return "\n".join(lines)


def key_point_recalls(root: Path, embedding: str, data_label: str, run_missing: bool, jobs: int = 1) -> dict[str, dict[str, Any]]:
    """{quantizer: recalls} for the key quantizers on ``embedding`` from `dvc exp show`; with
    ``run_missing`` the missing points are queued and run first (semid.grid)."""
    from semid.experiments import ExperimentError, show
    from semid.grid import GridPoint, run_grid
    from semid.results import best_per_point

    def collect() -> dict:
        try:
            return best_per_point(show(root, all_commits=True))
        except ExperimentError as error:  # not a DVC repo, or DVC cannot read it: report without recalls
            print(f"no experiments read ({error}); the report has no Recall@30 column", flush=True)
            return {}

    points = collect()
    missing = [q for q in KEY_QUANTIZERS if (data_label, embedding, q) not in points]
    if missing and run_missing:
        print(f"running the missing key points through the DVC queue: {', '.join(missing)}", flush=True)
        run_grid(root, [GridPoint(embedding, q) for q in missing], jobs)
        points = collect()
    recalls = {}
    for quantizer in KEY_QUANTIZERS:
        result = points.get((data_label, embedding, quantizer))
        if result is None:
            continue
        rec_n = sum(int(result.metric("rec", f"examples_{s}") or 0) for s in ("head", "torso")) or None
        search_n = result.metric("search", "examples") or (result.params.get("evaluate") or {}).get("search_queries") or None
        recalls[quantizer] = {
            "search": result.metric("search", "recall_at_30"),
            "rec": result.metric("rec", "recall_at_30"),
            "rec_head": result.metric("rec", "recall_at_30_head"),
            "rec_torso": result.metric("rec", "recall_at_30_torso"),
            "search_n": int(search_n) if search_n else None,
            "rec_n": rec_n,
            "epochs": result.metric("train_t5", "epochs_done"),
            "experiment": result.name,
        }
    return recalls


def experiment_embeddings(root: Path, name: str, into: Path) -> Path:
    """Copy experiment ``name``'s data/embeddings out of the local DVC cache into ``into``."""
    from semid import experiments

    experiments.get(root, experiments.resolve(root, exp=name), ["data/embeddings"], into)
    return into / "data" / "embeddings"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=Path, default=Path("data/embeddings"), help="a train_embedder output folder")
    parser.add_argument(
        "--experiment", help="use this DVC experiment's data/embeddings (e.g. multitask-rqkmeans) instead of --embeddings"
    )
    parser.add_argument("--space", help="ID space to quantize (default: the first; `separate` has search and rec)")
    parser.add_argument("--max-items", type=int, default=0, help="a seeded sample of this many items (0 = all)")
    parser.add_argument("--steps", type=int, default=0, help="RQ-VAE training steps (0 = the params' presets)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-leave-one-out", action="store_true", help="skip the fixed-minus-one-remedy rows")
    parser.add_argument("--no-experiments", action="store_true", help="do not queue missing key-point pipeline runs")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="queue workers for missing key points")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)

    import torch

    from semid.config import load_params, workspace_root
    from semid.embed import load_embedding_meta, load_item_embeddings
    from semid.io import SemidError, atomic_path, user_errors_exit, write_json
    from semid.quantize import check_embeddings
    from semid.experiments import Experiment

    started = time.perf_counter()
    with user_errors_exit(), contextlib.ExitStack() as stack:
        root = workspace_root()
        params = load_params()
        embeddings_dir = args.embeddings if args.embeddings.is_absolute() else root / args.embeddings
        source = f"`{args.embeddings}`"
        if args.experiment:
            embeddings_dir = experiment_embeddings(root, args.experiment, Path(stack.enter_context(tempfile.TemporaryDirectory())))
            source = f"`data/embeddings` of experiment `{args.experiment}`"
        if not (embeddings_dir / "item_embeddings.npz").exists():
            raise SemidError(f"no item embeddings in {embeddings_dir}; run `dvc repro train_embedder` first")
        _, spaces = load_item_embeddings(embeddings_dir)
        meta = load_embedding_meta(embeddings_dir)
        space = args.space or next(iter(spaces))
        if space not in spaces:
            raise SemidError(f"--space {space!r} is not in {embeddings_dir}; choose one of: {', '.join(spaces)}")
        x = spaces[space]
        if args.max_items and args.max_items < len(x):
            rows_kept = np.sort(np.random.default_rng(params.base.seed).choice(len(x), args.max_items, replace=False))
            x = x[rows_kept]
        config = params.quantize
        x = check_embeddings(x, config.codebook_size, f"{space} embeddings")
        torch.set_num_threads(args.threads)
        base = {q: dict(getattr(config, q)) for q in ("rqkmeans", "rqvae", "rqvae_naive")}
        if args.steps:
            for q in ("rqvae", "rqvae_naive"):
                base[q]["steps"] = args.steps
        variants = ablation_variants(leave_one_out=not args.no_leave_one_out)
        print(f"{len(x)} items x {x.shape[1]} dims, {len(variants)} variants", flush=True)

        def show(row: AblationRow) -> None:
            m = row.metrics
            print(f"  {row.variant.label}: use L1 {m['codebook_usage_level_1']:.3f}, collisions {m['collision_rate']:.3f}, "
                  f"neighbours {m['neighbour_preservation']:.3f}, recon {m['reconstruction_error']:.3f}, {row.fit_seconds:.0f}s", flush=True)  # fmt: skip

        rows = run_ablation(x, variants, config.levels, config.codebook_size, params.base.seed, config.neighbours, base, show)
        workspace = Experiment("workspace", "workspace", None, params.raw)
        recalls = key_point_recalls(root, meta.get("method", params.embedding), workspace.data_label, not args.no_experiments, args.jobs)
        out = args.out if args.out.is_absolute() else root / args.out
        setting = {
            "items": len(x), "dim": int(x.shape[1]), "source": source, "embedding": meta.get("method", params.embedding),
            "model": meta.get("model", "?"), "space": space, "levels": config.levels,
            "codebook_size": config.codebook_size, "seed": params.base.seed,
            "steps": args.steps or config.options("rqvae").steps, "threads": args.threads,
            "seconds": time.perf_counter() - started, "generated": time.strftime("%Y-%m-%d %H:%M"),
        }  # fmt: skip
        plot_ablation(rows, out / "rqvae_ablation.png")
        with atomic_path(out / "rqvae.md") as tmp:
            tmp.write_text(render_report(rows, setting, recalls, "rqvae_ablation.png"))
        write_json(
            out / "rqvae_ablation.json",
            {
                "setting": setting,
                "rows": [{"label": r.variant.label, "group": r.variant.group, "quantizer": r.variant.quantizer,
                          "overrides": r.variant.overrides, "fit_seconds": r.fit_seconds, **r.metrics} for r in rows],  # fmt: skip
                "recalls": recalls,
            },
        )
        print(f"wrote {out / 'rqvae.md'} in {time.perf_counter() - started:,.0f}s")


if __name__ == "__main__":
    main()
