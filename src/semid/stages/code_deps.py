"""Which library files each stage runs: its code deps in dvc.yaml and its checkpoint fingerprint.

Found statically (every ``import`` / ``from ... import`` in a module, deferred ones included,
followed through the ``semid`` package), so a change in any module a stage can reach reruns it.
A module of a subpackage stands for the whole subpackage folder, as dvc.yaml lists folders.

    python -m semid.stages.code_deps            # the deps every stage should list
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "semid"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/semid
SOURCE_ROOT = PACKAGE_DIR.parent  # src
STAGES = ("check_params", "prepare_movielens", "gen_queries", "train_embedder", "quantize", "train_t5", "evaluate")


def module_file(name: str) -> Path | None:
    """The file of module ``semid.x.y`` (a package's ``__init__.py``), or None outside semid."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    path = SOURCE_ROOT.joinpath(*name.split("."))
    if path.is_dir():
        return path / "__init__.py"
    file = path.with_suffix(".py")
    return file if file.exists() else None


def _imported_names(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            # `from semid.generator import model` imports a submodule, not a name
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@cache
def module_closure(module: str) -> frozenset[str]:
    """``module`` and every semid module it can import, directly or through others."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or module_file(name) is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        todo.extend(_imported_names(module_file(name), name))
    return frozenset(seen)


def stage_module(stage: str) -> str:
    return f"{PACKAGE}.stages.{stage}"


def code_deps(stage: str) -> list[str]:
    """dvc.yaml deps of ``stage`` under src/: one file per top-level module, one folder per
    subpackage (the stage's own script included)."""
    deps = set()
    for name in module_closure(stage_module(stage)):
        parts = name.split(".")
        if name == stage_module(stage):
            deps.add(f"src/{'/'.join(parts)}.py")
        elif len(parts) == 1:
            deps.add(f"src/{PACKAGE}/__init__.py")
        elif len(parts) == 2 and module_file(name).name != "__init__.py":
            deps.add(f"src/{'/'.join(parts)}.py")
        elif parts[1] != "stages":
            deps.add(f"src/{parts[0]}/{parts[1]}")
        else:  # another stages module (common.py): the file, not the folder of every stage
            deps.add(f"src/{'/'.join(parts)}.py" if len(parts) > 2 else f"src/{PACKAGE}/stages/__init__.py")
    return sorted(deps)


def code_digest(stage: str) -> str:
    """A hash of the source of every file ``stage`` can run: checkpoints of other code are not resumed."""
    digest = hashlib.sha256()
    for dep in code_deps(stage):
        path = SOURCE_ROOT.parent / dep
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(file.relative_to(SOURCE_ROOT).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def main() -> None:
    for stage in STAGES:
        print(f"{stage}:")
        for dep in code_deps(stage):
            print(f"  - {dep}")


if __name__ == "__main__":
    main()
