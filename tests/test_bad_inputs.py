"""Bad input: one ``error:`` line naming the value and what is valid, exit 2, before any work,
and nothing written.

Each case runs a real entry point (a stage script, or the `semid` CLI) as a subprocess in a
small project folder: the committed params.yaml with one change, and only the files the case
needs. The base params point ``data.mirror`` at a folder that does not exist, so a bad value that
slips past the checks fails at once with another message, never with a download.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import yaml
from conftest import REPO_ROOT

import semid
from semid.config import (
    POWER_OF_TWO_QUANTIZERS,
    QUANTIZERS,
    ConfigError,
    DataConfig,
    check_item_count,
    load_params,
)
from semid.data import aggregate_tags, build_items, read_release
from semid.quantize import QuantizeError, make_quantizer
from semid.serve import item_id_of

SRC = Path(semid.__file__).resolve().parents[1]  # the code under test, wherever it was imported from
BASE_PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
PREPARE = ("semid.stages.prepare_movielens",)
EMBEDDER = ("semid.stages.train_embedder",)


def params_text(**dotted) -> str:
    """The committed params with ``section__key=value`` changes; the mirror is a missing folder."""
    params = yaml.safe_load(yaml.safe_dump(BASE_PARAMS))
    params["data"]["mirror"] = "no-such-mirror"
    for key, value in dotted.items():
        *parents, leaf = key.split("__")
        section = params
        for part in parents:
            section = section[part]
        section[leaf] = value
    return yaml.safe_dump(params, sort_keys=False)


def prepared_items(n_items: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        ids = range(1, n_items + 1)
        pd.DataFrame({"item_id": ids, "item_text": [f"Movie {i} (2000)." for i in ids]}).to_parquet(path)

    return write


def raw_release(movies: str, ratings: str, tags: str | None = None) -> dict[str, str]:
    files = {"mirror/ml-latest-small/movies.csv": movies, "mirror/ml-latest-small/ratings.csv": ratings}
    if tags is not None:
        files["mirror/ml-latest-small/tags.csv"] = tags
    files["params.yaml"] = params_text(data__mirror="mirror", data__verify_checksums=False)
    return files


MOVIES = "movieId,title,genres\n1,Toy Story (1995),Animation\n2,Heat (1995),Action\n"
RATINGS = "userId,movieId,rating,timestamp\n" + "".join(f"1,{i % 2 + 1},4.0,{i}\n" for i in range(6))


@dataclass
class Case:
    command: tuple[str, ...]  # python -m ...
    fragment: str  # the stderr line holds this: the bad value (and, where it fits, what is valid)
    files: dict[str, str | bytes | Callable[[Path], None]] = field(default_factory=dict)

    def __post_init__(self):
        self.files.setdefault("params.yaml", params_text())


CASES = {
    # 1. seeds outside what NumPy and pandas take (a traceback in prepare_movielens, or after the embedder)
    "seed-negative": Case(PREPARE, "base.seed=-1 is out of range; it must lie in [0, 4294967295]",
                          {"params.yaml": params_text(base__seed=-1)}),
    "seed-2**32": Case(PREPARE, "base.seed=4294967296 is out of range", {"params.yaml": params_text(base__seed=2**32)}),
    # 2. item lists: "--5" and "²" passed str.isdigit and broke int() (after the model loaded)
    "items-double-minus": Case(("semid.cli", "recommend", "--items=--5", "--root", "."), "got '--5'"),
    "items-superscript": Case(("semid.cli", "recommend", "--items", "1,²", "--root", "."), "got '²'"),
    # 3. embed.eval_k above the item count: a broadcast error after the fine-tune
    "eval_k-above-items": Case(EMBEDDER, "embed.eval_k=30 is more than the 5 items",
                               {"data/prepared/items.parquet": prepared_items(5)}),
    # 4. the codebook rules: checked only by the quantize stage, after the embedder's work
    "codebook-not-power-of-two": Case(PREPARE, "quantize.codebook_size=100 must be a power of two for rqkmeans",
                                      {"params.yaml": params_text(quantize__codebook_size=100)}),
    "codebook-above-items": Case(EMBEDDER, "quantize.codebook_size=256 is more than the 40 items",
                                 {"params.yaml": params_text(embed__eval_k=10),
                                  "data/prepared/items.parquet": prepared_items(40)}),
    # 5. a YAML syntax error: a PyYAML traceback
    "params-yaml-syntax": Case(PREPARE, "params.yaml line 3, column 2: invalid YAML: expected <block end>",
                               {"params.yaml": "base:\n  seed: 1\n bad: [\n"}),
    # 6. a corrupt parquet query file: a pyarrow traceback
    "score-corrupt-parquet": Case(("semid.cli", "score-queries", "queries.parquet", "--root", "."),
                                  "cannot read queries.parquet as parquet", {"queries.parquet": "not parquet\n"}),
    # 8. a movieId that is no integer: a traceback (movies.csv), or no row named (ratings.csv)
    "movies-csv-movieId": Case(PREPARE, "movies.csv row 2: movieId='abc' is not an integer",
                               raw_release(MOVIES.replace("2,Heat", "abc,Heat"), RATINGS)),
    "ratings-csv-movieId": Case(PREPARE, "ratings.csv row 3: movieId='x' is not an integer",
                                raw_release(MOVIES, RATINGS.replace("1,1,4.0,2", "1,x,4.0,2"))),
    # more: each a traceback or a silent misreading before
    "params-not-a-mapping": Case(PREPARE, "params.yaml must hold a mapping of sections", {"params.yaml": "- 1\n- 2\n"}),
    "base-not-a-mapping": Case(PREPARE, "base must be a mapping of keys, got [1]", {"params.yaml": "base: [1]\n"}),
    "params-duplicate-key": Case(PREPARE, "line 4, column 3: invalid YAML: duplicate key 'seed' (first given on line 2)",
                                 {"params.yaml": "base:\n  seed: 1\n  profile: embedded\n  seed: 2\ndata: {mirror: no-such-mirror}\n"}),
    "params-not-utf8": Case(PREPARE, "params.yaml is not UTF-8 text", {"params.yaml": b"base:\n  seed: \xff\n"}),
    "profile-yaml-syntax": Case(PREPARE, "paper.yaml line 2, column 1: invalid YAML",
                                {"params.yaml": params_text(base__profile="paper"), "profiles/paper.yaml": "data: [\n"}),
    "profile-path": Case(PREPARE, "base.profile='../params' has no file",
                         {"params.yaml": params_text(base__profile="../params"), "profiles/paper.yaml": "{}\n"}),
    "lr-nan": Case(PREPARE, "embed.lr=nan must be a finite number", {"params.yaml": params_text(embed__lr=float("nan"))}),
    "negative-steps": Case(PREPARE, "embed.max_steps=-5 is out of range; it must lie in [0, inf]",
                           {"params.yaml": params_text(embed__max_steps=-5)}),
    "max-input-tokens-1": Case(PREPARE, "generator.max_input_tokens=1 is out of range; it must lie in [2, inf]",
                               {"params.yaml": params_text(generator__max_input_tokens=1)}),
    "embed-model-empty": Case(PREPARE, "embed.model is empty", {"params.yaml": params_text(embed__model="")}),
    "threads-negative": Case(("semid.cli", "search", "comedy", "--threads", "-1", "--root", "."), "got '-1'"),
    "user-not-an-id": Case(("semid.cli", "recommend", "--user", "abc", "--root", "."), "user ids are non-negative integers, got 'abc'"),
    "score-out-is-input": Case(("semid.cli", "score-queries", "q.csv", "--out", "q.csv", "--root", "."),
                               "--out q.csv is the query file itself", {"q.csv": "item_id,query\n1,heist\n"}),
    "score-out-is-folder": Case(("semid.cli", "score-queries", "q.csv", "--out", "scores", "--root", "."),
                                "--out scores is a folder", {"q.csv": "item_id,query\n1,heist\n", "scores/keep": ""}),
    "corrupt-prepared-items": Case(EMBEDDER, "cannot read data/prepared/items.parquet as parquet",
                                   {"data/prepared/items.parquet": "PAR1 truncated"}),
    "ratings-csv-rating": Case(PREPARE, "ratings.csv row 2: rating='five' is not a number",
                               raw_release(MOVIES, RATINGS.replace("1,2,4.0,1", "1,2,five,1"))),
    "tags-csv-movieId": Case(PREPARE, "tags.csv row 1: movieId='one' is not an integer",
                             raw_release(MOVIES, RATINGS, "userId,movieId,tag,timestamp\n1,one,pixar,5\n")),
    "ml-1m-user-id": Case(PREPARE, "ratings.dat row 1: user_id='u1' is not an integer", {
        "params.yaml": params_text(data__release="ml-1m", data__mirror="mirror", data__verify_checksums=False),
        "mirror/ml-1m/movies.dat": "1::Toy Story (1995)::Animation\n",
        "mirror/ml-1m/ratings.dat": "u1::1::5::978300760\n",
    }),
}


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: Case, tmp_path: Path):
    project = tmp_path / "project"
    for name, content in case.files.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    before = snapshot(project)
    env = {**os.environ, "PYTHONPATH": str(SRC), "SEMID_TRACKING": "0", "HF_HUB_OFFLINE": "1"}
    env.pop("SEMID_MOVIELENS_MIRROR", None)
    done = subprocess.run([sys.executable, "-m", *case.command], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert case.fragment in lines[0], lines[0]
    assert snapshot(project) == before  # nothing written, not even a temporary file


def test_power_of_two_quantizers_match_the_quantizer_classes():
    refused = []
    for name in QUANTIZERS:
        try:
            make_quantizer(name, levels=2, codebook_size=100, seed=0)
        except QuantizeError:
            refused.append(name)
    assert tuple(refused) == POWER_OF_TWO_QUANTIZERS
    for name in QUANTIZERS:  # at load: exactly those refuse 100, every one takes 128
        overrides = {"quantizer": name, "quantize.codebook_size": 100}
        if name in POWER_OF_TWO_QUANTIZERS:
            with pytest.raises(ConfigError, match="must be a power of two"):
                load_params(REPO_ROOT / "params.yaml", overrides=overrides)
        else:
            load_params(REPO_ROOT / "params.yaml", overrides=overrides)
        load_params(REPO_ROOT / "params.yaml", overrides={**overrides, "quantize.codebook_size": 128})


def test_item_count_checks_pass_at_the_limit_and_suggest_a_power_of_two():
    params = load_params(REPO_ROOT / "params.yaml", overrides={"embed.eval_k": 30, "quantize.codebook_size": 256})
    check_item_count(params, 256)
    with pytest.raises(ConfigError, match=r"codebook_size=256 is more than the 200 items .* at most 128"):
        check_item_count(params, 200)


def test_na_and_empty_tags_are_dropped_never_nan(tmp_path: Path):
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Animation\n2,NA,Drama\n")
    (folder / "ratings.csv").write_text(RATINGS)
    tags = ["pixar", "NA", "", "  ", "null", "Pixar "]
    (folder / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n" + "".join(f'1,1,"{t}",{n}\n' for n, t in enumerate(tags))
    )
    raw = read_release("ml-latest-small", folder)
    assert aggregate_tags(raw.tags, 10) == {1: ["pixar"]}
    items = build_items(raw, DataConfig()).set_index("item_id")
    assert items.loc[1, "tags"] == ["pixar"] and "nan" not in items.loc[1, "item_text"]
    assert items.loc[2, "title"] == "NA"  # a title is read as written, never as a missing value


@pytest.mark.parametrize(
    "value, expected",
    [("5", 5), (" 12 ", 12), (7, 7), ("-5", None), ("--5", None), ("²", None), ("5.0", None), (5.5, None),
     (True, None), ("", None), (None, None)],
)
def test_item_ids_are_ascii_digits(value, expected):
    # score-queries skips, and Pipeline.check_items names, what this refuses (int("²") raised before)
    assert item_id_of(value) == expected
