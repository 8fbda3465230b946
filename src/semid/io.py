"""Atomic artifact writes and quiet-under-CI progress bars.

Every artifact is written to a temporary sibling and renamed into place, so a crash or a bad
input never leaves a half-written file that DVC (or the next stage) would take for real.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

# tqdm (~0.09 s, bench/import_costs.py) is imported inside progress(): semid.io is on the path of
# `semid --help` (~0.06 s in all), which it would slow by half again.


class SemidError(Exception):
    """An error the user can fix; stage scripts print it without a traceback and exit 2."""


@contextlib.contextmanager
def user_errors_exit(code: int = 2) -> Iterator[None]:
    """Turn a SemidError into one ``error: ...`` line on stderr and exit ``code`` (no traceback)."""
    try:
        yield
    except SemidError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(code)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder; it replaces ``path`` whole only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) across processes on this machine:
    a second holder waits until the first leaves. fcntl advisory lock, so POSIX only; the kernel
    releases it if the holder dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _json_text(data: Any) -> str:
    def clean(value: Any) -> Any:
        # JSON has no NaN/inf; DVC's metrics reader would choke on them.
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(data), indent=2, sort_keys=True, default=_json_default) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    write_json_set({Path(path): data})


def write_json_set(files: dict[Path, Any]) -> None:
    """Write JSON files as one set: every file is rendered and written to a temporary first, so an
    error in any leaves all the old files in place, never new ones beside stale ones."""
    with contextlib.ExitStack() as stack:
        temporaries = {path: stack.enter_context(atomic_path(path)) for path in files}
        for path, tmp in temporaries.items():
            tmp.write_text(_json_text(files[path]))
    # atomic_path renames each temporary over its file as the stack unwinds without an error


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def progress_enabled() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def progress(iterable: Any = None, **kwargs: Any) -> Any:
    """tqdm that stays quiet under CI and when stderr is not a terminal."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
