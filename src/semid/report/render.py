"""The report's body: the ablation and recall tables, the ablation plot, reports/rqvae.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from semid.report.ablation import AblationRow, levels_of
from semid.report.answer import (
    COLLAPSE_USAGE,
    CONVERGED_EPOCHS,
    HEALTHY_COLLISION_MARGIN,
    HEALTHY_USAGE,
    answer,
    unconverged_epochs,
)
from semid.report.collapse_section import when_collapsed
from semid.report.recalls import KEY_QUANTIZERS
from semid.report.template import say
from semid.results import PAPER_LABEL, PAPER_QUANTIZERS

# matplotlib is imported inside plot_ablation, after choosing its non-interactive backend: the
# tables and render_report (tests, --render-only) do without it.

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
    """The key points end to end, each task's generator recall beside its ID ceiling; from the grid,
    with seeds, each seed's level-1 code use and ▼/▲ where the paired test against RQ-KMeans is
    significant."""
    columns = ("search", "search_ceiling", "search_ceiling_l1", "rec", "rec_ceiling", "rec_ceiling_l1", "rec_head", "rec_torso")
    lines = [
        "| quantizer | search Recall@30 | search ID ceiling | search ceiling, level 1 | rec Recall@30 | rec ID ceiling "
        "| rec ceiling, level 1 | rec head | rec torso | generator epochs | seeds | level-1 code use | experiment |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for quantizer in KEY_QUANTIZERS:
        found = recalls.get(quantizer)
        if not found:
            lines.append(f"| {quantizer} | " + " | ".join("—" for _ in columns) + " | — | — | — | not run |")
            continue
        cells = ["—" if found.get(k) is None else f"{found[k]:.3f}{_mark(found.get(f'{k}_test'))}" for k in columns]
        epochs = found.get("epochs")
        usage = ", ".join(f"{u:.1%}" for u in found.get("level1_usage") or [] if u is not None) or "—"
        lines.append(
            f"| {quantizer} | " + " | ".join(cells)
            + f" | {'—' if epochs is None else f'{epochs:.2f}'} | {found.get('seeds', 1)} | {usage} | `{found['experiment']}` |"
        )
    dense = next((f for f in recalls.values() if f.get("search_dense") is not None), None)
    if dense is not None:
        lines += ["", say("recall_table.ceiling", search_dense=f"{dense['search_dense']:.3f}", rec_dense=f"{dense['rec_dense']:.3f}")]
    epochs = unconverged_epochs(recalls)
    if epochs is not None:
        lines += ["", say("recall_table.undertrained", epochs=f"{epochs:.2f}", converged_epochs=CONVERGED_EPOCHS)]
    return lines


def _mark(test: dict[str, Any] | None) -> str:
    if not test or not test["significant"]:
        return ""
    return " ▲" if test["difference"] > 0 else " ▼"


def render_report(
    rows: Sequence[AblationRow],
    setting: dict[str, Any],
    recalls: dict[str, dict[str, Any]],
    plot_name: str,
    grid_embedding: str = "",
    collapse_runs: Sequence[dict[str, Any]] = (),
) -> str:
    """reports/rqvae.md without its collapse-map section (collapse_section adds it); ``recalls`` come
    from the grid's ``grid_embedding`` block when that is set (report.recalls), and ``collapse_runs``
    (the collapse map's finished runs) add the answer's "when it collapses" paragraph."""
    paragraphs = answer(rows, setting["codebook_size"], recalls, grid_embedding)
    if collapse_runs:
        paragraphs.insert(1, when_collapsed(collapse_runs))

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
        answer="\n".join(p + "\n" for p in paragraphs),
        ablation_table="\n".join(ablation_table(rows)),
        plot_name=plot_name,
        recall_source=say("recall_source.grid", embedding=grid_embedding) if grid_embedding
        else say("recall_source.experiments", embedding=setting["embedding"]),
        recall_table="\n".join(recall_table(recalls)),
        collapse_usage=f"{COLLAPSE_USAGE:.0%}",
        healthy_usage=f"{HEALTHY_USAGE:.0%}",
        healthy_collision_margin=f"{HEALTHY_COLLISION_MARGIN:.2f}",
    )
    return report + "\n"
