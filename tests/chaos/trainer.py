"""The chaos workload: one process logging a known workload with ``pluto_offline``.

    python tests/chaos/trainer.py SPEC.json

The spec is a :class:`tests.chaos.schedule.Writer` as JSON plus ``dir``, ``project``,
``report`` (the append-only report file) and, set by the runner at launch, ``run_ref`` (what to
pass as ``run_id``), ``fork_step`` and ``first_step``. Every call is reported on its own line
**after it returned** (state changes also once before, as ``will``: a process killed in
between may or may not have journaled it; ``start`` comes just before ``init()``). Lines are
written with one ``os.write`` on an ``O_APPEND`` file, so a signal never leaves half a line.
Runs as a plain script: it needs only ``pluto_offline``.

Roles: ``trainer`` / ``fork`` create their run; ``eval`` / ``resume`` reattach
(``resume=True``); ``rank`` calls ``init(run_id=os.environ.get("PLUTO_RUN_ID"))`` (the stock
SDK's multi-rank pattern); ``alloc`` calls ``init(run_id=..., resume=<spec>)``. A writer with
``strings`` also logs string-series values (:func:`text`) every ``STRING_EVERY`` steps. A
writer with ``bad`` passes a config the server refuses (``"lr=0.1"``), a huge one
(:func:`huge_config`) or more tags than the server takes; if ``init()`` itself refuses it, that
is reported (``refused``) and the process exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import zlib
from typing import Any

if __name__ == "__main__":  # run as a script: the repository's root is not on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__)))))
from tests.chaos import extras  # noqa: E402

_FD = -1


def report(op: str, **fields: Any) -> None:
    os.write(_FD, (json.dumps({"op": op, "t": time.time(), **fields}) + "\n").encode())


STRING_EVERY = 4  # a writer with strings logs them on every 4th log() call
BAD_CONFIG = "lr=0.1"  # a config the server refuses: JSON text, but not an object
TAG_LIMIT = 50  # the server's tag limit (pluto-api.md)


def value(name: str, step: int) -> float:
    """The value every writer logs for (name, step): the oracle recomputes it."""
    return ((zlib.crc32(name.encode()) + step * 7919) % 100_003) / 7.0


def text(name: str, step: int) -> str:
    """The string-series value every writer logs for (name, step)."""
    return f"{name}@{step}"


def huge_config() -> dict:
    """A ~9 MB config: more than the daemon's 8 MiB cap on a server answer."""
    return {"huge": True, "blob": {f"k{i:05d}": "x" * 1000 for i in range(9000)}}


def string_step(index: int) -> bool:
    """Whether the ``index``-th log() call of a writer with strings also logs them."""
    return index % STRING_EVERY == 0


def _on_sigterm(signum: int, frame: object) -> None:
    # A user's handler, run by the SDK's first (docs/sdk.md): leaving by sys.exit ends the
    # run TERMINATED (os._exit would skip every hook: killed).
    report("end", how="sigterm")
    sys.exit(143)


def _excepthook(tp: type, exc: BaseException, tb: object) -> None:
    # Chained to by the SDK's hook once it journaled FAILED.
    report("end", how="exception")
    sys.stderr.write(f"chaos trainer: {tp.__name__}: {exc}\n")


def _wait_file(path: str | None, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while path and not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def main(spec_path: str) -> int:
    global _FD
    with open(spec_path) as f:
        spec = json.load(f)
    _FD = os.open(spec["report"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    # Installed before init(): the SDK's own hooks run first, then chain to these.
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.excepthook = _excepthook
    import pluto_offline as pluto

    kwargs: dict[str, Any] = {"dir": spec["dir"], "project": spec["project"],
                              "name": spec.get("run_name") or spec["name"],
                              "settings": {"autostart": False}}
    role = spec["role"]
    config = spec["config"]
    if spec.get("bad") == "config_str":
        config = BAD_CONFIG
    elif spec.get("bad") == "huge_config":
        config = huge_config()
    tags = list(spec["tags"])
    if spec.get("bad") == "too_many_tags":  # past the server's 50-tag limit: init() refuses
        tags += [f"extra-{i}" for i in range(TAG_LIMIT + 1 - len(tags))]
    if role == "trainer":
        kwargs.update(run_id=spec["run_id"], config=config, tags=tags)
    elif role == "fork":
        kwargs.update(run_id=spec["run_id"], config=config, tags=list(spec["tags"]),
                      fork_run_id=spec["parent"], fork_step=spec["fork_step"])
    elif role == "rank":  # PLUTO_RUN_ID is in the environment (the runner set it)
        kwargs.update(run_id=os.environ.get("PLUTO_RUN_ID"), config=config,
                      tags=list(spec["tags"]))
    elif role == "alloc":
        kwargs.update(run_id=spec["run_id"], config=config, tags=list(spec["tags"]),
                      resume=bool(spec.get("resume")))
    else:  # eval / resume: reattach to an existing run
        kwargs.update(run_id=spec.get("run_ref") or spec["run_id"], resume=True)
    report("start")
    try:
        run = pluto.init(**kwargs)
    except (TypeError, ValueError) as exc:
        if not spec.get("bad"):
            raise
        report("refused", error=f"{type(exc).__name__}: {exc}")  # the SDK said no: fine
        return 0
    report("init", step=run.step, config=run.config if not spec.get("bad") else None,
           tags=list(run.tags), run_id=run.run_id, pid=os.getpid())
    ops = {}
    for op in spec["ops"]:
        ops.setdefault(op["index"], []).append(op)
    names = spec["names"]
    strings = spec.get("strings") or ()
    worker = spec.get("worker")
    for i in range(spec["steps"]):
        if worker and i == worker[0]:
            _fork_worker(run, spec["name"], worker[1], worker[2])
        for op in ops.get(i, ()):
            _state_change(run, op)
        step = spec["first_step"] + i if spec["explicit_steps"] else run.step + 1
        data: dict[str, Any] = {n: value(n, step) for n in names}
        if strings and string_step(i):
            data.update((n, text(n, step)) for n in strings)
        extras.record(pluto, spec, i, step, data)
        run.log(data, step=step if spec["explicit_steps"] else None)
        if run.step != step:
            report("bug", what=f"log() put step {run.step}, expected {step}")
        report("log", step=step)
        time.sleep(spec["interval"])
    report("logged")
    return _end(run, spec)


def _fork_worker(run: Any, name: str, steps: int, leave: str) -> None:
    """A worker forked after init(), as DataLoader and Pool workers are: it logs a series of
    its own through the inherited run (a writer of its own), then leaves by ``os._exit`` (as
    those workers do) or ``sys.exit``, never ending the parent's run."""
    if os.fork() != 0:
        return
    metric = f"worker/{name}"
    code = 0
    try:
        for s in range(steps):
            run.log({metric: value(metric, s)}, step=s)
            report("wlog", name=metric, step=s)
            time.sleep(0.002)
    except BaseException as exc:  # noqa: BLE001 - reported: the oracle counts it
        report("bug", what=f"worker: {type(exc).__name__}: {exc}")
        code = 1
    if leave == "os_exit":
        os._exit(code)
    sys.exit(code)  # atexit hooks run: the SDK closes only this worker's writer


def _state_change(run: Any, op: dict) -> None:
    kind, arg = op["kind"], op["arg"]
    if kind == "config":
        report("will", kind="config", delta=arg)
        run.update_config(arg)
        report("did", kind="config", delta=arg, config=run.config)
        return
    after = list(run.tags) + [t for t in arg if t not in run.tags] if kind == "add_tags" \
        else [t for t in run.tags if t not in arg]
    report("will", kind="tags", tags=after)
    (run.add_tags if kind == "add_tags" else run.remove_tags)(arg)
    report("did", kind="tags", tags=list(run.tags))


def _end(run: Any, spec: dict) -> int:
    how = spec["end"]
    if how in ("sigterm", "sigkill"):
        while True:  # the runner ends this process
            time.sleep(1)
    _wait_file(spec.get("gate_file"))  # the eval attached to this run has closed
    report("will", kind="end", how=how)
    if how == "finish":
        run.finish()
    elif how == "fail":
        run.finish(code=1)
    elif how == "close":
        run.close()
    elif how == "exception":
        raise RuntimeError("chaos: the training loop blew up")
    report("end", how=how)  # atexit: the SDK finishes the run after this line
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
