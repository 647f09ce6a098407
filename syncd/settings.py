"""Where the daemon delivers to, and with which key.

URLs come from ``PLUTO_URL_API`` / ``PLUTO_URL_INGEST`` / ``PLUTO_URL_PY`` (the stock client's
variables; unset ones take the cloud defaults), or from ``--server URL``, which points all three
services at one origin (the local ``plutosync serve``). The API key comes only from
``PLUTO_API_KEY``: never from the journal or the command line, where other users could read it.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import urllib.parse
from dataclasses import dataclass, field

CLOUD_API = "https://pluto-api.trainy.ai"
CLOUD_INGEST = "https://pluto-ingest.trainy.ai"
CLOUD_PY = "https://pluto-py.trainy.ai"

log = logging.getLogger("plutosync")


class SettingsError(Exception):
    """The daemon cannot start with this configuration; the message says what to set."""


# (service, its variables in the order they are read, the cloud default)
URL_VARS = (
    ("api", ("PLUTO_URL_API", "MLOP_URL_API"), CLOUD_API),
    ("ingest", ("PLUTO_URL_INGEST", "MLOP_URL_INGEST"), CLOUD_INGEST),
    ("py", ("PLUTO_URL_PY", "MLOP_URL_PY"), CLOUD_PY),
)


def _suggest(value: str) -> str:
    """``value`` with a scheme: http:// for a local or numbered host or one with a port (a
    ``plutosync serve``), https:// for a plain host name."""
    if "://" in value:
        return value
    rest = value.lstrip("/")
    host = rest.split("/", 1)[0]
    name, _, port = host.rpartition(":") if ":" in host else (host, "", "")
    try:
        ipaddress.ip_address(name.strip("[]"))
        local = True
    except ValueError:
        local = name == "localhost" or not name
    return ("http://" if port or local else "https://") + rest


def check_url(value: str, name: str) -> str:
    """``value`` without a trailing slash if it is an http(s) URL with a host, else SettingsError.

    ``name`` is where it came from: ``--server`` or an environment variable. Without this, a
    requests error (no scheme, bad port) looks like a network outage and is retried forever.
    """
    given = f"--server {value}" if name == "--server" else f"{name}={value}"
    fix = "--server {}" if name == "--server" else name + "={}"
    if not value.strip():
        raise SettingsError(f"{name} is empty: give the server's address, "
                            f"e.g. {fix.format('http://127.0.0.1:3001')}")
    if any(c.isspace() for c in value):  # e.g. a quoted " http://..." in a job script
        shown = f"--server {value!r}" if name == "--server" else f"{name}={value!r}"
        inner = value.strip()
        example = "http://127.0.0.1:3001" if any(c.isspace() for c in inner) else _suggest(inner)
        raise SettingsError(f"{shown} is not a URL: it holds a space; give the address alone, "
                            f"e.g. {fix.format(example)}")
    parts = urllib.parse.urlsplit(value)
    if "://" not in value:
        if parts.scheme in ("http", "https"):  # http:host, http:/host
            rest = value.split(":", 1)[1].lstrip("/")
            example = f"{parts.scheme}://{rest}"
        else:
            example = _suggest(value)
        raise SettingsError(f"{given} is not a URL: give its scheme, e.g. {fix.format(example)}")
    if parts.scheme not in ("http", "https"):
        raise SettingsError(f"{given}: only http:// and https:// addresses are accepted, not "
                            f"{parts.scheme}://")
    if not parts.hostname:
        raise SettingsError(f"{given} has no host: give the server's address, e.g. "
                            f"{fix.format(parts.scheme + '://127.0.0.1:3001')}")
    try:
        parts.port  # noqa: B018 -- raises for a port that is not a number in 0-65535
    except ValueError:
        raise SettingsError(f"{given} has a bad port: give a number up to 65535, e.g. "
                            f"{fix.format(parts.scheme + '://' + parts.hostname + ':3001')}"
                            ) from None
    return value.rstrip("/")


def _mixed_destinations(env: dict[str, str]) -> str | None:
    """Why the PLUTO_URL_* variables must not be taken as they are, or None.

    Some are set to a server of the user's own while others are left unset: those would default
    to the Pluto cloud, so runs created on one server would send their metrics, files and API
    key to another that nobody named (the stock SDK does so silently). All three set: whatever
    they are is meant. Set ones equal to the cloud's own addresses: it is all the cloud.
    """
    named, unset = [], []
    for _service, names, cloud in URL_VARS:
        found = next((n for n in names if env.get(n)), None)
        if found is None:
            unset.append(names[0])
        elif env[found].rstrip("/") != cloud:
            named.append(found)
    if not named or not unset:
        return None
    verb = "is" if len(named) == 1 else "are"
    left = " and ".join(unset)
    return (f"{' and '.join(named)} {verb} set but {left} {'is' if len(unset) == 1 else 'are'} "
            f"not, so {'it' if len(unset) == 1 else 'they'} would default to the Pluto cloud, "
            f"which would get your runs' data and API key: set all of PLUTO_URL_API, "
            f"PLUTO_URL_INGEST and PLUTO_URL_PY (the same URL for one server such as plutosync "
            f"serve), or give --server URL instead")


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
        env: dict[str, str] | None = None, one_destination: bool = False,
    ) -> Settings:
        """``one_destination``: refuse PLUTO_URL_* variables that leave some services at the
        cloud defaults while others point elsewhere (as the command line does)."""
        env = dict(os.environ if env is None else env)
        key = env.get("PLUTO_API_KEY") or env.get("MLOP_API_KEY") or ""
        if not key:
            raise SettingsError(
                "PLUTO_API_KEY is not set: export the API key of your Pluto server "
                "(Settings → API keys) in the daemon's environment"
            )
        if server is not None:  # it overrides the variables, so they are not looked at
            api = ingest = py = check_url(server, "--server")
        else:
            urls = []
            for _service, names, cloud in URL_VARS:
                found = next((n for n in names if env.get(n)), None)
                urls.append(check_url(env[found], found) if found else cloud)
            api, ingest, py = urls
            if one_destination and (why := _mixed_destinations(env)):
                raise SettingsError(why)
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
    return Settings.from_env(server=args.server, insecure=args.insecure, timeout=timeout,
                             one_destination=True)
