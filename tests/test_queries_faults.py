"""gen_queries as a real process against a local OpenAI-compatible HTTP server (the real SDK
call code runs; only the service is fake): killed with SIGKILL mid-run and rerun, and two runs
at once sharing one answers cache, as two `dvc queue` workers do. The server's log is the bill:
no prompt may be answered twice."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO_ROOT, SHARED_MOVIELENS
from fake_openai import OpenAICompatibleServer, openai_server  # noqa: F401 - openai_server is a fixture
from test_queries import SECRET

from semid.config import DataConfig
from semid.data import prepare_movielens, write_prepared
from semid.queries import CACHE_FILE, SPLITS, build_prompt, items_from_frame

ITEMS = 24
KEY_ENV = "SEMID_TEST_LLM_KEY"


@pytest.fixture(scope="module")
def prepared(ml_small_raw):
    """The 24 most-rated real movies of ml-latest-small, prepared as the pipeline does."""
    return prepare_movielens(ml_small_raw, DataConfig(sample_items=ITEMS, sample_items_strategy="popular"), 42)


def make_workspace(folder: Path, prepared, base_url: str) -> Path:
    """What the stage reads: params.yaml (queries via the openai backend at base_url) and data/prepared."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["queries"].update(
        backend="openai", model="local-model", base_url=base_url, api_key_env=KEY_ENV,
        n_generated=4, n_train=2, n_valid=1, n_test=1, concurrency=3, max_retries=1,
        retry_base_seconds=0.01, retry_max_seconds=0.01, timeout_seconds=30.0,
    )
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_prepared(prepared, folder / "data" / "prepared")
    return folder


def start_stage(workspace: Path, key: str = SECRET, shared_root: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"), SEMID_TRACKING="0", CI="1", **{KEY_ENV: key})
    env["SEMID_MOVIELENS_MIRROR"] = str(SHARED_MOVIELENS)
    env.pop("DVC_ROOT", None)
    if shared_root:  # a queued experiment: its own copy as cwd, the cache under the main repo
        env["DVC_ROOT"] = str(shared_root)
    command = [sys.executable, "-m", "semid.stages.gen_queries"]
    return subprocess.Popen(command, cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, f"gen_queries failed ({process.returncode}):\n{out}\n{err}"
    return out + err


def cached_answers(root: Path) -> int:
    path = root / "data" / "cache" / "queries" / CACHE_FILE
    return path.read_bytes().count(b"\n") if path.exists() else 0


def kill_when(process: subprocess.Popen, reached, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not reached():
        if process.poll() is not None:
            pytest.fail(f"gen_queries ended before the kill point:\n{process.communicate()}")
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.02)
    process.kill()  # SIGKILL: no handler, no flush, no finally
    process.wait()


def outputs(workspace: Path) -> dict[str, pd.DataFrame]:
    folder = workspace / "data" / "queries"
    frames = {split: pd.read_parquet(folder / f"{split}.parquet") for split in SPLITS}
    return {**frames, "failures": (folder / "failures.json").read_text()}


def assert_same_outputs(first: Path, second: Path) -> None:
    one, other = outputs(first), outputs(second)
    assert one["failures"] == other["failures"]
    for split in SPLITS:
        pd.testing.assert_frame_equal(one[split], other[split])


def all_prompts(prepared) -> set[str]:
    return {build_prompt(item, 4) for item in items_from_frame(prepared.items)}


def test_killed_runs_resume_to_the_uninterrupted_outputs_paying_once(tmp_path, prepared, openai_server):
    server = openai_server
    reference_server = OpenAICompatibleServer()
    try:
        reference = make_workspace(tmp_path / "reference", prepared, reference_server.url)
        finish(start_stage(reference))
    finally:
        reference_server.close()
    assert Counter(reference_server.answered) == Counter(all_prompts(prepared))

    workspace = make_workspace(tmp_path / "killed", prepared, server.url)
    for answers in (0, 2, 9):  # kill points: answers paid (and written) before the SIGKILL
        server.set_answer_limit(answers)
        process = start_stage(workspace)
        # Killed once its answers are written and one request beyond them is in the air.
        held = len(server.received) + answers - len(server.answered) + 1
        kill_when(process, lambda: len(server.received) >= held and cached_answers(workspace) == answers)
        server.release()
    server.set_answer_limit(None)
    finish(start_stage(workspace))

    assert_same_outputs(workspace, reference)
    assert Counter(server.answered) == Counter(all_prompts(prepared))  # each prompt paid for exactly once
    assert len(server.received) > ITEMS  # requests were in the air at the kills, unanswered
    last_request = {prompt: i for i, (prompt, _) in enumerate(server.log)}
    answer = {prompt: i for i, (prompt, answered) in enumerate(server.log) if answered}
    assert last_request == answer  # once answered, never asked again
    assert cached_answers(workspace) == ITEMS


def test_two_queue_workers_sharing_the_cache_pay_for_each_item_once(tmp_path, prepared, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = OpenAICompatibleServer(runners=2, delay_seconds=0.05)
    main_repo = tmp_path / "main"  # DVC_ROOT of both queued experiments: find_root puts the cache here
    main_repo.mkdir()
    try:
        workers = [make_workspace(tmp_path / f"exp-{n}", prepared, server.url) for n in (1, 2)]
        processes = [start_stage(w, key=f"key-{n}", shared_root=main_repo) for n, w in enumerate(workers)]
        for process in processes:
            finish(process)
    finally:
        server.close()
    assert len(set(server.authorizations)) == 2  # both workers asked: they really ran side by side
    assert Counter(server.answered) == Counter(all_prompts(prepared))
    assert cached_answers(main_repo) == ITEMS
    assert_same_outputs(*workers)


def test_credentials_in_base_url_stop_the_stage_with_one_line(tmp_path, prepared):
    workspace = make_workspace(tmp_path / "ws", prepared, "https://me:hunter2@llm.example/v1")
    process = start_stage(workspace)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2 and "hunter2" not in out + err
    assert err.startswith("error: queries.base_url") and err.count("\n") == 1
