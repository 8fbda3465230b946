"""What the generator benches share: params (with --set overrides) and the pipeline's artifacts
turned into train_t5's examples exactly as the stage builds them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from semid.artifacts import IDS, PREPARED, QUERIES
from semid.config import load_params
from semid.data import load_interactions, load_items
from semid.generator import build_examples, load_id_table, tokenizer_corpus
from semid.queries import load_queries


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prepared", default=PREPARED.path)
    parser.add_argument("--queries", default=QUERIES.path)
    parser.add_argument("--ids", default=IDS.path)
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="a params override, e.g. generator.d_model=256 or base.profile=paper",
    )


@dataclass
class GeneratorInputs:
    params: Any
    items: Any
    interactions: Any
    table: Any
    train: list
    valid: list
    corpus: list[str]


def load_inputs(args: argparse.Namespace) -> GeneratorInputs:
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    params = load_params(overrides=overrides)
    items, interactions = load_items(Path(args.prepared)), load_interactions(Path(args.prepared))
    table = load_id_table(Path(args.ids), items["item_id"])
    train_queries = load_queries(Path(args.queries), "train")
    train, valid = build_examples(
        params.generator, table, items, interactions, train_queries,
        load_queries(Path(args.queries), "valid"), params.base.seed,
    )
    return GeneratorInputs(params, items, interactions, table, train, valid, tokenizer_corpus(items, train_queries))
