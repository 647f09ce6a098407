"""Where the daemon delivers to, and with which key.

URLs come from ``PLUTO_URL_API`` / ``PLUTO_URL_INGEST`` / ``PLUTO_URL_PY`` (the stock client's
variables; unset ones take the cloud defaults), or from ``--server URL``, which points all three
services at one origin (the local ``plutosync serve``). The API key comes only from
``PLUTO_API_KEY``: never from the journal or the command line, where other users could read it.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field

CLOUD_API = "https://pluto-api.trainy.ai"
CLOUD_INGEST = "https://pluto-ingest.trainy.ai"
CLOUD_PY = "https://pluto-py.trainy.ai"

log = logging.getLogger("plutosync")


class SettingsError(Exception):
    """The daemon cannot start with this configuration; the message says what to set."""


@dataclass(frozen=True)
class Settings:
    api_url: str
    ingest_url: str
    py_url: str
    # repr=False: a Settings printed in a traceback or a log line never shows the key.
    api_key: str = field(repr=False)
    verify_tls: bool = True
    timeout: float = 30.0

    @classmethod
    def from_env(
        cls, *, server: str | None = None, insecure: bool = False, timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> Settings:
        env = dict(os.environ if env is None else env)
        key = env.get("PLUTO_API_KEY") or env.get("MLOP_API_KEY") or ""
        if not key:
            raise SettingsError(
                "PLUTO_API_KEY is not set: export the API key of your Pluto server "
                "(Settings → API keys) in the daemon's environment"
            )
        if server:
            origin = server.rstrip("/")
            api = ingest = py = origin
        else:
            api = env.get("PLUTO_URL_API") or env.get("MLOP_URL_API") or CLOUD_API
            ingest = env.get("PLUTO_URL_INGEST") or env.get("MLOP_URL_INGEST") or CLOUD_INGEST
            py = env.get("PLUTO_URL_PY") or env.get("MLOP_URL_PY") or CLOUD_PY
        if insecure:
            log.warning("TLS certificate checks are off (--insecure): use only on a trusted network")
        return cls(api.rstrip("/"), ingest.rstrip("/"), py.rstrip("/"), key, not insecure, timeout)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The connection options shared by ``run`` and ``push``."""
    parser.add_argument(
        "--server", metavar="URL",
        help="serve all three Pluto services from this origin (e.g. http://127.0.0.1:3001 for "
             "plutosync serve); default: PLUTO_URL_API / PLUTO_URL_INGEST / PLUTO_URL_PY, "
             "else the Pluto cloud. The key is always read from PLUTO_API_KEY.",
    )
    parser.add_argument(
        "--insecure", action="store_true",
        help="do not verify the server's TLS certificate (a warning is logged)",
    )
    parser.add_argument(
        "--request-timeout", type=float, metavar="SECONDS", default=None,
        help="give up on an HTTP request the server has not answered after this long and "
             "retry it (default: $PLUTOSYNC_TIMEOUT, else 30)",
    )


def from_args(args: argparse.Namespace) -> Settings:
    timeout = args.request_timeout
    if timeout is None:
        text = os.environ.get("PLUTOSYNC_TIMEOUT") or "30"
        try:
            timeout = float(text)
        except ValueError:
            raise SettingsError(
                f"PLUTOSYNC_TIMEOUT={text!r} is not a number of seconds (e.g. 30)") from None
    if not timeout > 0:
        raise SettingsError(f"the request timeout must be a positive number of seconds, "
                            f"not {timeout}")
    return Settings.from_env(server=args.server, insecure=args.insecure, timeout=timeout)
