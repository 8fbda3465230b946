"""params.yaml, written from the config dataclasses: one source for every default and its comment.

The dataclasses in ``semid.config`` hold each key's default, and the comments beside (or just
above) each field are the ones params.yaml shows, so nothing is written twice by hand:

    python -m semid.params_file > params.yaml      # make params

A test checks that the committed params.yaml is this rendering.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize

import yaml

from semid.config import AXES, SECTIONS

HEADER = """\
# semid parameters: the embedded (CPU, offline) profile. See README "Configuration".
# Written by `make params` from the defaults in src/semid/config.py: edit them there, or use
#   dvc exp run -S embedding=search -S quantizer=rqvae     (the grid axes are top-level keys)
# A profile overlay (base.profile: paper -> profiles/paper.yaml) replaces the keys it names.
"""
# Where the sections go, the grid axes right after base (as users read them: what, then how).
ORDER = ("base", *AXES, "data", "queries", "embed", "generator", "evaluate", "quantize")
COMMENT_COLUMN = 27


@dataclasses.dataclass(frozen=True)
class FieldNotes:
    above: tuple[str, ...]  # comment lines right above the field
    beside: str  # the comment on the field's own line ("" when none)


def field_notes(cls: type) -> dict[str, FieldNotes]:
    """The comments of each field of a dataclass, read from its source."""
    source = inspect.getsource(cls)
    notes, pending, line_comments = {}, [], {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            line_comments[token.start[0]] = (token.start[1], token.string[1:].strip())
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if line.startswith("    ") and not line.startswith("     ") and stripped.startswith("#"):
            pending.append(stripped[1:].strip())
            continue
        match = re.match(r"^    (\w+): [^=]+=", line)
        if match:
            column_comment = line_comments.get(number)
            beside = column_comment[1] if column_comment and column_comment[0] > 4 else ""
            notes[match.group(1)] = FieldNotes(tuple(pending), beside)
        if not stripped.startswith("#"):
            pending = []
    return notes


def _scalar(value) -> str:
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _line(indent: str, key: str, value, comment: str) -> str:
    text = f"{indent}{key}: {_scalar(value)}"
    if not comment:
        return text
    return f"{text.ljust(COMMENT_COLUMN - 2)}  # {comment}" if len(text) < COMMENT_COLUMN - 2 else f"{text}  # {comment}"


def _section(name: str, cls: type) -> list[str]:
    doc = (cls.__doc__ or "").strip().splitlines()
    # dataclasses invent a signature docstring when a class has none
    head = doc[0] if doc and not doc[0].startswith(cls.__name__ + "(") else ""
    lines = [f"{name}:".ljust(COMMENT_COLUMN - 2) + f"  # {head}" if head else f"{name}:"]
    notes = field_notes(cls)
    instance = cls()
    for item in dataclasses.fields(cls):
        note = notes.get(item.name, FieldNotes((), ""))
        lines.extend(f"  # {text}" if text else "  #" for text in note.above)
        lines.append(_line("  ", item.name, getattr(instance, item.name), note.beside))
    return lines


def render_params() -> str:
    blocks = [HEADER.rstrip("\n")]
    axes = [_line("", axis, choices[0], " | ".join(choices)) for axis, choices in AXES.items()]
    for name in ORDER:
        if name in AXES:
            if name == next(iter(AXES)):
                blocks.append("\n".join(axes))
            continue
        blocks.append("\n".join(_section(name, SECTIONS[name])))
    return "\n\n".join(blocks) + "\n"


def main() -> None:
    print(render_params(), end="")


if __name__ == "__main__":
    main()
