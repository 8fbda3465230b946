"""Where a trained run is, and loading its parts: the workspace, a git rev or a DVC experiment.

- a project folder (default: the workspace holding params.yaml above the current folder), read as
  it is: the outputs of semid.artifacts PREPARED, IDS, GENERATOR, EMBEDDINGS, and params.yaml;
- a git rev or a DVC experiment name of that project: its outputs are copied out of the local DVC
  cache by semid.experiments (``dvc.api.DVCFileSystem``; offline, nothing is pulled) into
  ``.dvc/tmp/semid-serve/<commit>/`` once, and read from there on later loads.

Folders come from semid.artifacts; importing this module costs no more than that (the standard
library). The loaders import what they read (pandas, torch) when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from semid.artifacts import ARTIFACTS as STAGE_OUTPUTS
from semid.artifacts import EMBEDDINGS, GENERATOR, IDS, PREPARED, Artifact
from semid.io import atomic_dir
from semid.serve.checks import ServeError

# semid.config (~0.26 s with numpy), semid.data (pandas, ~0.6 s) and semid.generator (torch +
# transformers, ~4.5 s; bench/import_costs.py) are imported inside the functions that need them: this
# module is on the path of `semid --help` (~0.06 s) and of every bad command line.

if TYPE_CHECKING:
    import pandas as pd

    from semid.config import EvaluateConfig

# The file inside each stage's folder that shows the run has it. Spelled here, not imported: their
# owners (semid.data, .ids, .embed, .generator) import pandas or torch, and a run is checked before
# anything heavy loads; tests/test_serve.py checks these names against the owners' constants.
GENERATOR_MODEL = "model"  # semid.generator.MODEL_DIR: the trained model inside GENERATOR
NEEDED: dict[str, tuple[Artifact, str]] = {
    "items": (PREPARED, "items.parquet"),  # semid.data.ITEMS_FILE
    "interactions": (PREPARED, "interactions.parquet"),  # semid.data.INTERACTIONS_FILE
    "ids": (IDS, "semantic_ids.parquet"),  # semid.ids.IDS_FILE
    "embeddings": (EMBEDDINGS, "item_embeddings.npz"),  # semid.embed.EMBEDDINGS_FILE
    "generator": (GENERATOR, f"{GENERATOR_MODEL}/semid_generator.json"),  # semid.generator.model.META_FILE
}
# What a run needs, where it lives, and the stage that writes it (for the "run this" hint).
ARTIFACTS = {name: (f"{artifact.path}/{file}", artifact.stage) for name, (artifact, file) in NEEDED.items()}
# The stages in pipeline order: semid.artifacts declares its outputs in that order.
STAGE_ORDER = tuple(dict.fromkeys(artifact.stage for artifact in STAGE_OUTPUTS))
# Copied out of the DVC cache for a rev (the generator's checkpoints are left behind).
REV_PATHS = (
    "params.yaml", "profiles", PREPARED.path, IDS.path, EMBEDDINGS.path, f"{GENERATOR.path}/{GENERATOR_MODEL}",
)
REV_CACHE = Path(".dvc/tmp/semid-serve")


def missing_artifacts(root: Path, names: Sequence[str]) -> list[str]:
    return [ARTIFACTS[name][0] for name in names if not (root / ARTIFACTS[name][0]).exists()]


def require(root: Path, names: Sequence[str], where: str | None = None) -> None:
    """Fail with what is missing and the ``dvc repro``/``dvc pull`` that makes it."""
    missing = missing_artifacts(root, names)
    if not missing:
        return
    stages = {stage for path, stage in ARTIFACTS.values() if path in missing}
    last = max(stages, key=STAGE_ORDER.index)
    fix = (
        f"run `dvc repro {last}` in {root} (it runs the stages before it too)"
        if where is None
        else f"that commit has none: run `dvc repro {last}` (or `dvc exp run`) there and commit"
    )
    raise ServeError(
        f"no trained outputs in {where or root}: missing {', '.join(missing)}; {fix}, "
        "or `dvc pull` where a DVC remote holds them"
    )


def materialise_rev(root: Path, rev: str | None = None, exp: str | None = None) -> tuple[Path, str]:
    """(folder, description) holding the outputs of a git rev or DVC experiment, from the local cache."""
    # Only --rev/--exp come here: semid.experiments runs `dvc exp show -A` for an experiment's commit
    # (~1.2 s on a small repo) and imports dvc.api to copy outputs (~0.5 s); plain `semid search`
    # (the workspace) pays neither.
    from semid import experiments

    try:
        sha = experiments.resolve(root, rev=rev, exp=exp)
        label = f"experiment {exp} ({sha[:7]})" if exp else f"rev {rev} ({sha[:7]})"
        target = root / REV_CACHE / sha
        if not target.exists():
            with atomic_dir(target) as tmp:
                experiments.get(root, sha, REV_PATHS, tmp)
    except experiments.ExperimentError as error:
        raise ServeError(str(error)) from error
    return target, label


@dataclass(frozen=True)
class Run:
    """A trained run's outputs: ``root`` holds them; ``source`` names the run in messages."""

    root: Path
    source: str
    where: str | None = None  # the rev or experiment it came from; None for a workspace

    def require(self, names: Sequence[str]) -> None:
        require(self.root, names, self.where)

    def has(self, name: str) -> bool:
        return not missing_artifacts(self.root, [name])


def locate_run(root: str | Path | None = None, rev: str | None = None, exp: str | None = None) -> Run:
    """The run of a project folder (default: the workspace above the cwd), or of one of its revs or
    experiments, checked to hold items, semantic IDs and a generator."""
    from semid.config import workspace_root

    if rev and exp:
        raise ServeError("give either a git rev or an experiment name, not both")
    project = Path(root).resolve() if root else workspace_root()
    if not project.is_dir():
        raise ServeError(f"project folder {project} does not exist")
    run = Run(project, str(project))
    if rev or exp:
        folder, label = materialise_rev(project, rev, exp)
        run = Run(folder, label, label)
    run.require(["items", "ids", "generator"])
    return run


# --------------------------------------------------------------------------- loaders


def load_evaluate_config(run: Run) -> EvaluateConfig:
    """The run's ``evaluate`` settings (the decoding the metrics used); defaults without params.yaml."""
    # Parsing and validating params.yaml (yaml, the config dataclasses): ~60 ms.
    from semid.config import EvaluateConfig, load_params

    params_path = run.root / "params.yaml"
    return load_params(params_path).evaluate if params_path.exists() else EvaluateConfig()


def load_catalogue(run: Run) -> pd.DataFrame:
    """The run's items, indexed by item_id (the column kept too)."""
    from semid.data import load_items

    return load_items(PREPARED.at(run.root)).set_index("item_id", drop=False)


def load_trained_generator(run: Run, items: pd.DataFrame, device: str | None = None):
    """(ID table, generator) of the run; torch + transformers come in here (~3-5 s cold)."""
    from semid.generator import load_generator, load_id_table

    table = load_id_table(IDS.at(run.root), items["item_id"])
    return table, load_generator(GENERATOR.at(run.root) / GENERATOR_MODEL, table, device=device)


def load_train_histories(run: Run) -> dict[int, list[int]]:
    """user -> train items in chronological order."""
    from semid.data import load_interactions
    from semid.generator import user_histories

    run.require(["interactions"])
    return user_histories(load_interactions(PREPARED.at(run.root)), ["train"])


def load_dense_index(run: Run):
    """The run's dense index (semid.evaluate.DenseIndex)."""
    from semid.evaluate import DenseIndex

    run.require(["embeddings"])
    return DenseIndex(EMBEDDINGS.at(run.root))
