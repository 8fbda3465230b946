"""A kill -9 at a named point inside a stage, for tests/test_reliability.py.

Python imports ``sitecustomize`` at start-up from any folder on PYTHONPATH, so putting this
folder there arms every Python process of a ``dvc repro``; only the stage whose command line
names ``SEMID_FAILPOINT_STAGE`` acts. When the module ``SEMID_FAILPOINT`` names
(``module:Qualified.name:call:before|after``) has been imported, its function is wrapped: on the
given call it writes ``SEMID_FAILPOINT_MARK`` and SIGKILLs its whole process group (DVC
included, as ``kill -9`` on a terminal's job would), before or after the call runs.

Why not a timer from outside: a stage's phases last 0.1-20 s depending on the machine and its
load, so a fixed delay lands on a different phase (or after the end) from one run to the next.
"""

from __future__ import annotations

import functools
import importlib.abc
import os
import signal
import sys
from pathlib import Path


def _kill(mark: str) -> None:
    Path(mark).write_text(f"{os.getpid()}\n")
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _wrap(function, call: int, when: str, mark: str):
    calls = 0

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == call and when == "before":
            _kill(mark)
        result = function(*args, **kwargs)
        if calls == call and when == "after":
            _kill(mark)
        return result

    return wrapper


class _ArmAfterImport(importlib.abc.MetaPathFinder):
    """Wraps the target function right after its module runs, before anyone imports the name."""

    def __init__(self, module: str, qualname: str, call: int, when: str, mark: str):
        self.module, self.qualname, self.call, self.when, self.mark = module, qualname, call, when, mark

    def find_spec(self, name, path, target=None):
        if name != self.module:
            return None
        sys.meta_path.remove(self)
        try:
            from importlib.util import find_spec

            spec = find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            owner_path, _, attribute = self.qualname.rpartition(".")
            owner = module
            for part in filter(None, owner_path.split(".")):
                owner = getattr(owner, part)
            setattr(owner, attribute, _wrap(getattr(owner, attribute), self.call, self.when, self.mark))

        spec.loader.exec_module = exec_module
        return spec


def _arm() -> None:
    point, stage = os.environ.get("SEMID_FAILPOINT"), os.environ.get("SEMID_FAILPOINT_STAGE")
    if not point or not stage:
        return
    command = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    if f"semid.stages.{stage}".encode() not in command:
        return
    module, qualname, call, when = point.split(":")
    sys.meta_path.insert(0, _ArmAfterImport(module, qualname, int(call), when, os.environ["SEMID_FAILPOINT_MARK"]))


_arm()
