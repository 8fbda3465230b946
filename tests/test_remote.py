"""Remote artifacts: `make remote`, dvc push, a fresh clone + `make remote` + dvc pull restores
identical outputs, `dvc status` is clean and `dvc repro` has nothing to do."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from conftest import REPO_ROOT, dvc, run, set_params, stage_env

STAGES = ("prepare_movielens", "gen_queries")


def tree_digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def make_remote(repo: Path, remote: Path) -> None:
    """The Makefile's target itself, with this interpreter's venv and no reinstall."""
    env = stage_env(repo)
    venv = Path(sys.executable).parent.parent
    run(["make", "-o", "venv", "-o", ".dvc/config", "remote", f"VENV={venv}", f"REMOTE={remote}"], repo, env)


def test_push_then_fresh_clone_pull_restores_identical_outputs(dvc_repo, tmp_path):
    shutil.copy2(REPO_ROOT / "Makefile", dvc_repo / "Makefile")
    set_params(dvc_repo, data={"sample_items": 150, "sample_items_strategy": "popular"})
    dvc(dvc_repo, "repro", *STAGES)
    env = stage_env(dvc_repo)
    run(["git", "add", "-A"], dvc_repo, env)
    run(["git", "commit", "-qm", "outputs of a small slice"], dvc_repo, env)

    remote = tmp_path / "remote"  # outside both repos
    make_remote(dvc_repo, remote)
    assert "local" in dvc(dvc_repo, "remote", "list").stdout
    assert not (dvc_repo / ".dvc" / "config").read_text().count(str(remote))  # machine-local: config.local
    pushed = dvc(dvc_repo, "push")
    assert "pushed" in pushed.stdout
    assert any(remote.rglob("*")), "dvc push wrote nothing to the remote"

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(dvc_repo), str(clone)], tmp_path, env)
    assert not (clone / "data" / "prepared").exists()
    make_remote(clone, remote)
    dvc(clone, "pull", *STAGES)  # the later stages never ran here: nothing of theirs to pull

    for output in ("data/prepared", "data/queries"):
        original, restored = tree_digests(dvc_repo / output), tree_digests(clone / output)
        assert restored and restored == original, output
    status = dvc(clone, "status", *STAGES)
    assert "changed" not in status.stdout and "up to date" in status.stdout.lower(), status.stdout
    again = dvc(clone, "repro", *STAGES)
    assert "Running stage" not in again.stdout, again.stdout
