"""Bad-input tests: a hypothesis profile sized for CI, and a clean environment.

``HYPOTHESIS_PROFILE=thorough pytest tests/badinput`` runs many more examples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _no_pluto_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No key or URL: init() must not start a daemon; no PLUTO_RUN_ID steering ids."""
    for var in list(os.environ):
        if var.startswith(("PLUTO_", "MLOP_")):
            monkeypatch.delenv(var)
    yield
    import pluto_offline

    for run in list(pluto_offline.ops):  # a failing example must not leak open runs
        run.close()
