"""Same params, same bits; an error or a bad value leaves the old outputs; code deps are true."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT, dvc, run, set_params, stage_env
from semid.io import read_json, write_json, write_json_set
from semid.stages.code_deps import STAGES, code_deps


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _quantize_workdir(root: Path, items, embeddings) -> Path:
    root.mkdir()
    shutil.copy2(REPO_ROOT / "params.yaml", root / "params.yaml")
    shutil.copytree(REPO_ROOT / "profiles", root / "profiles")
    folder = root / "data" / "embeddings"
    folder.mkdir(parents=True)
    np.savez(folder / "item_embeddings.npz", item_ids=items["item_id"].to_numpy(np.int64), joint=embeddings)
    meta = {"method": "content", "model": "all-MiniLM-L6-v2", "spaces": ["joint"], "dim": {"joint": 384},
            "query_encoder": None, "query_space": None}  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta))
    return root


def test_semantic_ids_do_not_depend_on_the_machines_thread_count(minilm_item_embeddings, tmp_path):
    """FAISS's residual k-means gives other level-2 codes on 1 and 2 OpenMP threads (measured on
    these 1,000 real items); the stage pins `base.threads`, so the environment's count must not
    matter."""
    items, embeddings = minilm_item_embeddings
    hashes = {}
    for threads in ("1", "2"):
        workdir = _quantize_workdir(tmp_path / f"threads-{threads}", items, embeddings)
        env = stage_env(workdir)
        env["PYTHONPATH"] = str(REPO_ROOT / "src")
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = threads
        run([sys.executable, "-m", "semid.stages.quantize"], workdir, env)
        hashes[threads] = _md5(workdir / "data" / "ids" / "semantic_ids.parquet")
    assert hashes["1"] == hashes["2"]


def test_metrics_written_as_a_set_leave_the_old_files_on_an_error(tmp_path):
    search, rec = tmp_path / "search.json", tmp_path / "rec.json"
    write_json_set({search: {"recall_at_30": 0.1}, rec: {"recall_at_30": 0.2}})
    with pytest.raises(TypeError):
        write_json_set({search: {"recall_at_30": 0.5}, rec: {"recall_at_30": object()}})
    assert read_json(search) == {"recall_at_30": 0.1} and read_json(rec) == {"recall_at_30": 0.2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.json", "search.json"]  # no temporaries left
    write_json(search, {"recall_at_30": float("nan")})
    assert read_json(search) == {"recall_at_30": None}


def test_dvc_yaml_lists_every_module_each_stage_can_import():
    """A stage that imports a module dvc.yaml does not list keeps stale outputs after an edit there.
    Fix a failure by pasting `python -m semid.stages.code_deps` into dvc.yaml."""
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    assert tuple(stages) == STAGES
    for stage in STAGES:
        listed = sorted(d for d in stages[stage]["deps"] if d.startswith("src/"))
        assert listed == code_deps(stage), stage
        assert stages[stage]["cmd"] == f"python -m semid.stages.{stage}"
    # deferred imports count too: the generator package is imported inside functions of evaluate.py
    assert "src/semid/generator" in code_deps("evaluate") and "src/semid/seeding.py" in code_deps("train_t5")


def test_code_deps_follow_a_new_import(tmp_path, monkeypatch):
    import semid.stages.code_deps as deps

    package = tmp_path / "semid"
    shutil.copytree(REPO_ROOT / "src" / "semid", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "newdep.py").write_text("X = 1\n")
    stage = package / "stages" / "quantize.py"
    stage.write_text(stage.read_text().replace("def main", "def _later():\n    import semid.newdep  # noqa\n\n\ndef main", 1))
    monkeypatch.setattr(deps, "SOURCE_ROOT", tmp_path)
    deps.module_closure.cache_clear()
    try:
        assert "src/semid/newdep.py" in deps.code_deps("quantize")
        assert "src/semid/newdep.py" not in deps.code_deps("prepare_movielens")
    finally:
        deps.module_closure.cache_clear()


def test_a_bad_set_value_stops_before_any_stage_removes_its_outputs(dvc_repo):
    set_params(dvc_repo, data={"sample_items": 300, "sample_items_strategy": "popular"})
    dvc(dvc_repo, "repro", "prepare_movielens")
    env = stage_env(dvc_repo)
    run(["git", "add", "-A"], dvc_repo, env)
    run(["git", "commit", "-qm", "prepared"], dvc_repo, env)
    prepared = dvc_repo / "data" / "prepared" / "items.parquet"
    before = _md5(prepared)

    result = dvc(dvc_repo, "exp", "run", "-S", "data.release=ml-2m", check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "data.release='ml-2m' is not valid" in errors[0] and "git checkout params.yaml" in errors[0]
    assert _md5(prepared) == before  # prepare_movielens never ran, so its outputs are untouched

    run(["git", "checkout", "params.yaml"], dvc_repo, env)
    status = dvc(dvc_repo, "repro", "prepare_movielens")
    assert "Running stage 'prepare_movielens'" not in status.stdout  # the way back costs nothing
