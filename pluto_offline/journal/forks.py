"""Writers of forked processes (DataLoader workers, a Pool, ``os.fork``): their ids say so.

A process forked after ``init()`` journals through a writer of its own for the same run
(``pluto_offline/forking.py``). Such a writer never ends the run: its process exiting,
cleanly or by ``os._exit`` (as Pool and DataLoader workers do), is a worker going away, not the
job. So the killed rule (``recovery``), an attach-only journal (``only_attached``) and the
run's local state (``plutosync status``) look past it. Marked by its id, so journals need no
new column:

>>> forked(fork_writer_id("4f0c")), forked("4f0c")
(True, False)
"""

from __future__ import annotations

PREFIX = "fork:"


def fork_writer_id(unique: str) -> str:
    return PREFIX + unique


def forked(writer_id: str) -> bool:
    return writer_id.startswith(PREFIX)
