"""The tiny pipeline's output hashes at several git revisions, side by side.

A refactor that claims "behaviour unchanged" shows it here: each revision's code runs the same
small config (tests/conftest.py TINY) from scratch in its own temporary DVC repo, and every
output's md5 from its dvc.lock is printed per revision.

    python bench/pipeline_hashes.py be6d5c9 HEAD
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import TINY, set_params, stage_env  # noqa: E402  (the tests' own tiny config and environment)


def checkout(rev: str, where: Path) -> None:
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    tarfile.open(fileobj=io.BytesIO(archive)).extractall(where, filter="data")


def pipeline_outputs(rev: str, workdir: Path) -> tuple[dict[str, str], float]:
    repo = workdir / rev.replace("/", "_")
    repo.mkdir()
    checkout(rev, repo)
    for leftover in ("dvc.lock", "metrics", "data/params_checked.txt"):
        subprocess.run(["rm", "-rf", str(repo / leftover)], check=True)
    env = stage_env(repo)
    set_params(repo, **TINY)
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q", "-f"],
                ["git", "add", "-A"], ["git", "commit", "-qm", rev]):  # fmt: skip
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("revs", nargs="+", help="git revisions to compare")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        found = {rev: pipeline_outputs(rev, Path(tmp)) for rev in args.revs}
    paths = sorted({path for outputs, _ in found.values() for path in outputs})
    print(f"{'output':32}" + "".join(f"{rev[:12]:>14}" for rev in args.revs) + "  same")
    for path in paths:
        hashes = [found[rev][0].get(path, "-")[:10] for rev in args.revs]
        print(f"{path:32}" + "".join(f"{h:>14}" for h in hashes) + ("  yes" if len(set(hashes)) == 1 else "  NO"))
    print("seconds of dvc repro: " + ", ".join(f"{rev[:12]} {s:.0f}" for rev, (_, s) in found.items()))


if __name__ == "__main__":
    main()
