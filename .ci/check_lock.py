"""CI: the committed dvc.lock must be what `dvc repro` of this very tree wrote.

On a fresh clone only outputs may be missing (they live in the DVC cache or a remote); a changed
dep or param means the committed lock and metrics/ describe other code or other params.
"""

from __future__ import annotations

import json
import subprocess
import sys

MISSING = {"deleted", "not in cache"}


def pipeline_outputs() -> set[str]:
    """Every output path in the committed lock files (dvc.lock, grid/dvc.lock): a missing one is
    also a missing dep of the stages after it, in its own file or another (a grid point reads the
    default pipeline's data/prepared). Lock paths are relative to the lock's folder or its wdir;
    the grid's stages run at the root (wdir ..), so their paths are root-relative already."""
    import yaml

    listed = subprocess.run(["git", "ls-files", "dvc.lock", "*/dvc.lock"], capture_output=True, text=True, check=True)
    outputs = set()
    for path in listed.stdout.split():
        with open(path) as lock:
            stages = yaml.safe_load(lock)["stages"]
        outputs |= {out["path"] for stage in stages.values() for out in stage.get("outs", [])}
    return outputs


def stale_entries(status: dict, outputs: set[str]) -> list[str]:
    problems = []
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):  # "always changed" and similar plain strings
                problems.append(f"{stage}: {change}")
                continue
            for kind, paths in change.items():
                if kind == "changed outs" and set(paths.values()) <= MISSING:
                    continue
                if kind == "changed deps" and all(
                    path in outputs and state in MISSING for path, state in paths.items()
                ):
                    continue  # upstream outputs not fetched on this clone
                problems.append(f"{stage}: {kind} {json.dumps(paths, sort_keys=True)}")
    return problems


def main() -> int:
    result = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], capture_output=True, text=True, check=True)
    problems = stale_entries(json.loads(result.stdout or "{}"), pipeline_outputs())
    for line in problems:
        print(f"stale dvc.lock: {line}", file=sys.stderr)
    if problems:
        print("the committed dvc.lock/metrics are not from `dvc repro` of this tree: run it and commit both", file=sys.stderr)
        return 1
    print("dvc.lock matches the committed code and params (only outputs are missing on this clone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
