"""params.yaml is written from the config dataclasses (`make params`): one source of defaults."""

from __future__ import annotations

import subprocess

import yaml

from conftest import REPO_ROOT
from semid.config import SECTIONS, load_params
from semid.params_file import field_notes, render_params


def _committed_params() -> str:
    """HEAD's params.yaml: `dvc exp run -S` edits the working copy on purpose."""
    shown = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=REPO_ROOT, capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else (REPO_ROOT / "params.yaml").read_text()


def test_committed_params_yaml_is_the_rendering_of_the_defaults():
    assert _committed_params() == render_params(), "params.yaml drifted from src/semid/config.py: run `make params`"


def test_rendering_loads_to_the_dataclass_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(render_params())
    params = load_params(path)
    for name, cls in SECTIONS.items():
        assert getattr(params, name) == cls(), name
    assert yaml.safe_load(render_params())["quantizer"] == "rqkmeans"


def test_field_comments_come_from_the_source():
    notes = field_notes(SECTIONS["generator"])
    assert notes["max_steps"].beside.startswith("the budget")
    assert notes["model"].above[0].startswith('"scratch" = a small T5')
