"""`semid`: search, recommend and score query sets with a trained pipeline (see semid.serve).

    semid search "space opera where rebels fight an empire" -k 10
    semid recommend --user 42 -k 10            # that user's train history
    semid recommend --items 1,260,1196 --method dense
    semid score-queries my_queries.csv         # columns item_id,query
    semid search "heist gone wrong" --exp my-exp --json

Inputs are checked before the model loads, so a bad request fails in well under a second; torch
and transformers are imported only once a command runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path
from typing import Any

from semid.io import SemidError, write_json
from semid.serve import (
    Pipeline, ServeError, check_k, check_query, check_query_frame, item_id_of, parse_item_ids, read_query_file,
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one ``error:`` line (exit 2) like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (`{self.prog} --help` lists the options)\n")


def _argument_type(check, name: str):
    """An argparse type from a check raising ServeError, so its message is the one argparse shows."""

    def parse(text: str):
        try:
            return check(text)
        except ServeError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    parse.__name__ = name  # argparse names the type in its fallback message
    return parse


def _user_id(text: str) -> int:
    user = item_id_of(text)
    if user is None:
        raise ServeError(f"user ids are non-negative integers, got {text!r}")
    return user


def _threads(text: str) -> int:
    threads = item_id_of(text)
    if threads is None:
        raise ServeError(f"threads must be an integer >= 0 (0 = torch's default), got {text!r}")
    return threads


def _common() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    where = common.add_argument_group("which trained run")
    where.add_argument(
        "--root", type=Path, default=None, help="project folder (default: the one above the cwd)"
    )
    revs = where.add_mutually_exclusive_group()
    revs.add_argument("--rev", help="a git rev of the project (outputs from the local DVC cache)")
    revs.add_argument("--exp", help="a DVC experiment name (outputs from the local DVC cache)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument(
        "--threads", type=_argument_type(_threads, "threads"), default=1,
        help="torch CPU threads (default 1: one query is too small to split; 0 = torch's default)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="semid", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    common = _common()

    search = commands.add_parser("search", parents=[common], help="items for a text query")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=10, help="items to return (default 10)")
    search.add_argument("--method", choices=("generative", "dense"), default="generative")

    recommend = commands.add_parser(
        "recommend", parents=[common], help="next items for a user or a history"
    )
    who = recommend.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--user", type=_argument_type(_user_id, "user id"), help="a user id: recommend from that user's train history"
    )
    who.add_argument(
        "--items", type=_argument_type(parse_item_ids, "item ids"),
        help="a history of item ids, oldest first: 1,260,1196",
    )
    recommend.add_argument("-k", type=int, default=10, help="items to return (default 10)")
    recommend.add_argument("--method", choices=("generative", "dense"), default="generative")

    score = commands.add_parser(
        "score-queries", parents=[common], help="Recall@1/10/30 and MRR on a CSV of item_id,query rows"
    )
    score.add_argument("file", type=Path)
    score.add_argument(
        "--out", type=Path, default=None, help="metrics JSON (default: FILE.scores.json beside FILE)"
    )
    return parser


# --------------------------------------------------------------------------- output


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def hits_table(hits) -> str:
    title_width = max([5, *(min(48, len(h.title)) for h in hits)])
    sid_width = max([11, *(len(h.semantic_id) for h in hits)])
    header = f"{'rank':>4}  {'item_id':>7}  {'title':<{title_width}}  {'semantic ID':<{sid_width}}"
    lines = [f"{header}  {'score':>8}"]
    for hit in hits:
        score = "" if hit.score is None else f"{hit.score:8.3f}"
        lines.append(
            f"{hit.rank:>4}  {hit.item_id:>7}  {_cut(hit.title, title_width):<{title_width}}  "
            f"{hit.semantic_id:<{sid_width}}  {score:>8}"
        )
    return "\n".join(lines)


def scores_table(report) -> str:
    lines = [f"{'method':<12} {'Recall@1':>9} {'Recall@10':>10} {'Recall@30':>10} {'MRR':>7}"]
    for method, metrics in report.methods.items():
        if metrics is None:
            lines.append(f"{method:<12} {'not applicable (this run has no query encoder)':>40}")
            continue
        lines.append(
            f"{method:<12} {metrics['recall_at_1']:9.4f} {metrics['recall_at_10']:10.4f} "
            f"{metrics['recall_at_30']:10.4f} {metrics['mrr']:7.4f}"
        )
    return "\n".join(lines)


def _emit(as_json: bool, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload, indent=2) if as_json else text)


# --------------------------------------------------------------------------- commands


def load_pipeline(
    root: Path | None = None, rev: str | None = None, exp: str | None = None, threads: int | None = 1
):
    """The Pipeline a one-shot command loads, with the cyclic GC kept off the objects loading makes.

    Importing torch and transformers and loading the model make ~650k objects that live until the
    process ends; the collector would rescan them again and again while they are made and once more
    at exit. Measured on 2 cores shared with other work: ~0.5 s of the imports, ~0.2 s of building
    the ID table and ~1 s of interpreter exit. Frozen, they are never scanned again; what the
    command makes later still is.
    For a process that runs one command and exits, not for long-lived ones (a frozen object that
    becomes garbage is never freed).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return Pipeline(root, rev=rev, exp=exp, threads=threads)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _pipeline(args):
    return load_pipeline(args.root, args.rev, args.exp, args.threads)


def run_search(args) -> None:
    query, k = check_query(args.query), check_k(args.k)
    pipeline = _pipeline(args)
    hits = pipeline.search(query, k, args.method)
    payload = {"query": query, "method": args.method, "k": k, "run": pipeline.source,
               "results": [h.as_dict() for h in hits]}
    _emit(args.json, payload, f"search ({args.method}): {query}\n{hits_table(hits)}")


def run_recommend(args) -> None:
    k, history = check_k(args.k), args.items  # --items parsed (and checked) by argparse
    pipeline = _pipeline(args)
    if history is None:
        history = pipeline.user_history(args.user)
        label = f"user {args.user} ({len(history)} train items)"
    else:
        label = f"history {','.join(map(str, history))}"
    hits = pipeline.recommend(history, k, args.method)
    payload = {"user_id": args.user, "history": history,
               "method": args.method, "k": k, "run": pipeline.source,
               "results": [h.as_dict() for h in hits]}
    _emit(args.json, payload, f"recommend ({args.method}) for {label}\n{hits_table(hits)}")


def run_score_queries(args) -> None:
    # a missing file or column, or an output that cannot be written, fails before the model loads
    frame = check_query_frame(read_query_file(args.file))
    out = check_scores_path(args.file, args.out or args.file.with_name(args.file.stem + ".scores.json"))
    pipeline = _pipeline(args)
    report = pipeline.score_queries(frame)
    payload = {"file": str(args.file), "run": pipeline.source, **report.as_dict()}
    write_json(out, payload)
    skipped = "".join(
        f"\n  skipped row {s['row']} (item_id {s['item_id']!r}): {s['reason']}" for s in report.skipped
    )
    text = (
        f"{report.scored} of {report.rows} queries scored ({len(report.skipped)} skipped){skipped}\n"
        f"{scores_table(report)}\nwritten to {out}"
    )
    _emit(args.json, payload, text)


def check_scores_path(queries_file: Path, out: Path) -> Path:
    """Where score-queries writes its metrics: never over the query file, never onto a folder."""
    if out.is_dir():
        raise ServeError(f"--out {out} is a folder; name the metrics JSON file to write")
    if out.exists() and out.resolve() == queries_file.resolve():
        raise ServeError(f"--out {out} is the query file itself; name another file for the metrics")
    return out


COMMANDS = {"search": run_search, "recommend": run_recommend, "score-queries": run_score_queries}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except SemidError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
