"""SQL is parameterized everywhere: hostile names round-trip intact, and no SQL text is built
from data.

The round trip goes SDK → journal → ``plutosync run --once`` → local server → read endpoints, with
quotes, SQL, path separators, ``..``, control characters, unicode and emoji in every name.
Documented rule (docs/sdk.md, issue 12 item 15): a project keeps printable ASCII (it travels in an
HTTP header), run and metric names keep every printable character; anything else becomes ``-``
plus ``~`` and a hash of the name (``ids.clean_project`` / ``ids.clean_chars``); run ids, tags and
config are kept as they are.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from pluto_offline import journal
from pluto_offline.ids import clean_chars, clean_project
from tests.badinput.helpers import clean_env, cli
from tests.fixtures.server import user_config

ROOT = Path(__file__).resolve().parents[2]
NASTY = [
    "'; DROP TABLE runs; --",
    'x" OR "1"="1',
    "../../etc/passwd",
    "a/b\\c",
    "tab\there\nnewline\x00nul\x1b[31m",
    "ünïcödé 🔥 训练",
    "%s %d {0} ?",
]

# Every SQL statement built at run time, reviewed: the interpolated parts are placeholders,
# column names or WHERE fragments made of constants; all data goes through ``?``.
REVIEWED = {
    ("pluto_offline/journal/delivery.py", "UPDATE delivery SET {', '.join(sets)}"):
        "sets: 'col = ?' for column names checked against an allowlist",
    ("pluto_offline/journal/delivery.py", "sql + ' ORDER BY seq'"): "constant + optional '?'",
    ("pluto_offline/journal/delivery.py", "sql"): "constant + optional ' WHERE run = ?'",
    ("pluto_offline/journal/delivery.py", "AND kind IN ({marks})"): "marks: '?,?,...'",
    ("pluto_offline/journal/delivery.py", "count(DISTINCT run) {where}"): "constant template",
    ("pluto_offline/journal/delivery.py", "SELECT seq {where} LIMIT {int(batch)}"):
        "constant template, int()",
    ("pluto_offline/journal/store.py", "sql"): "constant SELECT + constant WHERE fragments",
    ("pluto_offline/journal/store.py", "PRAGMA busy_timeout={BUSY_TIMEOUT_MS}"): "a constant",
    ("pluto_offline/journal/schema.py", "statement"): "the constant schema, split on ';'",
    ("pluto_offline/run.py", "sql"): "a constant",
    ("syncd/server/db.py", "SCHEMA"): "a constant",
    ("syncd/server/db.py", "sql"): "the caller's constant SQL, with params",
    ("syncd/server/reads.py", "{_SELECT} WHERE"): "where: constant fragments with '?'",
    ("syncd/server/runs.py", "SELECT {RUN_COLUMNS}"): "where: constant fragments with '?'",
    ("syncd/server/series.py", "WHERE {where}"): "where: constant fragments with '?'",
    ("syncd/server/series.py", "_UPSERT"): "a constant",
    ("pluto_offline/journal/carried.py", "NOT EXISTS {TABLE} (sha"): "TABLE: the constant 'export_blobs'",
    ("pluto_offline/journal/carried.py", "INTO {TABLE} (sha"): "TABLE: the constant",
    ("pluto_offline/journal/carried.py", "FROM {TABLE} WHERE"): "TABLE: the constant",
    ("pluto_offline/journal/filerows.py", " {_FROM} WHERE"):
        "_FROM/_COLS/_OPEN: constant fragments; values as '?'",
    ("pluto_offline/journal/filerows.py", "WHERE writer IN ({marks})"): "marks: '?,?,...'",
    ("pluto_offline/journal/filerows.py", "coalesce(d.resent, 0) {_FROM}"): "_FROM: a constant",
    ("pluto_offline/journal/filerows.py", "sql"): "constant + optional ' AND f.run = ?'",
    ("syncd/server/alerts.py", "SCHEMA"): "a constant",
    ("syncd/server/files.py", "SCHEMA"): "a constant",
    ("syncd/server/files.py", "WHERE {where}"): "where: constant fragments with '?'",
    ("pluto_offline/journal/liveness.py", "NOT EXISTS {TABLE} ("): "TABLE: the constant 'writer_ns'",
    ("pluto_offline/journal/liveness.py", "INTO {TABLE} (writer"): "TABLE: the constant",
    ("pluto_offline/journal/liveness.py", "{ident} FROM writers w {join}"):
        "ident/join: constant fragments chosen by whether the table exists; no values",
}
_SQL_CALLS = {"execute", "executemany", "executescript", "query"}


def dynamic_sql_sites() -> list[tuple[str, int, str]]:
    """(file, line, expression) of every SQL call whose statement is not a literal."""
    out = []
    for path in sorted([*ROOT.glob("pluto_offline/**/*.py"), *ROOT.glob("syncd/**/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in _SQL_CALLS and node.args
                    and not isinstance(node.args[0], ast.Constant)):
                out.append((rel, node.lineno, ast.unparse(node.args[0])))
    return out


def test_no_sql_is_built_from_data():
    unreviewed = [
        f"{f}:{line}: {expr[:120]}" for f, line, expr in dynamic_sql_sites()
        if not any(f == rf and (expr == snippet or (len(snippet) > 12 and snippet in expr))
                   for rf, snippet in REVIEWED)
    ]
    assert not unreviewed, ("SQL built at run time that nobody reviewed (use ? placeholders, "
                            "or add it to REVIEWED with the reason it is safe):\n"
                            + "\n".join(unreviewed))


def test_hostile_names_round_trip_through_journal_daemon_and_server(tmp_path, pluto_server):
    code = """
    import json, sys, pluto_offline as pluto
    nasty = json.loads(sys.argv[2])
    for i, text in enumerate(nasty):
        run = pluto.init(dir=sys.argv[1], project="p " + text, name=text, run_id=text,
                         tags=[text, "t" + text], config={text: {text: text}},
                         settings={"autostart": False})
        for step in range(3):
            run.log({text: float(step), "ok/" + text: step * 2.0}, step=step)
        run.log({"label": text[:200]}, step=3)
        run.update_config({"more " + text: [text]})
        run.finish()
    """
    from tests.badinput.helpers import child

    jdir = tmp_path / "j"
    r = child(code, str(jdir), json.dumps(NASTY))
    assert r.returncode == 0, r.stderr
    with journal.Journal.open(jdir, readonly=True) as j:  # the journal holds them intact
        stored = {row.run_id: row for row in journal.all_runs(j)}
        tables = {t for (t,) in j.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert set(stored) == set(NASTY) and {"runs", "events", "delivery"} <= tables
    for text in NASTY:
        assert stored[text].project == clean_project("p " + text)
        assert stored[text].name == clean_chars(text)
        assert stored[text].tags == [text, "t" + text]

    env = clean_env(PLUTO_API_KEY=pluto_server.api_key)
    res = cli("run", "--dir", str(jdir), "--server", pluto_server.url, "--once",
              "--timeout", "60", env=env)
    assert res.returncode == 0, res.stderr

    for text in NASTY:
        project = clean_project("p " + text)
        runs = [x for x in pluto_server.list_runs(project) if x["externalId"] == text]
        assert len(runs) == 1, (text, pluto_server.list_runs(project))
        run = pluto_server.get_run(runs[0]["id"])
        assert run["name"] == clean_chars(text)
        assert run["status"] == "COMPLETED"
        assert run["tags"] == [text, "t" + text]
        assert user_config(run["config"]) == {text: {text: text}, "more " + text: [text]}
        names = set(pluto_server.metric_names(project, run["id"]))
        assert {clean_chars(text), clean_chars("ok/" + text)} <= names
        points = pluto_server.metrics(run["id"], project, clean_chars(text))
        assert [(p["step"], p["value"]) for p in points] == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert len(pluto_server.projects()) == len(NASTY)
