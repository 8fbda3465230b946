"""reports/rqvae_ablation.json: what a full ``make report`` saves (setting, rows, recalls) and
``--render-only`` reads back to rebuild reports/rqvae.md without training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from semid.io import SemidError
from semid.report.ablation import AblationRow, Variant

ABLATION_JSON = "rqvae_ablation.json"
ROW_FIELDS = ("label", "group", "quantizer", "overrides", "fit_seconds")  # the rest of a saved row is its metrics
# What render_report reads: the setting's keys ("source" has a default), each row's metrics, the
# rows the answer compares.
SETTING_KEYS = ("items", "dim", "embedding", "model", "space", "levels", "codebook_size", "seed", "steps", "threads",
                "seconds", "generated")
METRIC_KEYS = ("codebook_usage_level_1", "collision_rate", "largest_bucket", "neighbour_preservation",
               "neighbour_preservation_random", "reconstruction_error")
GROUPS = ("reference", "naive", "fixed")


def ablation_record(rows: Sequence[AblationRow], setting: dict[str, Any], recalls: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "setting": setting,
        "rows": [{"label": r.variant.label, "group": r.variant.group, "quantizer": r.variant.quantizer,
                  "overrides": r.variant.overrides, "fit_seconds": r.fit_seconds, **r.metrics} for r in rows],
        "recalls": recalls,
    }


def missing_for_report(record: Any) -> list[str]:
    """What of a saved record render_report would miss, as dotted names (empty: it renders)."""
    if not isinstance(record, dict):
        return ["a JSON object with setting, rows and recalls"]
    missing = [key for key in ("setting", "rows", "recalls") if key not in record]
    setting, rows = record.get("setting", {}), record.get("rows", [])
    missing += [f"setting.{key}" for key in SETTING_KEYS if "setting" in record and key not in setting]
    for number, row in enumerate(rows):
        missing += [f"rows[{number}].{key}" for key in (*ROW_FIELDS, *METRIC_KEYS) if key not in row]
    if "rows" in record:
        groups = {row.get("group") for row in rows}
        missing += [f"a row of group {group!r}" for group in GROUPS if group not in groups]
    return missing


def read_ablation(path: Path) -> tuple[list[AblationRow], dict[str, Any], dict[str, dict[str, Any]]]:
    """(rows, setting, recalls) of a saved record; a SemidError naming what is missing."""
    if not path.exists():
        raise SemidError(f"no saved ablation at {path}; run `make report` first")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SemidError(f"{path} is not JSON ({error}); run `make report` to rewrite it") from None
    missing = missing_for_report(record)
    if missing:
        raise SemidError(f"{path} lacks what the report needs: {', '.join(missing)}; run `make report` to rewrite it")
    rows = [
        AblationRow(Variant(row["label"], row["quantizer"], row["overrides"], row["group"]),
                    {k: v for k, v in row.items() if k not in ROW_FIELDS}, row["fit_seconds"])
        for row in record["rows"]
    ]
    return rows, record["setting"], record["recalls"]
