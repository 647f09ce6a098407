"""Every returned log() survives SIGKILL; many writer processes share one journal."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import time

import pytest

from pluto_offline import journal, spill

from .conftest import child_env, events, metric_lines, run_child, script

LOGGER = """
import sys, pluto_offline as pluto
run = pluto.init(dir=sys.argv[1], project="p", run_id=sys.argv[2],
                 settings={"flush_interval": float(sys.argv[3])})
print("ready", flush=True)
step = 0
while True:
    step += 1
    run.log({"a": step * 0.5, "b": step, "c": -step / 3}, step=step)
    sys.stdout.write(f"{step}\\n")
    sys.stdout.flush()
"""


def _kill_at_random(jdir, run_id: str, flush_interval: float, rng: random.Random) -> list[int]:
    p = subprocess.Popen(script(LOGGER) + [str(jdir), run_id, str(flush_interval)],
                         stdout=subprocess.PIPE, text=True, env=child_env())
    assert p.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.01, 0.4))
    p.send_signal(signal.SIGKILL)
    out, _ = p.communicate(timeout=30)
    return [int(x) for x in out.split()]  # a torn last line cannot parse as a bigger step


def test_sigkill_at_random_moments_loses_no_returned_log(jdir):
    rng = random.Random(1234)
    for round_ in range(6):
        run_id = f"round-{round_}"
        printed = _kill_at_random(jdir, run_id, rng.choice([0.002, 0.05, 3600.0]), rng)
        assert printed, "the child logged nothing before the kill"
        j = journal.Journal.open(jdir)
        journal.recover(j)
        key = journal.find_run(j, project="p", run_id=run_id).key
        j.close()
        got = {m["step"]: m["data"] for m in metric_lines(jdir, key)}
        missing = [s for s in printed if got.get(s) != {"a": s * 0.5, "b": s, "c": -s / 3}]
        assert not missing, f"round {round_}: {len(missing)} of {len(printed)} steps lost"
        assert len(got) >= len(printed)
        assert not list((jdir / "spill").iterdir())
        assert all(w["ended_how"] == "killed" for w in journal.writers(journal.Journal.open(jdir)))


WRITER = """
import sys, pluto_offline as pluto
k, n = sys.argv[2], int(sys.argv[3])
run = pluto.init(dir=sys.argv[1], project="p", run_id="shared", resume=True)
for i in range(1, n + 1):
    run.log({f"w{k}": float(i)}, step=i)
    if i % 100 == 0:
        run.update_config({f"w{k}": i})
run.close()
"""


def test_concurrent_writer_processes(jdir):
    journal.Journal.open(jdir).close()
    n, procs = 1000, 6
    ps = [subprocess.Popen(script(WRITER) + [str(jdir), str(k), str(n)], env=child_env(),
                           stderr=subprocess.PIPE, text=True) for k in range(procs)]
    for p in ps:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    evs = events(jdir)
    assert len({e.run for e in evs}) == 1
    for k in range(procs):
        name = f"w{k}"
        order = []  # (seq, what) for this process's facts
        for e in evs:
            if e.kind == "metrics":
                for line in journal.metrics_ndjson(e.payload).split("\n"):
                    d = json.loads(line)
                    if name in d["data"]:
                        assert d["data"][name] == float(d["step"])
                        order.append((e.seq, "m", d["step"]))
            elif e.kind == "config" and name in e.data():
                order.append((e.seq, "c", e.data()[name]))
        assert sorted(s for _, w, s in order if w == "m") == list(range(1, n + 1))
        # journal order = this process's call order: config i after metrics <= i, before > i
        assert [(w, s) for _, w, s in sorted(order, key=lambda x: (x[0], x[1] == "c"))] == [
            x for i in range(1, n + 1) for x in ([("m", i)] + ([("c", i)] if i % 100 == 0 else []))]
    assert [e.kind for e in evs].count("close") == procs


def test_two_recoverers_fold_an_orphan_once(jdir):
    printed = _kill_at_random(jdir, "orphan", 3600.0, random.Random(7))
    recoverer = """
import sys
from pluto_offline import journal
j = journal.Journal.open(sys.argv[1])
print(journal.recover(j))
"""
    ps = [subprocess.Popen(script(recoverer) + [str(jdir)], stdout=subprocess.PIPE, text=True,
                           env=child_env()) for _ in range(4)]
    folded = [int(p.communicate(timeout=60)[0]) for p in ps]
    steps = [m["step"] for m in metric_lines(jdir)]
    assert sorted(steps) == sorted(set(steps))  # nothing folded twice
    assert set(printed) <= set(steps)
    assert sum(folded) == len(steps)


def test_torn_records_are_ignored(tmp_path):
    s = spill.Spill.create(tmp_path, "w")
    for i in range(3):
        s.append(b"record-%d" % i)
    off = s.wpos
    s.append(b"torn")
    s.mm[off + 8:off + 16] = b"\0" * 8  # killed before the number, written last
    payloads, last = spill.scan(s.mm, 0)[:2]
    assert payloads == [b"record-0", b"record-1", b"record-2"] and last == 3
    assert spill.scan(s.mm, 2)[:2] == ([b"record-2"], 3)
    s.mm[off + 8:off + 16] = (2).to_bytes(8, "little")  # a stale number from before a wrap
    assert spill.scan(s.mm, 0)[1] == 3
    s.close(unlink=True)


def test_version_1_spill_files_are_still_read(tmp_path):
    """A writer of the previous release killed before an upgrade: its records are recovered."""
    import zlib

    buf = bytearray(spill.MAGIC + struct.pack("<II", 1, spill.HEADER_SIZE))
    buf += bytes(spill.HEADER_SIZE - len(buf))
    for number, payload in enumerate([b"a" * 5, b"bb"], 1):
        rec = struct.pack("<IIQ", len(payload), zlib.crc32(payload, number), number) + payload
        buf += rec + bytes(-len(rec) % 8)
    assert spill.scan(bytes(buf), 0)[:2] == ([b"a" * 5, b"bb"], 2)
    buf[spill.HEADER_SIZE + 16] ^= 0xFF  # a damaged payload fails the v1 crc
    assert spill.scan(bytes(buf), 0)[:2] == ([], 0)


def test_fast_path_records_decode_with_their_schema(tmp_path):
    """Values records stay packed through the fold; the journal's reader names them."""
    from pluto_offline import fold

    s = spill.Spill.create(tmp_path, "w")
    fmt = s.add_schema(("a", "b"), ("a", "b"))
    s.append_values(fmt, 7, 1000, {"a": 1.5, "b": 2})
    s.append_values(fmt, 8, 1001, {"a": float("nan"), "b": -0.0})
    with pytest.raises(struct.error):
        s.append_values(fmt, 9, 1002, {"a": 10**400, "b": 1.0})  # nothing written
    s.append(__import__("marshal").dumps((9, 1002, {"c": 3})))

    def decoded(after):
        entries, last, schemas = spill.scan(s.mm, after)[:3]
        events = fold.rows(1, entries, schemas)
        return [rec for ev in events for rec in journal.unpack_metrics(ev[4])], last

    records, last = decoded(0)
    assert last == 4 and len(records) == 3
    assert records[0] == (7, 1000, {"a": 1.5, "b": 2.0})
    step, t, values = records[1]
    assert (step, t, values["b"], str(values["a"])) == (8, 1001, -0.0, "nan")
    assert records[2] == (9, 1002, {"c": 3})
    # the schema is read even when already folded (repr: nan != nan)
    assert repr(decoded(2)) == repr((records[1:], 4))
    s.wrap()  # after a wrap the schema comes again before any record
    s.append_values(fmt, 10, 1003, {"a": 0.0, "b": 1.0})
    assert decoded(4) == ([(10, 1003, {"a": 0.0, "b": 1.0})], 6)
    s.close(unlink=True)


def test_spill_grows_and_wraps(jdir, monkeypatch):
    import pluto_offline as pluto

    monkeypatch.setattr(spill, "INITIAL_SIZE", 4096)
    monkeypatch.setattr(spill, "MAX_SIZE", 16384)
    run = pluto.init(dir=jdir, project="p", settings={"flush_interval": 3600})
    for i in range(1, 2001):
        run.log({"x": float(i)})
    assert run._spill.size == 16384
    run.finish()
    assert [m["step"] for m in metric_lines(jdir)] == list(range(1, 2001))


def test_live_writers_are_seen_and_left_alone(jdir):
    import pluto_offline as pluto

    run = pluto.init(dir=jdir, project="p", settings={"flush_interval": 3600})
    run.log({"x": 1.0})
    j = journal.Journal.open(jdir)
    assert journal.live_writer_ids(j) == {run._writer_id}
    assert journal.recover(j) == 0  # a live writer's spill is its own
    r = run_child("""
import sys
from pluto_offline import journal
j = journal.Journal.open(sys.argv[1])
print(journal.recover(j), sorted(journal.live_writer_ids(j)))
""", str(jdir))
    assert r.stdout.split(None, 1) == ["0", f"['{run._writer_id}']\n"]
    run.finish()
    assert journal.live_writer_ids(j) == set()
    assert len(metric_lines(jdir)) == 1


def test_init_races_with_recoverers_and_probers(jdir):
    """A writer's spill file is never seen half-made: a recoverer must not delete it and a
    liveness probe must not make the writer's lock fail (both once broke init())."""
    journal.Journal.open(jdir).close()
    # journal.recover every 20th pass; otherwise a probe holding each spill file's lock for a
    # while, which widens any window in which a new file is visible but not yet locked
    prober = """
import fcntl, os, sys, time
from pluto_offline import journal
j = journal.Journal.open(sys.argv[1])
end = time.monotonic() + float(sys.argv[2])
n = 0
while time.monotonic() < end:
    n += 1
    if n % 20 == 0:
        journal.recover(j)
        continue
    for name in os.listdir(j.spill_dir) if j.spill_dir.exists() else ():
        if not name.endswith(".spill"):  # what every prober looks at
            continue
        try:
            fd = os.open(j.spill_dir / name, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            time.sleep(0.002)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
print(n)
"""
    writer = """
import sys, pluto_offline as pluto
for i in range(int(sys.argv[2])):
    run = pluto.init(dir=sys.argv[1], project="p", run_id=f"{sys.argv[3]}-{i}",
                     settings={"autostart": False})
    run.log({"x": 1.0})
    run.close()
print("ok")
"""
    probers = [subprocess.Popen(script(prober) + [str(jdir), "8"], stdout=subprocess.PIPE,
                                text=True, env=child_env()) for _ in range(2)]
    writers = [subprocess.Popen(script(writer) + [str(jdir), "150", f"w{k}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=child_env()) for k in range(2)]
    for w in writers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0 and out == "ok\n", err[-2000:]
    for p in probers:
        assert int(p.communicate(timeout=60)[0]) > 0
    j = journal.Journal.open(jdir)
    assert len(j.conn.execute("SELECT * FROM runs").fetchall()) == 300
    assert len(metric_lines(jdir)) == 300
    j.close()


def test_recover_removes_only_stale_half_made_spill_files(jdir):
    """A writer killed between creating its spill file and renaming it leaves a .spill.new:
    recovery deletes it once it is old, and never touches a young one (its creator may be
    about to lock it)."""
    j = journal.Journal.open(jdir)
    j.spill_dir.mkdir(mode=0o700, exist_ok=True)
    old, young = j.spill_dir / f"a{spill.NEW_SUFFIX}", j.spill_dir / f"b{spill.NEW_SUFFIX}"
    old.write_bytes(b""), young.write_bytes(b"")
    past = time.time() - spill.STALE_NEW_S - 5
    os.utime(old, (past, past))
    assert journal.recover(j) == 0
    assert not old.exists() and young.exists()
    j.close()


def test_values_entries_render_as_the_json_encoder_would():
    """plutosync renders the fast path's entries with a template: byte for byte what the JSON
    encoder makes of the same records, NaN/inf, escapes and interleaved records included."""
    import json
    import marshal
    import math

    names = ("train/loss", 'odd%"/key', "lr", "é", "big")
    values = struct.Struct(f"<Iqq{len(names)}d")
    special = [math.nan, math.inf, -math.inf, -0.0, 1e308]

    def row(s):
        return special if s % 7 == 0 else [(s + i) * 0.001 for i in range(len(names))]

    from pluto_offline.journal.payloads import SCHEMA_ENTRY, VALUES_ENTRY

    payload = journal.pack_metrics(
        [marshal.dumps((1, 5, {"x": 1})), marshal.dumps((2, 5, {})),
         SCHEMA_ENTRY + marshal.dumps((0, names))]
        + [VALUES_ENTRY + values.pack(0, s, 10**12 + s, *row(s)) for s in range(3, 300)]
        + [marshal.dumps((300, 6, {"y": 2.5}))])
    expected = "\n".join(
        json.dumps({"time": t, "step": s, "data": d}, separators=(",", ":"))
        for s, t, d in journal.unpack_metrics(payload) if d)
    assert journal.metrics_ndjson(payload) == expected
    assert '"odd%\\"/key":Infinity' in expected and expected.count("\n") == 298


def test_jobs_opening_a_new_journal_at_the_same_moment_all_succeed(tmp_path):
    """SQLite refuses ``journal_mode=WAL`` at once ("database is locked", no busy wait) while
    another process is switching the same new file to WAL; init() must wait, not fail. Three
    processes open 150 fresh journals, each at the same instant (found by the chaos soak)."""
    opener = """
import sys, time
from pluto_offline.journal import Journal, JournalError
root, t0, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
errors = []
for i in range(n):
    while time.time() < t0 + i * 0.04:
        pass
    try:
        Journal.open(f"{root}/j{i}").close()
    except JournalError as exc:
        errors.append(str(exc))
print(len(errors), errors[:1])
"""
    start = str(time.time() + 1.0)
    ps = [subprocess.Popen(script(opener) + [str(tmp_path), start, "150"], stdout=subprocess.PIPE,
                           text=True, env=child_env()) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in ps]
    assert outs == ["0 []\n"] * 3
