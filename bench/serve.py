"""Serving speed of a trained run: cold start and per-query latency of search and recommend.

Reads the workspace outputs (`make reproduce` first; or --root / --rev / --exp). Prints one table:

- cold start: a fresh `semid search ... --json` process, end to end (imports, load, one query),
  and in this process the Pipeline load (generator) and the first dense use (query encoder);
- per-query latency, median and p90 over --inputs inputs answered one at a time: search with
  test-split queries, recommend with users' train histories, generative and dense each.

    python bench/serve.py --inputs 50
    python bench/serve.py --threads 1 --k 30
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--rev", default=None)
    parser.add_argument("--exp", default=None)
    parser.add_argument("--inputs", type=int, default=50, help="queries and users to time")
    parser.add_argument("-k", "--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    where = [*(["--root", str(args.root)] if args.root else []), *(["--rev", args.rev] if args.rev else []),
             *(["--exp", args.exp] if args.exp else [])]  # fmt: skip
    script = Path(sys.executable).with_name("semid")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "semid.cli"]
    cli_call = [*command, "search", "space opera", "--json", *where]
    cli_seconds = timed(lambda: subprocess.run(cli_call, check=True, capture_output=True))

    started = time.perf_counter()
    from semid.generator import configure_torch
    from semid.serve import Pipeline

    configure_torch(args.threads)
    pipeline = Pipeline(args.root, rev=args.rev, exp=args.exp)
    load_seconds = time.perf_counter() - started

    import pandas as pd

    from semid.queries import load_queries

    queries = load_queries(pipeline.root / "data/queries", "test")
    texts = queries.sample(n=min(args.inputs, len(queries)), random_state=args.seed)["text"].tolist()
    users = pd.Series(sorted(pipeline.train_histories)).sample(
        n=min(args.inputs, len(pipeline.train_histories)), random_state=args.seed
    ).tolist()
    dense_load = timed(lambda: pipeline.dense.encoder)
    first_search = timed(lambda: pipeline.search(texts[0], args.k))  # warm-up: first call builds the trie

    rows = []
    for method in ("generative", "dense"):
        if method == "dense" and not pipeline.dense.searchable:
            rows.append((f"search ({method})", None))
        else:
            seconds = [timed(lambda t=t: pipeline.search(t, args.k, method)) for t in texts]
            rows.append((f"search ({method})", seconds))
        seconds = [timed(lambda u=u: pipeline.recommend_user(u, args.k, method)) for u in users]
        rows.append((f"recommend ({method})", seconds))

    print(f"run: {pipeline.source}; {len(pipeline.items):,} items; k={args.k}; "
          f"{len(texts)} queries, {len(users)} users")  # fmt: skip
    print(f"cold start: `semid search` process end to end {cli_seconds:.2f} s; "
          f"Pipeline load {load_seconds:.2f} s; dense index + query encoder {dense_load:.2f} s; "
          f"first search {first_search * 1000:.0f} ms")  # fmt: skip
    print(f"{'latency per input':<24} {'median ms':>10} {'p90 ms':>10}")
    for name, seconds in rows:
        if seconds is None:
            print(f"{name:<24} {'n/a (no query encoder)':>21}")
        else:
            median, p90 = statistics.median(seconds) * 1000, percentile(seconds, 0.9) * 1000
            print(f"{name:<24} {median:10.1f} {p90:10.1f}")


if __name__ == "__main__":
    main()
