"""The multi-journal half of a chaos run: exports taken while or after jobs run, damaged
journals made in push folders, pushes run one after another once their journals' jobs ended,
and the drain of every journal and copy at the end.

:class:`Carriage` is a mixin of :class:`tests.chaos.runner.Runner`: it reads the runner's
schedule (``s``), work dir, journals (``jdirs``), writers, daemons and ``delivery`` outcome, and
calls its ``_journal_done``, ``_watch_daemons`` and ``_count``.
"""

from __future__ import annotations

import random
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from tests.chaos import oracle
from tests.chaos.procs import Job
from tests.chaos.schedule import Damage

PUSH_TIMEOUT = oracle.PUSH_TIMEOUT  # plutosync push --timeout
PUSH_HUNG_S = 100.0  # a push still running after this is hung: killed and counted
SETTLE_MAX_S = 15.0  # a "days apart" push waits at most this for earlier deliveries to drain
WIDE = {"COLUMNS": "250"}  # push's table and messages unwrapped, so names can be found in them


def clean(backlog: dict[str, Any]) -> bool:
    return not (backlog["pending"] or backlog["reasserts"] or backlog["spills"]
                or backlog.get("files_pending") or backlog.get("incoming"))


class Carriage:
    """Exports, damaged journals and pushes of a multi-journal schedule (a Runner mixin)."""

    def _tend_exports(self) -> None:
        for x in list(self.exports_left):
            wp = self.writers[x.writer]
            logged = sum(1 for line in wp.lines() if line["op"] == "log")
            if x.during and not (wp.alive and logged >= max(1, wp.w.steps // 3)) \
                    and not wp.exited:
                continue
            if not x.during and not self._journal_done(x.journal):
                continue
            out = self.workdir / x.out
            out.parent.mkdir(parents=True, exist_ok=True)
            self.exports_left.remove(x)
            self.delivery.exports[x.name] = oracle.ExportOutcome(
                x.name, x.journal, while_running=wp.alive)
            if x.during and not wp.alive:
                self.notes.append(f"{x.name}: {x.writer} ended before the export was taken")
            self.export_jobs[x.name] = Job(
                ["export", "--dir", str(self.jdirs[x.journal]), "--out", str(out), "--force"],
                {**self.daemon_env, **WIDE}, self.workdir / f"export-{x.name}.log")
            self._count("export")
        for name, job in self.export_jobs.items():
            outcome = self.delivery.exports[name]
            if job.done and outcome.returncode is None:
                outcome.returncode = job.proc.returncode
                outcome.output = job.output()

    def _tend_damages(self) -> None:
        for d in list(self.damages_left):
            if d.decoy is not None and not self.writers[d.decoy].exited:
                continue
            self.damages_left.remove(d)
            try:
                make_damaged(d, self.workdir / d.path, self.jdirs[self.s.writer(d.decoy).journal]
                              if d.decoy is not None else None)
                self._count(f"damaged:{d.kind}")
            except (OSError, sqlite3.Error) as exc:  # the runner's, not the product's
                self.notes.append(f"{d.name}: could not be made ({exc})")

    def _item_path(self, item: str) -> Path:
        x = next((x for x in self.s.exports if x.name == item), None)
        return self.workdir / x.out if x is not None else self.jdirs[item]

    def _item_ready(self, item: str) -> bool:
        if item in self.jdirs:
            return self._journal_done(item)
        outcome = self.delivery.exports.get(item)
        return outcome is not None and outcome.returncode is not None

    def _delivered_so_far(self) -> list[str]:
        """Journals (and copies) whose delivery started and whose jobs have all ended, less
        those that only attach to a run whose creating journal is not delivered yet (a
        daemon may rightly hold them until the run exists)."""
        started = [j.name for j in self.s.journals
                   if j.delivery == "live" and j.name not in self.offline]
        for o in self.delivery.pushes:
            started += [i for i in o.items if i not in started]
        return [i for i in started if (i not in self.jdirs or self._journal_done(i))
                and not self._waits_for_creator(i, started)]

    def _waits_for_creator(self, journal: str, started: list[str]) -> bool:
        ws = [w for w in self.s.writers if w.journal == journal and w.run_id == self.s.shared]
        if not ws or not all(w.attaches for w in ws):
            return False
        creators = {w.journal for w in self.s.writers
                    if w.run_id == self.s.shared and not w.attaches}
        if not creators:
            return False
        if not creators & set(started):
            return True
        # a creator's delivery has started but may not have created the run yet (its daemon
        # offline, killed, backing off): the push cannot know whether it ever will, so it
        # may stop and say it waits for that journal (the drain delivers the rest later)
        copies = {x.name for x in self.s.exports if x.journal in creators}
        return not any(self._knows_server_run(i) for i in creators | copies)

    def _knows_server_run(self, item: str) -> bool:
        """Whether journal (or copy) ``item`` has recorded the shared run's server id."""
        path = self._item_path(item)
        if not (path / "journal.db").exists() and not path.is_file():
            return False
        from pluto_offline import journal as J
        try:
            with J.Journal.open(path, readonly=True) as j:
                return any(r.run_id == self.s.shared and r.server_id is not None
                           for r in J.all_runs(j))
        except Exception:  # noqa: BLE001 — being written or damaged: not known
            return False

    def _backlog_of(self, item: str) -> dict[str, Any] | None:
        path = self._item_path(item)
        if not (path / "journal.db").exists() and not path.is_file():
            return None
        try:
            return oracle.journal_backlog(path)
        except Exception as exc:  # noqa: BLE001 — a copy that cannot be read: say so
            self.notes.append(f"{item}: backlog unreadable ({exc})")
            return None

    def _copies_beside_daemons(self, items: tuple[str, ...]) -> set[str]:
        """The journals copied in ``items`` whose own daemon is running now."""
        originals = {x.journal for x in self.s.exports if x.name in items}
        return {j for j in originals if (d := self.daemons.get(j)) is not None and d.running}

    def _tend_pushes(self) -> None:
        if self.push_job is not None:
            p, job, outcome = self.push_job
            outcome.concurrent |= self._copies_beside_daemons(p.items)
            hung = not job.done and time.monotonic() - job.started > PUSH_HUNG_S
            if hung:
                job.kill()
                outcome.hung = True
            if job.done:
                outcome.seconds = time.monotonic() - job.started
                outcome.returncode = job.proc.returncode
                outcome.output = job.output()
                for item in p.items:
                    b = self._backlog_of(item)
                    if b is not None and not clean(b):
                        said = oracle.push_says(outcome.output, item)
                        outcome.left[item] = oracle.describe_backlog(b) + (
                            f"; push says: {said}" if said else "")
                self.push_job = None
            return
        if not self.pushes_left:
            return
        p = self.pushes_left[0]
        if not all(self._item_ready(i) for i in p.items) or any(
                d in [x.name for x in self.damages_left] for d in p.damaged):
            return
        if p.settle:  # "days apart": what was delivered before is drained first
            if self.settle_since is None:
                self.settle_since = time.monotonic()
            if time.monotonic() < self.settle_next:
                return
            self.settle_next = time.monotonic() + 0.2  # reading journals is not free
            waiting = [i for i in self._delivered_so_far()
                       if (b := self._backlog_of(i)) is not None and not clean(b)]
            if waiting and time.monotonic() - self.settle_since < SETTLE_MAX_S:
                return
            if waiting:
                self.notes.append(f"{p.name}: started before {', '.join(waiting)} drained "
                                  f"({SETTLE_MAX_S:.0f} s)")
            self.settle_since = None
        self.pushes_left.pop(0)
        paths = [str(self.workdir / p.folder)] if p.folder else \
            [str(self._item_path(i)) for i in p.items]
        started = [j.name for j in self.s.journals
                   if j.delivery == "live" and j.name not in self.offline]
        started += [i for o in self.delivery.pushes for i in o.items]
        outcome = oracle.PushOutcome(p.name, p.items, p.folder, p.damaged, started=True,
                                     waiting=tuple(i for i in p.items
                                                   if self._waits_for_creator(i, started)))
        outcome.concurrent |= self._copies_beside_daemons(p.items)
        self.delivery.pushes.append(outcome)
        job = Job(["push", "--timeout", str(PUSH_TIMEOUT), *paths], {**self.daemon_env, **WIDE},
                  self.workdir / f"push-{p.name}.log")
        self.push_job = (p, job, outcome)
        self._count("push")

    def _delivered(self) -> list[str]:
        """Every journal and copy that is delivered (not the decoy, not the damaged ones)."""
        names = [j.name for j in self.s.journals if j.delivery != "none"]
        return names + [x.name for x in self.s.exports]

    def _backlogs(self) -> dict[str, Any]:
        out = {}
        for item in self._delivered():
            b = self._backlog_of(item)
            if b is not None:
                out[item] = b
        return out

    def _drain_multi(self) -> float | None:
        """Faults off, every live daemon up; what pushes left behind is pushed again (a
        repair, noted, not counted: the scheduled push's outcome is what the oracle checks)."""
        if self.server.running:
            self.fired += sum(r["fired"] for r in self.server.faults())
            self.server.clear_faults()
        start = time.monotonic()
        self.offline.clear()
        for d in self.daemons.values():
            d.hurry()
            d.start()
        pushed = [i for p in self.s.pushes for i in p.items]
        repair: Job | None = None
        while time.monotonic() - start < self.drain_timeout:
            self._watch_daemons()
            left = {i: b for i, b in self._backlogs().items() if not clean(b)}
            if not left:
                if repair is not None:
                    repair.kill()
                return time.monotonic() - start
            if repair is not None and repair.done:
                repair = None
            todo = [i for i in left if i in pushed]
            if todo and repair is None:
                self.notes.append(f"drain: pushed {' '.join(todo)} again")
                repair = Job(["push", "--timeout", str(PUSH_TIMEOUT),
                              *[str(self._item_path(i)) for i in todo]],
                             {**self.daemon_env, **WIDE}, self.workdir / "push-repair.log")
            time.sleep(0.1)
        if repair is not None:
            repair.kill()
        return None


def make_damaged(d: Damage, path: Path, decoy_dir: Path | None) -> None:
    """Make the damaged journal ``d`` at ``path``: empty, or a copy of its decoy writer's
    journal (in ``decoy_dir``) with a garbage header or random bytes over a data page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if d.kind == "empty":
        path.write_bytes(b"")
        return
    assert decoy_dir is not None
    src = decoy_dir / "journal.db"
    with closing(sqlite3.connect(src)) as a, closing(sqlite3.connect(path)) as b:
        a.backup(b)
    with closing(sqlite3.connect(path, isolation_level=None)) as c:
        c.execute("PRAGMA journal_mode=DELETE")  # the file alone is the whole journal
        page = c.execute("PRAGMA page_size").fetchone()[0]
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name='events'"
                         ).fetchone()[0]
    raw = bytearray(path.read_bytes())
    rng = random.Random(d.seed)
    if d.kind == "header":
        raw[:100] = rng.randbytes(100)
    else:  # random bytes over the events table's root page, which no reader can skip
        off = (root - 1) * page
        raw[off:off + page] = rng.randbytes(page)
        raw[off] = 0  # not a b-tree page type, whatever the draw
    path.write_bytes(bytes(raw))
