"""DVC stage: models/generator -> Recall@10/30, NDCG@30, MRR for search and rec, with baselines."""

from __future__ import annotations

from semid.artifacts import (
    BASELINE_METRICS,
    EMBEDDINGS,
    GENERATOR,
    HIT_RANKS,
    ID_CEILING_METRICS,
    IDS,
    PREDICTIONS,
    PREPARED,
    QUERIES,
    REC_METRICS,
    SEARCH_METRICS,
)
from semid.data import load_interactions, load_items
from semid.embed import load_embedding_meta
from semid.evaluate import evaluate_all, hit_ranks_table
from semid.generator import MODEL_DIR, load_generator, load_id_table, configure_torch
from semid.ids import load_ids_meta
from semid.io import atomic_dir, atomic_path, write_json_set
from semid.queries import load_queries
from semid.stages.common import stage_main, stage_setup
from semid.tracking import stage_run

METRICS = {
    "search": SEARCH_METRICS,
    "rec": REC_METRICS,
    "baselines": BASELINE_METRICS,
    "id_ceiling": ID_CEILING_METRICS,
}


@stage_main
def main() -> None:
    params, layout = stage_setup()
    config = params.evaluate
    configure_torch(params.base.threads)
    with stage_run("evaluate", params, keys=["base", "evaluate"]) as run:
        items, interactions = load_items(layout.at(PREPARED)), load_interactions(layout.at(PREPARED))
        table = load_id_table(layout.at(IDS), items["item_id"])
        generator = load_generator(layout.at(GENERATOR) / MODEL_DIR, table)
        result = evaluate_all(
            generator,
            items,
            interactions,
            load_queries(layout.at(QUERIES), "test"),
            layout.at(EMBEDDINGS),
            config,
        )
        with atomic_dir(layout.at(PREDICTIONS)) as tmp:
            result.search_predictions.to_parquet(tmp / "search.parquet", index=False)
            result.rec_predictions.to_parquet(tmp / "rec.parquet", index=False)
        with atomic_path(layout.at(HIT_RANKS)) as tmp:
            hit_ranks_table(result).to_csv(tmp, index=False)
        # Which IDs and embeddings these numbers belong to: an experiment that reran only part of
        # the pipeline keeps older metrics files, and `make results` must not credit them to it.
        provenance = {
            "embedding": load_embedding_meta(layout.at(EMBEDDINGS))["method"],
            "quantizer": load_ids_meta(layout.at(IDS))["quantizer"],
        }
        sets = {
            "search": result.search,
            "rec": result.rec,
            "baselines": result.baselines,
            "id_ceiling": result.id_ceiling,
        }
        write_json_set({layout.at(METRICS[name]): {**metrics, **provenance} for name, metrics in sets.items()})
        for name, metrics in sets.items():
            run.log_metrics({f"{name}.{key}": value for key, value in metrics.items()})
    search, rec, base = result.search, result.rec, result.baselines
    print(f"{'Recall@30':>22} {'search':>8} {'rec':>8}")
    print(f"{'generator':>22} {search['recall_at_30']:8.4f} {rec['recall_at_30']:8.4f}")
    print(
        f"{'BM25 / popularity':>22} {base['bm25_search_recall_at_30']:8.4f} {base['popularity_rec_recall_at_30']:8.4f}"
    )
    dense_search = base["dense_search_recall_at_30"] if base["dense_search_applicable"] else float("nan")
    print(f"{'dense kNN':>22} {dense_search:8.4f} {base.get('dense_rec_recall_at_30', float('nan')):8.4f}")
    ceiling = result.id_ceiling
    for label, suffix in (("ID ceiling", ""), ("ID ceiling, level 1", "_level1")):
        print(
            f"{label:>22} {ceiling[f'search_recall_at_{config.k}{suffix}']:8.4f} "
            f"{ceiling[f'rec_recall_at_{config.k}{suffix}']:8.4f}"
        )
    print(
        f"decoding: search {search['inputs_per_second']:.1f} inputs/s, rec {rec['inputs_per_second']:.1f} inputs/s; "
        f"invalid IDs {search['invalid_id_rate']:.3f} / {rec['invalid_id_rate']:.3f}"
    )


if __name__ == "__main__":
    main()
