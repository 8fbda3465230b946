"""Fit + encode time and peak memory (RSS growth) of each quantizer, printed as a table.

    python bench/quantize.py                          # 10k x 768 synthetic, quick settings
    python bench/quantize.py --sizes 10000,62000 --steps 1000 --embeddings real.npy

Synthetic data have a realistic shape: a unit-normalised mixture of 256 Gaussians in 768-d.
Peak memory is the process's maximum RSS growth (resource.ru_maxrss), which, unlike
tracemalloc, sees torch and FAISS allocations; each quantizer runs in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from semid.quantize import make_quantizer

QUANTIZERS = ("rqkmeans", "rqvae", "rqvae_naive", "dictlearn", "rlfq")


def synthetic(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(256, dim))
    x = centres[rng.integers(0, 256, n)] + 0.7 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    x = np.load(args.embeddings)[: args.n] if args.embeddings else synthetic(args.n, args.dim)
    options = {} if args.name in ("rqkmeans", "dictlearn") else {"steps": args.steps}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    quantizer = make_quantizer(args.name, 2, 256, 0, options).fit(x)
    fitted = time.perf_counter()
    quantizer.encode(x)
    done = time.perf_counter()
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps({"fit_s": fitted - started, "encode_s": done - fitted, "peak_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000", help="comma-separated item counts, e.g. 10000,62000")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--steps", type=int, default=200, help="training steps of the learned quantizers")
    parser.add_argument("--quantizers", default=",".join(QUANTIZERS))
    parser.add_argument("--embeddings", help=".npy of real embeddings (rows beyond --sizes are ignored)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.name:
        return measure(args)
    print(f"dim {args.dim}, 2 levels x 256, {args.steps} steps for learned quantizers, {args.threads} thread(s)\n")
    print("| quantizer | items | fit s | encode s | peak RSS growth MB |\n| --- | --- | --- | --- | --- |")
    for n in map(int, args.sizes.split(",")):
        for name in args.quantizers.split(","):
            cmd = [sys.executable, __file__, "--name", name, "--n", str(n), "--dim", str(args.dim),
                   "--steps", str(args.steps), "--threads", str(args.threads)]
            if args.embeddings:
                cmd += ["--embeddings", args.embeddings]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(f"| {name} | {n} | failed: {out.stderr.strip().splitlines()[-1]} | | |")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {name} | {n} | {r['fit_s']:.1f} | {r['encode_s']:.2f} | {r['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
