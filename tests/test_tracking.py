"""semid.tracking against a real local MLflow SQLite store: parallel workers share one experiment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import mlflow

from semid.tracking import tracking_uri

# Run in a fresh interpreter: the experiment check answers "absent" once (as it would to two workers
# that both check before either creates), then the store is created, at a common start time.
_INIT_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import mlflow
    from semid import tracking

    spec = json.loads(sys.argv[1])
    lookup, calls = mlflow.get_experiment_by_name, []

    def absent_at_first(name):
        calls.append(name)
        return None if len(calls) == 1 else lookup(name)

    mlflow.get_experiment_by_name = absent_at_first
    time.sleep(max(0.0, spec["start"] - time.time()))
    tracking.init_store(Path(spec["root"]), spec["experiment"])
    print(lookup(spec["experiment"]).experiment_id)
    """
)


def test_two_workers_create_the_experiment_once(tmp_path, monkeypatch):
    """Both workers find no experiment and both create it: one creates, the other reads it back."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the store anchored at the project root, as stages use
    spec = {"root": str(tmp_path), "experiment": "semid", "start": time.time() + 8.0}  # both imported
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _INIT_CHILD, json.dumps(spec)],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    results = [child.communicate(timeout=180) for child in children]
    assert [child.returncode for child in children] == [0, 0], [err[-2000:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1  # the same experiment id


    client = mlflow.MlflowClient(tracking_uri(tmp_path))
    experiments = [e.name for e in client.search_experiments()]
    assert experiments.count("semid") == 1
    assert (tmp_path / "mlflow.db").exists()
