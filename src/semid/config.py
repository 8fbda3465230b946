"""Run configuration: params.yaml -> profile overlay -> frozen, validated dataclasses.

Precedence, lowest first:

1. ``params.yaml`` holds every key, with the embedded (CPU, offline) defaults.
2. ``profiles/<base.profile>.yaml`` (when ``base.profile`` is not ``embedded``) overlays the keys
   it names. DVC tracks the profile files as params too, so editing one reruns what reads it.
3. ``dvc exp run -S key=value`` edits params.yaml; for a key that the active profile sets,
   edit the profile instead: ``-S profiles/paper.yaml:generator.epochs=1``.

Every section is validated when loaded, so a bad value fails in the first second with a
message naming the key, the value and the valid choices.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from semid.io import SemidError

EMBEDDED_PROFILE = "embedded"

# The grid axes. Names only: the registries in semid.embed / semid.quantize map them to code,
# and a test keeps the two in step, so loading params never imports torch.
EMBEDDING_METHODS = ("content", "search", "rec", "multitask", "concat", "svd", "separate")
QUANTIZERS = ("rqkmeans", "rqvae", "rqvae_naive", "dictlearn", "rlfq")


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


@dataclass(frozen=True)
class BaseConfig:
    seed: int = 42
    profile: str = EMBEDDED_PROFILE


@dataclass(frozen=True)
class DataConfig:
    release: str = "ml-latest-small"
    # Folder holding <release>/ with the extracted files (or <release>.zip). Empty: use the
    # SEMID_MOVIELENS_MIRROR environment variable, then the GroupLens download.
    mirror: str = ""
    verify_checksums: bool = True
    min_rating: float = 0.0  # ratings below this are not interactions (0: every rating counts)
    min_user_interactions: int = 5  # users with fewer are dropped (>= 3: train, valid, test)
    sample_users: int = 0  # 0 = all users; else a seeded random sample of this many
    sample_items: int = 0  # 0 = all items; else this many, picked by sample_items_strategy
    sample_items_strategy: str = "random"
    max_tags: int = 10  # user tags kept per item, most frequent first
    genome_top_k: int = 10  # genome tags kept per item (releases that ship the genome)
    genome_min_relevance: float = 0.5

    def validate(self) -> None:
        from semid.data import RELEASES

        check_choice("data.release", self.release, RELEASES)
        check_range("data.min_user_interactions", self.min_user_interactions, 3)
        for key in ("sample_users", "sample_items", "max_tags", "genome_top_k"):
            check_range(f"data.{key}", getattr(self, key), 0)
        check_choice("data.sample_items_strategy", self.sample_items_strategy, ("random", "popular"))
        check_range("data.min_rating", self.min_rating, 0.0, 5.0)
        check_range("data.genome_min_relevance", self.genome_min_relevance, 0.0, 1.0)


# Section name in params.yaml -> dataclass. Later stages register theirs here.
SECTIONS: dict[str, type] = {
    "base": BaseConfig,
    "data": DataConfig,
}
# Top-level scalar keys (the grid axes) -> their valid choices.
AXES: dict[str, tuple[str, ...]] = {
    "embedding": EMBEDDING_METHODS,
    "quantizer": QUANTIZERS,
}


@dataclass(frozen=True)
class Params:
    sections: dict[str, Any]
    embedding: str
    quantizer: str
    raw: dict[str, Any] = field(repr=False)  # the merged mapping, for logging

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(name)

    def flat(self, keys: typing.Iterable[str] | None = None) -> dict[str, Any]:
        """Flat ``section.key -> value`` for the given top-level keys (all when None)."""
        wanted = set(self.raw) if keys is None else set(keys)
        return {k: v for k, v in _flatten(self.raw).items() if k.split(".", 1)[0] in wanted}


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Cast a YAML value to the field's declared type, or fail naming the key."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, options[0])
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be a list")
        (inner, *_) = typing.get_args(annotation) or (Any,)
        return tuple(_coerce(f"{key}[]", v, inner) for v in value)
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
    kwargs = {k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in values.items()}
    section = cls(**kwargs)
    if hasattr(section, "validate"):
        section.validate()
    return section


def find_root(start: Path | None = None) -> Path:
    """The project root: DVC_ROOT when DVC runs us, else the nearest folder with params.yaml."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"])
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").exists() or (folder / "dvc.yaml").exists():
            return folder
    return here


def _set_dotted(mapping: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        mapping = mapping.setdefault(part, {})
    mapping[leaf] = value


def read_merged(params_path: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """params.yaml with the active profile overlaid (see the module docstring)."""
    if not params_path.exists():
        raise ConfigError(f"no params file at {params_path}")
    raw = yaml.safe_load(params_path.read_text()) or {}
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    profile = (raw.get("base") or {}).get("profile", EMBEDDED_PROFILE)
    if profile != EMBEDDED_PROFILE:
        profiles_dir = params_path.parent / "profiles"
        overlay_path = profiles_dir / f"{profile}.yaml"
        if not overlay_path.exists():
            found = sorted(p.stem for p in profiles_dir.glob("*.yaml"))
            raise ConfigError(
                f"base.profile={profile!r} has no file {overlay_path}; "
                f"choose one of: {', '.join([EMBEDDED_PROFILE, *found])}"
            )
        overlay = yaml.safe_load(overlay_path.read_text()) or {}
        overlay.setdefault("base", {})["profile"] = profile
        raw = deep_merge(raw, overlay)
        for dotted, value in (overrides or {}).items():  # explicit overrides beat the profile
            _set_dotted(raw, dotted, value)
    return raw


def load_params(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Params:
    """Load and validate every section. ``overrides`` (dotted keys) win over files; for tests."""
    params_path = Path(path) if path else find_root() / "params.yaml"
    raw = read_merged(params_path, overrides)

    unknown = sorted(set(raw) - set(SECTIONS) - set(AXES))
    if unknown:
        raise ConfigError(
            f"unknown top-level key(s) {', '.join(unknown)}; valid: {', '.join([*AXES, *SECTIONS])}"
        )
    axes = {}
    for axis, choices in AXES.items():
        value = raw.get(axis, choices[0])
        check_choice(axis, value, choices)
        axes[axis] = value
    sections = {name: build_section(name, cls, raw.get(name)) for name, cls in SECTIONS.items()}
    return Params(sections=sections, raw=raw, **axes)
