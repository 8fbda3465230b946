"""The semantic IDs a generator reads and writes: one checked table per ID space."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from semid.ids import load_ids_meta, load_semantic_ids
from semid.ids import token as id_token
from semid.io import SemidError

TASKS = ("search", "rec")


class GeneratorError(SemidError):
    """The generator's inputs or checkpoint do not fit together."""


# --------------------------------------------------------------------------- semantic IDs


def task_space(spaces: Sequence[str], task: str) -> str:
    """The ID space a task writes: the shared ``joint`` space, else the task's own (``separate``)."""
    if "joint" in spaces:
        return "joint"
    if task in spaces:
        return task
    raise GeneratorError(
        f"no ID space for task {task!r} among spaces {list(spaces)}; expected 'joint' or {task!r}"
    )


@dataclass
class IdTable:
    """Semantic IDs of every item, per space, checked against the items."""

    spaces: tuple[str, ...]
    codebook_sizes: tuple[int, ...]
    codes: dict[str, dict[int, tuple[int, ...]]]  # space -> item_id -> codes (one per level)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def shared_levels(self) -> int:
        """Leading levels every space shares (``embedding=prefix_share``): one token set for them."""
        return int(self.meta.get("shared_levels", 0))

    def token(self, space: str, level: int, code: int) -> str:
        """The token of ``code`` at 1-based ``level`` of ``space``'s IDs."""
        return id_token(space, level, code, self.shared_levels)

    def tokens(self) -> list[str]:
        """Every ID token of every space, each once, in a fixed order (the vocabulary the model
        adds): the shared levels first, then each space's own."""
        shared = [
            id_token("joint", level + 1, code)
            for level, size in enumerate(self.codebook_sizes[: self.shared_levels])
            for code in range(size)
        ]
        return shared + [
            id_token(space, level + 1, code)
            for space in self.spaces
            for level, size in enumerate(self.codebook_sizes)
            if level >= self.shared_levels
            for code in range(size)
        ]

    def sid(self, space: str, item_id: int) -> str:
        return "".join(self.token(space, level + 1, code) for level, code in enumerate(self.codes[space][item_id]))

    def fingerprint(self) -> str:
        """Hash of the whole item -> ID assignment: a model only fits the table it was trained on."""
        digest = hashlib.sha256()
        for space in self.spaces:
            for item_id in sorted(self.codes[space]):
                digest.update(f"{space}:{item_id}:{self.codes[space][item_id]};".encode())
        return digest.hexdigest()[:16]


def build_id_table(semantic_ids: pd.DataFrame, meta: dict[str, Any], item_ids: Iterable[int]) -> IdTable:
    """Check the ID table against the items (every item once per space, codes in range) and index it."""
    for column in ("item_id", "space", "codes"):
        if column not in semantic_ids.columns:
            raise GeneratorError(f"semantic IDs lack column {column!r}; have {list(semantic_ids.columns)}")
    spaces = tuple(meta.get("spaces") or sorted(semantic_ids["space"].unique()))
    sizes = tuple(int(s) for s in meta["codebook_sizes"])
    expected = {int(i) for i in item_ids}
    codes: dict[str, dict[int, tuple[int, ...]]] = {}
    for space in spaces:
        rows = semantic_ids[semantic_ids["space"] == space]
        table = {int(i): tuple(int(c) for c in cs) for i, cs in zip(rows["item_id"], rows["codes"])}
        if len(table) != len(rows):
            raise GeneratorError(
                f"space {space!r}: {len(rows) - len(table)} items have more than one semantic ID"
            )
        missing, unknown = expected - set(table), set(table) - expected
        if missing or unknown:
            raise GeneratorError(
                f"semantic IDs (space {space!r}) do not match the items: {len(missing)} items without an ID "
                f"(e.g. {sorted(missing)[:5]}), {len(unknown)} IDs for unknown items (e.g. {sorted(unknown)[:5]}); "
                "rerun quantize on the same data/prepared"
            )
        for item_id, item_codes in table.items():
            if len(item_codes) != len(sizes) or any(not 0 <= c < s for c, s in zip(item_codes, sizes)):
                raise GeneratorError(
                    f"item {item_id} has codes {list(item_codes)} that do not fit codebook sizes {list(sizes)}"
                )
        codes[space] = table
    shared_levels = int(meta.get("shared_levels", 0))
    if shared_levels and len(spaces) > 1:
        first = codes[spaces[0]]
        differ = [i for space in spaces[1:] for i, cs in codes[space].items() if cs[:shared_levels] != first[i][:shared_levels]]
        if differ:
            raise GeneratorError(
                f"the ID spaces {list(spaces)} should share their first {shared_levels} level(s), but "
                f"{len(differ)} items differ there (e.g. {sorted(differ)[:5]}); rerun quantize"
            )
    return IdTable(spaces=spaces, codebook_sizes=sizes, codes=codes, meta=dict(meta))


def load_id_table(ids_dir: Path, item_ids: Iterable[int]) -> IdTable:
    """data/ids/{semantic_ids.parquet, meta.json} -> checked IdTable."""
    return build_id_table(load_semantic_ids(ids_dir), load_ids_meta(ids_dir), item_ids)


