"""What every stage script shares: its params and artifact layout, and user errors without a traceback."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable, Sequence

from semid.artifacts import DEFAULT_LAYOUT, Layout, grid_layout
from semid.config import ConfigError, Params, load_params
from semid.io import user_errors_exit

# `--grid key=value ...` (grid/dvc.yaml): the grid point's coordinates, and the params keys they set.
GRID_KEYS = {"embedding": "embedding", "quantizer": "quantizer", "seed": "base.seed"}


def stage_main(func: Callable[[], None]) -> Callable[[], None]:
    """Run a stage body; a SemidError (bad params, bad data) prints one clear line and exits 2."""

    @functools.wraps(func)
    def wrapper() -> None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        with user_errors_exit():
            func()

    return wrapper


def grid_overrides(argv: Sequence[str]) -> dict[str, object] | None:
    """``--grid embedding=E quantizer=Q seed=S`` -> params overrides; None without ``--grid``."""
    if not argv:
        return None
    if argv[0] != "--grid":
        raise ConfigError(f"unknown argument {argv[0]!r}; a stage takes none, or --grid key=value ... ({', '.join(GRID_KEYS)})")
    overrides: dict[str, object] = {}
    for pair in argv[1:]:
        key, equals, value = pair.partition("=")
        if not equals or key not in GRID_KEYS:
            raise ConfigError(f"--grid {pair!r} is not valid; give key=value with key one of: {', '.join(GRID_KEYS)}")
        if key == "seed" and not value.isdigit():
            raise ConfigError(f"--grid seed={value!r} is not valid; give a non-negative integer")
        overrides[GRID_KEYS[key]] = int(value) if key == "seed" else value
    return overrides


def stage_setup(argv: Sequence[str] | None = None) -> tuple[Params, Layout]:
    """The run's params and where its artifacts live: params.yaml and the project root; or, for a
    grid point (``--grid``), params.yaml with the point's axes and seed, and the point's folders."""
    overrides = grid_overrides(sys.argv[1:] if argv is None else argv)
    params = load_params(overrides=overrides)
    if overrides is None:
        return params, DEFAULT_LAYOUT
    return params, grid_layout(params.embedding, params.quantizer, params.base.seed)
