"""Helpers shared by the operator commands (status, export, prune)."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path

from pluto_offline import journal

# Exit codes: 0 ok, 1 "--check found something", 2 the command could not do its job.
EXIT_OK, EXIT_CHECK, EXIT_ERROR = 0, 1, 2

DIR_HELP = "journal directory or .db file (default: $PLUTO_DIR, else ~/.local/share/pluto-offline)"


def add_command(
    subparsers: argparse._SubParsersAction, name: str, *, help: str, description: str,
    epilog: str, several_dirs: bool = False,
) -> argparse.ArgumentParser:
    """A sub-command parser with the layout every operator command shares, and its --dir."""
    p = subparsers.add_parser(
        name, help=help, description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if several_dirs:
        p.add_argument("--dir", action="append", metavar="D", help=DIR_HELP + "; repeat for several")
    else:
        p.add_argument("--dir", metavar="D", help=DIR_HELP)
    return p


def fail(command: str, message: str) -> int:
    """Print an error the way every plutosync command does, and return the error exit code."""
    print(f"plutosync {command}: {message}", file=sys.stderr)
    return EXIT_ERROR


def journal_file(path: str | None) -> Path:
    """The journal file a ``--dir`` value names (a directory, a ``.db`` file, or the default)."""
    return journal.resolve_path(path)


def open_existing(path: str | None, *, readonly: bool) -> journal.Journal:
    """Open a journal that must already exist; never creates one by mistake.

    Raises :class:`journal.JournalError` with a message that names the path and what to do.
    """
    file = journal_file(path)
    if not readonly:
        # validate read-only first: a writable open would add our schema to any SQLite file
        journal.Journal.open(file, readonly=True).close()
    return journal.Journal.open(file, readonly=readonly, create=False)


def explain(exc: sqlite3.DatabaseError, file: Path) -> journal.JournalError:
    """A clear message for an SQLite error met while reading (damaged file, lock, ...)."""
    return journal._explain(exc, file)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def is_writable(file: Path) -> bool:
    """Whether we may write the journal (and so fold dead writers' spill files first)."""
    return os.access(file, os.W_OK) and os.access(file.parent, os.W_OK)
