"""The report's last section, the collapse map: semid.collapse_map's runs as markdown, and the
sweep behind them run (or resumed) into the report's folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from semid import collapse_map as cm
from semid.quantize.options import RQVAE_NAIVE
from semid.report.template import say

COLLAPSE_MAP_RUNS = "rqvae_collapse_map.jsonl"
COLLAPSE_MAP_PLOT = "rqvae_collapse_map.png"
COLLAPSE_MAP_SECTION = "## Collapse map"


def collapse_map_section(runs: Sequence[dict[str, Any]], jobs: int, steps: Sequence[int] = (1000, 3000, 10000)) -> str:
    """The report's "Collapse map" section (semid.collapse_map's runs; prose in the template)."""
    some, never = cm.answer_facts(runs, steps)
    cells = "; ".join(f"`{label}` on {embeddings}: {shares}" for embeddings, label, shares in some) or "none"
    mechanism = cm.mechanism_facts(runs)
    sets = list(dict.fromkeys(r["cell"]["embeddings"] for r in runs))
    cpu, wall = cm.total_seconds(runs)
    preset = [r for r in runs if r["label"] == "naive preset" and r["cell"]["embeddings"] == "content"]
    per_1k = [r["cpu_seconds"] * 1000 / r["checkpoints"][-1]["steps"] for r in preset]
    long_sets = [name for name in sets if any(r["checkpoints"][-1]["steps"] > max(cm.CHECKPOINTS)
                                              for r in runs if r["cell"]["embeddings"] == name)]
    return say(
        "collapse_map",
        preset_steps=f"{RQVAE_NAIVE.steps:,}", lr=RQVAE_NAIVE.lr, seeds=len({r["seed"] for r in runs}),
        levels=cm.LEVELS, codebook_size=cm.CODEBOOK_SIZE,
        checkpoints=" / ".join(f"{s:,}" for s in sorted({row["steps"] for r in runs for row in r["checkpoints"]} & set(cm.CHECKPOINTS))),
        long_runs=say("collapse_map.long_runs", long_sets=" and ".join(long_sets),
                      long_checkpoints=" / ".join(f"{s:,}" for s in cm.LONG_CHECKPOINTS if s > max(cm.CHECKPOINTS)))
        if long_sets else "",
        collapse_usage=f"{cm.COLLAPSE_USAGE:.0%}",
        answer=say("collapse_map.answer", steps_list=" / ".join(f"{s:,}" for s in steps), cells=cells, never=", ".join(never) or "none"),
        table="\n".join(cm.collapse_table(runs, steps)),
        plot_name=COLLAPSE_MAP_PLOT,
        mechanism="\n".join(cm.mechanism_table(runs)),
        mechanism_answer=mechanism_prose(mechanism),
        runs=len(runs), cpu_minutes=f"{cpu / 60:.0f}", wall_minutes=f"{wall / 60:.0f}", jobs=jobs,
        preset_cpu=f"{np.median(per_1k):.0f}" if per_1k else "—",
        cut=say("collapse_map.cut", other_sets=", ".join(s for s in sets if s != "content") or "none run",
                steps=say("collapse_map.cut.steps_long", long_sets=" and ".join(long_sets)) if long_sets
                else say("collapse_map.cut.steps"),
                mpnet="included (the preset, at 3,000 steps)" if "mpnet" in sets
                else "not run (its embeddings were not cached: ~15 min of encoding on 2 cores did not fit)"),
    )


def when_collapsed(runs: Sequence[dict[str, Any]], steps: Sequence[int] = (1000, 3000, 10000)) -> str:
    """The answer's "when it collapses" paragraph: collapsed runs of all the map's cells per step
    count, the cells that never collapsed, and the preset at its own step count per embedding set."""
    summary = cm.summarize(runs)
    shares = []
    for count in steps:
        rows = [s for s in summary if s["steps"] == count]
        if rows:
            shares.append(say("when.share", collapsed=sum(s["collapsed"] for s in rows), runs=sum(s["seeds"] for s in rows),
                              steps=f"{count:,}"))
    _, never = cm.answer_facts(runs, steps)
    preset_rows = [s for s in summary if s["label"] == "naive preset" and s["steps"] == RQVAE_NAIVE.steps]
    preset = "" if not preset_rows else say(
        "when.preset.likely" if all(2 * s["collapsed"] > s["seeds"] for s in preset_rows) else "when.preset.mixed",
        steps=f"{RQVAE_NAIVE.steps:,}", shares=", ".join(f"{s['embeddings']} {s['collapsed']}/{s['seeds']}" for s in preset_rows))
    last = max((s["steps"] for s in summary), default=0)
    transient = all(s["collapsed"] == 0 for s in summary if s["steps"] == last)
    return say("when", cells=len({(s["embeddings"], s["label"]) for s in summary}), seeds=len({r["seed"] for r in runs}),
               shares=", ".join(shares), reading=say("when.transient" if transient else "when.persists", steps=f"{last:,}"),
               never=say("when.never", cells=", ".join(never)) if never else "", preset=preset)


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


def run_collapse_map(root: Path, content: np.ndarray, out: Path, jobs: int, compute_multitask: bool = True,
                     compute_mpnet: bool = False) -> str:
    """Run (or resume) the collapse-map sweep; write its runs and plot into ``out``; the section's markdown."""
    embeddings = cm.cached_embeddings(root, content, compute_multitask=compute_multitask, compute_mpnet=compute_mpnet)
    runs = cm.run_sweep(embeddings, cm.sweep(embeddings), out / COLLAPSE_MAP_RUNS, jobs=max(1, jobs))
    cm.plot_collapse_map(runs, out / COLLAPSE_MAP_PLOT)
    return collapse_map_section(runs, max(1, jobs))


def replace_section(report: str, section: str) -> str:
    """``report`` with its collapse-map section (to the end) replaced by ``section``."""
    head = report.split("\n" + COLLAPSE_MAP_SECTION, 1)[0].rstrip("\n")
    return head + "\n\n" + section.rstrip("\n") + "\n"


def _without_hash(key: str) -> str:
    """A run key (collapse_map.run_key) without its embeddings hash: the same cell, seed and checkpoints."""
    parts = json.loads(key)
    return json.dumps(parts[:3] + parts[4:])


def saved_runs(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs a full sweep would return, from the runs file alone: per (cell, seed) of
    collapse_map.sweep() at the cell's checkpoints, the last run written (a sweep on changed embeddings
    appends runs under a new hash), in sweep order; and "<embeddings> <label>: n/N seeds" for each
    cell not finished on every seed."""
    latest = {_without_hash(run["key"]): run for run in cm.read_runs(path)}
    runs, incomplete = [], []
    for cell in cm.sweep():
        found = [latest[key] for key in (_without_hash(cm.run_key(cell, seed, cell.checkpoints, "")) for seed in cm.SEEDS)
                 if key in latest]
        runs += found
        if len(found) < len(cm.SEEDS):
            incomplete.append(f"{cell.embeddings} {cell.label}: {len(found)}/{len(cm.SEEDS)} seeds")
    return runs, incomplete
