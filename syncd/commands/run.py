"""``plutosync run``: the long-lived delivery service for one journal."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pluto_offline import journal
from syncd import lock, retention
from syncd import settings as settings_mod
from syncd.commands._common import journal_label, no_journal_found, probe_journal
from syncd.daemon import (
    ENV_GIVE_UP,
    GIVE_UP_S,
    HEARTBEAT_S,
    POLL_S,
    PRUNE_EVERY_S,
    Daemon,
    Options,
)
from syncd.lock import JournalAccessError, LockHeldError

log = logging.getLogger("plutosync")

DESCRIPTION = """\
Deliver a journal to the Pluto server, continuously: runs are created as soon as the server can
be reached, metrics follow within a second of log(), heartbeats are sent for live jobs, and
failures are retried with backoff (nothing is dropped; refused events are recorded and shown by
`plutosync status`). Stop it with SIGTERM or Ctrl-C: the request in flight is finished and
acknowledged first. Only one plutosync may deliver a journal at a time, run as the user whose
jobs write it. Started before any job wrote the journal, it waits for it (and says so once);
with --once, a path with no journal is an error. A refused API key ends --once at once.

The API key is read from PLUTO_API_KEY; server URLs from PLUTO_URL_API, PLUTO_URL_INGEST and
PLUTO_URL_PY (or --server).

With --exit-when-idle (the daemon a job starts), once no job writes the journal and what is
left cannot go without a person's fix (the key is refused, or the URL answers nothing like a
Pluto server), it gives up after --give-up-after, exit 1, saying why in its log and beside the
journal (plutosync status shows it); everything stays in the journal for a later push.

exit codes: 0 stopped or done, 1 --once left something undelivered (or --exit-when-idle gave
up), 2 could not start."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="deliver a journal continuously (the service)", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dir", metavar="D", default=None,
                   help="journal directory or .db file (default: PLUTO_DIR, else "
                        f"{journal.default_dir()})")
    settings_mod.add_arguments(p)
    p.add_argument("--exit-when-idle", action="store_true",
                   help="exit once nothing is left to deliver and no job is writing the journal "
                        "(used when jobs start the daemon themselves)")
    p.add_argument("--give-up-after", metavar="DURATION", default=None,
                   help=f"with --exit-when-idle: how long to keep trying a refused key or a URL "
                        f"that answers nothing Pluto-like once no job writes the journal "
                        f"(default: ${ENV_GIVE_UP}, else {GIVE_UP_S / 60:.0f}m)")
    p.add_argument("--once", action="store_true",
                   help="deliver what is pending now, then exit (1 if anything is left)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", default=None,
                   help="with --once: stop retrying transient errors after this long "
                        "(default: keep retrying)")
    p.add_argument("--poll", type=float, metavar="SECONDS", default=POLL_S,
                   help=f"check the journal at least this often (default {POLL_S}; file "
                        "notifications make it sooner on local disks)")
    p.add_argument("--heartbeat", type=float, metavar="SECONDS", default=HEARTBEAT_S,
                   help=argparse.SUPPRESS)
    p.add_argument("--retention", metavar="AGE", default=None,
                   help="every hour, delete delivered events older than AGE (e.g. 7d, 12h; "
                        "pending events and runs still being written are never touched); "
                        f"'off' keeps everything (default: ${retention.ENV_AGE}, else "
                        f"{retention.DEFAULT_AGE})")
    p.add_argument("--prune-every", type=float, metavar="SECONDS", default=PRUNE_EVERY_S,
                   help=argparse.SUPPRESS)
    p.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    p.set_defaults(func=main)


def setup_logging(quiet: bool = False) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s plutosync[%(process)d] %(levelname)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S", stream=sys.stderr,
    )


def main(args: argparse.Namespace) -> int:
    setup_logging(args.quiet)
    try:
        settings = settings_mod.from_args(args)
    except settings_mod.SettingsError as exc:
        print(f"plutosync run: {exc}", file=sys.stderr)
        return 2
    try:
        retention_s = _retention(args.retention)
    except ValueError as exc:
        print(f"plutosync run: {exc}", file=sys.stderr)
        return 2
    try:
        give_up = _give_up_after(args.give_up_after)
    except ValueError as exc:
        print(f"plutosync run: {exc}", file=sys.stderr)
        return 2
    options = Options(exit_when_idle=args.exit_when_idle, once=args.once, timeout=args.timeout,
                      poll=args.poll, heartbeat=args.heartbeat, retention_s=retention_s,
                      prune_every=args.prune_every, give_up_after=give_up)
    try:
        file = lock.resolve(args.dir)
        lock.check_owner(file)  # before looking for it: another user's is named as such
        if args.once and not file.exists():
            print(f"plutosync run: {no_journal_found(journal_label(file))}", file=sys.stderr)
            return 2
        daemon = Daemon(file, settings, options)
        daemon.install_signal_handlers()
        if not _journal_appears(daemon, file, options):
            return 0
        return daemon.run()
    except (LockHeldError, JournalAccessError) as exc:
        print(f"plutosync run: {exc}", file=sys.stderr)
        return 2
    except journal.JournalError as exc:
        print(f"plutosync run: {exc}", file=sys.stderr)
        return 2


def _journal_appears(daemon: Daemon, file: Path, options: Options) -> bool:
    """Wait for jobs to create the journal (a service started before any job), saying once
    that it waits and where; False when stopped meanwhile, or at once with --exit-when-idle
    (nothing to deliver)."""
    if file.exists():
        return True
    where = journal_label(file)
    if options.exit_when_idle:
        log.info("nothing to deliver: no journal in %s yet; exiting", where)
        return False
    log.info("waiting for a journal in %s: no job has written one there yet (jobs create it "
             "at their first init() with PLUTO_DIR=%s)", where, where)
    while not daemon.stop.wait(options.poll):
        if file.exists() and probe_journal(file).kind != "empty":  # not while being created
            return True
    return False


def _retention(text: str | None) -> float | None:
    if text is None:
        return retention.default_age_s()
    if text.strip().lower() in ("off", "never", "none"):
        return None
    try:
        return retention.parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"--retention: {exc}") from None


def _give_up_after(text: str | None) -> float:
    """--give-up-after, else $PLUTOSYNC_GIVE_UP (the SDK's autostart passes it through the
    environment), else GIVE_UP_S."""
    where = "--give-up-after"
    if text is None:
        text, where = os.environ.get(ENV_GIVE_UP), ENV_GIVE_UP
    if not text:
        return GIVE_UP_S
    try:
        return retention.parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
