"""Shared test set-up: fixture plugins, one module each.

Runs opened inside the pytest process itself do not capture its console: pytest keeps copies
of the fds it captures, so a console helper of such a run would never see the end of its
streams and would hold the journal open past the test. Jobs run as subprocesses get the
default (their environment drops ``PLUTO_*``), which is what the console tests check. Nor do
they sample system metrics, whose ``sys/`` points the tests of exact series do not expect.
"""

import os

os.environ.setdefault("PLUTO_DISABLE_CONSOLE", "1")
os.environ.setdefault("PLUTO_DISABLE_SYSTEM_METRICS", "1")

pytest_plugins = ["tests.fixtures.server"]
