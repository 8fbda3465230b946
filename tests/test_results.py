"""results/table.md and the plots from real `dvc exp show --json` output of two experiments.

The experiments are real DVC experiments of a copy of the project's params; their pipeline is one
stand-in stage that writes the three metrics files the collector reads (search, rec, ids) as
functions of the grid axes, so the numbers are known and the DVC side (params files, exp show
schema, names) is DVC's own. The full pipeline version is tests/test_experiments.py (slow).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SHARED_MOVIELENS, run, stage_env
from semid.experiments import Experiment, parse_show, show
from semid.results import (
    PAPER_EMBEDDINGS,
    PAPER_LABEL,
    PAPER_QUANTIZERS,
    best_per_point,
    load_paper_results,
    write_results,
)

# search/rec Recall@30 the stand-in stage writes per quantizer.
KNOWN = {"rqkmeans": (0.041, 0.052), "rqvae": (0.017, 0.044)}
STAND_IN = f"""
import json, os, yaml
p = yaml.safe_load(open("params.yaml"))
search, rec = {KNOWN!r}[p["quantizer"]]
os.makedirs("metrics", exist_ok=True)
json.dump({{"recall_at_10": search / 2, "recall_at_30": search}}, open("metrics/search.json", "w"))
json.dump({{"recall_at_10": rec / 2, "recall_at_30": rec, "recall_at_30_head": 3 * rec,
           "recall_at_30_torso": rec / 2, "examples_head": 10, "examples_torso": 600}}, open("metrics/rec.json", "w"))
used = 1.0 if p["quantizer"] == "rqkmeans" else 0.25
json.dump({{"codebook_usage_level_1": used, "codebook_usage_level_2": 1.0,
           "collision_rate": 0.3 if used == 1.0 else 0.7}}, open("metrics/ids.json", "w"))
ceiling = {{"search_dense_recall_at_30": 0.2, "search_recall_at_30": 0.15, "search_recall_at_30_level1": 0.09,
           "rec_dense_recall_at_30": 0.06, "rec_recall_at_30": 0.055, "rec_recall_at_30_level1": 0.03}}
# rqvae stands for a run from before the ID ceiling: its file holds none of the keys
json.dump(ceiling if p["quantizer"] == "rqkmeans" else {{}}, open("metrics/id_ceiling.json", "w"))
"""
DVC_YAML = """
stages:
  stand_in:
    cmd: python stand_in.py
    deps: [stand_in.py]
    params: [embedding, quantizer]
    metrics:
      - metrics/search.json: {cache: false}
      - metrics/rec.json: {cache: false}
      - metrics/ids.json: {cache: false}
      - metrics/id_ceiling.json: {cache: false}
"""


@pytest.fixture(scope="module")
def two_experiments(tmp_path_factory) -> Path:
    """A git + DVC repo with the project's params and two finished experiments (rqkmeans, rqvae)."""
    repo = tmp_path_factory.mktemp("results") / "repo"
    repo.mkdir()
    shutil.copy2(REPO_ROOT / "params.yaml", repo / "params.yaml")
    shutil.copytree(REPO_ROOT / "profiles", repo / "profiles")
    (repo / "stand_in.py").write_text(STAND_IN)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    env = stage_env(repo)
    dvc = [sys.executable, "-m", "dvc"]
    run(["git", "init", "-q"], repo, env)
    run([*dvc, "init", "-q"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "base"], repo, env)
    for quantizer in KNOWN:
        run([*dvc, "exp", "run", "-n", f"content-{quantizer}", "-S", f"quantizer={quantizer}"], repo, env)
    return repo


def test_exp_show_of_real_experiments_is_parsed_with_resolved_params(two_experiments):
    found = show(two_experiments, all_commits=True)
    names = {r.name for r in found}
    assert {"content-rqkmeans", "content-rqvae", "workspace"} <= names
    points = best_per_point(found)
    # the workspace holds the last experiment's outputs; the experiment wins over it
    assert sorted(r.name for r in points.values()) == ["content-rqkmeans", "content-rqvae"]
    for (data, embedding, quantizer), result in points.items():
        assert data == "ml-latest-small" and embedding == "content"
        assert result.metric("search", "recall_at_30") == KNOWN[quantizer][0]
        assert result.metric("rec", "recall_at_30") == KNOWN[quantizer][1]


def test_make_results_writes_the_table_and_the_plots(two_experiments):
    env = stage_env(two_experiments)
    env["PYTHONPATH"] = str(REPO_ROOT / "src")
    out = run([sys.executable, "-m", "semid.results"], two_experiments, env)
    assert "2 grid point(s)" in out.stdout
    table = (two_experiments / "results" / "table.md").read_text()
    assert "paper: ML-25M, Gemini queries, flan-t5-base — different data" in table
    # embedding table: our content/rqkmeans row, the paper's content numbers beside it
    content_row = next(line for line in table.splitlines() if line.startswith("| content |"))
    assert "0.041" in content_row and "0.052" in content_row and "0.156" in content_row  # head = 3 x rec
    assert "0.013" in content_row and "0.023" in content_row  # paper: content (mpnet)
    # quantizer table on the one embedding run, paper's RQ-VAE numbers beside ours
    vae_row = next(line for line in table.splitlines() if line.startswith("| RQ-VAE (fixed recipe) |"))
    assert "0.017" in vae_row and "0.700" in vae_row and "0.250" in vae_row and "0.002" in vae_row
    assert "| rec (ENMF) | — | — | — | — | not run |" in table
    # where the recall is lost: dense − ceiling by the IDs, ceiling − generator by the generator
    lost = next(line for line in table.splitlines() if line.startswith("| ml-latest-small | content | rqkmeans |")
                and "0.150" in line)
    assert ("| 0.200 | 0.150 | 0.090 | 0.041 | 0.050 | 0.109 | 0.060 | 0.055 | 0.030 | 0.052 | 0.005 | 0.003 |"
            in lost)
    older = next(line for line in table.splitlines() if line.startswith("| ml-latest-small | content | rqvae |")
                 and "lost" not in line and line.count("—") >= 10)
    assert "| — | — | — | 0.017 | — | — | — | — | — | 0.044 | — | — |" in older
    for name in ("tradeoff.png", "quantizers.png"):
        data = (two_experiments / "results" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not list((two_experiments / "results").glob(".*.tmp"))


def test_profile_overlay_and_data_label_as_the_stages_see_them():
    shown = [{
        "rev": "abc", "name": "paper-run",
        "data": {"rev": "abc", "timestamp": "2026-01-01T00:00:00",
                 "params": {"params.yaml": {"data": {"base": {"profile": "paper"}, "embedding": "multitask",
                                                     "data": {"release": "ml-latest-small", "sample_items": 0}}},
                            "profiles/paper.yaml": {"data": {"data": {"release": "ml-25m"}}}},
                 "metrics": {"metrics/search.json": {"data": {"recall_at_30": 0.1}},
                             "metrics/rec.json": {"error": {"type": "FileNotFoundError"}}}},
        "experiments": None,
    }]
    (result,) = parse_show(shown)
    assert result.embedding == "multitask" and result.quantizer == "rqkmeans"
    assert result.data_label == "ml-25m, profile paper"
    assert result.metric("search", "recall_at_30") == 0.1 and not result.finished


def test_paper_numbers_match_the_reference_transcription():
    reference = SHARED_MOVIELENS.parents[1] / "reference" / "paper.md"
    if not reference.exists():
        pytest.skip(f"no {reference}")
    text = reference.read_text()
    labels = {"content": "content (mpnet)", "search": "search-tuned", "rec": "rec (ENMF)", "separate": "separate",
              "prefix-share": "prefix-share", "concat": "fused concat", "svd": "fused SVD", "multitask": "multi-task"}
    for method, numbers in PAPER_EMBEDDINGS.items():
        row = re.search(rf"^\| {re.escape(labels[method])} \|(.*)\|$", text, re.MULTILINE)
        cells = [c.strip() for c in row.group(1).split("|")]
        assert [float(c) if c else None for c in cells] == list(numbers), method
    names = {"rqkmeans": "RQ-KMeans", "dictlearn": "MiniBatchDictionaryLearning", "rlfq": "ResidualLFQ", "rqvae": "RQ-VAE"}
    for quantizer, numbers in PAPER_QUANTIZERS.items():
        if quantizer == "rqvae_naive":  # the paper's one RQ-VAE, shown beside both of ours
            continue
        row = re.search(rf"^\| {names[quantizer]} \| ([0-9.]+) \| ([0-9.]+) \|$", text, re.MULTILINE)
        assert (float(row.group(1)), float(row.group(2))) == numbers, quantizer


def test_paper_numbers_come_from_the_packaged_data_file_that_names_its_source():
    paper = load_paper_results()
    assert paper["source"]["authors"] == "Penha et al." and paper["source"]["year"] == 2025
    assert "Semantic IDs for Joint Generative Search and Recommendation" in paper["source"]["title"]
    assert "RecSys" in paper["source"]["venue"] and "Results, Recall@30" in paper["source"]["transcription"]
    assert PAPER_LABEL == paper["label"]
    assert PAPER_EMBEDDINGS["content"] == (0.013, 0.023, None, None)
    assert list(PAPER_QUANTIZERS) == [*paper["quantizers"]["rows"], "rqvae_naive"]
    assert PAPER_QUANTIZERS["rqvae_naive"] == PAPER_QUANTIZERS["rqvae"] == (0.002, 0.024)


def test_no_experiment_gives_a_table_that_says_what_to_run(tmp_path):
    write_results([], tmp_path)
    assert "run `make grid`" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "tradeoff.png").stat().st_size > 0


def test_an_experiment_that_did_not_rerun_evaluate_is_not_credited_with_its_metrics():
    metrics = {
        "search": {"recall_at_30": 0.01, "embedding": "content", "quantizer": "rqkmeans"},
        "rec": {"recall_at_30": 0.08},
    }
    partial = Experiment("quantize-only", "abc", None, {"embedding": "content", "quantizer": "rqvae"}, metrics)
    own = Experiment("full", "def", None, {"embedding": "content", "quantizer": "rqkmeans"}, metrics)
    assert not partial.finished and own.finished
