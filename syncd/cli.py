"""The ``plutosync`` command line.

Each sub-command lives in its own module and registers itself with :func:`main`'s parser
through a ``register(subparsers)`` function that sets ``func`` on its parser. ``func(args)``
returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module path -> registers one or more sub-commands
COMMAND_MODULES = [
    "syncd.commands.run",
    "syncd.commands.push",
    "syncd.commands.status",
    "syncd.commands.export",
    "syncd.commands.prune",
    "syncd.server.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plutosync",
        description=(
            "Deliver pluto-offline journals to a Pluto server.\n\n"
            "Jobs log with pluto_offline into a local journal (PLUTO_DIR) and never wait on the "
            "network; plutosync replays that journal to the server in order, retrying until "
            "everything is delivered exactly once.\n\n"
            "The key is read from PLUTO_API_KEY; the server is the Pluto cloud unless "
            "PLUTO_URL_API, PLUTO_URL_INGEST and PLUTO_URL_PY (or --server) name another. "
            "Start with `plutosync run --dir $PLUTO_DIR` beside jobs, or `plutosync push DIR` "
            "for a journal carried out of an offline site; `plutosync COMMAND --help` for more."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from syncd import __version__

    parser.add_argument("--version", action="version", version=f"plutosync {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # sub-command not built yet
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
