"""Real DVC runs on a copy of the project: repro, no-op repro, and `-S` reruns only dependents."""

import json
import sys

import pandas as pd
import pytest

from conftest import TINY, dvc, run, set_params, stage_env


def test_prepare_stage_repro_is_cached_and_param_changes_rerun_it(dvc_repo):
    set_params(dvc_repo, data={"sample_items": 300, "sample_items_strategy": "popular"})
    out = dvc(dvc_repo, "repro", "prepare_movielens")
    assert "Running stage 'prepare_movielens'" in out.stdout
    stats = json.loads((dvc_repo / "metrics" / "data.json").read_text())
    assert stats["items"] == 300 and stats["users"] > 0
    assert (dvc_repo / "data" / "prepared" / "items.parquet").exists()
    assert (dvc_repo / "mlflow.db").exists()  # the stage's run landed in the repo's store

    again = dvc(dvc_repo, "repro", "prepare_movielens")
    assert "Running stage" not in again.stdout
    assert "didn't change" in again.stdout or "up to date" in again.stdout

    # a key the stage does not read leaves it alone; a key it reads reruns it
    status = dvc(dvc_repo, "status", "prepare_movielens").stdout
    assert "changed" not in status and "up to date" in status
    dvc(dvc_repo, "exp", "run", "-S", "data.sample_items=250", "prepare_movielens")
    shown = dvc(dvc_repo, "exp", "show", "--json").stdout
    assert "250" in shown
    stats = json.loads((dvc_repo / "metrics" / "data.json").read_text())
    assert stats["items"] == 250

    metrics = json.loads(dvc(dvc_repo, "metrics", "show", "--json").stdout)
    assert find_key(metrics, "items") == 250


def find_key(tree, key):
    """The first value stored under ``key`` anywhere in DVC's nested JSON."""
    if isinstance(tree, dict):
        if key in tree and not isinstance(tree[key], dict):
            return tree[key]
        for value in tree.values():
            found = find_key(value, key)
            if found is not None:
                return found
    return None


def test_bad_param_fails_clearly_and_writes_nothing(dvc_repo):
    set_params(dvc_repo, data={"release": "ml-2m"})
    result = run([sys.executable, "-m", "semid.stages.prepare_movielens"], dvc_repo, stage_env(dvc_repo), check=False)
    assert result.returncode == 2
    assert "data.release='ml-2m' is not valid; choose one of: ml-latest-small" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (dvc_repo / "data" / "prepared").exists()
    assert not (dvc_repo / "metrics" / "data.json").exists()


def test_checksum_mismatch_in_mirror_fails_the_stage(dvc_repo, tmp_path):
    import shutil

    from conftest import ML_LATEST_SMALL

    mirror = tmp_path / "bad-mirror"
    shutil.copytree(ML_LATEST_SMALL, mirror / "ml-latest-small")
    frame = pd.read_csv(mirror / "ml-latest-small" / "movies.csv")
    frame.iloc[:10].to_csv(mirror / "ml-latest-small" / "movies.csv", index=False)
    env = stage_env(dvc_repo)
    env["SEMID_MOVIELENS_MIRROR"] = str(mirror)
    result = run([sys.executable, "-m", "semid.stages.prepare_movielens"], dvc_repo, env, check=False)
    assert result.returncode == 2 and "checksum mismatch" in result.stderr and "movies.csv" in result.stderr
    assert not (dvc_repo / "data" / "prepared").exists()


def test_each_stage_lists_only_the_params_it_reads():
    """`dvc exp run -S quantizer=...` must rerun quantize and what follows, never the embedder."""
    import yaml

    from conftest import REPO_ROOT

    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]

    def top_level_params(stage):
        return {p for p in stages[stage]["params"] if isinstance(p, str)}

    assert top_level_params("prepare_movielens") == {"base", "data"}
    assert top_level_params("gen_queries") == {"base", "queries"}
    assert top_level_params("train_embedder") == {"base", "embedding", "embed"}
    assert top_level_params("quantize") == {"base", "quantizer", "quantize"}
    assert "quantizer" not in top_level_params("train_embedder")
    # downstream stages see an axis change through their data deps, not by reading the key
    assert "data/ids" in stages["train_t5"]["deps"] and "data/embeddings" in stages["quantize"]["deps"]


@pytest.mark.slow
def test_prefix_share_runs_end_to_end_with_one_shared_first_token(dvc_repo):
    """embedding=prefix_share through every stage: both task spaces share their first ID level and
    its tokens, the generator trains on the shared vocabulary, and both tasks are evaluated."""
    tiny_embed = {"max_steps": 4, "enmf_epochs": 5, "eval_max_queries": 100}
    set_params(dvc_repo, embedding="prefix_share", **TINY, embed=tiny_embed)
    dvc(dvc_repo, "repro")
    ids = pd.read_parquet(dvc_repo / "data/ids/semantic_ids.parquet")
    meta = json.loads((dvc_repo / "data/ids/meta.json").read_text())
    assert meta["spaces"] == ["search", "rec"] and meta["shared_levels"] == 1
    search = ids[ids["space"] == "search"].set_index("item_id")
    rec = ids[ids["space"] == "rec"].set_index("item_id").loc[search.index]
    assert [c[0] for c in search["codes"]] == [c[0] for c in rec["codes"]]
    assert search["sid"].str.match(r"^<sid_1_\d+><search_2_\d+>").all() and search["sid"].is_unique
    assert rec["sid"].str.match(r"^<sid_1_\d+><rec_2_\d+>").all() and rec["sid"].is_unique
    id_metrics = json.loads((dvc_repo / "metrics/ids.json").read_text())
    assert id_metrics["search_codebook_usage_level_1"] == id_metrics["rec_codebook_usage_level_1"]
    for task in ("search", "rec"):
        metrics = json.loads((dvc_repo / f"metrics/{task}.json").read_text())
        assert 0 <= metrics["recall_at_30"] <= 1
    print(f"example item {search.index[0]}: search {search['sid'].iloc[0]}, rec {rec['sid'].iloc[0]}")
