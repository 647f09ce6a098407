"""``plutosync prune``: apply the retention rules to a journal now."""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
from dataclasses import asdict

from pluto_offline import journal
from syncd import retention
from syncd.commands._common import EXIT_OK, add_command, explain, fail, journal_file, open_existing

DESCRIPTION = f"""\
Delete events that the server acknowledged more than AGE ago, so that a long-lived journal
stops growing. Safe while jobs and the daemon use the journal.

What is never deleted: events not yet acknowledged (pending), rejected events (kept beside
the server's reason), anything of a run whose job is still running, and each run's newest
event of each kind (a later resume continues its step count from it). Run rows and delivery state
stay, so `plutosync status` still lists every run; its counts then cover the events that remain.

The default age is ${retention.ENV_AGE} when set (e.g. 14d), else {retention.DEFAULT_AGE}.
The freed space is reused by new events; the file itself does not shrink."""

EPILOG = """\
examples:
  plutosync prune --dry-run                 # how many events would go, with the default age
  plutosync prune --dir /scratch/pluto --older-than 2d
  plutosync prune --older-than 0            # every acknowledged event of finished runs

exit codes: 0 done, 2 the journal could not be pruned (the message says why)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "prune", description=DESCRIPTION, epilog=EPILOG,
        help="delete acknowledged events older than an age (never pending ones)",
    )
    p.add_argument("--older-than", metavar="AGE",
                   help=f"a number and a unit: s, m, h, d or w (default: ${retention.ENV_AGE}, "
                   f"else {retention.DEFAULT_AGE})")
    # argparse takes "-5d" for an unknown option ("expected one argument"): let every "-" and
    # digit be a value, so that a negative age gets the message below
    p._negative_number_matcher = re.compile(r"^-\.?\d")
    p.add_argument("--dry-run", action="store_true",
                   help="only count what would be deleted; the journal is opened read-only")
    p.add_argument("--json", action="store_true", help="print the result as a JSON object")
    p.set_defaults(func=run)


def _age(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"


def _older_than(text: str | None) -> float:
    """--older-than in seconds, else the default age; ValueError says which forms are read."""
    if text is None:
        return retention.default_age_s()
    if text.strip().startswith("-"):
        raise ValueError(f"--older-than {text}: an age cannot be negative: write a number and a "
                         "unit, s (seconds), m (minutes), h (hours), d (days) or w (weeks), e.g. "
                         "7d or 12h; 0 prunes every acknowledged event of finished runs")
    return retention.parse_duration(text)  # its message lists the forms it reads


def run(args: argparse.Namespace) -> int:
    try:
        age = _older_than(args.older_than)
    except ValueError as exc:
        return fail("prune", str(exc))
    file = journal_file(args.dir)
    try:
        with open_existing(args.dir, readonly=args.dry_run, command="prune") as j:
            try:
                res = retention.prune_acked(j, age, dry_run=args.dry_run)
            except sqlite3.DatabaseError as exc:
                raise explain(exc, file) from exc
    except journal.JournalError as exc:
        return fail("prune", str(exc))
    if args.json:
        print(json.dumps({"journal": str(file), "older_than_s": age, **asdict(res)}, indent=2))
        return EXIT_OK
    verb = "would delete" if res.dry_run else "deleted"
    line = (f"{verb} {res.events} acknowledged event{'s' * (res.events != 1)} "
            f"of {res.runs} run{'s' * (res.runs != 1)} older than {_age(age)}")
    if res.files:
        line += (f", and the staged bytes of {res.files} delivered file"
                 f"{'s' * (res.files != 1)} ({res.file_bytes} bytes)")
    if res.live_runs_skipped:
        line += f"; {res.live_runs_skipped} running run(s) left alone"
    print(line)
    return EXIT_OK
