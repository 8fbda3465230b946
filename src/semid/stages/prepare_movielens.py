"""DVC stage: raw MovieLens -> data/prepared/{items,interactions}.parquet + metrics/data.json."""

from __future__ import annotations


from semid.artifacts import DATA_METRICS, PREPARED, RAW_CACHE
from semid.config import load_params
from semid.data import locate_raw, prepare_movielens, read_release, write_prepared
from semid.io import write_json
from semid.seeding import pin_threads
from semid.stages.common import stage_main
from semid.tracking import stage_run


@stage_main
def main() -> None:
    params = load_params()
    pin_threads(params.base.threads)
    config = params.data
    with stage_run("prepare_movielens", params, keys=["base", "data"]) as run:
        folder, source = locate_raw(config.release, RAW_CACHE, config.mirror, config.verify_checksums)
        print(f"{config.release}: {source}")
        prepared = prepare_movielens(read_release(config.release, folder), config, params.base.seed)
        write_prepared(prepared, PREPARED.at())
        write_json(DATA_METRICS.at(), prepared.stats)
        run.log_metrics(prepared.stats)
        run.set_tags({"data.source": source})
    stats = prepared.stats
    print(
        f"{stats['users']:,} users, {stats['items']:,} items ({stats['items_with_interactions']:,} rated), "
        f"{stats['interactions']:,} interactions (density {stats['density']:.4f}); "
        f"split train/valid/test = {stats['train_interactions']:,}/{stats['valid_interactions']:,}/"
        f"{stats['test_interactions']:,}"
    )


if __name__ == "__main__":
    main()
