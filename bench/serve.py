"""Serving speed of a trained run: a cold `semid search`, where its load time goes, per-query latency.

Reads the workspace outputs (`make reproduce` first; or --root / --rev / --exp). Prints, in one run:

- cold process: `semid search "space opera" --json`, a fresh process end to end (imports, load, one
  query, exit), the median of --cold-runs;
- load breakdown: the same work in this process, step by step, loaded the way the CLI loads
  (``semid.cli.load_pipeline``): imports, params, items, ID table, generator weights, the frozen text
  encoder (MiniLM), the ID trie, the first decode; what the cold process spends beyond their sum is
  interpreter start, exit and output;
- per-query latency after load, median (p50) and p90 over --inputs inputs answered one at a time:
  search with test-split queries, recommend with users' train histories, generative and dense.

    python bench/serve.py --inputs 50
    python bench/serve.py --root path/to/project --threads 2 --k 30

Timings on a machine shared with other work swing by tens of percent: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
from pathlib import Path

# pandas, torch and semid are imported inside the functions on purpose: the cold start this script
# times is those imports, in a fresh process where nothing has loaded them yet.

# Nothing heavy above this line: the load breakdown times the imports in this process.


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


class StepTimer:
    """Seconds spent in named functions while the real load path runs (wrapped, then restored)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._restore: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, name: str, label: str) -> None:
        original = getattr(owner, name)

        def measured(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started

        self._restore.append((owner, name, original))
        setattr(owner, name, measured)

    def restore(self) -> None:
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore.clear()


def cold_process(where: list[str], threads: int, runs: int) -> list[float]:
    script = Path(sys.executable).with_name("semid")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "semid.cli"]
    call = [*command, "search", "space opera", "--json", "--threads", str(threads), *where]
    return [timed(lambda: subprocess.run(call, check=True, capture_output=True)) for _ in range(runs)]


def load_breakdown(args) -> tuple[object, list[tuple[str, float]]]:
    """(pipeline, [(step, seconds)]): imports and load as the CLI does them, in this fresh process."""
    steps = []
    # As semid.cli.load_pipeline: the cyclic GC stays off while imports and load make their objects.
    gc.disable()
    started = time.perf_counter()
    import pandas  # noqa: F401

    steps.append(("import pandas", time.perf_counter() - started))
    started = time.perf_counter()
    import torch  # noqa: F401

    steps.append(("import torch", time.perf_counter() - started))
    started = time.perf_counter()
    import semid.generator  # transformers, its T5 and the rest of semid's generator

    steps.append(("import transformers + T5 (semid.generator)", time.perf_counter() - started))
    started = time.perf_counter()
    import semid.cli
    import semid.config
    import semid.data
    import semid.evaluate

    steps.append(("import semid.{cli,serve,config,data,evaluate}", time.perf_counter() - started))

    from semid.generator import decode, model

    timer = StepTimer()
    timer.wrap(semid.config, "load_params", "params.yaml")
    timer.wrap(semid.data, "load_items", "items (parquet)")
    timer.wrap(semid.generator, "load_id_table", "ID table")
    timer.wrap(semid.generator, "load_generator", "generator")
    timer.wrap(model.FrozenTextEncoder, "__init__", "text encoder (MiniLM)")
    timer.wrap(decode, "space_trie", "ID trie")
    started = time.perf_counter()
    try:
        pipeline = semid.cli.load_pipeline(args.root, args.rev, args.exp, args.threads)
        load = time.perf_counter() - started
        first = timed(lambda: pipeline.search("space opera", args.k))
    finally:
        timer.restore()
        gc.enable()
    took = timer.seconds
    minilm = took.get("text encoder (MiniLM)", 0.0)
    parts = [
        ("params.yaml", took["params.yaml"]),
        ("items (parquet)", took["items (parquet)"]),
        ("ID table (parquet, checks)", took["ID table"]),
        ("generator: T5 weights + tokenizer", took["generator"] - minilm),
        ("generator: text encoder (MiniLM)", minilm),
    ]
    steps += parts
    steps.append(("rest of Pipeline()", load - sum(seconds for _, seconds in parts)))
    steps.append(("ID trie (first query)", took.get("ID trie", 0.0)))
    steps.append(("first decode (first query)", first - took.get("ID trie", 0.0)))
    return pipeline, steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--rev", default=None)
    parser.add_argument("--exp", default=None)
    parser.add_argument("--inputs", type=int, default=50, help="queries and users to time")
    parser.add_argument("-k", "--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as `semid --threads`")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold `semid search` processes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    where = [*(["--root", str(args.root)] if args.root else []), *(["--rev", args.rev] if args.rev else []),
             *(["--exp", args.exp] if args.exp else [])]
    cold = cold_process(where, args.threads, args.cold_runs)
    pipeline, steps = load_breakdown(args)

    import pandas as pd

    from semid.queries import load_queries

    queries = load_queries(pipeline.root / "data/queries", "test")
    texts = queries.sample(n=min(args.inputs, len(queries)), random_state=args.seed)["text"].tolist()
    users = sorted(pipeline.train_histories)
    users = pd.Series(users).sample(n=min(args.inputs, len(users)), random_state=args.seed).tolist()
    dense_load = timed(lambda: (pipeline.dense, pipeline.dense.encoder))

    rows = []
    for method in ("generative", "dense"):
        if method == "dense" and not pipeline.dense.searchable:
            rows.append((f"search ({method})", None))
        else:
            seconds = [timed(lambda t=t, m=method: pipeline.search(t, args.k, m)) for t in texts]
            rows.append((f"search ({method})", seconds))
        seconds = [timed(lambda u=u, m=method: pipeline.recommend_user(u, args.k, m)) for u in users]
        rows.append((f"recommend ({method})", seconds))

    import torch

    # A folder is named by its last part: printed figures get pasted into docs, machine paths must not.
    source = Path(pipeline.source).name if Path(pipeline.source).is_dir() else pipeline.source
    print(f"run: {source}; {len(pipeline.items):,} items; k={args.k}; torch threads "
          f"{torch.get_num_threads()}; {len(texts)} queries, {len(users)} users")
    print(f"cold `semid search --json` process: median {statistics.median(cold):.2f} s "
          f"(runs: {', '.join(f'{s:.2f}' for s in cold)})")
    print(f"{'load breakdown (this process)':<48} {'ms':>8}")
    for name, seconds in steps:
        print(f"  {name:<46} {seconds * 1000:8.0f}")
    total = sum(seconds for _, seconds in steps)
    print(f"  {'sum':<46} {total * 1000:8.0f}")
    rest = statistics.median(cold) - total
    print(f"  {'cold process minus sum (start, exit, output)':<46} {rest * 1000:8.0f}")
    print(f"  {'later: dense index + query encoder':<46} {dense_load * 1000:8.0f}")
    print(f"{'latency per input after load':<32} {'p50 ms':>8} {'p90 ms':>8}")
    for name, seconds in rows:
        if seconds is None:
            print(f"  {name:<30} {'n/a (no query encoder)':>17}")
        else:
            median, p90 = statistics.median(seconds) * 1000, percentile(seconds, 0.9) * 1000
            print(f"  {name:<30} {median:8.1f} {p90:8.1f}")


if __name__ == "__main__":
    main()
