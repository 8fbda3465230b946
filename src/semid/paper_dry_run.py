"""The paper profile, end to end on a small slice, offline: proves the profile's wiring.

``make paper-dry-run`` (``python -m semid.paper_dry_run``) copies the project into a scratch git
+ DVC repo and runs ``dvc exp run -S base.profile=paper`` there, substituting only what needs the
network or a GPU, each as a ``-S profiles/paper.yaml:...`` edit of the paper profile:

- ``queries.backend=template`` for Gemini (no key, no network);
- ``data.release=ml-latest-small`` (the local mirror) for the ml-25m download, with a popular
  slice of ``data.sample_items`` items;
- ``embed.model=all-MiniLM-L6-v2`` when the all-mpnet-base-v2 packages are not installed;
- ``generator.model=<folder>``: a tiny random T5 + tokenizer saved to a temp folder for
  google/flan-t5-base, trained for a few steps (``generator.max_steps``);
- ``evaluate.search_queries``: a subsample, so diverse beam search (60 beams, 30 groups) ends
  in minutes on a CPU.

Every other value is the paper profile's own (2 x 256 codes, 20 queries per item split 10/0/10,
ENMF and MNRL settings, diverse beam search). The repo is left in the folder printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from semid.config import DataConfig, find_root, workspace_root
from semid.data import locate_raw, prepare_movielens, read_release
from semid.io import SemidError, user_errors_exit
from semid.models import installed_models

# torch and transformers (~4.5 s with semid.generator, bench/import_costs.py) are imported inside
# save_tiny_t5, so that a bad command line fails before they load.

# What a scratch repo needs from the project (code, config, pipeline); never data or outputs.
PROJECT_FILES = ("src", "params.yaml", "dvc.yaml", "profiles", "pyproject.toml", ".gitignore")
PAPER_METRICS = ("data", "queries", "embed", "ids", "train_t5", "search", "rec", "baselines")


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SemidError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def scratch_env(repo: Path) -> dict[str, str]:
    """This interpreter first on PATH (stage commands call `python`), the copy's code importable."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo / "src")
    env.setdefault("GIT_AUTHOR_NAME", "semid")
    env.setdefault("GIT_AUTHOR_EMAIL", "semid@localhost")
    env.setdefault("GIT_COMMITTER_NAME", env["GIT_AUTHOR_NAME"])
    env.setdefault("GIT_COMMITTER_EMAIL", env["GIT_AUTHOR_EMAIL"])
    env.pop("DVC_ROOT", None)
    return env


def copy_project(project: Path, into: Path) -> Path:
    """A new folder ``into`` with a copy of ``project``'s code, params and pipeline (no data)."""
    into.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = project / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif source.exists():
            shutil.copy2(source, into / name)
    return into


def make_scratch_repo(project: Path, repo: Path) -> Path:
    """A fresh git + DVC repo at ``repo`` holding a copy of ``project``'s code and pipeline."""
    copy_project(project, repo)
    env = scratch_env(repo)
    _run(["git", "init", "-q"], repo, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "scratch copy of semid"], repo, env)
    return repo


def save_tiny_t5(folder: Path, texts: Sequence[str], vocab_size: int = 500, seed: int = 0) -> Path:
    """A random T5 (d_model 32, 1+1 layers) + a T5 tokenizer trained on ``texts``, saved like a
    Hub checkpoint: the stand-in for google/flan-t5-base, loaded through the same code."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from semid.generator import train_text_tokenizer

    torch.manual_seed(seed)
    tokenizer = train_text_tokenizer(texts, vocab_size)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=1, num_decoder_layers=1, num_heads=4,
        decoder_start_token_id=tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def item_texts(n_items: int) -> list[str]:
    """item_text of a popular slice of ml-latest-small (the tokenizer's corpus)."""
    folder, _ = locate_raw("ml-latest-small", find_root() / "data" / "raw")
    raw = read_release("ml-latest-small", folder)
    items = prepare_movielens(raw, DataConfig(sample_items=n_items, sample_items_strategy="popular"), 42).items
    return items["item_text"].tolist()


def substitutions(tiny_t5: Path, sample_items: int, t5_steps: int, search_queries: int) -> list[str]:
    """The `-S` edits of the paper profile that replace what needs the network (module docstring)."""
    # `++key=value` (Hydra's add-or-override, which DVC's -S speaks) also sets keys the profile
    # file does not name yet, such as data.sample_items.
    profile = "profiles/paper.yaml:++"
    edits = [
        "base.profile=paper",
        f"{profile}queries.backend=template",
        f"{profile}data.release=ml-latest-small",
        f"{profile}data.sample_items={sample_items}",
        f"{profile}data.sample_items_strategy=popular",
        f"{profile}generator.model={tiny_t5}",
        f"{profile}generator.max_steps={t5_steps}",
        f"{profile}evaluate.search_queries={search_queries}",
    ]
    if "all-mpnet-base-v2" not in installed_models():
        edits.append(f"{profile}embed.model=all-MiniLM-L6-v2")
    return edits


def paper_dry_run(
    workdir: Path, sample_items: int = 1000, t5_steps: int = 4, search_queries: int = 100, extra: Sequence[str] = ()
) -> dict[str, dict]:
    """Run the paper profile in a scratch copy under ``workdir``; returns {metrics file: metrics}."""
    repo = make_scratch_repo(workspace_root(), workdir / "repo")
    tiny_t5 = save_tiny_t5(workdir / "tiny-flan-t5", item_texts(sample_items))
    edits = [*substitutions(tiny_t5, sample_items, t5_steps, search_queries), *extra]
    command = [sys.executable, "-m", "dvc", "exp", "run"]
    for edit in edits:
        command += ["-S", edit]
    print("in", repo, "\n  dvc exp run " + " ".join(f"-S {e}" for e in edits), flush=True)
    _run(command, repo, scratch_env(repo))
    found = {}
    for name in PAPER_METRICS:
        path = repo / "metrics" / f"{name}.json"
        if not path.exists():
            raise SemidError(f"the paper-profile run wrote no {path}")
        found[name] = json.loads(path.read_text())
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="default: a new temp folder (kept)")
    parser.add_argument("--items", type=int, default=1000, help="data.sample_items (>= quantize.codebook_size)")
    parser.add_argument("--t5-steps", type=int, default=4)
    parser.add_argument("--search-queries", type=int, default=100)
    parser.add_argument("-S", "--set-param", action="append", default=[], help="more -S edits")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="semid-paper-dry-run-"))
    started = time.monotonic()
    with user_errors_exit():
        metrics = paper_dry_run(workdir, args.items, args.t5_steps, args.search_queries, args.set_param)
    data, ids = metrics["data"], metrics["ids"]
    print(
        f"paper profile wired end to end in {time.monotonic() - started:,.0f}s: {data['items']} items, "
        f"{data['users']} users, {metrics['queries']['queries_train']} train queries, "
        f"collisions {ids.get('collision_rate', float('nan')):.3f}, "
        f"search R@30 {metrics['search'].get('recall_at_30', float('nan')):.3f}, "
        f"rec R@30 {metrics['rec'].get('recall_at_30', float('nan')):.3f} (a random tiny T5: meaningless)"
    )
    print(f"repo kept in {workdir / 'repo'}")


if __name__ == "__main__":
    main()
