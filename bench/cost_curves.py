"""Cost curves: wall time and peak memory of every pipeline stage on growing data, extrapolated.

Runs prepare_movielens, gen_queries, train_embedder (content), quantize (rqkmeans), train_t5 and
evaluate as subprocesses (``python -m semid.stages.<name>``, as DVC runs them) in a temporary
copy of the project, on

- real slices of ml-latest-small: ``data.sample_items`` random items with their users and
  interactions (0 = all 9,742 items), and
- synthetic upscalings of one real slice (``--scale-items``): every user repeated k times under
  new ids (``ratings.csv`` rewritten in a bench-only mirror; the slice picks the same items, so
  items, tags and queries stay fixed), so interactions and users grow k-fold at a fixed catalogue.
  A small slice keeps the item-driven stages cheap in these rows; what they add is the slope in
  ratings and users at fixed items.

Step-counted budgets are fixed across rows (generator max_steps, decoding beams, search queries),
so what grows is what the data size drives. Per stage and row it records wall time and peak RSS
(``os.wait4``'s rusage of that one subprocess) and CPU time (user + system, which other jobs on
a shared machine inflate far less than wall time), next to the counts (items, users, interactions,
queries, train examples). Each stage's fixed floor (Python start + importing the stage module and
every third-party package it loaded in the first row, lazy imports included) is measured after the
rows and subtracted; the rest is fitted as ``c * items**a * interactions**b`` (least
squares in log-log, on CPU time) and extrapolated to the paper's scale and to ML-25M.

    python bench/cost_curves.py                         # the full bench: 26 min on 2 cores under load
    python bench/cost_curves.py --items 1000,2500,5000,0 --scales 3,6,12   # + all 9,742 items
    python bench/cost_curves.py --items 500,1000 --scales 2 --out /tmp/cc   # a quick look

MLflow tracking is off (SEMID_TRACKING=0): its store setup is a fixed cost of every stage that
does not grow with the data. No asserts: the bench prints figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from semid.config import deep_merge
from semid.paper_dry_run import copy_project

REPO_ROOT = Path(__file__).resolve().parents[1]
RELEASE = "ml-latest-small"
STAGES = ("prepare_movielens", "gen_queries", "train_embedder", "quantize", "train_t5", "evaluate")
GIB = 1024.0

# Fixed budgets, the same in every row: small enough that the bench fits ~20 min on 2 cores.
PARAMS = dict(
    base={"threads": 2},
    embedding="content",
    quantizer="rqkmeans",
    embed={"eval_max_queries": 200},
    generator={"max_steps": 20, "save_steps": 1000, "eval_steps": 0, "logging_steps": 10,
               "max_valid_examples": 100, "warmup_steps": 5},
    evaluate={"search_queries": 100, "k": 10, "num_beams": 10, "batch_size": 64},
)

# Where the extrapolation goes: (items, interactions, users).
TARGETS = {
    "paper": (62_000, 1_200_000, 8_000),
    "ML-25M": (62_000, 25_000_000, 162_000),
}
MACHINE_GB = 24.0
REASONABLE_HOURS = 24.0  # "reasonable time": CPU hours of one stage (>= 12 h wall on 2 cores)


@dataclass
class Fit:
    """Stage cost = floor + c * items**a * interactions**b (the floor measured, the rest fitted)."""

    floor: float
    log_c: float
    a: float  # exponent of items
    b: float  # exponent of interactions (users grow with them)

    def predict(self, items: float, interactions: float) -> float:
        return self.floor + math.exp(self.log_c + self.a * math.log(items) + self.b * math.log(interactions))


def fit_power(items: np.ndarray, interactions: np.ndarray, cost: np.ndarray, floor: float) -> Fit:
    """Least squares of log(cost - floor) on log(items), log(interactions).

    A row whose cost does not clear the floor by 5% carries no information on growth and is
    left out; with fewer than 3 rows left the stage is taken as flat (a = b = 0). A negative
    exponent is dropped and the rest refitted."""
    variable = cost - floor
    keep = variable > 0.05 * np.maximum(floor, 1e-9)
    if keep.sum() < 3:
        return Fit(floor, math.log(max(float(np.median(np.maximum(variable, 1e-9))), 1e-9)), 0.0, 0.0)
    sizes = np.column_stack([np.log(items[keep]), np.log(interactions[keep])])
    used = [0, 1]
    while True:
        design = np.column_stack([np.ones(keep.sum()), sizes[:, used]])
        solution, *_ = np.linalg.lstsq(design, np.log(variable[keep]), rcond=None)
        exponents = dict(zip(used, solution[1:]))
        negative = [i for i, e in exponents.items() if e < 0]
        if not negative:  # a cost never shrinks as data grow: a negative slope is noise, refit without it
            return Fit(floor, float(solution[0]), float(exponents.get(0, 0.0)), float(exponents.get(1, 0.0)))
        used.remove(min(negative, key=exponents.get))


def growth_label(exponent: float) -> str:
    """Name a log-log slope. Over one decade n log n reads as a slope of ~1.1 to 1.3."""
    if exponent < 0.3:
        return "flat"
    if exponent < 0.85:
        return "sublinear"
    if exponent < 1.15:
        return "linear"
    if exponent < 1.6:
        return "n log n"
    if exponent < 2.4:
        return "quadratic"
    return "worse than quadratic"


# ------------------------------------------------------------------------------- running


def stage_env(project: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(project / "src")
    env["SEMID_TRACKING"] = "0"
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DVC_ROOT", None)  # the stages must find the copy, never the repo that runs the bench
    return env


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MiB) of one subprocess, from its own rusage (os.wait4)."""
    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} failed ({process.returncode}) in {cwd}:\n{tail}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0  # Linux: KiB


def make_project(folder: Path, params: dict) -> Path:
    copy_project(REPO_ROOT, folder)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(path.read_text()), params), sort_keys=False))
    return folder


def upscaled_mirror(release_dir: Path, target: Path, factor: int) -> Path:
    """A mirror folder whose ratings.csv repeats every user ``factor`` times under new ids."""
    folder = target / RELEASE
    folder.mkdir(parents=True)
    for file in release_dir.iterdir():
        if file.name != "ratings.csv":
            (folder / file.name).symlink_to(file.resolve())
    ratings = pd.read_csv(release_dir / "ratings.csv")
    offset = int(ratings["userId"].max())
    copies = [ratings.assign(userId=ratings["userId"] + copy * offset) for copy in range(factor)]
    pd.concat(copies, ignore_index=True).to_csv(folder / "ratings.csv", index=False)
    return target


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def counts(project: Path) -> dict[str, float]:
    data = read_json(project / "metrics/data.json")
    queries = read_json(project / "metrics/queries.json")
    train = read_json(project / "metrics/train_t5.json")
    rec = read_json(project / "metrics/rec.json")
    return {
        "items": data.get("items", 0),
        "users": data.get("users", 0),
        "interactions": data.get("interactions", 0),
        "raw_ratings": data.get("raw_interactions", 0),
        "queries": queries.get("queries_train", 0) + queries.get("queries_valid", 0) + queries.get("queries_test", 0),
        "train_examples": train.get("train_examples", 0),
        "train_rec_examples": train.get("train_rec_examples", 0),
        "t5_step_seconds": train.get("train_seconds", float("nan")),
        "t5_text_state_seconds": train.get("text_state_seconds", float("nan")),
        "rec_test_users": rec.get("examples", 0),
    }


# Runs the stage as `python -m` does and, at exit, lists the top-level packages it loaded: the
# floor then imports the same ones (torch, sentence_transformers, faiss are imported lazily).
STAGE_RUNNER = (
    "import atexit, runpy, sys; module, listing = sys.argv[1:3]; del sys.argv[1:]; "
    "atexit.register(lambda: open(listing, 'w').write(' '.join(sorted({m.split('.')[0] for m in sys.modules})))); "
    "runpy.run_module(module, run_name='__main__', alter_sys=True)"
)


def loaded_packages(modules_file: Path) -> list[str]:
    """Third-party top-level packages a stage run loaded (not the standard library, not semid)."""
    names = modules_file.read_text().split() if modules_file.exists() else []
    return [n for n in names if n not in sys.stdlib_module_names and not n.startswith("_") and n != "semid"]


def measure_row(label: str, params: dict, work: Path, mirror: Path) -> list[dict]:
    project = make_project(work / label, params)
    env = stage_env(project)
    env["SEMID_MOVIELENS_MIRROR"] = str(mirror)
    measured = []
    for stage in STAGES:
        modules = work / f"{stage}.modules"  # the last row's list wins; every row loads the same
        seconds, cpu, peak_mb = run_measured(
            [sys.executable, "-c", STAGE_RUNNER, f"semid.stages.{stage}", str(modules)], project, env,
            work / f"{label}.{stage}.log",
        )
        measured.append((stage, seconds, cpu, peak_mb))
        print(f"  {label:>10} {stage:<18} {seconds:7.1f} s wall {cpu:7.1f} s CPU {peak_mb:8.0f} MiB", flush=True)
    sizes = counts(project)
    rows = [{"row": label, "stage": stage, "seconds": round(s, 2), "cpu_seconds": round(c, 2),
             "peak_rss_mb": round(m, 1), **sizes} for stage, s, c, m in measured]
    shutil.rmtree(project, ignore_errors=True)  # models and embeddings: keep the disk use small
    return rows


def measure_floors(work: Path) -> dict[str, tuple[float, float, float]]:
    """Per stage: (wall s, CPU s, peak MiB) of starting Python, importing the stage module and the
    third-party packages its runs loaded. A package that fails to import alone is skipped."""
    project = make_project(work / "floor", PARAMS)
    env = stage_env(project)
    floors = {}
    for stage in STAGES:
        packages = loaded_packages(work / f"{stage}.modules")
        code = f"import semid.stages.{stage}\nfor name in {packages!r}:\n    try:\n        __import__(name)\n" \
               "    except Exception:\n        pass"
        floors[stage] = run_measured([sys.executable, "-c", code], project, env, work / f"floor.{stage}.log")
    shutil.rmtree(project, ignore_errors=True)
    return floors


# ------------------------------------------------------------------------------- reporting


def ratings_column(stage: str) -> str:
    """prepare_movielens reads the whole ratings file; every later stage sees the kept interactions."""
    return "raw_ratings" if stage == "prepare_movielens" else "interactions"


def fits_of(frame: pd.DataFrame, floors: dict[str, tuple[float, float, float]]) -> dict[str, dict[str, Fit]]:
    fits = {}
    for stage, rows in frame.groupby("stage", sort=False):
        items, interactions = rows["items"].to_numpy(float), rows[ratings_column(stage)].to_numpy(float)
        fits[stage] = {
            "time": fit_power(items, interactions, rows["cpu_seconds"].to_numpy(float), floors[stage][1]),
            "memory": fit_power(items, interactions, rows["peak_rss_mb"].to_numpy(float), floors[stage][2]),
        }
    return fits


def driver(fit: Fit) -> str:
    """Which size drives a cost: the larger exponent, if it grows at all."""
    if max(fit.a, fit.b) < 0.3:
        return "fixed"
    return "items" if fit.a >= fit.b else "interactions/users"


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def extrapolation_table(fits: dict[str, dict[str, Fit]]) -> tuple[str, dict[str, str]]:
    lines = [
        "| stage | CPU time: items exp. | CPU time: ratings exp. | growth (driver) | memory: items exp. | "
        "memory: ratings exp. | paper scale | ML-25M |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    first_failure = {}
    for stage, fit in fits.items():
        time_fit, memory_fit = fit["time"], fit["memory"]
        cells = []
        for target, (items, interactions, _users) in TARGETS.items():
            seconds, megabytes = time_fit.predict(items, interactions), memory_fit.predict(items, interactions)
            cells.append(f"{format_duration(seconds)}, {megabytes / GIB:.1f} GiB")
            too_big = megabytes / GIB > MACHINE_GB or seconds > REASONABLE_HOURS * 3600
            if too_big and target not in first_failure:
                first_failure[target] = stage
        growth = f"{growth_label(max(time_fit.a, time_fit.b))} ({driver(time_fit)})"
        lines.append(
            f"| {stage} | {time_fit.a:.2f} | {time_fit.b:.2f} | {growth} | {memory_fit.a:.2f} | {memory_fit.b:.2f} | "
            f"{cells[0]} | {cells[1]} |"
        )
    return "\n".join(lines), first_failure


def measured_table(frame: pd.DataFrame) -> str:
    wide_time = frame.pivot(index="row", columns="stage", values="seconds")[list(STAGES)]
    wide_cpu = frame.pivot(index="row", columns="stage", values="cpu_seconds")[list(STAGES)]
    wide_memory = frame.pivot(index="row", columns="stage", values="peak_rss_mb")[list(STAGES)]
    sizes = frame.drop_duplicates("row").set_index("row")
    order = list(dict.fromkeys(frame["row"]))
    header = "| row | items | users | ratings kept | queries | T5 examples | " + " | ".join(STAGES) + " |"
    lines = [header, "| " + " | ".join(["---"] * (6 + len(STAGES))) + " |"]
    for row in order:
        size = sizes.loc[row]
        cells = [f"{wide_time.loc[row, s]:.0f} / {wide_cpu.loc[row, s]:.0f} s, {wide_memory.loc[row, s]:.0f} MB"
                 for s in STAGES]
        lines.append(
            f"| {row} | {int(size['items']):,} | {int(size['users']):,} | {int(size['interactions']):,} | "
            f"{int(size['queries']):,} | {int(size['train_examples']):,} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib  # only the report needs it (~0.5 s); the measuring child processes never do

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ax_time, ax_memory) = plt.subplots(1, 2, figsize=(12, 4.8))
    for index, (stage, rows) in enumerate(frame.groupby("stage", sort=False)):
        synthetic = rows["row"].str.contains(" x")
        base = rows[rows["row"] == rows.loc[synthetic, "row"].str.split(" ").str[0].iloc[0]] if synthetic.any() else rows[:0]
        column_x = ratings_column(stage)
        for axis, column in ((ax_time, "cpu_seconds"), (ax_memory, "peak_rss_mb")):
            # solid: real item slices; dashed: the upscaled slice (its real row, then users repeated)
            real = rows[~synthetic].sort_values(column_x)
            repeated = pd.concat([base, rows[synthetic]]).sort_values(column_x)
            axis.plot(real[column_x], real[column], marker="o", color=f"C{index}", label=stage)
            axis.plot(repeated[column_x], repeated[column], marker="s", linestyle="--", color=f"C{index}")
    for axis, title in ((ax_time, "CPU time, user + system (s)"), (ax_memory, "peak RSS (MiB)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("ratings the stage sees (prepare: the file; others: kept interactions)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    ax_time.legend(fontsize=8, title="solid: item slices, dashed: users repeated", title_fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="1000,2500,5000", help="real slices: data.sample_items (0 = all)")
    parser.add_argument("--scale-items", type=int, default=1000, help="the real slice the synthetic rows upscale")
    parser.add_argument("--scales", default="3,6", help="synthetic rows: every user of that slice repeated k times")
    parser.add_argument("--mirror", type=Path, default=Path(os.environ.get("SEMID_MOVIELENS_MIRROR",
                                                                           REPO_ROOT.parent / "shared/data/movielens")))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/cost_curves",
                        help="writes OUT.csv, OUT.floors.json, OUT.md, OUT.png")
    parser.add_argument("--report-only", action="store_true", help="refit and redraw from OUT.csv, measure nothing")
    args = parser.parse_args()
    release_dir = args.mirror / RELEASE
    if not (release_dir / "ratings.csv").exists():
        print(f"--mirror {args.mirror}: no {RELEASE}/ratings.csv there; point it at the MovieLens mirror folder")
        raise SystemExit(2)

    started = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    floors_path, csv_path = args.out.with_suffix(".floors.json"), args.out.with_suffix(".csv")
    if args.report_only:
        report(pd.read_csv(csv_path), {k: tuple(v) for k, v in json.loads(floors_path.read_text()).items()},
               args.out, None)
        return
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="semid-cost-") as tmp:
        work = Path(tmp)
        # Written after every row: a failure late in the bench keeps what was measured (--report-only).
        for sample_items in map(int, filter(None, args.items.split(","))):
            label = f"{sample_items}i" if sample_items else "all"
            params = {**PARAMS, "data": {"sample_items": sample_items, "sample_items_strategy": "random"}}
            rows += measure_row(label, params, work, args.mirror)
            pd.DataFrame(rows).to_csv(csv_path, index=False)
        for factor in map(int, filter(None, args.scales.split(","))):
            mirror = upscaled_mirror(release_dir, work / f"mirror-x{factor}", factor)
            data = {"sample_items": args.scale_items, "sample_items_strategy": "random", "verify_checksums": False}
            rows += measure_row(f"{args.scale_items or 'all'}i x{factor}", {**PARAMS, "data": data}, work, mirror)
            pd.DataFrame(rows).to_csv(csv_path, index=False)
            shutil.rmtree(mirror, ignore_errors=True)
        floors = measure_floors(work)
        floors_path.write_text(json.dumps(floors, indent=1) + "\n")
    report(pd.DataFrame(rows), floors, args.out, time.perf_counter() - started)


def report(frame: pd.DataFrame, floors: dict[str, tuple[float, float, float]], out: Path,
           total: float | None) -> None:
    """Fits, extrapolation, OUT.md and OUT.png from the measured rows; prints the report."""
    fits = fits_of(frame, floors)
    extrapolated, first_failure = extrapolation_table(fits)
    plot(frame, out.with_suffix(".png"))
    failure_lines = [
        f"- {target}: first stage past {MACHINE_GB:.0f} GB or {REASONABLE_HOURS:.0f} CPU hours: "
        f"{first_failure.get(target, 'none')}"
        for target in TARGETS
    ]
    took = f"; bench wall time {total / 60:.1f} min" if total is not None else ""
    text = "\n\n".join([
        f"Measured on {os.cpu_count()} cores, base.threads=2{took}. "
        "Cells: wall / CPU (user + system) seconds, peak RSS MB of the stage subprocess. "
        "x-rows: the slice's users repeated k times under new ids (synthetic).",
        measured_table(frame),
        "Fits: CPU time - floor = c * items^a * ratings^b (log-log least squares over all rows), the same for "
        "peak RSS; floors (python + importing the stage): "
        + ", ".join(f"{s} {c:.1f} CPU s / {m:.0f} MB" for s, (_, c, m) in floors.items()) + ".",
        "Extrapolated (CPU time, peak RSS) to the paper's scale (62k items, 1.2M ratings, 8k users) and ML-25M "
        "(62k items, 25M ratings, 162k users):",
        extrapolated,
        "\n".join(failure_lines),
    ])
    out.with_suffix(".md").write_text(text + "\n")
    print(text)

if __name__ == "__main__":
    main()
