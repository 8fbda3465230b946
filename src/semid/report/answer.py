"""The answer: facts computed from the ablation rows and the key points' recalls (collapsed,
healthy, which remedy does the most, recall verdicts, the ID ceiling), worded by the template."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from semid.report.ablation import AblationRow
from semid.report.template import say
from semid.results import load_paper_results

# A quantizer "collapsed" when its first level uses at most this share of the codebook...
COLLAPSE_USAGE = 0.1
# ...and "works" when it uses at least this share and collides at most this much more than RQ-KMeans.
HEALTHY_USAGE = 0.9
HEALTHY_COLLISION_MARGIN = 0.1
# Epochs below which the embedded generator's search recall was still rising steeply (bench/
# generator_budget.py on ml-latest-small: 0.011 after 5 epochs, 0.046 after 12, 0.134 after 20).
CONVERGED_EPOCHS = 12


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
    verdict: str  # same | higher | lower (recall_verdict, or the paired test's significance)
    p_corrected: float | None = None  # the grid's paired t-test (None: one seed, binomial SE)
    family: int | None = None  # the tests that correction is over


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
    grid_seeds: int | None = None  # recalls from the grid: the fewest seeds of a compared point (None: one seed)
    grid_embedding: str = ""
    naive_collapsed_seeds: tuple[int, int, str] | None = None  # (collapsed, seeds, level-1 uses) of the grid's naive points


def _by_group(rows: Sequence[AblationRow], group: str) -> list[AblationRow]:
    return [r for r in rows if r.variant.group == group]


def _one(rows: Sequence[AblationRow], group: str) -> AblationRow:
    found = _by_group(rows, group)
    if not found:
        raise ValueError(f"the ablation has no {group!r} row")
    return found[0]


def task_verdict(task: str, rqvae: dict[str, Any], rqkmeans: dict[str, Any]) -> TaskVerdict | None:
    """RQ-VAE against RQ-KMeans on one task: the grid's paired test where the recalls carry one
    (``<task>_test``), else two binomial standard errors over one seed's examples."""
    a, b = rqvae.get(task), rqkmeans.get(task)
    if a is None or b is None:
        return None
    test = rqvae.get(f"{task}_test")
    if test:
        verdict = "same" if not test["significant"] else "higher" if test["difference"] > 0 else "lower"
        return TaskVerdict(task, a, b, test["difference"], None, verdict, test["p_corrected"], test["family"])
    diff, se = recall_difference(a, b, rqvae.get(f"{task}_n"))
    return TaskVerdict(task, a, b, diff, se, recall_verdict(diff, se))


def naive_collapse_in_grid(naive: dict[str, Any] | None) -> tuple[int, int, str] | None:
    """(seeds collapsed, seeds, their level-1 uses) of the grid's naive RQ-VAE points."""
    usages = [u for u in (naive or {}).get("level1_usage") or [] if u is not None]
    if not usages:
        return None
    return sum(u <= COLLAPSE_USAGE for u in usages), len(usages), ", ".join(f"{u:.1%}" for u in usages)


def answer_facts(
    rows: Sequence[AblationRow], recalls: dict[str, dict[str, Any]] | None = None, grid_embedding: str = ""
) -> AnswerFacts:
    """``recalls``: {quantizer: {"search": float, "rec": float, "search_n": int|None, "rec_n": int|None}}, or
    from the grid (``grid_embedding`` set) with "seeds", "level1_usage" and "<task>_test" (report.recalls)."""
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
        verdicts = [v for task in ("search", "rec") if (v := task_verdict(task, recalls["rqvae"], recalls["rqkmeans"]))]
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
        grid_seeds=min(recalls[q].get("seeds") or 1 for q in ("rqvae", "rqkmeans")) if recalls_measured and grid_embedding else None,
        grid_embedding=grid_embedding,
        naive_collapsed_seeds=naive_collapse_in_grid(naive_found) if grid_embedding else None,
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
            verdicts = [say("verdict", task=v.task, rqvae=f"{v.rqvae:.3f}", rqkmeans=f"{v.rqkmeans:.3f}",
                            difference=f"{v.difference:+.3f}", evidence=_evidence(v), verdict=_verdict_words(v))
                        for v in facts.verdicts]
            budget = "" if facts.unconverged_epochs is None else say("end_to_end.unconverged_budget", epochs=f"{facts.unconverged_epochs:.2f}")
            runs = (say("end_to_end.runs.grid", embedding=facts.grid_embedding, seeds=facts.grid_seeds)
                    if facts.grid_seeds else say("end_to_end.runs.one_seed"))
            sentences.append(say("end_to_end", runs=runs, budget=budget, verdicts="; ".join(verdicts)))
            conclusion = f"conclusion.{facts.conclusion}" + (".grid" if facts.grid_seeds and facts.conclusion == "same" else "")
            sentences.append(say(conclusion, seeds=facts.grid_seeds,
                                 lower_tasks=" and ".join(v.task for v in facts.verdicts if v.verdict == "lower")))
        if facts.naive_recall is not None:
            search, rec = facts.naive_recall
            collapsed_seeds = "" if facts.naive_collapsed_seeds is None else say(
                "naive_recall.collapsed", collapsed=facts.naive_collapsed_seeds[0], seeds=facts.naive_collapsed_seeds[1],
                usages=facts.naive_collapsed_seeds[2])
            sentences.append(say("naive_recall", search=f"{search:.3f}", rec=f"{rec:.3f}", collapsed=collapsed_seeds))
    paragraphs.append(" ".join(sentences))

    # 4. How much of the loss can the ID table alone explain?
    if facts.ceiling is not None:
        paragraphs.append(render_ceiling(facts.ceiling))
    return paragraphs


def _evidence(v: TaskVerdict) -> str:
    if v.p_corrected is not None:
        return say("verdict.paired_test", p=f"{v.p_corrected:.2f}" if v.p_corrected >= 0.01 else f"{v.p_corrected:.1e}",
                   family=v.family)
    return "" if v.standard_error is None else say("verdict.standard_error", standard_error=f"{v.standard_error:.3f}")


def _verdict_words(v: TaskVerdict) -> str:
    return say("verdict.not_significant" if v.p_corrected is not None and v.verdict == "same" else f"verdict.{v.verdict}")


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
    fixed = (recalls or {}).get("rqvae") or {}
    more = ("search", "search_ceiling", "search_ceiling_l1")
    if all(fixed.get(k) is not None for k in more) and reference.get("search_ceiling_l1") is not None:
        facts.update({f"fixed_{k}": fixed[k] for k in more})
        facts["rqkmeans_search_ceiling_l1"] = reference["search_ceiling_l1"]
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
    if "fixed_search" in c:
        sentences.append(render_fixed_ceiling(c))
    if c["rqkmeans_rec"] > c["rqkmeans_rec_ceiling"]:
        sentences.append(say("ceiling.rec_beyond_dense", rec=f"{c['rqkmeans_rec']:.3f}", rec_ceiling=f"{c['rqkmeans_rec_ceiling']:.3f}"))
    return " ".join(sentences)


def render_fixed_ceiling(c: dict[str, float]) -> str:
    """Where the fixed RQ-VAE's search loss comes from: its IDs (the ceilings differ by at least half
    the generators' difference) or the generator."""
    by_ids = c["fixed_search_ceiling"] - c["rqkmeans_search_ceiling"]
    by_generator = c["fixed_search"] - c["rqkmeans_search"]
    reading = "ceiling.fixed.ids" if by_generator < 0 and by_ids <= by_generator / 2 else "ceiling.fixed.generator"
    return say("ceiling.fixed", fixed_ceiling=f"{c['fixed_search_ceiling']:.3f}", rqkmeans_ceiling=f"{c['rqkmeans_search_ceiling']:.3f}",
               ceiling_difference=f"{by_ids:+.3f}", generator_difference=f"{by_generator:+.3f}",
               fixed_search=f"{c['fixed_search']:.3f}", rqkmeans_search=f"{c['rqkmeans_search']:.3f}",
               reading=say(reading, fixed_l1=f"{c['fixed_search_ceiling_l1']:.3f}", rqkmeans_l1=f"{c['rqkmeans_search_ceiling_l1']:.3f}"))


def answer(rows: Sequence[AblationRow], codebook_size: int, recalls: dict[str, dict[str, Any]] | None = None,
           grid_embedding: str = "") -> list[str]:
    """The plain answer, one paragraph per question, every claim computed from ``rows``/``recalls``
    (answer_facts) and worded by the template (render_answer)."""
    return render_answer(answer_facts(rows, recalls, grid_embedding), codebook_size)


def _remedy(row: AblationRow) -> str:
    return ", ".join(f"{k}={v}" for k, v in row.variant.overrides.items())
