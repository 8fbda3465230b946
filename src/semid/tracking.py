"""MLflow for people, metrics files for DVC.

One MLflow run per stage execution, in a SQLite store anchored at the project root
(``DVC_ROOT`` when DVC runs the stage: queued experiments run in a temporary copy of the repo,
and their runs must still land in the one store). MLflow 3 refuses a plain ``./mlruns`` file
store, hence SQLite. Runs are tagged with ``DVC_EXP_NAME`` and ``DVC_STAGE`` so a person can
find the run behind any row of ``dvc exp show``.

``SEMID_TRACKING=0`` turns MLflow off (metrics files are still written); ``MLFLOW_TRACKING_URI``
points the runs at another store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator

from semid.config import Params, find_root
from semid.distributed import is_main_process
from semid.io import file_lock

# mlflow (~1.8 s, bench/import_costs.py) is imported inside the functions that log, so stages run
# with SEMID_TRACKING=0 (tests, CI) and `semid` commands never pay for it.

# Never log anything whose name looks secret, even if someone puts it in params.
_SECRET = re.compile(r"(api[_-]?key|token|secret|password|credential)", re.IGNORECASE)


def tracking_uri(root: Path | None = None) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = root or find_root()
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def artifact_root(root: Path | None = None) -> str:
    return ((root or find_root()) / "mlartifacts").resolve().as_uri()


def tracking_enabled() -> bool:
    return os.environ.get("SEMID_TRACKING", "1") not in ("0", "false", "no")


def init_store(root: Path | None = None, experiment: str = "semid") -> None:
    """Create the store and experiment, safe when parallel workers (queued experiments) all call it.

    SQLite races when two processes create the store's tables, so store creation runs under a file
    lock in the project's artifact folder; and a worker that finds no experiment but loses the race
    to create it (another store client, or a store elsewhere) reads back the one that won.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    root = root or find_root()
    mlflow.set_tracking_uri(tracking_uri(root))
    with file_lock(root / "mlartifacts" / ".init-store.lock"):
        if mlflow.get_experiment_by_name(experiment) is not None:
            return
        try:
            mlflow.create_experiment(experiment, artifact_location=artifact_root(root))
        except MlflowException as error:
            already = error.error_code == ErrorCode.Name(RESOURCE_ALREADY_EXISTS)
            if not already or mlflow.get_experiment_by_name(experiment) is None:
                raise


def safe_params(flat: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flat.items() if not _SECRET.search(k)}


class StageRun:
    """Handle for the stage's run; a no-op when tracking is off."""

    def __init__(self, mlflow_module: Any | None):
        self._mlflow = mlflow_module

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self._mlflow is None:
            return
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numeric:
            self._mlflow.log_metrics(numeric, step=step)

    def log_artifact(self, path: str | Path) -> None:
        if self._mlflow is not None and Path(path).exists():
            self._mlflow.log_artifact(str(path))

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self._mlflow is not None:
            self._mlflow.set_tags({k: str(v) for k, v in tags.items()})


@contextlib.contextmanager
def stage_run(stage: str, params: Params, keys: list[str], experiment: str = "semid") -> Iterator[StageRun]:
    """Open one MLflow run for a stage, log the params it reads, and close it with its status.
    Under torchrun only rank 0 opens one: a stage is one run however many processes train it."""
    if not tracking_enabled() or not is_main_process():
        yield StageRun(None)
        return
    import mlflow

    # Alembic and MLflow chat on INFO during store creation; stage output should stay readable.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    root = find_root()
    init_store(root, experiment)
    mlflow.set_experiment(experiment)
    tags = {
        "DVC_STAGE": os.environ.get("DVC_STAGE", stage),
        "DVC_EXP_NAME": os.environ.get("DVC_EXP_NAME", ""),
        "semid.profile": params.base.profile,
    }
    with mlflow.start_run(run_name=f"{stage}:{tags['DVC_EXP_NAME'] or 'workspace'}", tags=tags):
        flat = safe_params(params.flat(keys))
        # MLflow caps a param value at 6000 characters; long lists are still readable cut short.
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        yield StageRun(mlflow)
