"""The writer's backoff while its journal cannot be written (issue 12 item 14): what keeps
``log()`` cheap on a full disk is that a failed fold is not retried on every call. The cost
itself is measured by ``scripts/bench_disk_full.py``; here the policy, on a clock we step."""

from __future__ import annotations

import pytest

from pluto_offline import outage
from pluto_offline.outage import CAP_S, FIRST_S, Outage
from pluto_offline.spill import SpillFull


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(outage.time, "monotonic", lambda: now[0])
    return now


def test_failed_folds_back_off_doubling_to_the_cap_and_a_success_ends_it(clock):
    o = Outage()
    assert o.ready()
    delay = FIRST_S
    for _ in range(8):  # 0.05, 0.1, 0.2 ... s, then CAP_S: space freed is seen within CAP_S
        o.failed(OSError("the disk is full (No space left on device)"))
        assert not o.ready()  # log() right after a failure pays for no retry
        clock[0] += delay - 1e-6
        assert not o.ready()
        clock[0] += 2e-6
        assert o.ready()
        delay = min(CAP_S, delay * 2)
    assert delay == CAP_S
    assert o.recovered() is True  # it ended an outage
    assert o.ready() and o.recovered() is False
    o.failed(OSError("the disk is full"))
    clock[0] += FIRST_S
    assert o.ready()  # a new outage starts from the first delay again


def test_dropped_records_are_counted_by_reason(clock):
    o = Outage()
    o.failed(OSError("the disk is full (No space left on device)"))
    assert o.drop(SpillFull("the spill file is full", outage.NOT_WRITABLE)) is True
    assert o.drop(SpillFull("the spill file is full", outage.NOT_WRITABLE)) is False
    o.failed(OSError("attempt to write a readonly database"))
    o.drop(OSError("attempt to write a readonly database"))
    o.drop(SpillFull("too large", outage.TOO_LARGE))
    assert o.by_reason() == {outage.DISK_FULL: 2, outage.NOT_WRITABLE: 1, outage.TOO_LARGE: 1}
    assert o.total() == 4 and o.unjournaled()
