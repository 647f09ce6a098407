"""What of a job's settings may leave the machine in ``loggerSettings``.

Both sides use it: the SDK when it journals the run's effective settings, plutosync when it
builds the create (so a journal written before this rule, or by another writer, never sends
a secret either)::

    shareable_settings({"url_webhook": "https://hooks.slack.com/...", "lr_warmup": 5,
                        "https_proxy": "http://me:pw@proxy:3128"}, api_key=None)
    # -> {"lr_warmup": 5, "https_proxy": "http://me:***@proxy:3128"}
"""

from __future__ import annotations

import re
from typing import Any

# Parts of a name that say its value is a credential (env vars and settings alike).
SECRET_NAMES = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "APIKEY", "CREDENTIAL",
                "PRIVATE_KEY", "ACCESS_KEY")
# the password of a URL's user:password@, up to its last "@" before the path (p@ss@host)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^\s/]*@")
MIN_KEY_LEN = 8  # a shorter "key" would match ordinary values


def no_password(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", url)


def shareable_settings(settings: dict | None, api_key: str | None) -> dict[str, Any]:
    """``settings`` less what must not reach the Pluto server.

    Left out: private settings (``_auth``...), the webhook URL (a Slack or Discord webhook's
    URL is its credential; the stock SDK sends it, this project never does), a setting named
    as a credential (:data:`SECRET_NAMES`) and a string value holding ``api_key``. A URL
    keeps its user but not its password (``https_proxy``).
    """
    key = api_key if api_key and len(api_key) >= MIN_KEY_LEN else None
    out: dict[str, Any] = {}
    for name, value in (settings or {}).items():
        upper = str(name).upper()
        if str(name).startswith("_") or "WEBHOOK" in upper or any(
                m in upper for m in SECRET_NAMES):
            continue
        if isinstance(value, str):
            if key is not None and key in value:
                continue
            value = no_password(value)
        out[name] = value
    return out
