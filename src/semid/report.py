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
import functools
import json
import math
import re
import string
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from semid import collapse_map as cm
from semid import experiments
from semid.config import load_params, workspace_root
from semid.embed import load_embedding_meta, load_item_embeddings
from semid.experiments import Experiment, ExperimentError, show
from semid.grid import GridPoint, run_grid
from semid.ids import diagnostics
from semid.io import SemidError, atomic_path, user_errors_exit, write_json
from semid.quantize import REGISTRY, check_embeddings, make_quantizer
from semid.quantize.options import RQVAE_FIXED, RQVAE_NAIVE, build_options
from semid.results import PAPER_LABEL, PAPER_QUANTIZERS, best_per_point, load_paper_results

# torch (~2.2 s, bench/import_costs.py) is imported in main(), which trains; matplotlib inside the
# plot, after choosing its non-interactive backend. Tests and bench/rqvae_ablation.py import the
# answer and table functions without either.

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


# ------------------------------------------------------------------ the answer: facts from the numbers

# The sentences live in this template (semid/templates/rqvae_report.md); code only picks snippets.
TEMPLATE = "rqvae_report.md"
_SNIPPET_HEADER = re.compile(r"^\[\[([\w.]+)\]\]$", re.MULTILINE)


def parse_snippets(text: str) -> dict[str, string.Template]:
    """{name: template} from ``[[name]]`` headers; each body runs to the next header, trailing
    newlines dropped. Text before the first header (the file's comment) belongs to no snippet."""
    parts = _SNIPPET_HEADER.split(text)
    names, bodies = parts[1::2], parts[2::2]
    if len(set(names)) != len(names):
        raise ValueError(f"{TEMPLATE} names a snippet twice")
    return {name: string.Template(body.removeprefix("\n").rstrip("\n")) for name, body in zip(names, bodies)}


@functools.cache
def snippets() -> dict[str, string.Template]:
    return parse_snippets(resources.files("semid").joinpath("templates", TEMPLATE).read_text(encoding="utf-8"))


def say(name: str, **fields: Any) -> str:
    """The template's snippet ``name`` with its placeholders filled (a missing field raises)."""
    return snippets()[name].substitute(fields)


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


def recall_verdict(difference: float, standard_error: float | None) -> str:
    """same (within 2 standard errors) | higher | lower: RQ-VAE against RQ-KMeans."""
    if standard_error is not None and abs(difference) <= 2 * standard_error:
        return "same"
    return "higher" if difference > 0 else "lower"


def unconverged_epochs(recalls: dict[str, dict[str, Any]]) -> float | None:
    """The most epochs any key-point generator trained, when that is below CONVERGED_EPOCHS."""
    epochs = [found["epochs"] for found in recalls.values() if found.get("epochs") is not None]
    return max(epochs) if epochs and max(epochs) < CONVERGED_EPOCHS else None


def acts_on_scale(row: AblationRow) -> bool:
    """The remedy changes the scale of the reconstruction loss (input scaling or its reduction)."""
    return any(k in row.variant.overrides for k in ("input_scaling", "recon_loss"))


# Lower is better for collisions and reconstruction error, higher for neighbour preservation.
DIAGNOSTICS_LOWER_IS_BETTER = {"collision_rate": True, "neighbour_preservation": False, "reconstruction_error": True}


def ahead_of_reference(fixed: dict[str, float], reference: dict[str, float]) -> dict[str, bool]:
    """{diagnostic: the fixed RQ-VAE is strictly better than RQ-KMeans on it}."""
    return {
        key: fixed[key] < reference[key] if lower else fixed[key] > reference[key]
        for key, lower in DIAGNOSTICS_LOWER_IS_BETTER.items()
    }


@dataclass(frozen=True)
class TaskVerdict:
    task: str  # search | rec
    rqvae: float
    rqkmeans: float
    difference: float
    standard_error: float | None
    verdict: str  # same | higher | lower (recall_verdict)


@dataclass(frozen=True)
class AnswerFacts:
    """Everything the answer states, computed from the ablation rows and the key points' recalls."""

    reference: dict[str, float]
    naive: dict[str, float]
    fixed: dict[str, float]
    naive_collapsed: bool
    fixes: list[AblationRow]  # alone on the naive model, healthy
    partial: list[AblationRow]  # alone, neither healthy nor collapsed
    useless: list[AblationRow]  # alone, still collapsed
    fixes_act_on_scale: bool  # every fix changes the reconstruction loss's scale
    best_alone: AblationRow | None  # fewest collisions alone (None: no remedy tried alone)
    hurts_most: AblationRow | None  # most collisions once left out of the fixed recipe
    redundancy: str  # none | some | all | all_and_several_suffice_alone (recipe healthy without...)
    redundant: list[AblationRow]  # left-out rows still healthy
    first_healthy_on_path: AblationRow | None  # None also when the naive model is already healthy
    ahead: dict[str, bool]  # ahead_of_reference(fixed, reference)
    recalls_measured: bool  # both rqvae and rqkmeans have recalls
    verdicts: list[TaskVerdict]
    unconverged_epochs: float | None
    conclusion: str  # lower | same | not_lower (only with verdicts)
    naive_recall: tuple[float, float] | None  # (search, rec) of rqvae_naive
    ceiling: dict[str, float] | None = None  # ceiling_facts: the ID tables' own share of the loss


def _by_group(rows: Sequence[AblationRow], group: str) -> list[AblationRow]:
    return [r for r in rows if r.variant.group == group]


def _one(rows: Sequence[AblationRow], group: str) -> AblationRow:
    found = _by_group(rows, group)
    if not found:
        raise ValueError(f"the ablation has no {group!r} row")
    return found[0]


def answer_facts(
    rows: Sequence[AblationRow], recalls: dict[str, dict[str, Any]] | None = None
) -> AnswerFacts:
    """``recalls``: {quantizer: {"search": float, "rec": float, "search_n": int|None, "rec_n": int|None}}."""
    reference = _one(rows, "reference").metrics
    naive = _one(rows, "naive").metrics
    fixed = _one(rows, "fixed").metrics
    alone = _by_group(rows, "alone")
    left_out = _by_group(rows, "leave-one-out")
    fixes = [r for r in alone if healthy(r.metrics, reference)]
    redundant = [r for r in left_out if healthy(r.metrics, reference)]
    if not redundant:
        redundancy = "none"
    elif len(redundant) < len(left_out):
        redundancy = "some"
    else:
        redundancy = "all_and_several_suffice_alone" if len(fixes) > 1 else "all"
    path = [r for r in rows if r.variant.group in ("naive", "path", "fixed")]
    turned = next((r for r in path if healthy(r.metrics, reference)), None)

    def worst_first(r: AblationRow) -> tuple[float, float]:
        return r.metrics["collision_rate"], -r.metrics["codebook_usage_level_1"]

    verdicts = []
    recalls_measured = bool(recalls) and "rqvae" in recalls and "rqkmeans" in recalls
    if recalls_measured:
        for task in ("search", "rec"):
            a, b = recalls["rqvae"].get(task), recalls["rqkmeans"].get(task)
            if a is None or b is None:
                continue
            diff, se = recall_difference(a, b, recalls["rqvae"].get(f"{task}_n"))
            verdicts.append(TaskVerdict(task, a, b, diff, se, recall_verdict(diff, se)))
    kinds = [v.verdict for v in verdicts]
    naive_found = (recalls or {}).get("rqvae_naive") if recalls_measured else None
    return AnswerFacts(
        reference=reference,
        naive=naive,
        fixed=fixed,
        naive_collapsed=collapsed(naive),
        fixes=fixes,
        partial=[r for r in alone if not healthy(r.metrics, reference) and not collapsed(r.metrics)],
        useless=[r for r in alone if collapsed(r.metrics)],
        fixes_act_on_scale=bool(fixes) and all(acts_on_scale(r) for r in fixes),
        best_alone=min(alone, key=worst_first) if alone else None,
        hurts_most=max(left_out, key=lambda r: (r.metrics["collision_rate"], -r.metrics["codebook_usage_level_1"]))
        if left_out
        else None,
        redundancy=redundancy,
        redundant=redundant,
        first_healthy_on_path=turned if turned is not None and turned.variant.group != "naive" else None,
        ahead=ahead_of_reference(fixed, reference),
        recalls_measured=recalls_measured,
        verdicts=verdicts,
        unconverged_epochs=unconverged_epochs(recalls) if verdicts else None,
        conclusion="lower" if "lower" in kinds else "same" if all(k == "same" for k in kinds) else "not_lower",
        ceiling=ceiling_facts(recalls),
        naive_recall=(naive_found["search"], naive_found.get("rec", float("nan")))
        if naive_found and naive_found.get("search") is not None
        else None,
    )


def _describe(metrics: dict[str, float], codebook_size: int) -> str:
    return say(
        "describe",
        used=round(metrics["codebook_usage_level_1"] * codebook_size),
        codebook_size=codebook_size,
        collisions=f"{metrics['collision_rate']:.3f}",
        neighbours=f"{metrics['neighbour_preservation']:.3f}",
        neighbours_random=f"{metrics['neighbour_preservation_random']:.3f}",
        reconstruction_error=f"{metrics['reconstruction_error']:.3f}",
    )


def _code(names: Sequence[str], separator: str = ", ") -> str:
    return separator.join(f"`{name}`" for name in names)


def _option(row: AblationRow) -> str:
    return next(iter(row.variant.overrides))


def render_answer(facts: AnswerFacts, codebook_size: int) -> list[str]:
    """One paragraph per question: the template's snippets chosen by ``facts``, filled with its numbers."""
    naive, reference, fixed = facts.naive, facts.reference, facts.fixed
    paragraphs = []

    # 1. What made RQ-VAE collapse?
    described = {"naive": _describe(naive, codebook_size), "reference": _describe(reference, codebook_size)}
    if facts.naive_collapsed:
        sentences = [say("collapse.yes", **described)]
        if facts.fixes:
            number = "one" if len(facts.fixes) == 1 else "several"
            sentences.append(say(f"fixes.{number}", fixes=_code([_remedy(r) for r in facts.fixes], " and ")))
            if facts.fixes_act_on_scale:
                sentences.append(say("fixes_act_on_scale"))
        else:
            sentences.append(say("fixes.none"))
        if facts.partial:
            items = [say("partly_helping.item", remedy=_code([_remedy(r)]), collisions=f"{r.metrics['collision_rate']:.3f}")
                     for r in facts.partial]
            sentences.append(say("partly_helping", remedies=", ".join(items)))
        if facts.useless:
            sentences.append(say("no_help", remedies=_code([_remedy(r) for r in facts.useless])))
    else:
        sentences = [say("collapse.no", **described)]
    paragraphs.append(" ".join(sentences))

    # 2. Which fix matters most?
    if facts.best_alone is not None:
        best = facts.best_alone.metrics
        sentences = [say("best_alone", remedy=_remedy(facts.best_alone),
                         naive_collisions=f"{naive['collision_rate']:.3f}", collisions=f"{best['collision_rate']:.3f}",
                         naive_usage=f"{naive['codebook_usage_level_1']:.3f}", usage=f"{best['codebook_usage_level_1']:.3f}")]
        if facts.hurts_most is not None:
            worst = facts.hurts_most.metrics
            redundancy = say(f"redundancy.{facts.redundancy}", options=_code([_option(r) for r in facts.redundant]))
            sentences.append(say("hurts_most", option=_option(facts.hurts_most),
                                 fixed_collisions=f"{fixed['collision_rate']:.3f}", collisions=f"{worst['collision_rate']:.3f}",
                                 difference=f"{worst['collision_rate'] - fixed['collision_rate']:+.3f}", redundancy=redundancy))
        if facts.first_healthy_on_path is not None:
            sentences.append(say("first_healthy_on_path", label=facts.first_healthy_on_path.variant.label))
        paragraphs.append(" ".join(sentences))

    # 3. Does a correctly trained RQ-VAE match RQ-KMeans?
    ahead = [say(f"diagnostic.{k}") for k, v in facts.ahead.items() if v]
    behind = [say(f"diagnostic.{k}") for k, v in facts.ahead.items() if not v]
    comparison = "ahead" if not behind else "behind" if not ahead else "mixed"
    sentences = [say(f"diagnostics.{comparison}", fixed=_describe(fixed, codebook_size), ahead=", ".join(ahead), behind=", ".join(behind))]
    if not facts.recalls_measured:
        sentences.append(say("recalls.unmeasured"))
    else:
        if facts.verdicts:
            verdicts = [
                say("verdict", task=v.task, rqvae=f"{v.rqvae:.3f}", rqkmeans=f"{v.rqkmeans:.3f}", difference=f"{v.difference:+.3f}",
                    standard_error="" if v.standard_error is None else say("verdict.standard_error", standard_error=f"{v.standard_error:.3f}"),
                    verdict=say(f"verdict.{v.verdict}"))
                for v in facts.verdicts
            ]
            budget = "" if facts.unconverged_epochs is None else say("end_to_end.unconverged_budget", epochs=f"{facts.unconverged_epochs:.2f}")
            sentences.append(say("end_to_end", budget=budget, verdicts="; ".join(verdicts)))
            sentences.append(say(f"conclusion.{facts.conclusion}"))
        if facts.naive_recall is not None:
            search, rec = facts.naive_recall
            sentences.append(say("naive_recall", search=f"{search:.3f}", rec=f"{rec:.3f}"))
    paragraphs.append(" ".join(sentences))

    # 4. How much of the loss can the ID table alone explain?
    if facts.ceiling is not None:
        paragraphs.append(render_ceiling(facts.ceiling))
    return paragraphs


def ceiling_facts(recalls: dict[str, dict[str, Any]] | None) -> dict[str, float] | None:
    """The naive RQ-VAE's and RQ-KMeans' ID ceilings and recalls per task, with the paper's search
    ratio RQ-VAE / RQ-KMeans beside ours; None unless both points carry metrics/id_ceiling.json."""
    naive, reference = (recalls or {}).get("rqvae_naive"), (recalls or {}).get("rqkmeans")
    keys = [f"{task}_{kind}" for task in ("search", "rec") for kind in ("ceiling", "dense")] + ["search", "rec"]
    if not naive or not reference or any(naive.get(k) is None or reference.get(k) is None for k in keys):
        return None
    paper = load_paper_results()["quantizers"]["rows"]
    facts = {f"{who}_{k}": found[k] for who, found in (("naive", naive), ("rqkmeans", reference)) for k in keys}
    facts["paper_search_ratio"] = paper["rqvae"][0] / paper["rqkmeans"][0]
    return facts


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole > 0 else math.nan


def render_ceiling(c: dict[str, float]) -> str:
    search_kept = _ratio(c["naive_search_ceiling"], c["rqkmeans_search_ceiling"])
    rec_kept = _ratio(c["naive_rec_ceiling"], c["rqkmeans_rec_ceiling"])
    sentences = [say(
        "ceiling",
        naive_search_ceiling=f"{c['naive_search_ceiling']:.3f}", rqkmeans_search_ceiling=f"{c['rqkmeans_search_ceiling']:.3f}",
        search_dense=f"{c['rqkmeans_search_dense']:.3f}", naive_rec_ceiling=f"{c['naive_rec_ceiling']:.3f}",
        rqkmeans_rec_ceiling=f"{c['rqkmeans_rec_ceiling']:.3f}", rec_dense=f"{c['rqkmeans_rec_dense']:.3f}",
        search_kept=f"{search_kept:.0%}", rec_kept=f"{rec_kept:.0%}",
    )]
    sentences.append(say("ceiling.search_more" if search_kept < rec_kept else "ceiling.rec_more"))
    generator_search_kept = _ratio(c["naive_search"], c["rqkmeans_search"])
    sentences.append(say(
        "ceiling.paper", paper_ratio=f"{c['paper_search_ratio']:.0%}", search_kept=f"{search_kept:.0%}",
        generator_search_kept=f"{generator_search_kept:.0%}", naive_search=f"{c['naive_search']:.3f}",
        rqkmeans_search=f"{c['rqkmeans_search']:.3f}",
        # "as deep": the ceiling keeps no more than twice the paper's share of RQ-KMeans' recall
        reading=say("ceiling.paper.as_deep" if search_kept <= 2 * c["paper_search_ratio"] else "ceiling.paper.shallower"),
    ))
    if c["rqkmeans_rec"] > c["rqkmeans_rec_ceiling"]:
        sentences.append(say("ceiling.rec_beyond_dense", rec=f"{c['rqkmeans_rec']:.3f}", rec_ceiling=f"{c['rqkmeans_rec_ceiling']:.3f}"))
    return " ".join(sentences)


def answer(rows: Sequence[AblationRow], codebook_size: int, recalls: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """The plain answer, one paragraph per question, every claim computed from ``rows``/``recalls``
    (answer_facts) and worded by the template (render_answer)."""
    return render_answer(answer_facts(rows, recalls), codebook_size)


def _remedy(row: AblationRow) -> str:
    return ", ".join(f"{k}={v}" for k, v in row.variant.overrides.items())


# ------------------------------------------------------------------ tables, plots, the report


def ablation_table(rows: Sequence[AblationRow]) -> list[str]:
    levels = levels_of(rows[0].metrics)
    header = ["variant", *[f"use L{l}" for l in range(1, levels + 1)], "collisions", "largest bucket",
              "neighbours (random)", "recon err", "fit s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        m = row.metrics
        label = f"**{row.variant.label}**" if row.variant.group in ("reference", "naive", "fixed") else row.variant.label
        cells = [label, *[f"{m[f'codebook_usage_level_{l}']:.3f}" for l in range(1, levels + 1)],
                 f"{m['collision_rate']:.3f}", str(int(m["largest_bucket"])),
                 f"{m['neighbour_preservation']:.3f} ({m['neighbour_preservation_random']:.3f})",
                 f"{m['reconstruction_error']:.3f}", f"{row.fit_seconds:.0f}"]
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
    """The key points end to end, each task's generator recall beside its ID ceiling."""
    columns = ("search", "search_ceiling", "search_ceiling_l1", "rec", "rec_ceiling", "rec_ceiling_l1", "rec_head", "rec_torso")
    lines = [
        "| quantizer | search Recall@30 | search ID ceiling | search ceiling, level 1 | rec Recall@30 | rec ID ceiling "
        "| rec ceiling, level 1 | rec head | rec torso | generator epochs | experiment |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for quantizer in KEY_QUANTIZERS:
        found = recalls.get(quantizer)
        if not found:
            lines.append(f"| {quantizer} | " + " | ".join("—" for _ in columns) + " | — | not run |")
            continue
        cells = [found.get(k) for k in columns]
        epochs = found.get("epochs")
        lines.append(
            f"| {quantizer} | " + " | ".join("—" if v is None else f"{v:.3f}" for v in cells)
            + f" | {'—' if epochs is None else f'{epochs:.2f}'} | `{found['experiment']}` |"
        )
    dense = next((f for f in recalls.values() if f.get("search_dense") is not None), None)
    if dense is not None:
        lines += ["", say("recall_table.ceiling", search_dense=f"{dense['search_dense']:.3f}", rec_dense=f"{dense['rec_dense']:.3f}")]
    epochs = unconverged_epochs(recalls)
    if epochs is not None:
        lines += ["", say("recall_table.undertrained", epochs=f"{epochs:.2f}", converged_epochs=CONVERGED_EPOCHS)]
    return lines


def render_report(
    rows: Sequence[AblationRow],
    setting: dict[str, Any],
    recalls: dict[str, dict[str, Any]],
    plot_name: str,
) -> str:

    paper_vae, paper_km = PAPER_QUANTIZERS["rqvae"], PAPER_QUANTIZERS["rqkmeans"]
    report = say(
        "report",
        paper_rqvae_search=f"{paper_vae[0]:.3f}",
        paper_rqkmeans_search=f"{paper_km[0]:.3f}",
        paper_label=PAPER_LABEL,
        items=f"{setting['items']:,}",
        dim=setting["dim"],
        source=setting.get("source", "`data/embeddings`"),
        embedding=setting["embedding"],
        model=setting["model"],
        space=setting["space"],
        levels=setting["levels"],
        codebook_size=setting["codebook_size"],
        seed=setting["seed"],
        steps=setting["steps"],
        threads=setting["threads"],
        seconds=f"{setting['seconds']:,.0f}",
        generated=setting["generated"],
        answer="\n".join(p + "\n" for p in answer(rows, setting["codebook_size"], recalls)),
        ablation_table="\n".join(ablation_table(rows)),
        plot_name=plot_name,
        recall_table="\n".join(recall_table(recalls)),
        collapse_usage=f"{COLLAPSE_USAGE:.0%}",
        healthy_usage=f"{HEALTHY_USAGE:.0%}",
        healthy_collision_margin=f"{HEALTHY_COLLISION_MARGIN:.2f}",
    )
    return report + "\n"


COLLAPSE_MAP_RUNS = "rqvae_collapse_map.jsonl"
COLLAPSE_MAP_PLOT = "rqvae_collapse_map.png"
COLLAPSE_MAP_SECTION = "## Collapse map"


def collapse_map_section(runs: Sequence[dict[str, Any]], jobs: int, steps: Sequence[int] = (1000, 3000)) -> str:
    """The report's "Collapse map" section (semid.collapse_map's runs; prose in the template)."""
    some, never = cm.answer_facts(runs, steps)
    cells = "; ".join(f"`{label}` on {embeddings}: {shares}" for embeddings, label, shares in some) or "none"
    mechanism = cm.mechanism_facts(runs)
    sets = list(dict.fromkeys(r["cell"]["embeddings"] for r in runs))
    cpu, wall = cm.total_seconds(runs)
    preset = [r for r in runs if r["label"] == "naive preset" and r["cell"]["embeddings"] == "content"]
    per_1k = [r["cpu_seconds"] * 1000 / r["checkpoints"][-1]["steps"] for r in preset]
    return say(
        "collapse_map",
        preset_steps=f"{RQVAE_NAIVE.steps:,}", lr=RQVAE_NAIVE.lr, seeds=len({r["seed"] for r in runs}),
        levels=cm.LEVELS, codebook_size=cm.CODEBOOK_SIZE,
        checkpoints=" / ".join(f"{s:,}" for s in sorted({row["steps"] for r in runs for row in r["checkpoints"]})),
        collapse_usage=f"{cm.COLLAPSE_USAGE:.0%}",
        answer=say("collapse_map.answer", steps_list=" / ".join(f"{s:,}" for s in steps), cells=cells, never=", ".join(never) or "none"),
        table="\n".join(cm.collapse_table(runs, steps)),
        plot_name=COLLAPSE_MAP_PLOT,
        mechanism="\n".join(cm.mechanism_table(runs)),
        mechanism_answer=mechanism_prose(mechanism),
        runs=len(runs), cpu_minutes=f"{cpu / 60:.0f}", wall_minutes=f"{wall / 60:.0f}", jobs=jobs,
        preset_cpu=f"{np.median(per_1k):.0f}" if per_1k else "—",
        cut=say("collapse_map.cut", other_sets=", ".join(s for s in sets if s != "content") or "none run",
                mpnet="included" if "mpnet" in sets else "not run (its embeddings were not cached: ~15 min of encoding on 2 cores did not fit)"),
    )


def mechanism_prose(facts: dict | None) -> str:
    """The mechanism paragraph; the offset sentence only where the numbers show it (collapsed
    latents at least 3x as far from the origin as they are wide, healthy ones under 1.5x)."""
    if facts is None:
        return say("collapse_map.mechanism.no_contrast")
    text = say("collapse_map.mechanism", **facts)
    collapsed_ratio = float(facts["collapsed_norm"]) / max(float(facts["collapsed_spread"]), 1e-9)
    healthy_ratio = float(facts["healthy_norm"]) / max(float(facts["healthy_spread"]), 1e-9)
    if collapsed_ratio >= 3 and healthy_ratio < 1.5:
        text += " " + say("collapse_map.offset", collapsed_ratio=f"{collapsed_ratio:.0f}", healthy_ratio=f"{healthy_ratio:.1f}",
                          healthy_codeword_norm=facts["healthy_codeword_norm"])
    return text


def run_collapse_map(root: Path, content: np.ndarray, out: Path, jobs: int, compute_multitask: bool = True) -> str:
    """Run (or resume) the collapse-map sweep; write its runs and plot into ``out``; the section's markdown."""
    embeddings = cm.cached_embeddings(root, content, compute_multitask=compute_multitask)
    runs = cm.run_sweep(embeddings, cm.sweep(embeddings), out / COLLAPSE_MAP_RUNS, jobs=max(1, jobs))
    cm.plot_collapse_map(runs, out / COLLAPSE_MAP_PLOT)
    return collapse_map_section(runs, max(1, jobs))


def replace_section(report: str, section: str) -> str:
    """``report`` with its collapse-map section (to the end) replaced by ``section``."""
    head = report.split("\n" + COLLAPSE_MAP_SECTION, 1)[0].rstrip("\n")
    return head + "\n\n" + section.rstrip("\n") + "\n"


def key_point_recalls(root: Path, embedding: str, data_label: str, run_missing: bool, jobs: int = 1) -> dict[str, dict[str, Any]]:
    """{quantizer: recalls} for the key quantizers on ``embedding`` from `dvc exp show`; with
    ``run_missing`` the missing points are queued and run first (semid.grid)."""
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
            # The best a generator that reproduces the dense ranking could do with these IDs
            # (metrics/id_ceiling.json): how much of a point's loss its ID table alone explains.
            **{
                f"{task}_{kind}": result.metric("id_ceiling", f"{task}_{key}")
                for task in ("search", "rec")
                for kind, key in (("ceiling", "recall_at_30"), ("ceiling_l1", "recall_at_30_level1"), ("dense", "dense_recall_at_30"))
            },
        }
    return recalls


def experiment_embeddings(root: Path, name: str, into: Path) -> Path:
    """Copy experiment ``name``'s data/embeddings out of the local DVC cache into ``into``."""
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
    parser.add_argument("--collapse-map-only", action="store_true",
                        help="run (or resume) only the collapse-map sweep and replace its section of rqvae.md")
    parser.add_argument("--collapse-jobs", type=int, default=2, help="collapse-map runs in parallel (one core each)")
    parser.add_argument("--no-collapse-map", action="store_true", help="skip the collapse-map sweep")
    args = parser.parse_args(argv)

    import torch


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
        out = args.out if args.out.is_absolute() else root / args.out
        if args.collapse_map_only:
            if meta.get("method") != "content":
                raise SemidError(f"--collapse-map-only needs content embeddings in {embeddings_dir}, found {meta.get('method')!r}")
            section = run_collapse_map(root, x, out, args.collapse_jobs)
            existing = (out / "rqvae.md").read_text() if (out / "rqvae.md").exists() else ""
            with atomic_path(out / "rqvae.md") as tmp:
                tmp.write_text(replace_section(existing, section))
            print(f"wrote the collapse map into {out / 'rqvae.md'} in {time.perf_counter() - started:,.0f}s")
            return
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
                  f"neighbours {m['neighbour_preservation']:.3f}, recon {m['reconstruction_error']:.3f}, {row.fit_seconds:.0f}s", flush=True)

        rows = run_ablation(x, variants, config.levels, config.codebook_size, params.base.seed, config.neighbours, base, show)
        workspace = Experiment("workspace", "workspace", None, params.raw)
        recalls = key_point_recalls(root, meta.get("method", params.embedding), workspace.data_label, not args.no_experiments, args.jobs)
        setting = {
            "items": len(x), "dim": int(x.shape[1]), "source": source, "embedding": meta.get("method", params.embedding),
            "model": meta.get("model", "?"), "space": space, "levels": config.levels,
            "codebook_size": config.codebook_size, "seed": params.base.seed,
            "steps": args.steps or config.options("rqvae").steps, "threads": args.threads,
            "seconds": time.perf_counter() - started, "generated": time.strftime("%Y-%m-%d %H:%M"),
        }
        plot_ablation(rows, out / "rqvae_ablation.png")
        with atomic_path(out / "rqvae.md") as tmp:
            report = render_report(rows, setting, recalls, "rqvae_ablation.png")
            if not args.no_collapse_map and meta.get("method") == "content" and not args.max_items:
                report = replace_section(report, run_collapse_map(root, x, out, args.collapse_jobs))
            tmp.write_text(report)
        write_json(
            out / "rqvae_ablation.json",
            {
                "setting": setting,
                "rows": [{"label": r.variant.label, "group": r.variant.group, "quantizer": r.variant.quantizer,
                          "overrides": r.variant.overrides, "fit_seconds": r.fit_seconds, **r.metrics} for r in rows],
                "recalls": recalls,
            },
        )
        print(f"wrote {out / 'rqvae.md'} in {time.perf_counter() - started:,.0f}s")


if __name__ == "__main__":
    main()
