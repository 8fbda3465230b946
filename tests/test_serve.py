"""semid.serve and the `semid` CLI on a tiny trained pipeline written as the stages write it.

The project: 60 popular real ml-latest-small items (prepare_movielens), two template queries per
item, content embeddings with the real MiniLM (train_embedder's library calls), rqkmeans semantic
IDs (residual k-means, as quantize's rqkmeans), and a tiny scratch T5 trained briefly on the
queries (train_t5's).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import dvc, run, stage_env
from generator_fixtures import prepared_slice, residual_semantic_ids, template_queries, tiny_scratch_config

from semid import artifacts, data, embed, ids
from semid.config import EmbedConfig
from semid.data import write_prepared
from semid.embed import EmbeddingInputs, embed_items, write_embeddings
from semid.evaluate import bm25_search
from semid.generator import MODEL_DIR, load_id_table, rec_train_examples, search_examples, train_generator
from semid.generator.model import META_FILE
from semid.ids import write_semantic_ids
from semid.serve import Pipeline, ServeError, runs

N_ITEMS = 60


@pytest.fixture(scope="module")
def project(ml_small_raw, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores
    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"batch_size": 16}}))
    prepared = prepared_slice(ml_small_raw, N_ITEMS)
    items, interactions = prepared.items, prepared.interactions
    write_prepared(prepared, root / "data/prepared")
    queries = template_queries(items)
    (root / "data/queries").mkdir(parents=True)
    queries.to_parquet(root / "data/queries/train.parquet", index=False)

    train = interactions[interactions["split"] == "train"]
    inputs = EmbeddingInputs(items, train, queries, EmbedConfig(), 0, root / "work")
    embedded = embed_items("content", inputs)
    write_embeddings(embedded, items, "content", "all-MiniLM-L6-v2", root / "data/embeddings")

    # semid's rqkmeans needs more items than dimensions (faiss' progressive PCA); plain residual
    # k-means per level does the same job on 60 items
    item_ids = items["item_id"].to_numpy()
    frame, meta = residual_semantic_ids(embedded.spaces["joint"], item_ids, levels=2, nbits=3)
    write_semantic_ids(root / "data/ids", [frame], meta)

    table = load_id_table(root / "data/ids", items["item_id"])
    rec_windows = rec_train_examples(interactions, table, 5, max_windows_per_user=1)[:30]
    examples = search_examples(queries) + rec_windows
    corpus = [*items["item_text"], *queries["text"]]
    # 200 steps: one pooled state per query, and a few of the template texts name two items
    config = tiny_scratch_config(max_steps=200)
    train_generator(config, table, examples, [], corpus, root / "models/generator", 0)
    pipeline = Pipeline(root, device="cpu")
    yield {"root": root, "pipeline": pipeline, "items": items, "interactions": interactions,
           "queries": queries}
    torch.set_num_threads(threads)


def test_search_returns_k_distinct_valid_items_and_finds_an_items_own_query(project):
    pipeline, items, queries = project["pipeline"], project["items"], project["queries"]
    hits = pipeline.search("space opera where rebels fight an empire", k=10)
    assert [h.rank for h in hits] == list(range(1, 11))
    assert len({h.item_id for h in hits}) == 10 and {h.item_id for h in hits} <= set(items["item_id"])
    titles = items.set_index("item_id")["title"]
    for hit in hits:
        assert hit.title == titles[hit.item_id]
        assert hit.semantic_id == pipeline.table.sid("joint", hit.item_id)
        assert hit.semantic_id.startswith("<sid_1_")
    scores = [h.score for h in hits]
    assert all(isinstance(s, float) for s in scores) and scores == sorted(scores, reverse=True)
    # the memorised training queries bring their own item back
    sample = queries.iloc[::12]
    found = [
        item in {h.item_id for h in pipeline.search(text, k=10)}
        for text, item in zip(sample["text"], sample["item_id"])
    ]
    assert all(found), f"{found.count(False)} of {len(found)} training queries missed their item"
    dense = pipeline.search(sample["text"].iloc[0], k=5, method="dense")
    assert len(dense) == 5 and len({h.item_id for h in dense}) == 5


def test_recommend_never_leaves_the_catalogue_nor_returns_the_history(project):
    pipeline, items, interactions = project["pipeline"], project["items"], project["interactions"]
    user = int(interactions["user_id"].iloc[0])
    history = pipeline.user_history(user)
    expected = interactions[(interactions["user_id"] == user) & (interactions["split"] == "train")]
    assert history == expected.sort_values("position")["item_id"].tolist()
    catalogue = set(items["item_id"])
    for method in ("generative", "dense"):
        hits = pipeline.recommend_user(user, k=10, method=method)
        ids = [h.item_id for h in hits]
        assert 0 < len(ids) <= 10 and len(set(ids)) == len(ids)
        assert set(ids) <= catalogue and not set(ids) & set(history)
    ids = items["item_id"].tolist()[:3]
    assert {h.item_id for h in pipeline.recommend(ids, k=5)} <= catalogue - set(ids)


def test_score_queries_recall_matches_search_by_hand(project, tmp_path):
    pipeline, queries, items = project["pipeline"], project["queries"], project["items"]
    sample = queries.iloc[1::6].head(8)
    rows = [{"item_id": str(i), "query": t} for i, t in zip(sample["item_id"], sample["text"])]
    rows += [{"item_id": "999999999", "query": "a film nobody has"}, {"item_id": "abc", "query": "x"}]
    report = pipeline.score_queries(pd.DataFrame(rows))
    assert report.rows == 10 and report.scored == 8
    assert [(s["row"], s["item_id"], s["reason"]) for s in report.skipped] == [
        (8, "999999999", "unknown item id"), (9, "abc", "unknown item id")
    ]
    hits = [
        item in {h.item_id for h in pipeline.search(text, k=30)}
        for text, item in zip(sample["text"], sample["item_id"])
    ]
    assert report.methods["generative"]["recall_at_30"] == pytest.approx(sum(hits) / len(hits))
    bm25 = bm25_search(items, sample["text"].tolist(), 30)
    by_hand = sum(item in ranked for item, ranked in zip(sample["item_id"], bm25)) / len(sample)
    assert report.methods["bm25"]["recall_at_30"] == pytest.approx(by_hand)
    assert set(report.methods["dense"]) == {"recall_at_1", "recall_at_10", "recall_at_30", "mrr"}


def test_bad_requests_name_the_problem(project):
    pipeline = project["pipeline"]
    with pytest.raises(ServeError, match="empty query"):
        pipeline.search("   ")
    for k in (0, -3):
        with pytest.raises(ServeError, match="k must be a positive integer"):
            pipeline.search("a comedy", k=k)
    with pytest.raises(ServeError, match="unknown item id.*999999999.*abc"):
        pipeline.recommend([int(project["items"]["item_id"].iloc[0]), 999999999, "abc"])
    with pytest.raises(ServeError, match="empty history"):
        pipeline.recommend([])
    with pytest.raises(ServeError, match="unknown user id 987654"):
        pipeline.recommend_user(987654)
    with pytest.raises(ServeError, match="lacks column.*query.*has: item_id, text"):
        pipeline.score_queries(pd.DataFrame({"item_id": [1], "text": ["x"]}))
    with pytest.raises(ServeError, match="method='sparse' is not valid"):
        pipeline.search("a comedy", method="sparse")


def test_no_trained_outputs_says_which_dvc_command_to_run(project, tmp_path):
    expected = r"missing .*models/generator/model.*`dvc repro train_t5`.*`dvc pull`"
    with pytest.raises(ServeError, match=expected):
        Pipeline(tmp_path)
    partial = tmp_path / "partial"
    shutil.copytree(project["root"] / "data/prepared", partial / "data/prepared")
    shutil.copytree(project["root"] / "models", partial / "models")
    with pytest.raises(ServeError, match=r"missing data/ids/semantic_ids.parquet; run `dvc repro quantize`"):
        Pipeline(partial)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("semid")  # the console script from pyproject.toml
    command = [str(script)] if script.exists() else [sys.executable, "-m", "semid.cli"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cli_imports_nothing_heavy_before_a_command_runs():
    # A bad request must fail fast, and a search must load only what it needs: none of these at import.
    heavy = ("torch", "transformers", "pandas", "dvc", "mlflow", "sentence_transformers", "bm25s")
    code = f"import sys, semid.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_cli_answers_in_json_and_fails_clearly(project, tmp_path):
    root = project["root"]
    # the CLI loads its own way (one thread, GC frozen after load) and answers as the library does;
    # a query this process has not encoded before (training encoded its queries batched, padded)
    query = "a heist thriller where the plan goes wrong"
    done = _cli("search", query, "-k", "5", "--json", "--root", str(root), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = [h.as_dict() for h in project["pipeline"].search(query, k=5)]
    assert json.loads(done.stdout)["results"] == expected
    csv = tmp_path / "mine.csv"
    queries = project["queries"].head(4)
    rows = "".join(f"{i},{t}\n" for i, t in zip(queries["item_id"], queries["text"]))
    csv.write_text(f"item_id,query\n{rows}5,x\n")
    done = _cli("score-queries", str(csv), "--json", "--root", str(root), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["scored"] == 4
    assert payload["skipped"] == [{"row": 4, "item_id": "5", "reason": "unknown item id"}]
    assert set(payload["metrics"]) == {"generative", "dense", "bm25"}
    assert json.loads((tmp_path / "mine.scores.json").read_text())["scored"] == 4
    # errors: one line, exit 2, before any model loads
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\n1,x\n")
    for args, message in (
        (("search", "", "--root", str(root)), "empty query"),
        (("search", "comedy", "-k", "0", "--root", str(root)), "k must be a positive integer"),
        (("score-queries", str(bad), "--root", str(root)), "lacks column(s) item_id, query"),
        (("recommend", "--items", "1,x", "--root", str(root)), "item ids must be integers"),
        (("search", "comedy", "--root", str(tmp_path)), "dvc repro train_t5"),
    ):
        failed = _cli(*args, cwd=tmp_path)
        assert failed.returncode == 2 and message in failed.stderr, (args, failed.stderr)


def test_a_git_rev_loads_from_the_local_dvc_cache(project, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(project["root"], repo, ignore=shutil.ignore_patterns("work", "checkpoints"))
    env = stage_env(repo)
    run(["git", "init", "-q"], repo, env)
    dvc(repo, "init", "-q")
    dvc(repo, "add", "-q", "data/prepared", "data/ids", "data/embeddings", "models/generator")
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "trained"], repo, env)
    shutil.rmtree(repo / "models")  # the workspace no longer has it: only the commit + cache do
    with pytest.raises(ServeError, match="dvc repro train_t5"):
        Pipeline(repo)
    pipeline = Pipeline(repo, rev="HEAD", device="cpu")
    assert pipeline.source.startswith("rev HEAD (")
    query = project["queries"]["text"].iloc[0]
    expected = [h.item_id for h in project["pipeline"].search(query, k=5)]
    assert [h.item_id for h in pipeline.search(query, k=5)] == expected
    with pytest.raises(ServeError, match="unknown git rev 'no-such-rev'"):
        Pipeline(repo, rev="no-such-rev")
    with pytest.raises(ServeError, match="no DVC experiment named 'no-such-exp'"):
        Pipeline(repo, exp="no-such-exp")


def test_run_layout_comes_from_the_artifacts_and_the_owners_file_names():
    # semid.serve.runs spells the file in each stage folder (their owners import pandas or torch);
    # the folders are semid.artifacts'. Both must agree with the code that writes them.

    owners = {
        "items": (artifacts.PREPARED, data.ITEMS_FILE),
        "interactions": (artifacts.PREPARED, data.INTERACTIONS_FILE),
        "ids": (artifacts.IDS, ids.IDS_FILE),
        "embeddings": (artifacts.EMBEDDINGS, embed.EMBEDDINGS_FILE),
        "generator": (artifacts.GENERATOR, f"{MODEL_DIR}/{META_FILE}"),
    }
    assert runs.ARTIFACTS == {
        name: (f"{artifact.path}/{file}", artifact.stage) for name, (artifact, file) in owners.items()
    }
    assert runs.GENERATOR_MODEL == MODEL_DIR
    stages = [artifact.stage for artifact in artifacts.ARTIFACTS]
    assert list(runs.STAGE_ORDER) == sorted(set(stages), key=stages.index)
    assert runs.STAGE_ORDER.index("quantize") < runs.STAGE_ORDER.index("train_t5") < runs.STAGE_ORDER.index("evaluate")
