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
key points (rqkmeans, rqvae_naive, rqvae) it reads search/rec Recall@30 of the full pipeline from
the grid in main (``make grid``: multi-task embeddings, every seed, the paired tests of
``make results``) where it has them; otherwise from DVC experiments on the report's embeddings,
queueing the missing ones (``dvc exp run --queue -S quantizer=...``, which reuse the cached
upstream stages). It writes ``reports/rqvae.md`` (tables, plots and an answer
whose every sentence is derived from these measurements) and ``reports/rqvae_ablation.json``.

``--render-only`` rebuilds ``reports/rqvae.md`` from ``reports/rqvae_ablation.json``, the
finished collapse-map runs in ``reports/rqvae_collapse_map.jsonl`` and the grid's finished runs
without training anything (a template edit, or a grid run landed since, reaches the report in
seconds); the plots are left as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from semid import collapse_map, experiments
from semid.config import load_params, workspace_root
from semid.embed import load_embedding_meta, load_item_embeddings
from semid.experiments import Experiment
from semid.io import SemidError, atomic_path, user_errors_exit, write_json
from semid.quantize import check_embeddings
from semid.report.ablation import AblationRow, ablation_variants, run_ablation
from semid.report.collapse_section import (
    COLLAPSE_MAP_RUNS,
    collapse_map_section,
    replace_section,
    run_collapse_map,
    saved_runs,
)
from semid.report.recalls import end_to_end_recalls, key_point_recalls
from semid.report.render import plot_ablation, render_report
from semid.report.saved_ablation import ABLATION_JSON, ablation_record, read_ablation

# torch (~2.2 s, bench/import_costs.py) is imported in main() once it is going to train, so
# --render-only and the tests that import this module do without it.
# Flags that would change what a full run measures; --render-only refuses them. -j is not among
# them: `make report` always passes it (queue workers, nothing is queued here).
TRAINING_FLAGS = ("embeddings", "experiment", "space", "max_items", "steps", "threads", "no_leave_one_out", "no_experiments",
                  "collapse_map_only", "collapse_mpnet")


def render_only(root: Path, out: Path, collapse_jobs: int, collapse_map: bool) -> None:
    """Write out/rqvae.md from out/rqvae_ablation.json, the finished runs of out/rqvae_collapse_map.jsonl
    and the grid in ``root`` (its end-to-end rows, which supersede the saved experiments' recalls)."""
    rows, setting, saved_recalls = read_ablation(out / ABLATION_JSON)
    recalls, grid_embedding = end_to_end_recalls(root, saved_recalls)
    grid_embedding = grid_embedding or setting.get("end_to_end_embedding", "")  # the saved recalls' own block
    runs, incomplete = saved_runs(out / COLLAPSE_MAP_RUNS) if collapse_map else ([], [])
    report = render_report(rows, setting, recalls, "rqvae_ablation.png", grid_embedding, runs)
    if runs:
        if incomplete:
            print(f"collapse map: rendered from {len(runs)} finished runs; incomplete cells: {'; '.join(incomplete)}")
        report = replace_section(report, collapse_map_section(runs, max(1, collapse_jobs)))
    with atomic_path(out / "rqvae.md") as tmp:
        tmp.write_text(report)

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
    parser.add_argument("--collapse-mpnet", action="store_true",
                        help="add the preset on all-mpnet-base-v2 content embeddings to the collapse map "
                             "(encoded once into data/cache/collapse_map: ~15 min on 2 cores)")
    parser.add_argument("--render-only", action="store_true",
                        help="train nothing: rebuild rqvae.md from --out's rqvae_ablation.json and finished collapse-map runs "
                             "(--collapse-jobs: the parallelism the report states for them)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    with user_errors_exit(), contextlib.ExitStack() as stack:
        root = workspace_root()
        if args.render_only:
            given = [f"--{name.replace('_', '-')}" for name in TRAINING_FLAGS if getattr(args, name) != parser.get_default(name)]
            if given:
                raise SemidError(f"--render-only trains nothing, so it takes no {', '.join(given)}; "
                                 "it reads only --out, --collapse-jobs and --no-collapse-map")
            out = args.out if args.out.is_absolute() else root / args.out
            render_only(root, out, args.collapse_jobs, not args.no_collapse_map)
            print(f"wrote {out / 'rqvae.md'} from {out / ABLATION_JSON} in {time.perf_counter() - started:.2f}s")
            return
        if args.collapse_mpnet:
            collapse_map.check_mpnet_installed()
        import torch

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
            section = run_collapse_map(root, x, out, args.collapse_jobs, compute_mpnet=args.collapse_mpnet)
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
        # The grid's seeds and paired tests, where it has the key points, before one-seed experiments
        # (which would be queued and run when missing).
        recalls, grid_embedding = end_to_end_recalls(root, {})
        if not grid_embedding:
            recalls = key_point_recalls(root, meta.get("method", params.embedding), workspace.data_label,
                                        not args.no_experiments, args.jobs)
        setting = {
            "items": len(x), "dim": int(x.shape[1]), "source": source, "embedding": meta.get("method", params.embedding),
            "model": meta.get("model", "?"), "space": space, "levels": config.levels,
            "codebook_size": config.codebook_size, "seed": params.base.seed,
            "steps": args.steps or config.options("rqvae").steps, "threads": args.threads,
            "seconds": time.perf_counter() - started, "generated": time.strftime("%Y-%m-%d %H:%M"),
            "end_to_end_embedding": grid_embedding,  # the grid block the saved recalls come from ("": experiments)
        }
        plot_ablation(rows, out / "rqvae_ablation.png")
        with atomic_path(out / "rqvae.md") as tmp:
            section, runs = "", []
            if not args.no_collapse_map and meta.get("method") == "content" and not args.max_items:
                section = run_collapse_map(root, x, out, args.collapse_jobs, compute_mpnet=args.collapse_mpnet)
                runs, _ = saved_runs(out / COLLAPSE_MAP_RUNS)
            report = render_report(rows, setting, recalls, "rqvae_ablation.png", grid_embedding, runs)
            tmp.write_text(replace_section(report, section) if section else report)
        write_json(out / ABLATION_JSON, ablation_record(rows, setting, recalls))
        print(f"wrote {out / 'rqvae.md'} in {time.perf_counter() - started:,.0f}s")
