"""The library's import graph: no cycles, and name lists kept in step with their registries."""

from __future__ import annotations

from pathlib import Path

from semid.config import RELEASES
from semid.data import RELEASES as READERS
from semid.stages.code_deps import SOURCE_ROOT, _imported_names, module_file


def _modules() -> list[str]:
    names = []
    for path in (SOURCE_ROOT / "semid").rglob("*.py"):
        parts = list(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _graph() -> dict[str, set[str]]:
    modules = set(_modules())
    return {m: {n for n in _imported_names(module_file(m), m) if n in modules and n != m} for m in modules}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (deferred imports count: they hide the graph, they do not remove edges)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            # a package importing its own submodules is how packages work, not a cycle
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_library_has_no_import_cycle():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()))


def test_a_cycle_is_found_when_there_is_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"p": {"p.x"}, "p.x": {"p"}}) is None  # a package and its submodule


def test_config_names_the_releases_data_reads():
    assert RELEASES == tuple(READERS)


def test_schema_is_a_leaf():
    assert _graph()["semid.schema"] <= {"semid.io"}
    assert Path(module_file("semid.schema")).name == "schema.py"
