"""The answers cache (answers.jsonl) under damage: torn lines, broken UTF-8, hostile JSON, short
writes. Each answer in it was paid for, so no damage may lose a later answer or stop a run."""

from __future__ import annotations

import json
import logging
import os

import pytest
from test_queries import encode, good_answer, items, make_backend, remote_config  # noqa: F401 - items is a fixture

from semid.queries import CACHE_FILE, AnswerCache, generate_queries, split_queries, write_queries


def answer_well(prompt, number):
    return encode("openai", good_answer(prompt))


def run_openai(items, folder, monkeypatch, respond=answer_well):
    """One run of the OpenAI backend (fake SDK client) on items; returns (run, requests made)."""
    config, backend, fake = make_backend("openai", respond, monkeypatch)
    return generate_queries(items, config, 42, backend, folder), len(fake.calls)


def cache_lines(folder) -> list[bytes]:
    return (folder / CACHE_FILE).read_bytes().split(b"\n")


def test_a_torn_last_line_does_not_swallow_the_next_answer(items, tmp_path, monkeypatch):
    run_openai(items.head(3), tmp_path, monkeypatch)
    path = tmp_path / CACHE_FILE
    *complete, last, _ = cache_lines(tmp_path)
    # The run was killed while writing its third answer: half a line, no newline.
    path.write_bytes(b"".join(line + b"\n" for line in complete) + last[: len(last) // 2])

    rerun, requests = run_openai(items.head(5), tmp_path, monkeypatch)
    assert requests == 3 and len(rerun.queries) == 5  # the torn answer again, and two new ones
    again, requests = run_openai(items.head(5), tmp_path, monkeypatch)
    assert requests == 0 and again.queries == rerun.queries
    *records, tail = cache_lines(tmp_path)
    assert tail == b"" and len(records) == 5 and all(json.loads(line) for line in records)


def test_broken_utf8_lines_are_skipped_counted_and_logged_once(items, tmp_path, monkeypatch, caplog):
    run_openai(items.head(3), tmp_path, monkeypatch)
    first, second, third, _ = cache_lines(tmp_path)
    torn_character = "café".encode()[:-1]  # the first byte of a two-byte character
    (tmp_path / CACHE_FILE).write_bytes(
        first + b"\n" + b'{"item_id": 1, "queries": ["' + torn_character + b"\n" + second + b"\n"
        + third[:-2] + b"\xe9" + b"\n" + third + b"\n" + b'{"item_id": 7, "queries": ["' + torn_character
    )
    caplog.set_level(logging.WARNING)
    cache = AnswerCache(tmp_path)
    assert len(cache.answers) == 3 and cache.unreadable_lines == 2
    assert len([r for r in caplog.records if "unreadable" in r.getMessage()]) == 1

    rerun, requests = run_openai(items.head(4), tmp_path, monkeypatch)
    assert requests == 1 and len(rerun.queries) == 4


def test_deeply_nested_json_is_a_bad_line_like_any_other(items, tmp_path, monkeypatch):
    run_openai(items.head(2), tmp_path, monkeypatch)
    with (tmp_path / CACHE_FILE).open("ab") as cache_file:
        cache_file.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")
        cache_file.write(b'{"item_id": 1, "model": "test-model", "prompt_hash": "x", "queries": ' + b"[" * 100_000 + b"\n")
    cache = AnswerCache(tmp_path)
    assert len(cache.answers) == 2 and cache.unreadable_lines == 2
    rerun, requests = run_openai(items.head(3), tmp_path, monkeypatch)
    assert requests == 1 and len(rerun.queries) == 3


def test_a_cached_lone_surrogate_is_not_an_answer(items, tmp_path, monkeypatch):
    """Valid ASCII JSON can still spell a string UTF-8 cannot encode: it must not reach the outputs."""
    first, _ = run_openai(items.head(2), tmp_path, monkeypatch)
    *records, _ = cache_lines(tmp_path)
    poisoned = json.loads(records[0])
    poisoned["queries"][0] = "\ud800 lonely"
    (tmp_path / CACHE_FILE).write_bytes(json.dumps(poisoned).encode() + b"\n" + records[1] + b"\n")

    rerun, requests = run_openai(items.head(2), tmp_path, monkeypatch)
    assert requests == 1 and rerun.queries == first.queries
    write_queries(split_queries(rerun, remote_config("openai")), tmp_path / "out", [])  # encodes every query


def test_short_writes_are_completed_and_every_answer_is_fsynced(items, tmp_path, monkeypatch):
    real_write, real_fsync = os.write, os.fsync
    synced_files: list[str] = []

    def short_write(fd, data):  # what os.write may do: write fewer bytes than asked
        return real_write(fd, bytes(data[:7]))

    def recording_fsync(fd):
        synced_files.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "write", short_write)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    run, _ = run_openai(items.head(4), tmp_path, monkeypatch)
    monkeypatch.setattr(os, "write", real_write)
    *records, tail = cache_lines(tmp_path)
    assert tail == b"" and len(records) == 4
    assert {json.loads(line)["item_id"] for line in records} == set(run.queries)
    assert synced_files.count(CACHE_FILE) >= 4


@pytest.mark.parametrize("damage", [b"\n\n", b"   \n", b"\xff\xfe\n"])
def test_blank_and_garbage_lines_do_not_stop_appends(damage, items, tmp_path, monkeypatch):
    (tmp_path / CACHE_FILE).write_bytes(damage)
    run, requests = run_openai(items.head(2), tmp_path, monkeypatch)
    again, requests_again = run_openai(items.head(2), tmp_path, monkeypatch)
    assert requests == 2 and requests_again == 0 and again.queries == run.queries
