"""Where train_t5's memory goes per training example: RSS and tracemalloc by phase, two data sizes.

README "Cost curves" found the stage's peak RSS growing ~1.6-2.1 KB per added training example
(the 1k-item slice, users x1 vs x6) and int32 rows did not move that slope. This bench builds the
same two projects as ``bench/cost_curves.py`` (its functions, imported: the 1k-item slice, then
every user repeated k times), runs the upstream stages there as subprocesses, then runs the
train_t5 stage itself twice per size, each time in a fresh child process:

- **plain**: no tracemalloc, so RSS (``VmRSS``) and peak RSS (``VmHWM``) at each phase are the
  stage's own, not inflated by tracing;
- **traced**: ``tracemalloc`` (10 frames) from before the stage starts, a snapshot at each phase,
  and the traced peak between phases (``reset_peak``), which catches transients such as the
  sources split inside ``TextEncoderInputs.rows``.

Why a child process that runs the stage's ``main`` in-process, and not an ``-X tracemalloc``
subprocess with a dump at exit: the phases lie inside ``train_generator`` (one function from
examples to a saved model), so the child wraps the functions the stage already calls (module
attributes, nothing in ``src/`` edited) to mark them: ``build_examples`` (data loaded / examples
built), ``FrozenTextEncoder.encode`` inside the first ``rows()`` (sources split), ``rows()``
returned, ``encode_examples`` (train and valid rows), ``Seq2SeqTrainer.__init__`` (trainer built)
and the end of training (the few steps of ``max_steps``). A fresh process per size and mode keeps
one run's freed-but-kept heap out of the next one's RSS.

Each snapshot is summed by two keys: the allocating line (innermost frame: often a library line,
e.g. pandas or tokenizers) and the innermost ``semid`` line on the stack (which project line asked
for it). The report divides the difference between the sizes by the added training examples.
tracemalloc sees Python objects and numpy buffers, not torch tensors or the Rust tokenizer's heap:
the RSS columns are the ground truth, tracemalloc says where.

    python bench/train_t5_memory.py                    # 1k items, x1 vs x6: ~12 min on 2 loaded cores
    python bench/train_t5_memory.py --scales 1,3 --out /tmp/m   # smaller
    python bench/train_t5_memory.py --report-only      # the tables again from OUT.json

No asserts: the bench prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path

import cost_curves  # bench/ is on sys.path when this file runs as a script

REPO_ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ("prepare_movielens", "gen_queries", "train_embedder", "quantize")
FRAMES = 10
KEEP_SITE_BYTES = 4096  # sites smaller than this in a snapshot are left out of the dump
MB = 1024.0 * 1024.0


# ------------------------------------------------------------------------------- the child


def proc_status_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024.0, int(fields["VmHWM"].split()[0]) / 1024.0


def site_totals(snapshot: tracemalloc.Snapshot) -> tuple[dict[str, int], dict[str, int]]:
    """Bytes by allocating line and by innermost semid line (``<none>`` when no semid frame)."""
    by_traceback: dict[tuple, int] = defaultdict(int)
    # The raw (domain, size, frames, nframe) tuples: Trace objects for millions of small ints are slow.
    for _domain, size, frames, *_ in snapshot.traces._traces:
        by_traceback[frames] += size
    by_line: dict[str, int] = defaultdict(int)
    by_semid: dict[str, int] = defaultdict(int)
    for frames, size in by_traceback.items():  # frames: most recent first
        by_line[f"{frames[0][0]}:{frames[0][1]}"] += size
        semid = next((f"{name}:{line}" for name, line in frames if "/semid/" in name), "<none>")
        by_semid[semid] += size

    def kept(totals: dict[str, int]) -> dict[str, int]:
        return {site: size for site, size in totals.items() if size >= KEEP_SITE_BYTES}

    return kept(by_line), kept(by_semid)


class Phases:
    """RSS (and, when traced, tracemalloc totals and site sums) at named points of the stage."""

    def __init__(self, traced: bool, out: Path):
        self.traced = traced
        self.out = out
        self.entries: list[dict] = []
        self.sizes: dict[str, int] = {}

    def mark(self, name: str) -> None:
        rss, hwm = proc_status_mb()  # before the snapshot, which costs memory of its own
        entry = {"phase": name, "rss_mb": rss, "hwm_mb": hwm, "time": time.monotonic()}
        if self.traced:
            current, peak = tracemalloc.get_traced_memory()
            entry.update(traced=current, traced_peak_since_last=peak)
            by_line, by_semid = site_totals(tracemalloc.take_snapshot())
            entry.update(by_line=by_line, by_semid=by_semid)
            tracemalloc.reset_peak()  # the next mark's peak is the peak between the two marks
        self.entries.append(entry)
        self.write()  # after every phase: a run cut short keeps what it measured
        print(f"[memory] {name:<34} RSS {rss:7.0f} MiB  peak {hwm:7.0f} MiB"
              + (f"  traced {entry['traced'] / MB:7.1f} MiB (peak since last {entry['traced_peak_since_last'] / MB:7.1f})"
                 if self.traced else ""), flush=True)

    def write(self) -> None:
        self.out.write_text(json.dumps({"traced": self.traced, "sizes": self.sizes, "phases": self.entries}))


def install_hooks(phases: Phases) -> None:
    """Wrap what the stage calls so each phase marks itself; the wrapped functions run unchanged."""
    import semid.generator.inputs as inputs_module
    import semid.generator.text_encoder as text_encoder_module
    import semid.generator.train as train_module
    import semid.stages.train_t5 as stage_module
    from transformers import TrainerCallback

    build_examples = stage_module.build_examples

    def marked_build_examples(*args, **kwargs):
        phases.mark("data loaded")
        train, valid = build_examples(*args, **kwargs)
        phases.sizes = {"train_examples": len(train), "valid_examples": len(valid),
                        "train_rec_examples": sum(e.task == "rec" for e in train),
                        "interactions": len(args[3]),
                        "rec_source_chars": sum(len(e.source) for e in train if e.task == "rec")}
        phases.mark("examples built")
        return train, valid

    stage_module.build_examples = marked_build_examples

    inside_rows = {"calls": 0, "inside": False}
    rows = inputs_module.TextEncoderInputs.rows

    def marked_rows(self, sources):
        inside_rows["calls"] += 1
        inside_rows["inside"] = inside_rows["calls"] == 1  # the train rows: the large call
        try:
            result = rows(self, sources)
        finally:
            inside_rows["inside"] = False
        if inside_rows["calls"] == 1:
            phases.mark("train rows() returned")
        return result

    inputs_module.TextEncoderInputs.rows = marked_rows

    encode = text_encoder_module.FrozenTextEncoder.encode

    def marked_encode(self, texts, *args, **kwargs):
        if inside_rows["inside"]:
            phases.mark("in train rows(): sources split")
            inside_rows["inside"] = False
        return encode(self, texts, *args, **kwargs)

    text_encoder_module.FrozenTextEncoder.encode = marked_encode

    encode_examples = train_module.encode_examples
    encoded = {"calls": 0}

    def marked_encode_examples(*args, **kwargs):
        result = encode_examples(*args, **kwargs)
        encoded["calls"] += 1
        phases.mark("train rows encoded" if encoded["calls"] == 1 else "valid rows encoded")
        return result

    train_module.encode_examples = marked_encode_examples

    class EndOfTraining(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            phases.mark(f"after {state.global_step} training steps")

    trainer_class = train_module._trainer_class

    def marked_trainer_class():
        parent = trainer_class()

        class MarkedTrainer(parent):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.add_callback(EndOfTraining())
                phases.mark("trainer built")

        return MarkedTrainer

    train_module._trainer_class = marked_trainer_class


def child(traced: bool, out: Path) -> None:
    """Run the train_t5 stage in this process (cwd = the project copy) with the phase hooks."""
    if traced:
        tracemalloc.start(FRAMES)
    phases = Phases(traced, out)
    phases.mark("start (python + bench imports)")
    import semid.stages.train_t5 as stage_module

    install_hooks(phases)
    phases.mark("stage imported")
    sys.argv = [sys.argv[0]]
    stage_module.main()
    phases.mark("stage returned")


# ------------------------------------------------------------------------------- the parent


def run_row(label: str, factor: int, items: int, work: Path, mirror_root: Path) -> dict:
    """Build the project of one size, run the upstream stages, then train_t5 plain and traced."""
    release_dir = mirror_root / cost_curves.RELEASE
    mirror = mirror_root if factor == 1 else cost_curves.upscaled_mirror(release_dir, work / f"mirror-x{factor}", factor)
    data = {"sample_items": items, "sample_items_strategy": "random", "verify_checksums": False}
    project = cost_curves.make_project(work / label, {**cost_curves.PARAMS, "data": data})
    env = cost_curves.stage_env(project)
    env["SEMID_MOVIELENS_MIRROR"] = str(mirror)
    for stage in UPSTREAM:
        seconds, _, peak = cost_curves.run_measured([sys.executable, "-m", f"semid.stages.{stage}"], project, env,
                                                    work / f"{label}.{stage}.log")
        print(f"  {label:>8} {stage:<18} {seconds:6.1f} s  {peak:6.0f} MiB", flush=True)
    measured = {}
    for mode in ("plain", "traced"):
        result = work / f"{label}.{mode}.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--child-out", str(result)]
        seconds, cpu, peak = cost_curves.run_measured(command, project, env, work / f"{label}.train_t5.{mode}.log")
        print(f"  {label:>8} train_t5 {mode:<9} {seconds:6.1f} s  {peak:6.0f} MiB (rusage)", flush=True)
        measured[mode] = {**json.loads(result.read_text()), "seconds": seconds, "cpu_seconds": cpu,
                          "rusage_peak_mb": peak}
    return {"label": label, **measured}


def per_example(small: dict, large: dict) -> float:
    return max(1, large["plain"]["sizes"]["train_examples"] - small["plain"]["sizes"]["train_examples"])


def short(site: str) -> str:
    """A site without the machine's path: from ``semid/`` or ``site-packages/`` on."""
    for anchor in ("/src/semid/", "/site-packages/"):
        if anchor in site:
            return ("semid/" if anchor == "/src/semid/" else "") + site.split(anchor, 1)[1]
    return re.sub(r"^.*/lib/python3\.\d+/", "", site)  # the standard library


def phase_table(small: dict, large: dict) -> str:
    added = per_example(small, large)
    lines = [
        f"| phase | RSS {small['label']} / {large['label']} MiB | RSS B/ex. | peak RSS {small['label']} / "
        f"{large['label']} MiB | peak RSS B/ex. | traced MiB {small['label']} / {large['label']} | traced B/ex. | "
        "traced peak since previous phase B/ex. |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    plain_small = {e["phase"]: e for e in small["plain"]["phases"]}
    plain_large = {e["phase"]: e for e in large["plain"]["phases"]}
    traced_small = {e["phase"]: e for e in small["traced"]["phases"]}
    traced_large = {e["phase"]: e for e in large["traced"]["phases"]}
    for phase in plain_small:
        a, b = plain_small[phase], plain_large.get(phase)
        ta, tb = traced_small.get(phase), traced_large.get(phase)
        if b is None:
            continue
        cells = [f"{a['rss_mb']:.0f} / {b['rss_mb']:.0f}", f"{(b['rss_mb'] - a['rss_mb']) * MB / added:,.0f}",
                 f"{a['hwm_mb']:.0f} / {b['hwm_mb']:.0f}", f"{(b['hwm_mb'] - a['hwm_mb']) * MB / added:,.0f}"]
        if ta and tb:
            cells += [f"{ta['traced'] / MB:.1f} / {tb['traced'] / MB:.1f}", f"{(tb['traced'] - ta['traced']) / added:,.0f}",
                      f"{(tb['traced_peak_since_last'] - ta['traced_peak_since_last']) / added:,.0f}"]
        else:
            cells += ["", "", ""]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def site_table(small: dict, large: dict, phase: str, key: str, top: int) -> str:
    added = per_example(small, large)
    def by_short_site(row: dict) -> dict[str, int]:
        """Sites of one row keyed without its project copy's folder, so the two rows' sites meet."""
        totals: dict[str, int] = defaultdict(int)
        for site, size in next(e for e in row["traced"]["phases"] if e["phase"] == phase)[key].items():
            totals[short(site)] += size
        return totals

    a, b = by_short_site(small), by_short_site(large)
    # The bench's own per-phase site sums live in the traced heap too: left out here.
    diff = {site: b.get(site, 0) - a.get(site, 0) for site in set(a) | set(b) if Path(__file__).name not in site}
    ranked = sorted(diff.items(), key=lambda kv: -kv[1])[:top]
    total = sum(diff.values())
    lines = [f"| {'allocating line' if key == 'by_line' else 'innermost semid line'} | B/ex. | share of the added |",
             "| --- | --- | --- |"]
    lines += [f"| `{site}` | {size / added:,.0f} | {size / total:.0%} |" if total > 0 else f"| `{site}` | {size / added:,.0f} | |"
              for site, size in ranked]
    lines.append(f"| (all sites) | {total / added:,.0f} | |")
    return "\n".join(lines)


def report(result: dict) -> str:
    small, large = result["rows"]
    sizes = {row["label"]: row["plain"]["sizes"] for row in (small, large)}
    header = (
        f"Measured {result['date']} on {result['cores']} cores; load average "
        f"{result['load_before']} before and {result['load_after']} after; bench wall time "
        f"{result['minutes']:.1f} min. Sizes: "
        + "; ".join(f"{label}: {s['train_examples']:,} train examples ({s['train_rec_examples']:,} rec), "
                    f"{s['interactions']:,} interactions, rec sources {s['rec_source_chars'] / max(1, s['train_rec_examples']):.0f}"
                    " chars on average" for label, s in sizes.items())
        + f". B/ex.: (large - small) / {per_example(small, large):,.0f} added train examples."
    )
    timings = "; ".join(f"{row['label']} {mode}: {row[mode]['seconds']:.0f} s wall, peak RSS {row[mode]['rusage_peak_mb']:.0f} MiB (rusage)"
                        for row in (small, large) for mode in ("plain", "traced") if "seconds" in row[mode])
    traced_in_both = [e["phase"] for e in large["traced"]["phases"]
                      if any(e["phase"] == other["phase"] for other in small["traced"]["phases"])]
    parts = [header, timings, "### By phase", phase_table(small, large)]
    for phase in traced_in_both[3:]:  # from "examples built" on: before it, imports and the loaded data
        parts += [f"### Sites of the added bytes at `{phase}`",
                  site_table(small, large, phase, "by_semid", 8), site_table(small, large, phase, "by_line", 8)]
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1000, help="the real slice (data.sample_items)")
    parser.add_argument("--scales", default="1,6", help="two user-repeat factors: the small and the large size")
    parser.add_argument("--mirror", type=Path, default=Path(os.environ.get("SEMID_MOVIELENS_MIRROR",
                                                                           REPO_ROOT.parent / "shared/data/movielens")))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/train_t5_memory",
                        help="writes OUT.json (the measurements) and prints the tables")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--child", choices=["plain", "traced"], help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child == "traced", args.child_out)
        return
    json_path = args.out.with_suffix(".json")
    if args.report_only:
        print(report(json.loads(json_path.read_text())))
        return
    factors = [int(f) for f in args.scales.split(",")]
    if len(factors) != 2 or factors[0] >= factors[1] or factors[0] < 1:
        print(f"--scales {args.scales!r}: give two increasing user-repeat factors, e.g. 1,6")
        raise SystemExit(2)
    if not (args.mirror / cost_curves.RELEASE / "ratings.csv").exists():
        print(f"--mirror {args.mirror}: no {cost_curves.RELEASE}/ratings.csv there; point it at the MovieLens mirror folder")
        raise SystemExit(2)
    started, load_before = time.perf_counter(), " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="semid-t5mem-") as tmp:
        rows = [run_row(f"{args.items}i x{f}", f, args.items, Path(tmp), args.mirror) for f in factors]
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
              "load_before": load_before, "load_after": " ".join(f"{x:.1f}" for x in os.getloadavg()),
              "minutes": (time.perf_counter() - started) / 60, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result))
    print(report(result))


if __name__ == "__main__":
    main()
