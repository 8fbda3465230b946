"""Use what was trained: search, recommend and score an external query set with one loaded pipeline.

A :class:`Pipeline` loads a trained run once (items, semantic IDs, the generator; the dense index
on first use) and answers with the decoding the evaluate stage uses (``semid.evaluate.decode_search``
/ ``decode_rec``: the run's ``evaluate`` beams, beam groups and ID trie), so what you see here is
what the metrics measured. ``method="dense"`` ranks by the run's embedder instead, for comparison.

Importing this module is cheap (the standard library and ``semid.io``), so the CLI checks a request
before anything heavy loads; torch and transformers come in with the generator, the rest (pandas,
DVC, the dense index, BM25) only where a command needs them.

Where a run comes from:

- a project folder (default: the workspace holding params.yaml above the current folder), read as
  it is: data/prepared, data/ids, models/generator/model, data/embeddings, params.yaml;
- a git rev or a DVC experiment name of that project: its outputs are copied out of the local DVC
  cache by semid.experiments (``dvc.api.DVCFileSystem``; offline, nothing is pulled) into
  ``.dvc/tmp/semid-serve/<commit>/`` once, and read from there on later loads.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semid.io import SemidError, atomic_dir

if TYPE_CHECKING:
    import pandas as pd

METHODS = ("generative", "dense")
SCORE_KS = (1, 10, 30)
# What a run needs, where it lives, and the stage that writes it (for the "run this" hint).
ARTIFACTS = {
    "items": ("data/prepared/items.parquet", "prepare_movielens"),
    "interactions": ("data/prepared/interactions.parquet", "prepare_movielens"),
    "ids": ("data/ids/semantic_ids.parquet", "quantize"),
    "embeddings": ("data/embeddings/item_embeddings.npz", "train_embedder"),
    "generator": ("models/generator/model/semid_generator.json", "train_t5"),
}
STAGE_ORDER = ("prepare_movielens", "gen_queries", "train_embedder", "quantize", "train_t5", "evaluate")
# Copied out of the DVC cache for a rev (the generator's checkpoints are left behind).
REV_PATHS = (
    "params.yaml", "profiles", "data/prepared", "data/ids", "data/embeddings", "models/generator/model",
)  # fmt: skip
REV_CACHE = Path(".dvc/tmp/semid-serve")


class ServeError(SemidError):
    """A bad request (empty query, k <= 0, unknown ids) or a run without trained outputs."""


@dataclass(frozen=True)
class Hit:
    """One ranked item."""

    rank: int
    item_id: int
    title: str
    semantic_id: str
    score: float | None  # generative: the ID's length-normalised log-probability; dense: dot product

    def as_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "item_id": self.item_id, "title": self.title,
            "semantic_id": self.semantic_id, "score": self.score,
        }  # fmt: skip


@dataclass
class QueryScores:
    """score-queries: metrics per method on the rows that name a known item, and the rows skipped."""

    rows: int
    scored: int
    skipped: list[dict[str, Any]]  # {"row": 0-based row, "item_id": as given, "reason": ...}
    methods: dict[str, dict[str, float] | None]  # None: not applicable to this run (dense, no encoder)
    ranked: dict[str, list[list[int]]] = field(default_factory=dict)  # method -> top 30 per scored row

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "scored": self.scored, "skipped": self.skipped, "metrics": self.methods}


# --------------------------------------------------------------------------- checks


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ServeError(f"k must be a positive integer, got {k!r}")
    return k


def check_query(query: Any) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ServeError(f"empty query {query!r}: give the text to search for")
    return query.strip()


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ServeError(f"method={method!r} is not valid; choose one of: {', '.join(METHODS)}")
    return method


_ITEM_ID = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses


def item_id_of(value: Any) -> int | None:
    """An item or user id as written (5, "5", " 5 ") as an int; None for anything else ("-5", "²", 5.5, True)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):  # Python and NumPy integers
        return int(value) if value >= 0 else None
    text = value.strip() if isinstance(value, str) else None
    return int(text) if text and _ITEM_ID.fullmatch(text) else None


def parse_item_ids(text: str) -> list[int]:
    """"1,260,1196" -> [1, 260, 1196]; anything that is no integer is named."""
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    bad = [part for part in parts if item_id_of(part) is None]
    if bad:
        raise ServeError(
            f"item ids must be integers separated by commas, got {', '.join(map(repr, bad))} (e.g. 1,260,1196)"
        )
    if not parts:
        raise ServeError("no item ids given: pass them as --items 1,260,1196")
    return [int(part) for part in parts]


def missing_artifacts(root: Path, names: Sequence[str]) -> list[str]:
    return [ARTIFACTS[name][0] for name in names if not (root / ARTIFACTS[name][0]).exists()]


def require(root: Path, names: Sequence[str], where: str | None = None) -> None:
    """Fail with what is missing and the ``dvc repro``/``dvc pull`` that makes it."""
    missing = missing_artifacts(root, names)
    if not missing:
        return
    stages = {stage for path, stage in ARTIFACTS.values() if path in missing}
    last = max(stages, key=STAGE_ORDER.index)
    fix = (
        f"run `dvc repro {last}` in {root} (it runs the stages before it too)"
        if where is None
        else f"that commit has none: run `dvc repro {last}` (or `dvc exp run`) there and commit"
    )
    raise ServeError(
        f"no trained outputs in {where or root}: missing {', '.join(missing)}; {fix}, "
        "or `dvc pull` where a DVC remote holds them"
    )


# --------------------------------------------------------------------------- revs and experiments


def materialise_rev(root: Path, rev: str | None = None, exp: str | None = None) -> tuple[Path, str]:
    """(folder, description) holding the outputs of a git rev or DVC experiment, from the local cache."""
    # Only --rev/--exp come here: semid.experiments runs `dvc exp show -A` for an experiment's commit
    # (~1.2 s on a small repo) and imports dvc.api to copy outputs (~0.5 s); plain `semid search`
    # (the workspace) pays neither.
    from semid import experiments

    try:
        sha = experiments.resolve(root, rev=rev, exp=exp)
        label = f"experiment {exp} ({sha[:7]})" if exp else f"rev {rev} ({sha[:7]})"
        target = root / REV_CACHE / sha
        if not target.exists():
            with atomic_dir(target) as tmp:
                experiments.get(root, sha, REV_PATHS, tmp)
    except experiments.ExperimentError as error:
        raise ServeError(str(error)) from error
    return target, label


# --------------------------------------------------------------------------- the pipeline


class Pipeline:
    """A trained run, loaded once: ``search``, ``recommend``, ``recommend_user``, ``score_queries``.

    ``threads``: torch CPU threads, set (with ``configure_torch``, as the evaluate stage does) before
    anything loads; None leaves the process as it is. One query at a time is too small a job to
    split: on 2 cores shared with other work a search took ~30 ms (p50) at 1 thread, 120-160 ms at 2.
    Rankings were the same at both counts; scores can differ in the 6th decimal.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        rev: str | None = None,
        exp: str | None = None,
        device: str | None = None,
        threads: int | None = None,
    ):
        # Parsing and validating params.yaml (yaml, the config dataclasses): ~60 ms.
        from semid.config import EvaluateConfig, load_params, workspace_root

        if rev and exp:
            raise ServeError("give either a git rev or an experiment name, not both")
        project = Path(root).resolve() if root else workspace_root()
        if not project.is_dir():
            raise ServeError(f"project folder {project} does not exist")
        self.source = str(project)
        self.root = project
        if rev or exp:
            self.root, self.source = materialise_rev(project, rev, exp)
        where = self.source if (rev or exp) else None
        require(self.root, ["items", "ids", "generator"], where)
        self._where = where

        # After the checks above, so a run without outputs fails before these: pandas ~0.4 s;
        # torch + transformers (the generator) ~3-5 s, most of a cold `semid search`.
        from semid.data import load_items
        from semid.generator import configure_torch, load_generator, load_id_table

        if threads is not None:
            configure_torch(threads)
        params_path = self.root / "params.yaml"
        self.evaluate_config = load_params(params_path).evaluate if params_path.exists() else EvaluateConfig()
        self.items = load_items(self.root / "data/prepared").set_index("item_id", drop=False)
        self.table = load_id_table(self.root / "data/ids", self.items["item_id"])
        self.generator = load_generator(self.root / "models/generator/model", self.table, device=device)
        self._interactions: pd.DataFrame | None = None
        self._train_histories: dict[int, list[int]] | None = None
        self._dense = None

    # ----------------------------------------------------------------- lazily loaded parts

    @property
    def train_histories(self) -> dict[int, list[int]]:
        """user -> train items in chronological order."""
        if self._train_histories is None:
            # Here, not at the top: importing semid.generator (torch + transformers) costs ~3-5 s.
            from semid.data import load_interactions
            from semid.generator import user_histories

            require(self.root, ["interactions"], self._where)
            self._interactions = load_interactions(self.root / "data/prepared")
            self._train_histories = user_histories(self._interactions, ["train"])
        return self._train_histories

    @property
    def dense(self):
        """The run's dense index (semid.evaluate.DenseIndex), loaded on first use."""
        if self._dense is None:
            # At the top, pandas and numpy (~0.35 s) would come before the CLI has checked a request.
            from semid.evaluate import DenseIndex

            require(self.root, ["embeddings"], self._where)
            self._dense = DenseIndex(self.root / "data/embeddings")
        return self._dense

    # ----------------------------------------------------------------- answers

    def _hits(self, items: list[int], scores: list[float], task: str) -> list[Hit]:
        # Loaded by __init__ already; at the top it would put torch into every CLI error path.
        from semid.generator import task_space

        space = task_space(self.table.spaces, task)
        return [
            Hit(
                rank=rank, item_id=int(item), title=str(self.items.at[item, "title"]),
                semantic_id=self.table.sid(space, int(item)),
                score=None if score is None or math.isnan(score) else round(float(score), 6),
            )  # fmt: skip
            for rank, (item, score) in enumerate(zip(items, scores), start=1)
        ]

    def search(self, query: str, k: int = 10, method: str = "generative") -> list[Hit]:
        """The k items best matching ``query``, best first."""
        query, k, method = check_query(query), check_k(k), check_method(method)
        if method == "generative":
            # At the top, pandas and numpy (~0.35 s) would come before the CLI has checked a request.
            from semid.evaluate import decode_search

            decoded = decode_search(self.generator, [query], self.evaluate_config, k)
            return self._hits(decoded.ranked_items[0], decoded.scores[0], "search")
        found = self.dense.search([query], k)
        if found is None:
            raise ServeError(
                f"this run's embedding ({self.dense.meta.get('method')}) has no query encoder, so dense "
                "search does not apply; use method 'generative'"
            )
        return self._hits(found[0][0], found[1][0], "search")

    def check_items(self, item_ids: Sequence[Any]) -> list[int]:
        """The ids as ints, or a ServeError naming every id that is not in the catalogue."""
        ids = list(item_ids)
        if not ids:
            raise ServeError("empty history: give at least one item id")
        known = set(self.items.index)
        parsed, unknown = [], []
        for item in ids:
            item_id = item_id_of(item)
            if item_id is None or item_id not in known:
                unknown.append(item)
            else:
                parsed.append(item_id)
        if unknown:
            raise ServeError(
                f"unknown item id(s) {', '.join(map(str, unknown))}: not among the {len(known):,} items of "
                f"{self.source} (data/prepared/items.parquet)"
            )
        return parsed

    def recommend(
        self, history_item_ids: Sequence[int], k: int = 10, method: str = "generative"
    ) -> list[Hit]:
        """The k items to watch next after ``history_item_ids`` (oldest first); seen items never return."""
        history, k, method = self.check_items(history_item_ids), check_k(k), check_method(method)
        recent, seen = history[-self.generator.history_length :], set(history)
        if method == "generative":
            # At the top, pandas and numpy (~0.35 s) would come before the CLI has checked a request.
            from semid.evaluate import decode_rec

            decoded = decode_rec(self.generator, [recent], [seen], self.evaluate_config, k)
            return self._hits(decoded.ranked_items[0], decoded.scores[0], "rec")
        items, scores = self.dense.recommend([recent], [seen], k)
        return self._hits(items[0], scores[0], "rec")

    def user_history(self, user_id: Any) -> list[int]:
        """A user's train items, oldest first; unknown users are named."""
        histories = self.train_histories
        try:
            user = int(user_id)
        except (TypeError, ValueError):
            user = None
        if user is None or isinstance(user_id, bool) or user not in histories:
            raise ServeError(
                f"unknown user id {user_id!r}: {len(histories):,} users have train interactions "
                f"(ids {min(histories)}..{max(histories)}) in {self.source}"
            )
        return histories[user]

    def recommend_user(self, user_id: int, k: int = 10, method: str = "generative") -> list[Hit]:
        """``recommend`` on the user's train history."""
        return self.recommend(self.user_history(user_id), k, method)

    def score_queries(self, queries: pd.DataFrame | str | Path) -> QueryScores:
        """Recall@1/10/30 and MRR@30 of the generator, dense kNN and BM25 on (item_id, query) rows.

        Rows whose item id is not in the catalogue (or not an integer) or whose query is empty are
        skipped and listed, never dropped silently.
        """
        # At the top, pandas and numpy (~0.35 s) would come before the CLI has checked a request.
        import pandas as pd

        from semid.evaluate import bm25_search, decode_search, hit_rank, mean_reciprocal_rank, recall_at_k

        if not isinstance(queries, pd.DataFrame):
            queries = read_query_file(queries)
        frame = check_query_frame(queries)
        known = set(self.items.index)
        keep, targets, texts, skipped = [], [], [], []
        for row, (item, text) in enumerate(zip(frame["item_id"], frame["query"])):
            item_text, item_id = str(item).strip(), item_id_of(item)
            if item_id is None or item_id not in known:
                skipped.append({"row": row, "item_id": item_text, "reason": "unknown item id"})
            elif not isinstance(text, str) or not text.strip():
                skipped.append({"row": row, "item_id": item_text, "reason": "empty query"})
            else:
                keep.append(row)
                targets.append(item_id)
                texts.append(text.strip())
        if not keep:
            raise ServeError(
                f"none of the {len(frame)} rows has a known item id and a query; nothing to score"
            )
        k = max(SCORE_KS)
        ranked: dict[str, list[list[int]] | None] = {
            "generative": decode_search(self.generator, texts, self.evaluate_config, k).ranked_items,
        }
        dense = self.dense.search(texts, k) if (self.root / ARTIFACTS["embeddings"][0]).exists() else None
        ranked["dense"] = dense[0] if dense is not None else None
        ranked["bm25"] = bm25_search(self.items.reset_index(drop=True), texts, k)
        methods: dict[str, dict[str, float] | None] = {}
        for name, lists in ranked.items():
            if lists is None:
                methods[name] = None
                continue
            ranks = [hit_rank(r, t) for r, t in zip(lists, targets)]
            methods[name] = {f"recall_at_{n}": recall_at_k(ranks, n) for n in SCORE_KS}
            methods[name]["mrr"] = mean_reciprocal_rank(ranks)
        return QueryScores(
            len(frame), len(keep), skipped, methods, {n: r for n, r in ranked.items() if r is not None}
        )


def check_query_frame(frame: pd.DataFrame) -> pd.DataFrame:
    missing = [column for column in ("item_id", "query") if column not in frame.columns]
    if missing:
        raise ServeError(
            f"the query file lacks column(s) {', '.join(missing)}; it needs item_id,query "
            f"(has: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    return frame


def read_query_file(path: str | Path) -> pd.DataFrame:
    """A CSV (or .parquet) of item_id,query rows, ids kept as written so bad ones can be named."""
    # score-queries alone reads tables before the model loads: pandas costs ~0.4 s to import.
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ServeError(f"query file {path} not found")
    if path.suffix == ".parquet":
        from semid.data import read_parquet

        return read_parquet(path)
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ServeError(f"cannot read {path} as CSV with columns item_id,query: {error}") from error
