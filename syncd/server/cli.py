"""``plutosync serve``: run the local Pluto-compatible server.

    plutosync serve --port 3001 --data ./server-data
    plutosync serve --api-key "$KEY" --fault 503,path=/ingest/metrics,count=3
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sqlite3
import sys
import threading
from typing import Any

from syncd.server.app import App
from syncd.server.db import Database
from syncd.server.faults import FaultTable, parse_spec
from syncd.server.http import PlutoHTTPServer

DEFAULT_DATA = os.path.join("~", ".plutosync", "server")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run a local Pluto-compatible server (api, ingest and py on one origin)",
        description=(
            "Serve the Pluto HTTP contract from one SQLite file. Point clients at it with "
            "PLUTO_URL_API, PLUTO_URL_INGEST and PLUTO_URL_PY all set to the printed URL."
        ),
        epilog=(
            "On the first start with no key stored and no --api-key, a new key is created and "
            "printed once, after the server listens. The data directory (0700 when created) "
            "and its files are created only once the port is taken; pluto-server.db is 0600 "
            "(it holds the keys' hashes). exit codes: 0 stopped (SIGTERM, Ctrl-C), 2 could not "
            "start (the port busy, a bad --fault: nothing is created then; a data directory "
            "it cannot use). Example: `plutosync serve --port 0 --data /tmp/pluto-srv`, then "
            "paste the printed `export PLUTO_URL_...` line and the key into the shell of the "
            "job and of `plutosync run`."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=3001,
                        help="port (default 3001; 0: any free port)")
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"data directory (default {DEFAULT_DATA})")
    parser.add_argument(
        "--api-key", default=os.environ.get("PLUTOSYNC_SERVER_API_KEY"),
        help="accept this API key (added to the store; env PLUTOSYNC_SERVER_API_KEY)",
    )
    parser.add_argument(
        "--fault", action="append", default=[], metavar="SPEC",
        help="inject a fault, e.g. 503,path=/ingest/metrics,count=3 (repeatable; see docs/server.md)",
    )
    parser.add_argument("--reaper-heartbeat-timeout", type=float, default=150.0, metavar="S",
                        help="mark RUNNING runs FAILED after S seconds without heartbeat (150)")
    parser.add_argument("--reaper-initial-timeout", type=float, default=1800.0, metavar="S",
                        help="... or S seconds if the run never sent a heartbeat (1800)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.set_defaults(func=serve)


def _ensure_key(db: Database, api_key: str | None) -> str | None:
    """Store the given key, or create one on first start; returns a key to show, if new."""
    if api_key:
        db.add_key(api_key)
        return None
    if db.has_keys():
        return None
    fresh = "plt_" + secrets.token_urlsafe(24)
    db.add_key(fresh)
    return fresh


def serve(args: argparse.Namespace) -> int:
    try:
        rules = [parse_spec(spec) for spec in args.fault]
    except ValueError as exc:
        print(f"plutosync serve: bad --fault: {exc}", file=sys.stderr)
        return 2
    # Listen first: a start that fails (the port busy) leaves nothing behind, no data
    # directory, no database, no key. Requests wait in the backlog until the app is set.
    try:
        server = PlutoHTTPServer((args.host, args.port), None,  # type: ignore[arg-type]
                                 verbose=args.verbose)
    except OSError as exc:
        print(f"plutosync serve: cannot listen on {args.host}:{args.port}: "
              f"{exc.strerror or exc}; nothing was created (choose another --port, or 0 "
              "for any free one)", file=sys.stderr)
        return 2
    data = os.path.expanduser(args.data)
    existed = os.path.isdir(data)
    try:
        db = Database(data)
        app = App(db, "", FaultTable(rules), (args.reaper_heartbeat_timeout,
                                              args.reaper_initial_timeout))
    except (OSError, sqlite3.Error) as exc:
        server.server_close()
        left = ""
        if not existed and os.path.isdir(data):  # say exactly what this start left
            names = sorted(os.listdir(data))
            left = f"; left behind: {data}/ ({', '.join(names) if names else 'empty'})"
        print(f"plutosync serve: cannot use the data directory {data}: "
              f"{getattr(exc, 'strerror', None) or exc}{left} (choose another with --data)",
              file=sys.stderr)
        return 2
    server.app = app
    # only now, listening: a key created by a start that failed would never be shown
    fresh_key = _ensure_key(db, args.api_key)
    host, port = server.server_address[:2]
    url = f"http://{'[' + host + ']' if ':' in str(host) else host}:{port}"
    app.runs.base_url = url

    # Short GIL slices: the writer gets the GIL back soon after each SQLite step.
    sys.setswitchinterval(0.0005)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    threading.Thread(target=_reap_loop, args=(app, stop), name="reaper", daemon=True).start()

    banner = [
        f"plutosync serve: listening on {url} (data: {db.path})",
        f"  export PLUTO_URL_API={url} PLUTO_URL_INGEST={url} PLUTO_URL_PY={url}",
    ]
    if fresh_key:
        banner.append(f"  new API key (shown once): {fresh_key}")
    elif not args.api_key:
        banner.append(f"  API keys: those stored in {db.path} (only their hashes: a key shown "
                      "once cannot be shown again); add one with --api-key or "
                      "PLUTOSYNC_SERVER_API_KEY")
    print("\n".join(banner), flush=True)  # one write: readers see all of it or none
    stop.wait()
    server.shutdown()
    server.server_close()
    db.close()
    return 0


def _reap_loop(app: App, stop: threading.Event) -> None:
    heartbeat_timeout, initial_timeout = app.reaper
    interval = max(0.1, min(5.0, heartbeat_timeout / 4, initial_timeout / 4))
    while not stop.wait(interval):
        try:
            app.runs.reap(heartbeat_timeout, initial_timeout)
        except Exception as exc:  # keep reaping; a locked db clears up
            print(f"plutosync serve: reaper: {exc}", file=sys.stderr)
