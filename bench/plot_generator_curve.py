"""Markdown table and plot of generator learning curves (the JSON lines of bench/generator_budget.py).

    python bench/plot_generator_curve.py bench/results/generator_curve_cpu.jsonl --png bench/results/generator_curve_cpu.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("curves", type=Path, nargs="+", help="JSON lines files")
    parser.add_argument("--png", type=Path, help="write the plot here")
    parser.add_argument("--ref", nargs="*", default=[], help="TASK:NAME=VALUE reference lines, e.g. search:dense=0.189")
    args = parser.parse_args()
    rows = [json.loads(line) for path in args.curves for line in path.read_text().splitlines() if line.strip()]

    print("| variant | LR schedule | steps | epochs | train s | examples/s | search R@30 | rec R@30 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['variant']} | {row.get('schedule_steps', row['steps']):,} | {row['steps']:,} | {row['epochs']:.2f} | {row['train_seconds']:.0f} | "
            f"{row.get('train_examples_per_second', 0):,} | {row['search']['recall_at_30']:.3f} | "
            f"{row['rec']['recall_at_30']:.3f} |"
        )
    if not args.png:
        return

    matplotlib.use("Agg")

    fig, axes = plt.subplots(1, 2, figsize=(11, 6), sharex=True)
    def run_of(row: dict) -> tuple[str, int]:
        return row["variant"], row.get("schedule_steps", 0)

    for variant, schedule in dict.fromkeys(map(run_of, rows)):
        mine = [row for row in rows if run_of(row) == (variant, schedule)]
        label = f"{variant} (LR schedule {schedule:,} steps)" if schedule else variant
        for axis, task in zip(axes, ("search", "rec")):
            axis.plot([r["steps"] for r in mine], [r[task]["recall_at_30"] for r in mine], marker="o", label=label)
    for axis, task in zip(axes, ("search", "rec")):
        axis.set_title(f"{task} Recall@30 (test)")
        axis.set_xlabel("training steps (batch 128)")
        axis.grid(alpha=0.3)
    for reference in args.ref:
        task, _, rest = reference.partition(":")
        name, _, value = rest.partition("=")
        axes[0 if task == "search" else 1].axhline(float(value), color="grey", linestyle="--", linewidth=1)
        axis = axes[0 if task == "search" else 1]
        axis.annotate(name, (axis.get_xlim()[0], float(value)), textcoords="offset points", xytext=(4, 2), fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", fontsize=8, ncol=2)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
