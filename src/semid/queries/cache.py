"""The answer cache: every valid remote answer, kept across kills and shared between runs."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from semid.queries.answers import is_utf8_text

logger = logging.getLogger(__name__)

CACHE_FILE = "answers.jsonl"
CLAIM_POLL_SECONDS = 0.05  # how often a run waiting for an item another run asks for looks again


CacheKey = tuple[int, str, str]  # (item id, model, prompt hash)


class AnswerCache:
    """Append-only JSONL of valid answers keyed by (item id, model, prompt hash).

    Every answer in it was paid for, so it must survive kills and be shared safely: queued DVC
    experiments all find it under DVC_ROOT and may run at once.

    - Appends hold an exclusive ``flock``, write the whole line (os.write may write less) and
      fsync it. A line left without its newline by a killed writer is cut off first, so it
      cannot swallow the next record.
    - Reading is by bytes, one line at a time: a line that is not a record (torn, not UTF-8, not
      JSON, nested too deep, a string UTF-8 cannot encode) is skipped and counted, never fatal.
    - :meth:`claim` holds an item against other runs while one asks for it: a byte-range lock in
      ``answers.jsonl.lock``, which the kernel drops when its process dies. POSIX record locks
      belong to the process, so they separate runs, not threads; the threads of one run never
      share an item.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / CACHE_FILE
        self.answers: dict[CacheKey, list[str]] = {}
        self.unreadable_lines = 0
        self._read_up_to = 0  # bytes of whole lines read so far
        self._lock = threading.Lock()  # answers and _read_up_to, across this run's threads
        self._claims_fd: int | None = None
        self.refresh()
        if self.unreadable_lines:
            logger.warning("%s: skipped %d unreadable line(s)", self.path, self.unreadable_lines)

    def get(self, item_id: int, model: str, hash_: str) -> list[str] | None:
        return self.answers.get((item_id, model, hash_))

    def refresh(self) -> None:
        """Read the whole lines appended since the last read, by this run or another."""
        with self._lock:
            try:
                with self.path.open("rb") as file:
                    if os.fstat(file.fileno()).st_size < self._read_up_to:  # replaced: read it anew
                        self._read_up_to = 0
                    file.seek(self._read_up_to)
                    new = file.read()
            except FileNotFoundError:
                return
            whole = new[: new.rfind(b"\n") + 1]  # a last line without newline is still being written, or torn
            for line in whole.split(b"\n")[:-1]:
                record = parse_cache_line(line)
                if record:
                    self.answers[record[0]] = record[1]
                elif line.strip():
                    self.unreadable_lines += 1
            self._read_up_to += len(whole)

    def append(self, item_id: int, backend: str, model: str, hash_: str, queries: list[str]) -> None:
        record = {"item_id": item_id, "backend": backend, "model": model, "prompt_hash": hash_,
                  "queries": queries, "time": round(time.time(), 3)}
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one writer at a time, threads and runs alike
            created = os.fstat(fd).st_size == 0
            self._cut_torn_tail(fd)
            write_all(fd, line)
            os.fsync(fd)
            if created:  # the file's directory entry must survive a power loss too
                fsync_dir(self.path.parent)
        finally:
            os.close(fd)  # releases the flock
        with self._lock:
            self.answers[(item_id, model, hash_)] = queries

    def _cut_torn_tail(self, fd: int) -> None:
        """Drop bytes after the last newline: a writer was killed mid-line (we hold the flock)."""
        size = end = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        keep = 0
        while end > 0:
            start = max(0, end - 65536)
            newline = os.pread(fd, end - start, start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        logger.warning("%s: cut a torn last line (%d bytes) left by an interrupted run", self.path, size - keep)
        os.ftruncate(fd, keep)

    @contextlib.contextmanager
    def claim(self, key: CacheKey, wait: bool, stop: threading.Event) -> Iterator[bool]:
        """Hold key against other runs; yields False if another run holds it and ``wait`` is False
        (or ``stop`` is set while waiting)."""
        fd = self._claims_file()
        offset = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:7], "big")  # < 2**56: valid
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                break
            except OSError:  # EACCES or EAGAIN: another run is asking for this item
                if not wait or stop.wait(CLAIM_POLL_SECONDS):
                    yield False
                    return
        try:
            yield True
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)

    def _claims_file(self) -> int:
        # One descriptor for the cache's life: closing any descriptor of the file would drop
        # every lock this process holds on it.
        with self._lock:
            if self._claims_fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                claims_path = self.path.with_name(CACHE_FILE + ".lock")
                self._claims_fd = os.open(claims_path, os.O_RDWR | os.O_CREAT, 0o644)
            return self._claims_fd

    def close(self) -> None:
        with self._lock:
            if self._claims_fd is not None:
                os.close(self._claims_fd)
                self._claims_fd = None


def parse_cache_line(line: bytes) -> tuple[CacheKey, list[str]] | None:
    """A cache record's key and queries, or None for a line that is not one."""
    try:
        record = json.loads(line.decode("utf-8"))
        key = (int(record["item_id"]), str(record["model"]), str(record["prompt_hash"]))
        queries = record["queries"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, OverflowError, RecursionError):
        return None
    if not isinstance(queries, list) or not all(isinstance(q, str) and is_utf8_text(q) for q in queries):
        return None
    return key, queries


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written: it may write fewer than asked (signals, full disks)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
