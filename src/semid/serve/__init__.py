"""Use what was trained: search, recommend and score an external query set with one loaded pipeline.

A :class:`Pipeline` loads a trained run once (items, semantic IDs, the generator; the dense index
on first use) and answers with the decoding the evaluate stage uses (``semid.evaluate.decode_search``
/ ``decode_rec``: the run's ``evaluate`` beams, beam groups and ID trie), so what you see here is
what the metrics measured. ``method="dense"`` ranks by the run's embedder instead, for comparison.

One idea per module:

- ``checks``: a request's k, query, method, item and user ids, query file (leaf: stdlib + semid.io);
- ``runs``: where a run is (workspace, git rev, DVC experiment via semid.experiments), what it must
  hold (paths from semid.artifacts) and loading its parts;
- ``scoring``: score-queries through semid.retrievers and semid.metrics;
- ``pipeline``: ``Pipeline``, the facade over the three, and ``Hit``.

Importing this package is cheap (the standard library, ``semid.io``, ``semid.artifacts``), so the
CLI checks a request before anything heavy loads; torch and transformers come in with the
generator, the rest (pandas, DVC, the dense index, BM25) only where a command needs them.
"""

from semid.serve.checks import (
    METHODS, ServeError, check_items, check_k, check_method, check_query, check_query_frame, check_query_rows,
    check_user, item_id_of, parse_item_ids, read_query_file,
)
from semid.serve.pipeline import Hit, Pipeline
from semid.serve.runs import (
    ARTIFACTS, REV_CACHE, REV_PATHS, STAGE_ORDER, Run, locate_run, materialise_rev, missing_artifacts, require,
)
from semid.serve.scoring import SCORE_KS, QueryScores, score_search

__all__ = [
    "ARTIFACTS", "METHODS", "REV_CACHE", "REV_PATHS", "SCORE_KS", "STAGE_ORDER",
    "Hit", "Pipeline", "QueryScores", "Run", "ServeError",
    "check_items", "check_k", "check_method", "check_query", "check_query_frame", "check_query_rows",
    "check_user", "item_id_of", "locate_run", "materialise_rev", "missing_artifacts", "parse_item_ids",
    "read_query_file", "require", "score_search",
]
