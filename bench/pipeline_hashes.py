"""The tiny pipeline's output hashes at several git revisions, side by side.

A refactor that claims "behaviour unchanged" shows it here: each revision's code runs the same
small config (tests/conftest.py TINY) from scratch in its own temporary DVC repo, and every
output's md5 from its dvc.lock is printed per revision; where one differs, the files that differ
within it, and for JSON files the keys whose values differ.

    python bench/pipeline_hashes.py be6d5c9 HEAD
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
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
                ["git", "add", "-A"], ["git", "commit", "-qm", rev]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])}, seconds


def file_hashes(root: Path) -> dict[str, str]:
    """md5 of every file under ``root`` (or of ``root`` itself), by path relative to it."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)) if p != root else ".": hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def json_keys_differing(a: Path, b: Path) -> list[str] | None:
    """Top-level keys whose values differ between two JSON objects; None if either is not one."""
    try:
        left, right = json.loads(a.read_text()), json.loads(b.read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    if not (isinstance(left, dict) and isinstance(right, dict)):
        return None
    return sorted(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))


def what_differs(repo_a: Path, repo_b: Path, output: str) -> str:
    """Which files of an output differ, and for JSON files which keys: the evidence that a
    difference is the expected one (a timing, a fingerprint) and not a changed result."""
    a, b = file_hashes(repo_a / output), file_hashes(repo_b / output)
    parts = []
    for name in sorted(a.keys() | b.keys()):
        if a.get(name) == b.get(name):
            continue
        if name not in a or name not in b:
            parts.append(f"{name} ({'only in ' + ('second' if name not in a else 'first')})")
            continue
        keys = json_keys_differing(repo_a / output / name if name != "." else repo_a / output,
                                   repo_b / output / name if name != "." else repo_b / output)
        parts.append(f"{name} [keys: {', '.join(keys)}]" if keys is not None else name)
    return "; ".join(parts)


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
        first = args.revs[0]
        for rev in args.revs[1:]:
            print(f"\nwhat differs, {first[:12]} -> {rev[:12]}:")
            for path in paths:
                if found[first][0].get(path) != found[rev][0].get(path):
                    print(f"  {path}: {what_differs(Path(tmp) / first.replace('/', '_'), Path(tmp) / rev.replace('/', '_'), path)}")


if __name__ == "__main__":
    main()
