"""The checks every params section uses: one error type, choice and range checks, and building
a frozen dataclass section from a YAML mapping. A leaf module (it imports nothing of semid but
the error base), so the config of any package can use it without an import cycle."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from semid.io import SemidError


class ConfigError(SemidError, ValueError):
    """A params value that cannot be used; the message names key, value and valid choices."""


def check_choice(key: str, value: Any, choices: typing.Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}")


def check_range(key: str, value: float, low: float | None = None, high: float | None = None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ConfigError(f"{key}={value!r} is out of range; it must lie in {bounds}")


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """Cast a YAML value to the field's declared type, or fail naming the key."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return coerce(key, value, options[0])
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be a list")
        (inner, *_) = typing.get_args(annotation) or (Any,)
        return tuple(coerce(f"{key}[]", v, inner) for v in value)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r} must be a mapping")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r} must be true or false")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}={value!r} must be an integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} must be a number")
        if not math.isfinite(value):  # NaN would pass every range check
            raise ConfigError(f"{key}={value!r} must be a finite number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} must be a string")
        return value
    return value


def build_section(name: str, cls: type, values: dict[str, Any] | None) -> Any:
    values = values or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{name} must be a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
            f"valid keys of {name}: {', '.join(sorted(fields))}"
        )
    kwargs = {k: coerce(f"{name}.{k}", v, hints[k]) for k, v in values.items()}
    section = cls(**kwargs)
    if hasattr(section, "validate"):
        section.validate()
    return section
