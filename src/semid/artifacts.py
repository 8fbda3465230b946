"""Where every stage output lives: the one owner of the project's artifact layout.

Stages, serving, benches, reports and tests find outputs here, and a test checks that
``dvc.yaml`` declares exactly these outputs. What is inside each folder (file names, formats) is
owned by the module that writes it: data (prepared), queries, embed (embeddings), ids (semantic
IDs), generator (model), evaluate (predictions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the project root, as dvc.yaml names it
    stage: str  # the stage that writes it
    kind: str = "out"  # out | metrics | plot: the dvc.yaml section that declares it
    cached: bool = True  # in the DVC cache; metrics, plots and small markers live in git instead

    def at(self, root: str | Path = ".") -> Path:
        return Path(root) / self.path


PARAMS_CHECKED = Artifact("data/params_checked.txt", "check_params", cached=False)
PREPARED = Artifact("data/prepared", "prepare_movielens")
QUERIES = Artifact("data/queries", "gen_queries")
EMBEDDINGS = Artifact("data/embeddings", "train_embedder")
IDS = Artifact("data/ids", "quantize")
GENERATOR = Artifact("models/generator", "train_t5")
PREDICTIONS = Artifact("predictions", "evaluate")

DATA_METRICS = Artifact("metrics/data.json", "prepare_movielens", "metrics", cached=False)
QUERIES_METRICS = Artifact("metrics/queries.json", "gen_queries", "metrics", cached=False)
EMBED_METRICS = Artifact("metrics/embed.json", "train_embedder", "metrics", cached=False)
IDS_METRICS = Artifact("metrics/ids.json", "quantize", "metrics", cached=False)
QUANTIZE_CURVE = Artifact("metrics/quantize_curve.csv", "quantize", "plot", cached=False)
TRAIN_METRICS = Artifact("metrics/train_t5.json", "train_t5", "metrics", cached=False)
TRAIN_CURVE = Artifact("metrics/train_t5_curve.csv", "train_t5", "plot", cached=False)
SEARCH_METRICS = Artifact("metrics/search.json", "evaluate", "metrics", cached=False)
REC_METRICS = Artifact("metrics/rec.json", "evaluate", "metrics", cached=False)
BASELINE_METRICS = Artifact("metrics/baselines.json", "evaluate", "metrics", cached=False)
ID_CEILING_METRICS = Artifact("metrics/id_ceiling.json", "evaluate", "metrics", cached=False)
# The generator's rank of each test query's and user's target, small enough for git: what the
# paired tests of `make results` compare (predictions/ holds the same ranks, but in the DVC cache).
HIT_RANKS = Artifact("metrics/hit_ranks.csv", "evaluate", cached=False)

ARTIFACTS: tuple[Artifact, ...] = tuple(value for value in dict(globals()).values() if isinstance(value, Artifact))

# Working folders outside the DVC outputs: they survive reruns on purpose.
RAW_CACHE = Path("data/raw")  # downloaded MovieLens zips
EMBEDDER_CHECKPOINTS = Path("models/embedder_checkpoints")  # fine-tune checkpoints, removed on success


# The grid (grid/dvc.yaml): each embedding x seed and each point x seed writes into a folder of its
# own, with the layout above inside it; the data stages' outputs are the default pipeline's.
GRID_RUNS = Path("grid/runs")


def grid_run_name(embedding: str, quantizer: str, seed: int | str) -> str:
    return f"{embedding}-{quantizer}-s{seed}"


def grid_embedding_name(embedding: str, seed: int | str) -> str:
    return f"{embedding}-s{seed}"


@dataclass(frozen=True)
class Layout:
    """Where a run's artifacts live: each stage's under its root (the project root when unnamed)."""

    roots: dict[str, Path] = field(default_factory=dict)

    def root(self, stage: str) -> Path:
        return self.roots.get(stage, Path("."))

    def at(self, artifact: Artifact) -> Path:
        return artifact.at(self.root(artifact.stage))


DEFAULT_LAYOUT = Layout()


def grid_layout(embedding: str, quantizer: str, seed: int | str) -> Layout:
    """One grid point's folders: the embeddings are shared by every quantizer of an embedding and seed."""
    embedded = GRID_RUNS / "embed" / grid_embedding_name(embedding, seed)
    point = GRID_RUNS / grid_run_name(embedding, quantizer, seed)
    return Layout({"train_embedder": embedded, "quantize": point, "train_t5": point, "evaluate": point})


def written_by(stage: str) -> tuple[Artifact, ...]:
    return tuple(artifact for artifact in ARTIFACTS if artifact.stage == stage)


def main() -> None:
    """Print what `make clean` removes: the cached stage outputs and the embedder's checkpoints."""
    for artifact in ARTIFACTS:
        if artifact.kind == "out" and artifact.cached:
            print(artifact.path)
    print(EMBEDDER_CHECKPOINTS)


if __name__ == "__main__":
    main()
