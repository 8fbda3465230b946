"""semid's one door to DVC experiments: show, queue, run the queue, push and pull, resolve, get.

Every other module (the grid, ``make results``, ``make report``, ``semid search --rev/--exp``)
reaches DVC through here, and only through DVC's command line (``dvc exp show --json``,
``dvc exp run --queue``, ``dvc exp remove``, ``dvc queue start``, ``dvc exp push/pull``,
``dvc fetch``, ``dvc remote default``) or its public Python API (``dvc.api.DVCFileSystem``); git
only through ``git rev-parse`` and ``git ls-remote`` (which experiments a git remote holds).
``dvc exp show --json`` is parsed here once, into :class:`Experiment` records.

The queue: every queued experiment runs in a temporary copy of the repo (``.dvc/tmp/exps/``);
stages there read that copy's params (semid.config.workspace_root) and log to the main repo's
MLflow store (DVC sets ``DVC_ROOT`` to the repo that queued them, semid.tracking).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from dvc.api import DVCFileSystem

from semid.artifacts import SEARCH_METRICS
from semid.config import EMBEDDED_PROFILE, EMBEDDING_METHODS, QUANTIZERS, deep_merge
from semid.io import SemidError


ROOT_METRICS_DIR = Path(SEARCH_METRICS.path).parent


class ExperimentError(SemidError):
    """A DVC command that failed, an unknown experiment or rev, or outputs missing from the cache."""


@dataclass
class Experiment:
    """One row of ``dvc exp show``: the workspace, a commit, or an experiment of a commit."""

    name: str  # the experiment's name; a commit's branch or short sha; "workspace"
    rev: str  # the full commit sha ("workspace" for the workspace; a queued experiment's task id)
    timestamp: str | None
    params: dict[str, Any]  # params.yaml with its profile overlaid, as the stages see them
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # file stem -> flat metrics
    state: str = "success"  # as `dvc exp show` words it: queued, running, success, failed
    baseline: str | None = None  # the commit an experiment derives from; None for commits

    @property
    def is_workspace(self) -> bool:
        return self.rev == "workspace"

    @property
    def is_experiment(self) -> bool:
        return self.baseline is not None

    @property
    def embedding(self) -> str:
        return str(self.params.get("embedding", EMBEDDING_METHODS[0]))

    @property
    def quantizer(self) -> str:
        return str(self.params.get("quantizer", QUANTIZERS[0]))

    @property
    def data_label(self) -> str:
        """What the numbers were measured on: profile, release and sample sizes."""
        data = self.params.get("data") or {}
        parts = [str(data.get("release", "?"))]
        if data.get("sample_items"):
            parts.append(f"{data['sample_items']} items")
        if data.get("sample_users"):
            parts.append(f"{data['sample_users']} users")
        profile = (self.params.get("base") or {}).get("profile", EMBEDDED_PROFILE)
        if profile != EMBEDDED_PROFILE:
            parts.append(f"profile {profile}")
        return ", ".join(parts)

    def metric(self, stem: str, key: str) -> float | None:
        value = self.metrics.get(stem, {}).get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return None
        return float(value)

    @property
    def finished(self) -> bool:
        """Ran to the end, both tasks measured, on this point's own embedding and IDs (evaluate
        records which); a queued or failed experiment shows its baseline's committed metrics."""
        if self.state != "success":
            return False
        if self.metric("search", "recall_at_30") is None or self.metric("rec", "recall_at_30") is None:
            return False
        search = self.metrics.get("search", {})
        measured_on = (search.get("embedding", self.embedding), search.get("quantizer", self.quantizer))
        return measured_on == (self.embedding, self.quantizer)


# --------------------------------------------------------------------------- show


# For the read-only calls a queue polls: `dvc exp show` can wait for ever on a lock that a queue
# worker holds while it finishes (treeverse/dvc#8762); a poll that times out counts as failed.
POLL_TIMEOUT_S = 300


def _dvc(root: Path, *args: str, timeout_s: float | None = None) -> subprocess.CompletedProcess:
    """Run the DVC of this interpreter in ``root``; a failure (or no answer in ``timeout_s``)
    raises with DVC's own message."""
    try:
        result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True,
                                timeout=timeout_s)
    except subprocess.TimeoutExpired as expired:
        raise ExperimentError(f"dvc {' '.join(args)} gave no answer in {timeout_s:.0f}s in {root}") from expired
    if result.returncode != 0:
        message = result.stderr.strip() or result.stdout.strip()
        raise ExperimentError(f"dvc {' '.join(args)} failed ({result.returncode}) in {root}: {message}")
    return result


# What `dvc status` says of a file whose lock entry is current but which this clone lacks.
ABSENT_HERE = frozenset({"deleted", "not in cache"})


def locked_but_absent(root: Path, target: str) -> bool:
    """True when ``dvc status`` finds ``target`` and every stage upstream of it locked on the current
    code, params and commands, and misses nothing but files absent from this clone (a stage that
    never ran shows its code deps as modified; a changed param shows as a dict, a changed command
    as a string)."""
    shown = json.loads(_dvc(root, "status", "--json", "--with-deps", target, timeout_s=POLL_TIMEOUT_S).stdout or "{}")
    for changes in shown.values():
        for change in changes:
            if not isinstance(change, dict):
                return False
            for kind, files in change.items():
                if kind not in ("changed deps", "changed outs") or not isinstance(files, dict):
                    return False
                if not all(isinstance(state, str) and state in ABSENT_HERE for state in files.values()):
                    return False
    return True


def repro(root: Path, target: str) -> int:
    """``dvc repro TARGET`` in ``root`` with DVC's output streamed (a grid run prints for minutes);
    the exit status."""
    return subprocess.run([sys.executable, "-m", "dvc", "repro", target], cwd=root).returncode


def _resolved_params(files: dict[str, Any]) -> dict[str, Any]:
    """params.yaml with the active profile's file overlaid, as semid.config.read_merged does."""
    params = dict((files.get("params.yaml") or {}).get("data") or {})
    profile = (params.get("base") or {}).get("profile", EMBEDDED_PROFILE)
    if profile != EMBEDDED_PROFILE:
        overlay = (files.get(f"profiles/{profile}.yaml") or {}).get("data") or {}
        params = deep_merge(params, overlay)
    return params


def _record(node: dict, state: str = "success", baseline: str | None = None) -> Experiment:
    data = node.get("data") if isinstance(node.get("data"), dict) else {}
    # `dvc exp show` also lists every grid run's metrics (grid/dvc.yaml is in the repo), under the
    # same file names: only the root pipeline's own folder describes this commit or experiment.
    metrics = {
        Path(path).stem: dict(content.get("data") or {})
        for path, content in (data.get("metrics") or {}).items()
        if Path(path).parent == ROOT_METRICS_DIR
        and isinstance(content, dict) and isinstance(content.get("data"), dict)
    }
    rev = str(node.get("rev") or data.get("rev") or "?")
    name = "workspace" if rev == "workspace" else (node.get("name") or rev[:7])
    if node.get("error") and state == "success":
        state = "failed"
    params = _resolved_params(data.get("params") or {})
    return Experiment(name, rev, data.get("timestamp"), params, metrics, state, baseline)


def parse_show(shown: Sequence[dict]) -> list[Experiment]:
    """Every workspace, commit and experiment entry of ``dvc exp show --json`` output, in its order."""
    found: list[Experiment] = []
    for commit in shown:
        if not isinstance(commit, dict):
            continue
        found.append(_record(commit))
        for group in commit.get("experiments") or []:  # one per experiment: its executor, its revs
            state = str((group.get("executor") or {}).get("state") or "success")
            for node in group.get("revs") or []:
                found.append(_record(node, state, baseline=str(commit.get("rev"))))
    return found


def show(root: Path, all_commits: bool = False) -> list[Experiment]:
    """``dvc exp show --json``: the workspace, HEAD and its experiments; with ``all_commits`` (``-A``)
    every commit's."""
    shown = _dvc(root, "exp", "show", "--json", *(["-A"] if all_commits else []), timeout_s=POLL_TIMEOUT_S).stdout
    return parse_show(json.loads(shown or "[]"))


# --------------------------------------------------------------------------- the queue


def queue(root: Path, name: str, params: Sequence[str] = ()) -> None:
    """``dvc exp run --queue --name NAME -S key=value ...``: queued on HEAD, run by :func:`run_queue`."""
    settings = [arg for param in params for arg in ("-S", param)]
    _dvc(root, "exp", "run", "--queue", "--name", name, *settings)


def remove(root: Path, name: str) -> None:
    """``dvc exp remove NAME``: drop an experiment of HEAD (queued, failed or done)."""
    _dvc(root, "exp", "remove", name)


def start_workers(root: Path, jobs: int) -> None:
    """``dvc queue start -j N``: workers exit by themselves once the queue is empty."""
    # Not through pipes: the workers it spawns inherit them, and reading to EOF would wait for the queue.
    started_workers = subprocess.run(
        [sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    if started_workers.returncode != 0:
        raise ExperimentError(f"dvc queue start -j {jobs} failed ({started_workers.returncode}); try it by hand")


MAX_WORKER_RESTARTS = 5
WORKER_GRACE_S = 60.0  # a worker just started may not show in `dvc queue status` for a few seconds
WORKER_STATUS = re.compile(r"Worker status: (\d+) active, (\d+) idle")


def live_workers(root: Path) -> int:
    """Queue workers alive (busy or idle), from ``dvc queue status``; a status DVC could not give
    (it met a worker committing) counts as alive, so only a clear "none" restarts anything."""
    try:
        status = _dvc(root, "queue", "status", timeout_s=POLL_TIMEOUT_S).stdout
    except ExperimentError:
        return 1
    found = WORKER_STATUS.search(status)
    return int(found.group(1)) + int(found.group(2)) if found else 1


def run_queue(
    root: Path, jobs: int, names: Sequence[str], poll_seconds: float = 10.0, timeout_s: float = 0
) -> dict[str, str]:
    """Start ``jobs`` queue workers and wait until none of ``names`` (experiments of HEAD) is queued
    or running, reading their state from ``dvc exp show``.

    Returns {name: final state}. Raises ExperimentError naming the failed experiments (their logs:
    ``dvc queue logs <name>``).
    """
    start_workers(root, jobs)
    started = time.monotonic()
    wanted = set(names)
    last = ""
    failed_polls = restarts = 0
    idle_since: float | None = None
    latest: dict[str, str] = {}
    while True:
        try:
            shown = [e for e in show(root) if e.is_experiment]
            failed_polls = 0
        except ExperimentError:
            # `exp show` can meet a worker committing its result; give up only when it keeps failing.
            failed_polls += 1
            if failed_polls >= 3:
                raise
            time.sleep(poll_seconds)
            continue
        latest = {e.name: e.state for e in shown if e.name in wanted}
        pending = sorted(n for n in wanted if latest.get(n, "queued") in ("queued", "running"))
        # A worker can exit with tasks still queued (celery's filesystem broker replays an old
        # shutdown broadcast to the next worker that starts), or die under a task that then shows
        # as running for ever. With no worker alive for a minute: start workers again for queued
        # tasks, a bounded number of times, and name a task no worker runs; never wait for ever.
        idle_since = (idle_since or time.monotonic()) if pending and not live_workers(root) else None
        if idle_since is not None and time.monotonic() - idle_since >= WORKER_GRACE_S:
            orphaned = [n for n in pending if latest.get(n) == "running"]
            if orphaned:
                raise ExperimentError(f"{', '.join(orphaned)} show as running but no queue worker is alive; "
                                      "`dvc queue kill` them (or `dvc exp remove`) and run the grid again")
            restarts += 1
            if restarts > MAX_WORKER_RESTARTS:
                raise ExperimentError(f"queue workers exited {restarts} times with {', '.join(pending)} still "
                                      "queued; see `dvc queue status`")
            print("queued experiments but no worker alive: starting workers again", flush=True)
            start_workers(root, jobs)
            idle_since = None
        line = ", ".join(f"{n}: {latest.get(n, 'queued').capitalize()}" for n in sorted(wanted))
        if line != last:
            print(f"[{time.monotonic() - started:,.0f}s] {line}", flush=True)
            last = line
        if not pending:
            break
        if timeout_s and time.monotonic() - started > timeout_s:
            raise ExperimentError(
                f"queue still busy after {timeout_s:.0f}s: {', '.join(pending)} (`dvc queue status`)"
            )
        time.sleep(poll_seconds)
    # No `dvc queue stop`: workers exit by themselves once the queue is empty, and the shutdown it
    # broadcasts stays in the filesystem broker, where it stops the next grid's worker after one task.
    failed = sorted(n for n, state in latest.items() if state != "success")
    if failed:
        raise ExperimentError(f"experiments failed: {', '.join(failed)}; see `dvc queue logs <name>`")
    return latest


# --------------------------------------------------------------------------- across machines

# An experiment is the git ref refs/exps/<first 2 hex of its baseline>/<rest of the baseline>/<name>;
# `dvc exp push/pull` move those refs, and the outputs they point at through the default DVC remote.
EXP_REF_PREFIX = "refs/exps/"
NO_CACHE_REMOTE = (
    "the experiments' outputs travel through it; add the one every machine shares "
    "(`make remote REMOTE=/shared/folder`, or `dvc remote add -d storage s3://bucket/semid`)"
)


@dataclass(frozen=True)
class RemoteExperiment:
    """One experiment ref on a git remote."""

    name: str
    baseline: str  # the full sha of the commit it derives from
    rev: str  # the experiment's own commit


def remote_experiments(root: Path, git_remote: str) -> list[RemoteExperiment]:
    """The experiments a git remote (a name or a URL) holds, read with ``git ls-remote``; an unknown
    or unreachable remote raises."""
    result = subprocess.run(
        ["git", "ls-remote", "--end-of-options", git_remote, f"{EXP_REF_PREFIX}*"],
        cwd=root, capture_output=True, text=True,
    )
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1:] or ["no message"]
        raise ExperimentError(
            f"cannot read git remote {git_remote!r} from {root} ({message[0]}); "
            "give a remote name of `git remote -v` or a git URL"
        )
    found = []
    for line in result.stdout.splitlines():
        rev, _, ref = line.partition("\t")
        parts = ref[len(EXP_REF_PREFIX):].split("/")
        if ref.startswith(EXP_REF_PREFIX) and len(parts) == 3:  # skips refs/exps/celery/... and the like
            found.append(RemoteExperiment(parts[2], parts[0] + parts[1], rev))
    return found


def default_cache_remote(root: Path) -> str | None:
    """The default DVC remote's name (where ``dvc exp push`` sends outputs), or None."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "default"], cwd=root, capture_output=True, text=True
    )
    name = result.stdout.strip()
    return name if result.returncode == 0 and name else None


def fetch_head(root: Path) -> bool:
    """``dvc fetch``: HEAD's outputs from the default DVC remote into the local cache, so queued
    experiments restore the stages they share with HEAD instead of rerunning them. False when some
    were missing there (those stages then run here)."""
    try:
        _dvc(root, "fetch")
    except ExperimentError:
        return False
    return True


def _head(root: Path) -> str:
    sha = _git_commit(root, "HEAD")
    if sha is None:
        raise ExperimentError(f"{root} has no commit: experiments derive from one")
    return sha


def push(root: Path, git_remote: str, names: Sequence[str], force: bool = False) -> None:
    """``dvc exp push GIT_REMOTE NAMES``: the experiments of HEAD to the git remote, their outputs to
    the default DVC remote. Checked afterwards on the remote: DVC never replaces an experiment of
    the same name and baseline that another machine pushed (it says so and still exits 0); that
    raises here, naming them, and the remote keeps the other machine's. ``force`` (``-f``) replaces them."""
    if not names:
        return
    head = _head(root)
    local = {e.name: e.rev for e in show(root) if e.is_experiment and e.baseline == head}
    unknown = sorted(set(names) - set(local))
    if unknown:
        raise ExperimentError(f"no experiment of HEAD ({head[:7]}) named {', '.join(unknown)} to push")
    _dvc(root, "exp", "push", *(["--force"] if force else []), git_remote, *names)
    remote = {e.name: e.rev for e in remote_experiments(root, git_remote) if e.baseline == head}
    missing = sorted(n for n in names if n not in remote)
    if missing:
        raise ExperimentError(
            f"dvc exp push left {', '.join(missing)} off {git_remote!r}; see `dvc exp list {git_remote}`"
        )
    clashes = sorted(n for n in names if remote[n] != local[n])
    if clashes:
        raise ExperimentError(
            f"not pushed: {git_remote!r} already holds another run named {', '.join(clashes)} on commit "
            f"{head[:7]} (another machine ran the same point); it was kept. Keep theirs (`dvc exp pull "
            f"{git_remote} NAME --force` replaces yours), or rename yours (`dvc exp rename NAME NEW`) "
            "and push that"
        )


def pull(root: Path, git_remote: str, all_commits: bool = False) -> list[RemoteExperiment]:
    """``dvc exp pull GIT_REMOTE``: the experiments of HEAD (every commit's with ``all_commits``) and,
    from the default DVC remote, their outputs into the local cache. Returns those pulled.

    ``dvc exp show`` lists the experiments of HEAD only, so the machines of a grid and the clone
    that gathers it must be on one commit; when the remote has none of HEAD's, the error names the
    commits it has."""
    head = _head(root)
    if default_cache_remote(root) is None:
        raise ExperimentError(f"no default DVC remote in {root}: {NO_CACHE_REMOTE}")
    held = remote_experiments(root, git_remote)
    wanted = held if all_commits else [e for e in held if e.baseline == head]
    if not wanted:
        baselines = sorted({e.baseline[:7] for e in held})
        if not baselines:
            raise ExperimentError(
                f"git remote {git_remote!r} holds no experiments (`make grid SHARD=i/n` pushes them)"
            )
        raise ExperimentError(
            f"git remote {git_remote!r} holds no experiments of HEAD ({head[:7]}), only of commit "
            f"{', '.join(baselines)}: every machine of a grid must be on one commit; `git checkout` "
            "it and pull again (or pull them all with --all-commits; `make results` shows them)"
        )
    _dvc(root, "exp", "pull", *(["--all-commits"] if all_commits else []), git_remote)
    # Like push, DVC keeps a local experiment that differs from the remote's of the same name (and
    # exits 0): say so rather than show this clone's run as the grid's.
    local = {(e.baseline, e.name): e.rev for e in show(root, all_commits=all_commits) if e.is_experiment}
    kept = sorted(e.name for e in wanted if local.get((e.baseline, e.name), e.rev) != e.rev)
    if kept:
        raise ExperimentError(
            f"kept this clone's own {', '.join(kept)}, which differ from {git_remote!r}'s of the same name; "
            f"`dvc exp pull {git_remote} NAME --force` replaces yours"
        )
    return wanted


# --------------------------------------------------------------------------- resolve and get


def _git_commit(root: Path, rev: str) -> str | None:
    result = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
        cwd=root, capture_output=True, text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def resolve(root: Path, rev: str | None = None, exp: str | None = None) -> str:
    """The commit sha of a git ``rev`` or of the DVC experiment named ``exp`` (give one).

    An experiment name can recur across baselines: the one of HEAD wins, else the newest.
    """
    if (rev is None) == (exp is None):
        raise ExperimentError("give one of a git rev or an experiment name")
    if rev is not None:
        sha = _git_commit(root, rev)
        if sha is None:
            raise ExperimentError(f"unknown git rev {rev!r} in {root}")
        return sha
    done = [e for e in show(root, all_commits=True) if e.is_experiment and e.state == "success"]
    named = [e for e in done if e.name == exp]
    if not named:
        known = ", ".join(sorted({e.name for e in done})) or "none (run `make grid` first)"
        raise ExperimentError(f"no DVC experiment named {exp!r} in {root}; experiments: {known}")
    head = _git_commit(root, "HEAD")
    return max(named, key=lambda e: (e.baseline == head, e.timestamp or "")).rev


def get(root: Path, rev: str, paths: Sequence[str], into: Path) -> list[str]:
    """Copy ``paths`` (files or folders) as they are at ``rev`` (a commit, or anything DVC takes as a
    rev) to ``into / path``, from git and the local DVC cache: nothing is pulled. Returns the paths
    copied; those ``rev`` lacks are skipped."""
    # Only commands that read a rev come here: importing dvc.api costs ~0.4-0.5 s.

    copied = []
    try:
        fs = DVCFileSystem(url=str(root), rev=rev)  # repo= would read the workspace, not the rev
        try:
            for path in paths:
                if not fs.exists(path):
                    continue
                (into / path).parent.mkdir(parents=True, exist_ok=True)
                if fs.isdir(path):
                    fs.get(path, str(into / path), recursive=True)
                else:
                    fs.get_file(path, str(into / path))
                copied.append(path)
        finally:
            fs.close()
    except Exception as error:  # noqa: BLE001 - DVC reports a missing cache object in many ways
        raise ExperimentError(
            f"cannot read {', '.join(paths)} of {rev[:12]} in {root} ({type(error).__name__}: {error}); "
            "they come from the local DVC cache: run `dvc fetch --all-commits` "
            "(an experiment's: `dvc exp pull <remote> <name>`) first"
        ) from error
    return copied
