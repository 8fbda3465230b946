"""The ablation's fits: which variants lie between ``rqvae_naive`` and the fixed ``rqvae``, and
fitting and measuring each one (semid.ids.diagnostics)."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from semid.ids import diagnostics
from semid.quantize import REGISTRY, make_quantizer
from semid.quantize.options import RQVAE_FIXED, RQVAE_NAIVE, build_options

# Remedies tried on the naive model that are not in the fixed recipe (README "quantize").
EXTRA_REMEDIES: dict[str, Any] = {"threshold_ema_dead_code": 2.0, "rotation_trick": False}


@dataclass(frozen=True)
class Variant:
    """One fit of the ablation: a quantizer and the option overrides laid over its preset."""

    label: str
    quantizer: str
    overrides: dict[str, Any]
    group: str  # reference | naive | alone | path | fixed | leave-one-out


@dataclass
class AblationRow:
    variant: Variant
    metrics: dict[str, float]
    fit_seconds: float
    options: dict[str, Any] = field(default_factory=dict)


def recipe_remedies() -> dict[str, tuple[Any, Any]]:
    """{option: (naive value, fixed value)} for every option where the fixed recipe differs."""

    return {
        f.name: (getattr(RQVAE_NAIVE, f.name), getattr(RQVAE_FIXED, f.name))
        for f in dataclasses.fields(RQVAE_NAIVE)
        if getattr(RQVAE_NAIVE, f.name) != getattr(RQVAE_FIXED, f.name)
    }


def ablation_variants(leave_one_out: bool = True, extra: bool = True) -> list[Variant]:
    """Every fit of the ablation, in reading order (duplicates are measured once, see run_ablation)."""
    remedies = recipe_remedies()
    rows = [
        Variant("rqkmeans", "rqkmeans", {}, "reference"),
        Variant("rqvae_naive (library defaults)", "rqvae_naive", {}, "naive"),
    ]
    for name, (_, fixed) in remedies.items():
        rows.append(Variant(f"naive + {name}={fixed}", "rqvae_naive", {name: fixed}, "alone"))
    if extra:
        for name, value in EXTRA_REMEDIES.items():
            rows.append(Variant(f"naive + {name}={value} (not in recipe)", "rqvae_naive", {name: value}, "alone"))
    applied: dict[str, Any] = {}
    for step, (name, (_, fixed)) in enumerate(list(remedies.items())[:-1], start=1):
        applied[name] = fixed
        rows.append(Variant(f"path {step}: naive + {', '.join(applied)}", "rqvae_naive", dict(applied), "path"))
    rows.append(Variant("rqvae (fixed recipe)", "rqvae", {}, "fixed"))
    if leave_one_out:
        for name, (naive, _) in remedies.items():
            rows.append(Variant(f"fixed − {name} (= {naive})", "rqvae", {name: naive}, "leave-one-out"))
    return rows


def _options_key(quantizer: str, options: Any) -> str:

    return json.dumps([REGISTRY[quantizer], dataclasses.asdict(options)], sort_keys=True, default=str)


def run_ablation(
    x: np.ndarray,
    variants: Sequence[Variant],
    levels: int,
    codebook_size: int,
    seed: int,
    neighbours: int = 10,
    base_overrides: dict[str, dict[str, Any]] | None = None,
    on_row=None,
) -> list[AblationRow]:
    """Fit and measure every variant on ``x`` (n_items, dim). ``base_overrides[quantizer]`` (the
    params' ``quantize.<quantizer>`` section) lies under each variant's own overrides, so the
    ablation's ``rqvae`` is the pipeline's. Variants whose resolved options coincide (naive plus
    every remedy is the fixed recipe) are fitted once."""

    measured: dict[str, tuple[dict[str, float], float]] = {}
    rows = []
    for variant in variants:
        overrides = {**(base_overrides or {}).get(variant.quantizer, {}), **variant.overrides}
        options = build_options(variant.quantizer, overrides)
        key = _options_key(variant.quantizer, options)
        if key not in measured:
            started = time.perf_counter()
            quantizer = make_quantizer(variant.quantizer, levels, codebook_size, seed, options).fit(x)
            codes = quantizer.encode(x)  # (n_items, levels)
            fit_seconds = time.perf_counter() - started
            measured[key] = (diagnostics(x, codes, quantizer.decode(codes), codebook_size, neighbours, seed), fit_seconds)
        metrics, fit_seconds = measured[key]
        row = AblationRow(variant, metrics, fit_seconds, dataclasses.asdict(options))
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def levels_of(metrics: dict[str, float]) -> int:
    level = 0
    while f"codebook_usage_level_{level + 1}" in metrics:
        level += 1
    return level
