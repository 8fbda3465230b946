"""The report's prose: snippets of semid/templates/rqvae_report.md, filled by name."""

from __future__ import annotations

import functools
import re
import string
from importlib import resources
from typing import Any

# The sentences live in this template (semid/templates/rqvae_report.md); code only picks snippets.
TEMPLATE = "rqvae_report.md"
_SNIPPET_HEADER = re.compile(r"^\[\[([\w.]+)\]\]$", re.MULTILINE)


def parse_snippets(text: str) -> dict[str, string.Template]:
    """{name: template} from ``[[name]]`` headers; each body runs to the next header, trailing
    newlines dropped. Text before the first header (the file's comment) belongs to no snippet."""
    parts = _SNIPPET_HEADER.split(text)
    names, bodies = parts[1::2], parts[2::2]
    if len(set(names)) != len(names):
        raise ValueError(f"{TEMPLATE} names a snippet twice")
    return {name: string.Template(body.removeprefix("\n").rstrip("\n")) for name, body in zip(names, bodies)}


@functools.cache
def snippets() -> dict[str, string.Template]:
    return parse_snippets(resources.files("semid").joinpath("templates", TEMPLATE).read_text(encoding="utf-8"))


def say(name: str, **fields: Any) -> str:
    """The template's snippet ``name`` with its placeholders filled (a missing field raises)."""
    return snippets()[name].substitute(fields)
