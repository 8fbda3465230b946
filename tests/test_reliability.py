"""Same params, same bits; an error or a bad value leaves the old outputs; code deps are true."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import PROJECT_FILES, REPO_ROOT, TINY, dvc, run, set_params, stage_env

import semid.stages.code_deps as deps
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
            "query_encoder": None, "query_space": None}
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


# ---------------------------------------------------------------- the whole pipeline (slow)

# Keys that measure the machine, not the result; everything else must agree to the bit.
TIMING_KEYS = ("seconds", "per_second", "resumed")
# A checkpoint mid-run, so a kill after it tests resuming (10 steps stay inside the first epoch).
KILLABLE = {**TINY, "generator": {**TINY["generator"], "save_steps": 4}}


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    """The project's code and config, copied once: every pipeline below runs the same code."""
    copy = tmp_path_factory.mktemp("project")
    for file in (*PROJECT_FILES, ".gitignore"):
        source = REPO_ROOT / file
        if source.is_dir():
            shutil.copytree(source, copy / file, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, copy / file)
    return copy


def _pipeline_repo(project: Path, where: Path) -> Path:
    """A fresh git + DVC repo (as conftest's dvc_repo) of ``project`` with the killable tiny config."""
    repo = shutil.copytree(project, where)
    env = stage_env(repo)
    run(["git", "init", "-q"], repo, env)
    dvc(repo, "init", "-q")
    set_params(repo, **KILLABLE)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "tiny pipeline"], repo, env)
    return repo


def _outputs(repo: Path) -> dict[str, str]:
    """md5 of every stage output in dvc.lock, metrics included (compared apart)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])}


def _metrics_without_timings(repo: Path) -> dict[str, dict]:
    found = {}
    for path in sorted((repo / "metrics").glob("*.json")):
        found[path.name] = {k: v for k, v in read_json(path).items() if not any(t in k for t in TIMING_KEYS)}
    return found


def _assert_same_results(repo: Path, reference: Path) -> None:
    metric_files = {f"metrics/{p.name}" for p in (reference / "metrics").glob("*.json")}
    ours, theirs = _outputs(repo), _outputs(reference)
    assert ours.keys() == theirs.keys()
    differing = sorted(p for p in ours if p not in metric_files and ours[p] != theirs[p])
    assert not differing, f"outputs differ: {differing}"
    assert _metrics_without_timings(repo) == _metrics_without_timings(reference)


def _repro(repo: Path, env_threads: str) -> None:
    env = stage_env(repo)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = env_threads
    run([sys.executable, "-m", "dvc", "repro"], repo, env)


@pytest.fixture(scope="module")
def reference_pipeline(project_copy, tmp_path_factory) -> Path:
    repo = _pipeline_repo(project_copy, tmp_path_factory.mktemp("reference") / "repo")
    _repro(repo, "1")
    return repo


@pytest.mark.slow
def test_two_runs_from_scratch_on_other_thread_counts_give_the_same_bits(project_copy, reference_pipeline, tmp_path):
    repo = _pipeline_repo(project_copy, tmp_path / "again")
    _repro(repo, "2")
    _assert_same_results(repo, reference_pipeline)


FAILPOINT_DIR = Path(__file__).parent / "failpoint"


def _kill_at(repo: Path, stage: str, point: str) -> bool:
    """`dvc repro <stage>`, SIGKILLed with its process group at ``point`` inside the stage
    (see tests/failpoint/sitecustomize.py); False when the stage ended without reaching it."""
    mark = repo.parent / f"{repo.name}.killed"
    mark.unlink(missing_ok=True)
    env = stage_env(repo)
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{FAILPOINT_DIR}"
    env.update(SEMID_FAILPOINT=point, SEMID_FAILPOINT_STAGE=stage, SEMID_FAILPOINT_MARK=str(mark))
    process = subprocess.run([sys.executable, "-m", "dvc", "repro", stage], cwd=repo, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, timeout=900)
    return mark.exists() and process.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_killed_anywhere_a_rerun_gives_the_uninterrupted_results(project_copy, reference_pipeline, tmp_path):
    """kill -9 inside stages (reading, fitting, training after a checkpoint, decoding), then
    `dvc repro`: the outputs are those of the run nobody interrupted."""
    repo = _pipeline_repo(project_copy, tmp_path / "killed")
    kill_points = {
        "prepare_movielens between its two output files": ("prepare_movielens", "pandas.core.frame:DataFrame.to_parquet:2:before"),
        "gen_queries between its query splits": ("gen_queries", "pandas.core.frame:DataFrame.to_parquet:2:before"),
        "quantize fitted, nothing written": ("quantize", "semid.quantize.rqkmeans:RQKMeansQuantizer.fit:1:after"),
        "train_t5 while encoding texts": ("train_t5", "semid.generator.text_encoder:FrozenTextEncoder.encode:2:before"),
        "train_t5 after a checkpoint": ("train_t5", "transformers.trainer:Trainer._save_checkpoint:1:after"),
        "evaluate while decoding": ("evaluate", "semid.generator.decode:generate_items:2:before"),
    }
    missed = [name for name, (stage, point) in kill_points.items() if not _kill_at(repo, stage, point)]
    assert not missed, f"these stages ended without reaching their kill point: {missed}"
    _repro(repo, "2")
    _assert_same_results(repo, reference_pipeline)
    assert read_json(repo / "metrics" / "train_t5.json")["resumed"] == 1
