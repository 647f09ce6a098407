"""``plutosync status``: what each run did locally and how much of it reached the server."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from pluto_offline import journal
from pluto_offline.journal import daemon_exit, drops
from syncd import runstate
from syncd.commands._common import (
    EXIT_CHECK,
    EXIT_ERROR,
    EXIT_OK,
    add_command,
    explain,
    fail,
    journal_file,
    open_existing,
)

DESCRIPTION = """\
Show every run in one or more journals: its local state, and how many of its events are
pending (not yet acknowledged by the server), delivered, or rejected for good.

A run is "synced" only when nothing is pending and nothing was rejected. Rejected events are
listed with the server's reason under the table; they are never dropped silently. Nor is a
logged file lost before it was staged (its source changed or deleted first, the staging quota):
a run with any is not synced, and each is listed with the reason. A run whose
request got no answer is not synced until plutosync has sent its final config/tags/status
again, once that request can no longer land late (three request timeouts later).

Local states: running (a writer process is alive), finished (COMPLETED), failed, terminated
(SIGTERM/SIGINT), cancelled, closed (close(): the job detached without ending the run),
killed (the writer died without ending the run: SIGKILL, OOM, node loss), unknown.

The journal is opened read-only: status is safe on a journal that jobs and a daemon are
writing, on a copy on read-only media, and on another user's journal opened to you (read
access is enough; nothing is created beside it)."""

EPILOG = """\
examples:
  plutosync status                          # the journal in $PLUTO_DIR (or the default)
  plutosync status --dir /scratch/pluto --dir /scratch/old.db
  plutosync status --json | jq '.[] | select(.synced | not)'
  plutosync status --check && echo "all delivered"   # exit 1 while anything is unsynced

Before any job wrote the default journal: "no runs yet (journal: PATH)" (--json: []), exit 0.

exit codes: 0 shown (also with pending events unless --check), 1 --check found a run not
synced (pending or rejected events, files left, refused or lost), 2 a journal could not be read
(or a --dir holds none)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "status", description=DESCRIPTION, epilog=EPILOG, several_dirs=True,
        help="show runs and their delivery state (pending / delivered / rejected)",
    )
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of runs (stable keys, see docs/cli.md) instead of a table")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when any run is not synced: pending or rejected events, files "
                        "left, refused or lost (for scripts)")
    p.set_defaults(func=run)


def collect(dirs: list[str | None]) -> list[runstate.RunStatus]:
    """Status rows of every run in the given journals; raises JournalError on the first bad one."""
    rows: list[runstate.RunStatus] = []
    for d in dirs:
        rows.extend(_one(d))
    return rows


def _one(d: str | None) -> list[runstate.RunStatus]:
    file = journal_file(d)
    with open_existing(d, readonly=True) as j:
        try:
            return runstate.journal_status(j)
        except sqlite3.DatabaseError as exc:
            raise explain(exc, file) from exc


def run(args: argparse.Namespace) -> int:
    # One damaged journal must not hide the others: show them, then name it and exit 2.
    rows: list[runstate.RunStatus] = []
    readable: list[str | None] = []
    errors: list[str] = []
    not_yet: list[Path] = []  # the default journal, before any job wrote it
    for d in args.dir or [None]:
        if d is None and not journal_file(None).exists():
            not_yet.append(journal_file(None))
            continue
        try:
            rows.extend(_one(d))
            readable.append(d)
        except journal.JournalError as exc:
            errors.append(str(exc))
    if args.json and (readable or not errors):
        json.dump([{**r.to_json(), "daemon_exit": _exit_json(r)} for r in rows], sys.stdout,
                  indent=2)
        print()
    elif readable:
        _print_table(rows, [journal_file(d) for d in readable])
    elif not_yet and not errors:
        print(f"no runs yet (journal: {runstate.journal_label(not_yet[0])})")
    for message in errors:
        fail("status", message)
    if errors:
        return EXIT_ERROR
    counts = runstate.summary(rows)
    if args.check and counts["synced"] < counts["runs"]:
        return EXIT_CHECK
    return EXIT_OK


def exit_verb(gone: daemon_exit.DaemonExit) -> str:
    """A daemon that could not start "exited at once"; one that gave up (--exit-when-idle,
    syncd.daemon) ran a while first."""
    return "gave up and exited" if gone.reason.startswith("gave up") else "exited at once"


def _exit_json(r: runstate.RunStatus) -> dict | None:
    """The note an autostarted daemon's exit left beside the journal, while no plutosync
    delivers it (as the table shows it), else None."""
    if r.daemon_pid:
        return None
    gone = daemon_exit.read(Path(r.journal))
    if gone is None:
        return None
    return {"pid": gone.pid, "code": gone.code, "at": gone.at, "reason": gone.reason,
            "log": gone.log}


def _print_table(rows: list[runstate.RunStatus], files: list[Path]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # piped into a file or a log: no terminal width to respect, so don't fold cells at 80
    console = Console(highlight=False, soft_wrap=True,
                      width=None if sys.stdout.isatty() else 200)
    if not rows:
        where = ", ".join(runstate.journal_label(f) for f in files)
        console.print(f"no runs in {where}")
        return
    several = len(files) > 1
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    if several:
        table.add_column("journal", overflow="fold")
    for col in ("project/name", "run id", "server", "state"):
        table.add_column(col, overflow="fold")
    for col in ("pending", "delivered", "rejected"):
        table.add_column(col, justify="right")
    # files lost before they were staged: a column only where there are any (as push's files)
    lost_col = any(r.files.get("lost") for r in rows)
    if lost_col:
        table.add_column("lost files", justify="right")
    table.add_column("synced")
    state_style = {"running": "cyan", "finished": "green", "killed": "red", "failed": "red"}
    notes: list[str] = []
    for r in rows:
        who = f"{escape(r.project)}/{escape(r.name or r.run_id)}"
        cells = [who, escape(r.run_id), r.display_id or "-",
                 f"[{state_style.get(r.state, 'default')}]{r.state}[/]",
                 str(r.pending), str(r.delivered),
                 f"[red]{r.rejected}[/]" if r.rejected else "0",
                 "[green]yes[/]" if r.synced else "[yellow]no[/]"]
        if lost_col:
            lost = r.files.get("lost", 0)
            cells.insert(-1, f"[red]{lost}[/]" if lost else "0")
        if several:
            cells.insert(0, escape(runstate.journal_label(Path(r.journal))))
        table.add_row(*cells)
        if r.conflict:
            notes.append(f"[red]conflict[/] {who}: {escape(r.conflict)}")
        if r.last_error:
            retry = (f" (attempt {r.attempts}, next try {runstate.clock(r.next_try)})"
                     if r.next_try else "")
            notes.append(f"[yellow]error[/] {who}: {escape(r.last_error)}{retry}")
        if r.reassert_due is not None:
            notes.append(f"[yellow]re-assert[/] {who}: final config/tags/status to be sent again "
                         f"at {runstate.clock(r.reassert_due)} "
                         "(a request got no answer and may land late)")
        for d in r.dropped:  # never journaled: the job could not write (a full disk)
            notes.append(f"[red]dropped[/] {who}: {drops.describe(d['records'], d['reason'])}")
        notes += _file_notes(who, r.files)
        for rej in r.rejections:
            code = f" {rej['code']}" if rej["code"] is not None else ""
            notes.append(f"[red]rejected[/] {who} event {rej['seq']} ({rej['kind']}):{code} "
                         f"{escape(rej['reason'])}")
    console.print(table)
    for note in notes:
        console.print(note)
    for file in files:
        label = escape(runstate.journal_label(file))
        mine = [r for r in rows if r.journal == str(file)]
        pid = next((r.daemon_pid for r in mine if r.daemon_pid), None)
        gone = None if pid else daemon_exit.read(file)  # a job's autostarted daemon died
        if gone is not None:
            console.print(f"{label}: [red]the plutosync a job started {exit_verb(gone)}[/] (pid "
                          f"{gone.pid}, exit {gone.code}, {runstate.clock(gone.at)}): "
                          f"{escape(gone.reason)} — see {escape(gone.log)}")
        if pid:
            console.print(f"{label}: delivered by plutosync (pid {pid})")
        elif any(r.pending or r.reassert_due is not None for r in mine):
            console.print(f"{label}: no plutosync is delivering it; start one with "
                          f"`plutosync run --dir {label}` (or `plutosync push {label}`)")
    c = runstate.summary(rows)
    parts = [f"{c['runs']} run{'s' * (c['runs'] != 1)}", f"{c['synced']} synced"]
    if c["pending"]:
        parts.append(f"{c['pending']} with pending events")
    if c["reassert"]:
        parts.append(f"{c['reassert']} to re-assert")
    if c["rejected"]:
        parts.append(f"{c['rejected']} with rejected events")
    if c["lost"]:
        parts.append(f"{c['lost']} with lost files")
    if c["running"]:
        parts.append(f"{c['running']} running")
    console.print(", ".join(parts))


def _file_notes(who: str, files: dict) -> list[str]:
    """Lines about a run's logged files: what is left to upload, what is lost and why."""
    from rich.markup import escape

    from syncd.commands._common import human_size

    notes = []
    if files.get("pending"):
        unstaged = f", {files['unstaged']} not staged yet" if files["unstaged"] else ""
        notes.append(f"[yellow]files[/] {who}: {files['pending']} to upload "
                     f"({human_size(files['pending_bytes'])}{unstaged}), {files['done']} done")
    if files.get("lost"):
        notes.append(f"[red]files[/] {who}: {files['lost']} file{'s' * (files['lost'] != 1)} "
                     "lost (never uploaded):")
        notes += [f"  {escape(f['log_name'])}/{escape(f['file_name'])}: {escape(f['reason'])}"
                  for f in files["lost_files"]]
    if files.get("rejected"):
        notes.append(f"[red]files[/] {who}: {files['rejected']} refused by the server")
    if files.get("resent"):
        notes.append(f"[yellow]files[/] {who}: {files['resent']} presigned again after a "
                     "presign without an answer (a second row in the UI is possible)")
    return notes
