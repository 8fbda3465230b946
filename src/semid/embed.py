"""Item embeddings: every embedding method of the paper behind one registry.

Each method turns (items, train interactions, train queries) into one or two *ID spaces*: arrays
of shape (n_items, dim), one row per item in the items table order, which ``quantize`` turns into
semantic IDs. Where a space can be reached from text, the method also returns the encoder that
maps a query into it (the dense search baseline and the search ceiling use it).

| method      | space(s)          | how                                                                      |
| ----------- | ----------------- | ------------------------------------------------------------------------ |
| `content`   | joint             | the off-the-shelf sentence-transformer on the item text                  |
| `search`    | joint             | that model fine-tuned with MultipleNegativesRankingLoss on (query, item) |
| `rec`       | joint             | ENMF on the train interactions (semid.enmf)                              |
| `multitask` | joint             | one bi-encoder, two contrastive losses: (query, item), (item_a, item_b)  |
| `concat`    | joint             | l2-normalised search and rec embeddings, concatenated                    |
| `svd`       | joint             | each l2-normalised, truncated SVD to a common dim, summed                |
| `separate`  | search, rec       | both kept apart: two ID spaces downstream                                |
| `prefix_share` | search, rec    | as `separate`, but quantize shares the first ID level between the tasks  |
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from semid.distributed import report_training, trainer_arguments, world_size
from semid.io import SemidError, atomic_dir, progress, progress_enabled
from semid.metrics import hit_ranks, recall_at_k
from semid.models import load_sentence_model
from semid.retrievers import DenseRetriever, PopularityRetriever
from semid.seeding import seed_everything
from semid.testsets import rec_test_set, search_test_set, train_popularity

if TYPE_CHECKING:
    from semid.config import EmbedConfig

EMBEDDINGS_FILE = "item_embeddings.npz"
META_FILE = "meta.json"
QUERY_ENCODER_DIR = "query_encoder"


class EmbeddingError(SemidError):
    pass


@dataclass
class EmbeddingInputs:
    items: pd.DataFrame  # item_id, item_text, ... (the items table order)
    train_interactions: pd.DataFrame  # user_id, item_id, timestamp (split == train)
    train_queries: pd.DataFrame  # item_id, text
    config: EmbedConfig
    seed: int
    work_dir: Path  # checkpoints of long fine-tunes live here, so a rerun resumes


@dataclass
class EmbeddingResult:
    spaces: dict[str, np.ndarray]  # space name -> (n_items, dim) float32
    # The text encoder whose query vectors live in a space, where one exists; for fused spaces
    # a function from query vectors of that encoder into the fused space.
    query_encoder: Any | None = None
    query_space: str | None = None
    query_projection: Callable[[np.ndarray], np.ndarray] | None = None
    info: dict[str, float] = field(default_factory=dict)
    # Leading ID levels the spaces share (quantize fits them on all spaces at once); 0 = none.
    shared_levels: int = 0


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def check_item_texts(items: pd.DataFrame) -> None:
    empty = items.loc[items["item_text"].fillna("").str.strip() == "", "item_id"]
    if len(empty):
        raise EmbeddingError(
            f"{len(empty)} item(s) have empty item_text (e.g. item_id {', '.join(map(str, empty[:5]))}); "
            "every item needs text to embed: check the items table from prepare_movielens"
        )


def encode_texts(model: Any, texts: list[str], batch_size: int, desc: str = "encode") -> np.ndarray:
    """(n, dim) float32, l2-normalised: cosine = dot product everywhere downstream."""
    vectors = model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
        show_progress_bar=progress_enabled(),
    )
    return vectors.astype(np.float32)


# ------------------------------------------------------------------------- training pieces


def query_item_pairs(inputs: EmbeddingInputs) -> pd.DataFrame:
    text = inputs.items.set_index("item_id")["item_text"]
    queries = inputs.train_queries[inputs.train_queries["item_id"].isin(text.index)]
    if queries.empty:
        raise EmbeddingError("no train queries match the items; run gen_queries first")
    return pd.DataFrame({"anchor": queries["text"].to_numpy(), "positive": text.loc[queries["item_id"]].to_numpy()})


def co_interaction_pairs(inputs: EmbeddingInputs, max_pairs: int, seed: int) -> pd.DataFrame:
    """(item_a text, item_b text) for items consecutive in a user's train history.

    A user with a single train interaction contributes no pair (there is nothing it co-occurs
    with); that is documented handling, not an error.
    """
    train = inputs.train_interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    nxt = train.groupby("user_id")["item_id"].shift(-1)
    pairs = pd.DataFrame({"a": train["item_id"], "b": nxt}).dropna()
    pairs = pairs[pairs["a"] != pairs["b"]].astype("int64")
    if len(pairs) > max_pairs:
        pairs = pairs.sample(n=max_pairs, random_state=seed)
    if pairs.empty:
        raise EmbeddingError("no co-interacted item pairs in the train split (every user has one item)")
    text = inputs.items.set_index("item_id")["item_text"]
    return pd.DataFrame({"anchor": text.loc[pairs["a"]].to_numpy(), "positive": text.loc[pairs["b"]].to_numpy()})


def finetune_bi_encoder(model: Any, pair_sets: dict[str, pd.DataFrame], inputs: EmbeddingInputs, name: str) -> dict:
    """Fine-tune with MultipleNegativesRankingLoss on each pair set, through sentence-transformers' trainer.

    With several pair sets the trainer alternates batches between them (round robin), each with
    its own in-batch-negatives loss: a stochastic estimate of the summed multi-task loss.
    Checkpoints go to ``work_dir/<name>``; a rerun resumes from the latest one.
    """
    # Deferred, as everything heavy in this module: quantize and evaluate import it only to read
    # data/embeddings (datasets + sentence_transformers ~9 s, semid.training's transformers 5.6 s).
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers, MultiDatasetBatchSamplers

    from semid.training import WallClockGuard, latest_checkpoint

    config = inputs.config
    output_dir = inputs.work_dir / name
    datasets = {key: Dataset.from_pandas(frame, preserve_index=False) for key, frame in pair_sets.items()}
    # Over several processes each scores its slice of the batch against the whole batch's
    # candidates, so a step still has batch_size - 1 in-batch negatives per anchor.
    loss = MultipleNegativesRankingLoss(model, gather_across_devices=world_size() > 1)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        max_steps=config.max_steps,
        num_train_epochs=config.epochs,
        **trainer_arguments(config.batch_size, "embed.batch_size"),
        learning_rate=config.lr,
        warmup_steps=0.1,  # a float is a ratio of the total steps in transformers 5
        seed=inputs.seed,
        data_seed=inputs.seed,
        # Several queries per item: a duplicate text in a batch would be a false negative.
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.ROUND_ROBIN,
        save_strategy="steps",
        save_steps=max(1, config.checkpoint_steps),
        save_total_limit=1,
        logging_steps=10,
        report_to="none",
        disable_tqdm=not progress_enabled(),
        dataloader_drop_last=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=datasets if len(datasets) > 1 else next(iter(datasets.values())),
        loss={key: loss for key in datasets} if len(datasets) > 1 else loss,
        callbacks=[guard := WallClockGuard(config.max_minutes, "embed.max_minutes")],
    )
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=latest_checkpoint(output_dir))
    report_training(trainer, model, config.batch_size, name)
    guard.check(trainer.state.global_step, trainer.state.max_steps)
    # The mean of the logged losses (the log history survives a resume), not the trainer's
    # training_loss, which averages only the steps since the last resume.
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        f"{name}_train_seconds": time.perf_counter() - start,
        f"{name}_train_steps": float(trainer.state.global_step),
        f"{name}_global_batch_size": float(config.batch_size),
        f"{name}_processes": float(world_size()),
        f"{name}_train_loss": float(np.mean(logged)) if logged else float(result.training_loss),
    }


def _cuda() -> bool:
    import torch  # deferred: ~2 s, and only fine-tuning and loading an encoder ask

    return torch.cuda.is_available()


# ----------------------------------------------------------------------------- methods


def embed_content(inputs: EmbeddingInputs) -> EmbeddingResult:
    check_item_texts(inputs.items)
    model = load_sentence_model(inputs.config.model)
    start = time.perf_counter()
    vectors = encode_texts(model, inputs.items["item_text"].tolist(), inputs.config.encode_batch_size, "items")
    return EmbeddingResult({"joint": vectors}, model, "joint", info={"encode_seconds": time.perf_counter() - start})


def _finetuned_text_space(inputs: EmbeddingInputs, name: str, with_co_interactions: bool) -> EmbeddingResult:
    check_item_texts(inputs.items)
    seed_everything(inputs.seed)
    model = load_sentence_model(inputs.config.model)
    pair_sets = {"search": query_item_pairs(inputs)}
    if with_co_interactions:
        pair_sets["cointeraction"] = co_interaction_pairs(inputs, inputs.config.max_item_pairs, inputs.seed)
    info = finetune_bi_encoder(model, pair_sets, inputs, name)
    start = time.perf_counter()
    vectors = encode_texts(model, inputs.items["item_text"].tolist(), inputs.config.encode_batch_size, "items")
    info["encode_seconds"] = time.perf_counter() - start
    return EmbeddingResult({"joint": vectors}, model, "joint", info=info)


def embed_search(inputs: EmbeddingInputs) -> EmbeddingResult:
    return _finetuned_text_space(inputs, "search", with_co_interactions=False)


def embed_multitask(inputs: EmbeddingInputs) -> EmbeddingResult:
    return _finetuned_text_space(inputs, "multitask", with_co_interactions=True)


def embed_rec(inputs: EmbeddingInputs) -> EmbeddingResult:
    # Deferred: semid.enmf imports torch (~4 s).
    from semid.enmf import ENMFSettings, train_enmf

    config = inputs.config
    settings = ENMFSettings(
        dim=config.enmf_dim, epochs=config.enmf_epochs, batch_size=config.enmf_batch_size, lr=config.enmf_lr,
        negative_weight=config.enmf_negative_weight, dropout=config.enmf_dropout,
    )
    start = time.perf_counter()
    vectors, _, losses = train_enmf(
        inputs.train_interactions, inputs.items["item_id"].to_numpy(), settings, inputs.seed, progress=progress
    )
    info = {"enmf_train_seconds": time.perf_counter() - start, "enmf_final_loss": losses[-1]}
    return EmbeddingResult({"joint": vectors}, info=info)


def _search_and_rec(inputs: EmbeddingInputs) -> tuple[EmbeddingResult, EmbeddingResult]:
    return embed_search(inputs), embed_rec(inputs)


def embed_separate(inputs: EmbeddingInputs) -> EmbeddingResult:
    search, rec = _search_and_rec(inputs)
    spaces = {"search": search.spaces["joint"], "rec": rec.spaces["joint"]}
    return EmbeddingResult(spaces, search.query_encoder, "search", info={**search.info, **rec.info})


def embed_prefix_share(inputs: EmbeddingInputs) -> EmbeddingResult:
    """The two task spaces of ``separate``; quantize gives them one shared first ID level."""
    result = embed_separate(inputs)
    result.shared_levels = 1
    return result


def embed_concat(inputs: EmbeddingInputs) -> EmbeddingResult:
    search, rec = _search_and_rec(inputs)
    search_part, rec_part = l2_normalize(search.spaces["joint"]), l2_normalize(rec.spaces["joint"])
    joint = np.hstack([search_part, rec_part])

    def project(query_vectors: np.ndarray) -> np.ndarray:
        # A query only knows its text: its rec half is zero, so its dot product with an item is
        # the search similarity alone.
        return np.hstack([query_vectors, np.zeros((len(query_vectors), rec_part.shape[1]), np.float32)])

    return EmbeddingResult({"joint": joint}, search.query_encoder, "joint", project, {**search.info, **rec.info})


def embed_svd(inputs: EmbeddingInputs) -> EmbeddingResult:
    from sklearn.decomposition import TruncatedSVD  # deferred: ~2.7 s, only this method needs it

    search, rec = _search_and_rec(inputs)
    search_part, rec_part = l2_normalize(search.spaces["joint"]), l2_normalize(rec.spaces["joint"])
    dim = min(inputs.config.svd_dim, search_part.shape[1] - 1, rec_part.shape[1] - 1)
    svd_search = TruncatedSVD(dim, random_state=inputs.seed).fit(search_part)
    svd_rec = TruncatedSVD(dim, random_state=inputs.seed).fit(rec_part)
    joint = (svd_search.transform(search_part) + svd_rec.transform(rec_part)).astype(np.float32)

    def project(query_vectors: np.ndarray) -> np.ndarray:
        return svd_search.transform(query_vectors).astype(np.float32)

    info = {**search.info, **rec.info, "svd_dim": float(dim)}
    return EmbeddingResult({"joint": joint}, search.query_encoder, "joint", project, info)


METHODS: dict[str, Callable[[EmbeddingInputs], EmbeddingResult]] = {
    "content": embed_content,
    "search": embed_search,
    "rec": embed_rec,
    "multitask": embed_multitask,
    "concat": embed_concat,
    "svd": embed_svd,
    "separate": embed_separate,
    "prefix_share": embed_prefix_share,
}


def get_method(name: str) -> Callable[[EmbeddingInputs], EmbeddingResult]:
    if name not in METHODS:
        raise EmbeddingError(f"unknown embedding method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def embed_items(method: str, inputs: EmbeddingInputs) -> EmbeddingResult:
    result = get_method(method)(inputs)
    n_items = len(inputs.items)
    for space, vectors in result.spaces.items():
        if vectors.shape[0] != n_items or not np.isfinite(vectors).all():
            raise EmbeddingError(f"method {method} produced a bad {space} space: shape {vectors.shape}, "
                                 f"finite={bool(np.isfinite(vectors).all())}, expected {n_items} rows")
        result.spaces[space] = np.ascontiguousarray(vectors, dtype=np.float32)
    return result


# ---------------------------------------------------------------------------- artifacts


def write_embeddings(result: EmbeddingResult, items: pd.DataFrame, method: str, model: str, out_dir: Path) -> None:
    with atomic_dir(out_dir) as tmp:
        np.savez(tmp / EMBEDDINGS_FILE, item_ids=items["item_id"].to_numpy(np.int64), **result.spaces)
        encoder_dir = None
        if result.query_encoder is not None and result.query_projection is None:
            # No model card: sentence-transformers writes the fine-tune's wall-clock time into it,
            # which made data/embeddings hash differently on every run of the same params.
            result.query_encoder.save(str(tmp / QUERY_ENCODER_DIR), create_model_card=False)
            encoder_dir = QUERY_ENCODER_DIR
        meta = {
            "method": method,
            "model": model,
            "spaces": list(result.spaces),
            "dim": {space: int(v.shape[1]) for space, v in result.spaces.items()},
            "query_encoder": encoder_dir,
            "query_space": result.query_space if encoder_dir else None,
            "shared_levels": result.shared_levels,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def load_item_embeddings(folder: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(item_ids (n,), {space: (n, dim) float32}) as written by train_embedder."""
    path = Path(folder) / EMBEDDINGS_FILE
    if not path.exists():
        raise EmbeddingError(f"{path} not found; run `dvc repro train_embedder` first")
    with np.load(path) as data:
        item_ids = data["item_ids"]
        spaces = {key: data[key].astype(np.float32) for key in data.files if key != "item_ids"}
    return item_ids, spaces


def load_embedding_meta(folder: str | Path) -> dict:
    return json.loads((Path(folder) / META_FILE).read_text())


def load_query_encoder(folder: str | Path):
    """The saved query encoder of a run, or None when its space is not reachable from text."""
    meta = load_embedding_meta(folder)
    if not meta.get("query_encoder"):
        return None
    from sentence_transformers import SentenceTransformer  # deferred: ~9 s; most callers read rows only

    return SentenceTransformer(str(Path(folder) / meta["query_encoder"]), device="cuda" if _cuda() else "cpu")


# ---------------------------------------------------------------------------- ceilings


def dense_ceilings(result: EmbeddingResult, items: pd.DataFrame, interactions: pd.DataFrame,
                   valid_queries: pd.DataFrame, config: EmbedConfig, seed: int) -> dict[str, float]:
    """What the embedding alone achieves on the validation split: the generator's ceilings.

    Search: kNN of the (sub-sampled, seeded) validation query vectors over the item space.
    Rec: kNN of each user's mean history vector (every item before the user's valid item), seen
    items excluded, next to popularity under the same protocol. Both through the retrievers and
    metrics the evaluate stage uses, on ``rec_test_set``'s valid-split variant (semid.testsets).
    """
    k = config.eval_k
    item_ids = items["item_id"].to_numpy(np.int64)
    metrics: dict[str, float] = {}
    rec_space = result.spaces["rec" if "rec" in result.spaces else "joint"]
    dense = DenseRetriever(item_ids, result.spaces.get(result.query_space or ""), rec_space,
                           _query_vectors(result, config.encode_batch_size))
    if "search" in dense.tasks and not valid_queries.empty:
        queries = search_test_set(valid_queries, item_ids, config.eval_max_queries, seed)
        ranks = hit_ranks(dense.search(queries["text"].tolist(), k), queries["item_id"].astype(int).tolist())
        metrics[f"search_recall_at_{k}"] = recall_at_k(ranks, k)
        metrics["search_eval_queries"] = float(len(queries))
    # The ceiling's users: all of them, a user with no earlier item as a zero vector; its whole
    # history is the input (the generator's window of H is a property of the generator).
    users = rec_test_set(interactions, history_length=None, target_split="valid", min_history=0, required=False)
    targets, seen = users["target_item"].tolist(), [set(h) for h in users["history"]]
    popularity = PopularityRetriever(item_ids, train_popularity(interactions, item_ids))
    for name, retriever in ((f"rec_recall_at_{k}", dense), (f"popularity_rec_recall_at_{k}", popularity)):
        if users.empty:  # no user has a valid item: nothing to measure, not an error here
            metrics[name] = float("nan")
            continue
        ranked = retriever.recommend(users["recent"].tolist(), k, seen)
        metrics[name] = recall_at_k(hit_ranks(ranked, targets), k)
    metrics["rec_eval_users"] = float(len(users))
    return metrics


def _query_vectors(result: EmbeddingResult, batch_size: int) -> Callable[[list[str]], np.ndarray] | None:
    """Query texts -> vectors in the result's query space (encoded, then projected if fused)."""
    if result.query_encoder is None:
        return None

    def encode(texts: list[str]) -> np.ndarray:
        vectors = encode_texts(result.query_encoder, texts, batch_size, "queries")
        return result.query_projection(vectors) if result.query_projection is not None else vectors

    return encode
