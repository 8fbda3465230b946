"""The artifact layout has one owner (semid.artifacts); dvc.yaml must declare exactly it."""

from __future__ import annotations

import yaml

from conftest import REPO_ROOT
from semid.artifacts import ARTIFACTS, written_by


def _declared(stage: dict) -> set[tuple[str, str, bool]]:
    found = set()
    for section, kind in (("outs", "out"), ("metrics", "metrics"), ("plots", "plot")):
        for entry in stage.get(section, []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            options = entry[path] if isinstance(entry, dict) else {}
            found.add((path, kind, (options or {}).get("cache", True)))
    return found


def test_dvc_yaml_declares_exactly_the_artifacts_of_each_stage():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        assert _declared(stage) == {(a.path, a.kind, a.cached) for a in written_by(name)}, name
    assert {a.stage for a in ARTIFACTS} == set(stages)


def test_every_artifact_path_is_unique_and_relative():
    paths = [a.path for a in ARTIFACTS]
    assert len(paths) == len(set(paths))
    assert all(not p.startswith("/") and ".." not in p for p in paths)
