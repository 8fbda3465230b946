"""DVC stage: data/prepared/items -> data/queries/{train,valid,test}.parquet + metrics/queries.json.

``python -m semid.stages.gen_queries --dry-run`` prints how many requests and roughly how many
tokens a run would make (nothing is asked, nothing is written).
"""

from __future__ import annotations

import argparse

from semid.artifacts import PREPARED, QUERIES, QUERIES_METRICS
from semid.config import find_root, load_params
from semid.data import load_items
from semid.io import write_json
from semid.queries import (
    FAILURES_FILE,
    check_failure_rate,
    create_backend,
    estimate,
    format_estimate,
    generate_queries,
    query_metrics,
    split_queries,
    write_failures,
    write_queries,
)
from semid.seeding import pin_threads
from semid.stages.common import stage_main
from semid.tracking import stage_run



@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print requests and token estimate, ask nothing")
    args = parser.parse_args()

    params = load_params()
    pin_threads(params.base.threads)
    config = params.queries
    items = load_items(PREPARED.at())
    backend = create_backend(config, params.base.seed)  # a missing key fails here, before any request
    cache_dir = find_root() / config.cache_dir
    if args.dry_run:
        print(format_estimate(estimate(items, config, backend, cache_dir)))
        return

    with stage_run("gen_queries", params, keys=["base", "queries"]) as run:
        result = generate_queries(items, config, params.base.seed, backend, cache_dir)
        if backend.remote and result.failures:
            write_failures(cache_dir / FAILURES_FILE, result.failures)
        check_failure_rate(result, config, cache_dir if backend.remote else None)
        splits = split_queries(result, config)
        write_queries(splits, QUERIES.at(), result.failures)
        metrics = query_metrics(result, splits, dict(zip(items["item_id"], items["title"])))
        write_json(QUERIES_METRICS.at(), metrics)
        run.log_metrics(metrics)
        run.set_tags({"queries.backend": result.backend, "queries.model": result.model})
    print(
        f"{result.backend}: {metrics['items_with_queries']:,} of {metrics['items']:,} items, queries "
        f"train/valid/test = {metrics['queries_train']:,}/{metrics['queries_valid']:,}/{metrics['queries_test']:,}; "
        f"{metrics['failed_items']:,} failed, {metrics['requests']:,} requests, {metrics['cached_items']:,} cached, "
        f"{metrics['seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
