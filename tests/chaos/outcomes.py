"""What the chaos oracle counts and what it is told: the failure classes (:class:`Counts`),
what happened to each writer, push and export, and the rules shared by its expectations
(the status order, config merging, the points a forked worker reported)."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from tests.chaos.schedule import Schedule, Writer
from tests.chaos.trainer import value

SEVERITY = {"COMPLETED": 1, "TERMINATED": 2, "CANCELLED": 3, "FAILED": 4}


FAILURES = ("lost", "phantom", "dup_points", "dup_runs", "wrong_state", "stuck", "rejected",
            "writer_errors", "daemon_exits", "dup_data", "conflict", "unrecorded",
            "push_errors", "mismatched")


# Issue 8 item 9: a run whose last writer was SIGKILLed is reported FAILED {"reason": "killed"}
# (769305f). True accepts the old outcome too (left RUNNING) in single-journal schedules, to
# run the suite against a daemon from before the rule.
KILLED_MAY_STAY_RUNNING = False


SLACK_S = 0.5  # a metrics event's time is its first record's: up to a fold interval earlier


EXIT_CODES = {"finish": {0}, "fail": {0}, "close": {0}, "atexit": {0}, "exception": {1},
              "sigterm": {143, -15}, "sigkill": {-9}}


PUSH_TIMEOUT = 60  # plutosync push --timeout: give up retrying transient errors after this
# what push says of a run left for a transient reason (syncd/client.py's describe())
TRANSIENT_WORDS = ("cannot reach", "timed out", "HTTP 5", "HTTP 429")


class ServerReads(Protocol):
    def list_runs(self, project: str, **params: Any) -> list[dict[str, Any]]: ...
    def metrics(self, run_id: int, project: str, name: str | None = None,
                **params: Any) -> list[dict[str, Any]]: ...
    def metric_names(self, project: str, run_id: int | None = None) -> list[str]: ...
    def metric_counts(self, run_id: int) -> dict[str, int]: ...


@dataclass
class Counts:
    lost: int = 0
    phantom: int = 0
    dup_points: int = 0
    dup_runs: int = 0
    wrong_state: int = 0
    stuck: int = 0
    rejected: int = 0
    writer_errors: int = 0
    daemon_exits: int = 0
    dup_data: int = 0
    conflict: int = 0
    unrecorded: int = 0
    push_errors: int = 0
    mismatched: int = 0  # a file or histogram on the server that differs from what was logged
    # figures, not failures
    pushes_timed_out: int = 0  # pushes whose --timeout ran out under faults
    points_checked: int = 0
    strings_checked: int = 0
    absorbed_duplicates: int = 0  # replays the server deduplicated (received - stored)
    resent_strings: int = 0  # string rows stored twice after a request without an answer
    concurrent_copies: int = 0  # runs whose copies two processes delivered at once
    lines_checked: int = 0  # console lines (tests/chaos/extras.py)
    rows_checked: int = 0  # histogram rows
    files_checked: int = 0  # images and artifacts
    runs: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(getattr(self, k) for k in FAILURES)

    def add(self, kind: str, n: int, why: str) -> None:
        if n:
            setattr(self, kind, getattr(self, kind) + n)
            self.details.append(f"{kind} +{n}: {why}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Launch:
    """What happened to one writer at run time (filled in by the runner)."""

    exit_code: int | None = None
    fork_step: int | None = None
    run_ref: str | None = None  # what it passed as run_id (a display id for a resume)
    signalled: str | None = None  # sigterm / sigkill sent by the runner
    started: bool = False
    first_step: int | None = None  # an allocation: where the previous one stopped
    signalled_at: float | None = None  # wall clock, just before the signal was sent
    exited_at: float | None = None  # wall clock, when the runner saw it had exited


@dataclass
class PushOutcome:
    """One scheduled ``plutosync push``, as the runner saw it."""

    name: str
    items: tuple[str, ...]
    folder: str | None = None
    damaged: tuple[str, ...] = ()
    started: bool = False
    returncode: int | None = None
    output: str = ""
    hung: bool = False
    left: dict[str, str] = field(default_factory=dict)  # item -> its backlog right after
    # items that only attach to a run whose creating journal was not delivered yet: a daemon
    # may hold them until it is (then the push exits 1 and they are pushed again later)
    waiting: tuple[str, ...] = ()
    # journals whose own daemon ran while this push delivered copies of them: two processes
    # delivering copies of one journal at once may both send a record (docs/delivery.md)
    concurrent: set[str] = field(default_factory=set)
    seconds: float = 0.0  # how long it ran


@dataclass
class ExportOutcome:
    name: str
    journal: str
    while_running: bool = False
    returncode: int | None = None
    output: str = ""


@dataclass
class Delivery:
    """What the delivering processes did (filled in by the runner)."""

    t0: float = 0.0  # wall clock at the schedule's start: explanations count from it
    drained: bool = True  # the drain finished (multi-journal: backlogs are read anyway)
    daemon_exits: list[str] = field(default_factory=list)
    pushes: list[PushOutcome] = field(default_factory=list)
    exports: dict[str, ExportOutcome] = field(default_factory=dict)


def crashed(output: str) -> bool:
    """Whether a process died of an uncaught exception: Python's own traceback, at the start
    of a line (a traceback a log handler printed, indented, was caught and handled)."""
    return any(line.startswith("Traceback (most recent call last):")
               for line in output.splitlines())


def last_words(output: str) -> str:
    """The line that says why a process ended: a crash's exception, else the last line."""
    lines = [x.strip() for x in output.splitlines() if x.strip()]
    if not lines:
        return "(no output)"
    if crashed(output):
        return "traceback: " + lines[-1][:300]
    return lines[-1][:300]


def push_says(output: str, item: str) -> str | None:
    """What push printed about one of its journals (``not delivered from <path>: why``)."""
    for line in output.splitlines():
        line = line.strip()
        for tail in (f"/{item}: ", f"/{item}.db: ", f"/{item}/journal.db: "):
            if line.startswith("not delivered from") and tail in line:
                return line.split(tail, 1)[1][:300]
    return None


def describe_backlog(b: dict[str, Any]) -> str:
    parts = [f"{n} events of {r} pending" for r, n in b["pending"].items()]
    parts += [f"{r} re-assert due" for r in b["reasserts"]]
    if b["spills"]:
        parts.append(f"{b['spills']} spill files unfolded")
    return ", ".join(parts) or "nothing left"


def deep_merge(base: Any, delta: Any) -> Any:
    if not isinstance(base, dict) or not isinstance(delta, dict):
        return copy.deepcopy(delta)
    out = copy.deepcopy(base)
    for k, v in delta.items():
        out[k] = deep_merge(out.get(k), v)
    return out


def _apply_status(current: str, new: str | None) -> str:
    if new is None:
        return current
    if current in SEVERITY and SEVERITY[current] > SEVERITY[new]:
        return current  # the server ignores a lower-severity terminal status
    return new


def _worker_points(lines: list[dict], required: dict[tuple[str, int], float]) -> None:
    """The points a writer's forked worker reported as returned from log()."""
    for x in lines:
        if x["op"] == "wlog":
            required[(x["name"], x["step"])] = value(x["name"], x["step"])


def _same(got: Any, want: float) -> bool:
    try:
        return math.isclose(float(got), want, rel_tol=1e-9, abs_tol=1e-9)
    except (TypeError, ValueError):
        return False


def _first(lines: list[dict], op: str) -> dict | None:
    return next((x for x in lines if x["op"] == op), None)


def run_writers(schedule: Schedule, run_id: str) -> list[Writer]:
    return [w for w in schedule.writers if w.run_id == run_id and w.project is None]
