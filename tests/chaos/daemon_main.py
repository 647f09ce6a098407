"""``plutosync`` with its HTTP timeout from ``CHAOS_CLIENT_TIMEOUT`` (seconds).

The daemon's timeout is 30 s and has no option yet; the chaos suite's stalls must outlast it
without making each schedule last minutes. Only that setting changes: everything else is the
real ``python -m syncd`` (same CLI, same code paths).
"""

from __future__ import annotations

import dataclasses
import os
import sys

from syncd import cli
from syncd import settings as settings_mod

_from_args = settings_mod.from_args


def _short_timeout(args: object) -> settings_mod.Settings:
    settings = _from_args(args)
    timeout = os.environ.get("CHAOS_CLIENT_TIMEOUT")
    return dataclasses.replace(settings, timeout=float(timeout)) if timeout else settings


settings_mod.from_args = _short_timeout

if __name__ == "__main__":
    sys.exit(cli.main())
