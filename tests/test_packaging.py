"""Dockerfile and pyproject.toml against the lock, without Docker: the image runs as a non-root user,
``requires-python`` is what the pinned packages need, and the documented bases have such a Python."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
# The apt ``python3`` of each Ubuntu LTS (what an nvidia/cuda:*-ubuntuXX.YY base installs).
UBUNTU_PYTHON3 = {"20.04": "3.8", "22.04": "3.10", "24.04": "3.12"}
MINORS = [f"3.{minor}" for minor in range(6, 16)]


def _accepts_minor(spec: SpecifierSet, minor: str) -> bool:
    """Whether some release of Python ``minor`` satisfies ``spec`` (``!=3.9.0`` leaves 3.9.2)."""
    return any(spec.contains(Version(f"{minor}.{patch}")) for patch in range(30))


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^;\s]+)", line.strip())
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def _lock_requires_python() -> dict[str, SpecifierSet]:
    """Each pinned package's Requires-Python, read from the installed distribution (the venv is
    installed from this lock; a version that differs would answer for another release)."""
    required = {}
    for name, pinned in _lock_pins().items():
        dist = importlib.metadata.distribution(name)
        installed = Version(dist.version).public  # torch 2.13.0+cpu answers for torch==2.13.0
        assert installed == Version(pinned).public, f"venv has {name} {dist.version}, the lock {pinned}"
        required[name] = SpecifierSet(dist.metadata.get("Requires-Python") or "")
    return required


def _project_requires_python() -> SpecifierSet:
    return SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])


def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_requires_python_is_the_locks_strictest():
    required = _lock_requires_python()
    lock_minors = [m for m in MINORS if all(_accepts_minor(spec, m) for spec in required.values())]
    project = _project_requires_python()
    project_minors = [m for m in MINORS if _accepts_minor(project, m)]
    strictest = [name for name, spec in required.items() if not _accepts_minor(spec, project_minors[0])]
    assert not strictest, f"requires-python {project} admits {project_minors[0]}, which {strictest} refuse"
    assert project_minors[0] == lock_minors[0]
    assert set(project_minors) <= set(lock_minors)


def test_documented_bases_have_a_python_the_lock_installs_on():
    dockerfile = _dockerfile()
    project = _project_requires_python()
    default = re.search(r"^ARG BASE=python:(3\.\d+)", dockerfile, re.MULTILINE)
    assert default and _accepts_minor(project, default.group(1))
    gpu = re.search(r"--build-arg BASE=nvidia/cuda:\S+-ubuntu(\d+\.\d+)", dockerfile)
    assert gpu, "the Dockerfile documents a GPU build on an nvidia/cuda ubuntu base"
    python3 = UBUNTU_PYTHON3[gpu.group(1)]
    assert _accepts_minor(project, python3), f"ubuntu{gpu.group(1)}'s python3 is {python3}; needs {project}"
    # the comment that explains the choice names the same Python
    stated = re.search(r"Ubuntu (\d+\.\d+)'s apt python3 is (3\.\d+)", dockerfile)
    assert stated and stated.groups() == (gpu.group(1), python3)
    assert 'APT_PYTHON="python3 python3-venv"' in dockerfile


def test_image_runs_as_a_non_root_user():
    lines = [line.strip() for line in _dockerfile().splitlines() if line.strip() and not line.startswith("#")]
    users = [line.split(None, 1)[1] for line in lines if line.upper().startswith("USER ")]
    assert users, "the Dockerfile sets a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    created = re.search(rf"useradd\b[^\n]*--uid (\d+)[^\n]*\b{re.escape(user)}\b", _dockerfile())
    assert created and int(created.group(1)) != 0
    last_user = max(n for n, line in enumerate(lines) if line.upper().startswith("USER "))
    last_run = max(n for n, line in enumerate(lines) if line.upper().startswith("RUN "))
    cmd = max(n for n, line in enumerate(lines) if line.upper().startswith("CMD "))
    assert last_run < cmd and last_user < cmd
