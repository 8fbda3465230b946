"""DVC stage: data/embeddings -> data/ids (semantic IDs) + metrics/ids.json + metrics/quantize_curve.csv."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from semid.artifacts import EMBEDDINGS, IDS, IDS_METRICS, QUANTIZE_CURVE
from semid.embed import load_embedding_meta, load_item_embeddings
from semid.ids import build_id_table, codebook_sizes, diagnostics, write_semantic_ids
from semid.io import atomic_path, write_json
from semid.quantize import QuantizeError, check_embeddings, make_quantizer
from semid.quantize.prefix_share import SpaceCodes, fit_prefix_share
from semid.seeding import pin_threads
from semid.stages.common import stage_main, stage_setup
from semid.tracking import stage_run


@stage_main
def main() -> None:
    params, layout = stage_setup()
    pin_threads(params.base.threads)
    config = params.quantize
    name = params.quantizer
    item_ids, spaces = load_item_embeddings(layout.at(EMBEDDINGS))
    shared_levels = int(load_embedding_meta(layout.at(EMBEDDINGS)).get("shared_levels", 0))
    # Check every space before fitting any (and before a tracking run opens): a bad input writes nothing.
    spaces = {space: check_embeddings(x, config.codebook_size, f"{space} embeddings") for space, x in spaces.items()}
    if any(len(x) != len(item_ids) for x in spaces.values()):
        raise QuantizeError(f"{layout.at(EMBEDDINGS)}: embedding rows do not match {len(item_ids)} item ids")
    if shared_levels and config.levels < 2:
        raise QuantizeError(
            f"quantize.levels={config.levels}: embedding={params.embedding} shares the first level between "
            "the tasks and needs quantize.levels >= 2"
        )

    def build(levels: int):
        return make_quantizer(name, levels, config.codebook_size, params.base.seed, config.options(name))

    with stage_run("quantize", params, keys=["base", "quantizer", "quantize"]) as run:
        prefix_metrics = len(spaces) > 1
        tables, metrics, curves = [], {}, []
        if shared_levels:
            fitted, shared_curve = fit_prefix_share(spaces, config.levels, build)
            curves.extend(shared_curve)
        else:
            fitted = fit_each(spaces, config.levels, build)
        for space, fit in fitted.items():
            found = diagnostics(fit.x, fit.codes, fit.reconstruction, config.codebook_size, config.neighbours, params.base.seed)
            found["fit_seconds"] = fit.fit_seconds
            metrics.update({(f"{space}_{k}" if prefix_metrics else k): v for k, v in found.items()})
            tables.append(build_id_table(item_ids, fit.codes, space, config.dedup, shared_levels))
            curves.extend({"space": space, **row} for row in fit.curve)
            print(
                f"{name} [{space}]: usage/level {[round(found[f'codebook_usage_level_{l}'], 3) for l in range(1, config.levels + 1)]}, "
                f"collisions {found['collision_rate']:.3f} (largest bucket {found['largest_bucket']}), "
                f"neighbours {found['neighbour_preservation']:.3f} vs random {found['neighbour_preservation_random']:.3f}, "
                f"recon error {found['reconstruction_error']:.3f}, fit {fit.fit_seconds:.0f}s"
            )
        meta = {
            "quantizer": name,
            "spaces": list(spaces),
            "levels": config.levels,
            "codebook_sizes": codebook_sizes(pd.concat(tables), config.codebook_size, config.levels),
            "dedup": config.dedup,
            "shared_levels": shared_levels,
        }
        write_semantic_ids(layout.at(IDS), tables, meta)
        write_json(layout.at(IDS_METRICS), metrics)
        write_curve(curves, layout.at(QUANTIZE_CURVE))
        run.log_metrics({k: float(v) for k, v in metrics.items()})


def fit_each(spaces: dict[str, np.ndarray], levels: int, build) -> dict[str, SpaceCodes]:
    """One quantizer per space, fitted on that space alone."""
    fitted = {}
    for space, x in spaces.items():
        started = time.perf_counter()
        quantizer = build(levels)
        quantizer.fit(x)
        fit_seconds = time.perf_counter() - started
        codes = quantizer.encode(x)  # (n_items, levels)
        fitted[space] = SpaceCodes(x, codes, quantizer.decode(codes), list(quantizer.curve), fit_seconds)
    return fitted


def write_curve(rows: list[dict], path: Path) -> None:
    """Training curves of the learned quantizers; one placeholder row for the others, since a DVC
    plot needs at least one."""
    frame = pd.DataFrame(rows) if rows else pd.DataFrame([{"space": "none", "step": 0, "loss": np.nan}])
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


if __name__ == "__main__":
    main()
