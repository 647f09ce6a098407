"""``init()`` and the module-level functions, mirroring the stock ``pluto`` SDK.

    import pluto_offline as pluto
    run = pluto.init(project="mnist", name="baseline", config={"lr": 0.1}, tags=["cnn"])
    pluto.log({"loss": 0.5})          # the latest run
    pluto.finish()                    # every open run

No call opens a socket: everything goes to the journal in ``dir`` / ``PLUTO_DIR``, and
``plutosync`` delivers it.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import uuid
from typing import Any

from pluto_offline import autostart, console, lifecycle, sysinfo, sysmetrics
from pluto_offline.errors import JournalError, RunExistsError
from pluto_offline.ids import (
    RunRef,
    classify_run_id,
    clean_chars,
    clean_project,
    new_name,
    new_run_id,
    rename_note,
)
from pluto_offline.journal import (
    Journal,
    RunRow,
    add_run,
    add_writer,
    append_event,
    find_run,
    find_run_by_server_ref,
    last_step,
    now_ms,
    recover,
    set_run_state,
)
from pluto_offline.journal.writes import latest_time
from pluto_offline.run import FLUSH_INTERVAL, Run
from pluto_offline.spill import Spill
from pluto_offline.values import MAX_TAGS, check_tags, deep_merge, native_config, normalize_tags

ops = lifecycle.ops
logger = logging.getLogger("pluto_offline")
_HOST = os.uname().nodename  # not socket.gethostname(): the SDK never imports socket


def init(
    dir: str | os.PathLike[str] | None = None,
    project: str | None = None,
    name: str | None = None,
    config: Any = None,
    settings: dict | None = None,
    tags: str | list[str] | None = None,
    run_id: int | str | None = None,
    resume: bool = False,
    fork_run_id: int | str | None = None,
    fork_step: int | None = None,
    inherit_config: bool | None = None,
    inherit_tags: bool | None = None,
    **kwargs: Any,
) -> Run:
    """Start (or resume) a run, journaled in ``dir`` (else ``PLUTO_DIR``, else the default).

    ``run_id``: an int or digit string resumes a server run by number; ``"MMP-42"`` by display
    id; any other string is the client-chosen id (``externalId``): a new run, or, with
    ``resume=True`` (or with ``PLUTO_RUN_ID`` set), the run this journal already holds.

    Raises ``ValueError`` for tags the server would refuse (its 50-tag and one-``group:``-tag
    limits), ``RunExistsError`` for a known external id reused without ``resume=True``.
    """
    if (fork_run_id is not None) ^ (fork_step is not None):
        raise ValueError("fork_run_id and fork_step must be provided together")
    dir = kwargs.pop("save_dir", dir)
    project = _text("project", project if project is not None else
                    os.environ.get("PLUTO_PROJECT") or "pluto")
    name = _text("name", name) if name else new_name()
    # As the stock SDK: with PLUTO_RUN_ID set, the run id counts as "from the environment" even
    # when a run_id argument is passed (its init re-classifies the argument but keeps the flag),
    # so that its documented multi-rank pattern init(run_id=os.environ.get("PLUTO_RUN_ID"))
    # attaches every rank to one run instead of raising RunExistsError on the second.
    env_run_id = os.environ.get("PLUTO_RUN_ID")
    from_env = bool(env_run_id)
    if run_id is None and env_run_id:
        run_id = env_run_id
    chosen = run_id is not None  # else no other journal can know the id to join the run
    ref = classify_run_id(run_id) if run_id is not None else RunRef("external", new_run_id())
    tags = check_tags(normalize_tags(tags), "init(tags=...)", f"pass at most {MAX_TAGS} tags",
                      "pass only one group: tag")
    config = native_config(config)
    settings = native_config(settings.to_dict() if hasattr(settings, "to_dict") else settings,
                             "settings")
    if settings is not None and not isinstance(settings, dict):
        raise TypeError(f"settings must be a dict, got {type(settings).__name__}")
    flush_interval = float((settings or {}).get("flush_interval", FLUSH_INTERVAL))
    fork = None
    if fork_run_id is not None:
        fork = {"parent": _fork_parent(fork_run_id), "step": _fork_step(fork_step),
                "inherit_config": inherit_config is not False,
                "inherit_tags": bool(inherit_tags)}

    sys_on = sysmetrics.enabled(settings)
    meta = {"system": sysinfo.system_metadata() if sys_on else {},  # as the stock SDK: off too
            "logger": sysinfo.logger_settings(
                settings, project=project, flush_interval=flush_interval,
                console_on=console.enabled(settings), sanitize=console.sanitizing(settings),
                sys_on=sys_on, sys_interval=sysmetrics.interval(settings))}
    j = _open_journal(dir)
    writer_id = uuid.uuid4().hex
    spill: Spill | None = None
    try:
        recover(j)
        spill = _create_spill(j, writer_id)
        with j.transaction():
            run, restarts = _open_run(j, ref, from_env, resume, project, name, config, tags,
                                      settings, fork, writer_id, spill, flush_interval,
                                      chosen, meta)
    except BaseException:
        if spill is not None:
            spill.close(unlink=True)
        j.close()
        raise
    if restarts:
        _warn_steps_restart(ref, from_env)
    lifecycle.register(run)
    run._start()
    autostart._maybe_start_daemon(j.path, settings)
    console.attach(run, j.path, settings)
    if sys_on:
        sysmetrics.attach(run, str(j.dir), settings)
    return run


def _open_run(j: Journal, ref: RunRef, from_env: bool, resume: bool, project: str, name: str,
              config: Any, tags: list[str], settings: dict | None, fork: dict | None,
              writer_id: str, spill: Spill, flush_interval: float,
              chosen: bool = True, meta: dict | None = None) -> tuple[Run, bool]:
    """Inside the init transaction: find or add the run row, journal create/resume, writer.

    Also says whether implicit steps restart on a run that may already hold points: a resume
    (``resume=True``, ``PLUTO_RUN_ID``, a server id) of a run this journal has never seen.
    """
    row = _find_local(j, project, ref)
    restarts = row is None and (resume or from_env or ref.kind != "external")
    if fork is not None and "external" in fork["parent"]:
        fork["parent"] = _local_parent(j, project, fork["parent"]["external"])
    if row is None:
        created = now_ms()
        if ref.kind == "external":
            if fork is not None and "key" in fork["parent"]:
                parent_config, parent_tags = _row_state(j, fork["parent"]["key"])
                if (fork["inherit_config"] and isinstance(parent_config, dict)
                        and isinstance(config, dict | None)):
                    config = deep_merge(parent_config, config or {})
                if fork["inherit_tags"]:
                    # as the server does it: the parent's tags, then the child's
                    tags = check_tags(
                        normalize_tags(parent_tags + tags), "init(inherit_tags=True)",
                        f"the fork parent's {len(parent_tags)} tags count too: pass fewer tags, "
                        "or inherit_tags=False",
                        "the fork parent's tags count too: pass no group: tag of your own, or "
                        "inherit_tags=False")
            key = add_run(j, project=project, run_id=ref.text, name=name,
                          config=config if isinstance(config, dict) else {}, tags=tags,
                          created_at=created)
            append_event(j, key, "create", time=created, payload={
                "name": name, "config": config if config is not None else {}, "tags": tags,
                "settings": settings, "fork": fork,
                # the server may already hold this externalId (another node's journal, a
                # shared PLUTO_RUN_ID): attaching to it is then intended, not a conflict
                "resume": bool(resume or from_env),
                # resume=True itself (an eval job, a later allocation): while it runs, the
                # daemon lets the run's own journal create the run first (ATTACH_GRACE_S)
                "resume_asked": bool(resume),
                # a run id the job chose can be shared by other journals (ranks, allocations,
                # an eval job): the daemon then keeps config/tags times on the server
                "chosen": chosen,
                # systemMetadata facts and effective loggerSettings (issue 10)
                **(meta or {})})
            state = (config if config is not None else {}, tags, 0, set(), set(), False, 0)
        else:  # a server run this journal does not know: the daemon resolves the ref
            key = add_run(j, project=project, run_id=ref.text, name=name, ref_kind=ref.kind,
                          config=config if isinstance(config, dict) else {}, created_at=created)
            append_event(j, key, "resume", time=created, payload={"by": ref.kind})
            _resume_config(j, key, {}, config, created)
            state = (config if config is not None else {}, [], 0, set(), set(), True, 0)
            fork = None
    else:
        if (ref.kind == "external" and row.ref_kind == "external" and not resume
                and not from_env):
            raise RunExistsError(
                f"Run with externalId '{ref.text}' already exists. This often happens when "
                "random.seed() or L.seed_everything() makes run IDs deterministic. Pass "
                "resume=True to pluto.init() to intentionally reattach, or use a unique run_id.")
        key = row.key
        # never before what the journal holds for the run: a clock stepped back since must
        # not make this resume, or the steps it logs again, older than what they follow
        now = max(now_ms(), latest_time(j, key))
        append_event(j, key, "resume", time=now, payload={"by": row.ref_kind})
        merged = _resume_config(j, key, row.config, config, now)
        metric_names, data_names = _logged_names(j, key)
        state = (merged, list(row.tags), last_step(j, key) or 0, metric_names, data_names, True,
                 now)
        ref, name, fork = RunRef(row.ref_kind, row.run_id), row.name or name, None
    add_writer(j, key, writer_id, os.getpid(), _HOST)
    cfg, tags, step, metric_names, data_names, resumed, time_floor = state
    return Run(journal=j, key=key, run_id=ref.text, ref_kind=ref.kind, project=project,
               name=name, config=cfg, tags=tags, step=step, writer_id=writer_id, spill=spill,
               metric_names=metric_names, data_names=data_names, resumed=resumed, fork=fork,
               flush_interval=flush_interval, time_floor=time_floor), restarts


def _warn_steps_restart(ref: RunRef, from_env: bool) -> None:
    """Implicit steps restart at 1 on a run this journal has never seen: say so, and how to go on.

    A fresh journal (a new Slurm allocation, another node) knows no earlier step of a run
    created elsewhere, and the server keeps one point per (run, metric, step), so ``log()``
    without ``step=`` would overwrite the points the run already has.
    """
    if ref.kind == "external":
        how = "PLUTO_RUN_ID is set" if from_env else "resume=True"
        what = (f"run {ref.text!r} may already exist on the server ({how}), but this journal "
                "has no record of it")
    else:
        what = f"run {ref.text} is a server run this journal has no record of"
    logger.warning(
        "pluto_offline: %s: log() without step= counts from step 1 again, and the server keeps "
        "one point per metric and step, so if the run was started elsewhere (another node, an "
        "earlier Slurm allocation) its points at those steps are overwritten. To continue it, "
        "pass step= explicitly (e.g. the step saved in your checkpoint + 1); later log() calls "
        "without step= count on from there.", what)


def _find_local(j: Journal, project: str, ref: RunRef) -> RunRow | None:
    """The run row a ref names in this journal: by run_id, or by the server's id / display id."""
    row = find_run(j, project=project, run_id=ref.text, ref_kind=ref.kind)
    if row is None and ref.kind == "id":
        row = find_run_by_server_ref(j, server_id=int(ref.text))
    elif row is None and ref.kind == "display":
        row = find_run_by_server_ref(j, display_id=ref.text, project=project)
    return row


def _resume_config(j: Journal, key: int, current: Any, given: Any, at: int) -> Any:
    """A config given when resuming is merged in, and journaled as a ``config`` delta."""
    if not isinstance(given, dict) or not given:
        return current
    merged = deep_merge(current if isinstance(current, dict) else {}, given)
    append_event(j, key, "config", payload=given, time=at)
    set_run_state(j, key, config=merged)
    return merged


def _logged_names(j: Journal, key: int) -> tuple[set[str], set[str]]:
    names: dict[str, set[str]] = {"METRIC": set(), "DATA": set()}
    for (payload,) in j.conn.execute(
        "SELECT payload FROM events WHERE run = ? AND kind = 'lognames'", (key,)
    ):
        p = json.loads(payload)
        names.setdefault(p["type"], set()).update(p["names"])
    return names["METRIC"], names["DATA"]


def _row_state(j: Journal, key: int) -> tuple[Any, list[str]]:
    """A local run's ``(config, tags)`` as the journal holds them now."""
    row = j.conn.execute("SELECT config, tags FROM runs WHERE key = ?", (key,)).fetchone()
    return (json.loads(row[0]), list(json.loads(row[1]))) if row else (None, [])


def _fork_parent(fork_run_id: Any) -> dict:
    """``{"id": n}``, ``{"display_id": s}``, or ``{"external": s}`` (resolved in the journal)."""
    if isinstance(fork_run_id, bool) or not isinstance(fork_run_id, int | str):
        raise ValueError(_bad_fork(fork_run_id))
    try:
        ref = classify_run_id(fork_run_id) if fork_run_id != "" else RunRef("external", "")
    except ValueError:
        raise ValueError(_bad_fork(fork_run_id)) from None
    if ref.kind == "id":
        return {"id": int(ref.text)}
    if ref.kind == "display":
        return {"display_id": ref.text}
    return {"external": ref.text}


def _local_parent(j: Journal, project: str, run_id: str) -> dict:
    row = find_run(j, project=project, run_id=run_id) if run_id else None
    if row is None:
        raise ValueError(_bad_fork(run_id))
    return {"key": row.key}


def _bad_fork(value: Any) -> str:
    return ('fork_run_id must be a numeric run ID, a display ID (e.g. "T0-123") or the run_id '
            f"of a run in this journal, got: {value!r}")


def _fork_step(step: Any) -> int:
    if isinstance(step, bool):
        raise TypeError(f"fork_step must be an int, got {step!r}")
    try:
        return operator.index(step)
    except TypeError:
        raise TypeError(f"fork_step must be an int, got {type(step).__name__}") from None


def _text(what: str, value: Any) -> str:
    """A project or run name as journaled (``clean_project`` / ``clean_chars``), with a warning
    once per process saying what a rewritten one became."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    project = what == "project"
    cleaned = clean_project(value) if project else clean_chars(value)
    if cleaned != value and (what, value) not in _renames_told:
        _renames_told.add((what, value))
        logger.warning(rename_note(f"init({what}=...):", value, cleaned, ascii_only=project))
    return cleaned


_renames_told: set[tuple[str, str]] = set()  # (what, name) warned about: once per process


def _open_journal(dir: str | os.PathLike[str] | None) -> Journal:
    try:
        return Journal.open(dir)
    except OSError as exc:  # e.g. a parent directory we may not even look into
        raise JournalError(f"cannot open the journal at {exc.filename or dir}: {exc.strerror}; "
                           "choose a writable directory with dir= or PLUTO_DIR") from exc


def _create_spill(j: Journal, writer_id: str) -> Spill:
    try:
        return Spill.create(j.spill_dir, writer_id)
    except OSError as exc:
        raise JournalError(f"cannot create the spill file in {j.spill_dir}: {exc.strerror}; "
                           "check the directory's permissions and free space") from exc


def log(data: dict[str, Any], step: int | None = None, timestamp: float | None = None) -> None:
    """``log()`` on the most recently started open run."""
    run = lifecycle.latest()
    if run is None:
        raise RuntimeError("pluto_offline.log() called before pluto_offline.init()")
    run.log(data, step=step, timestamp=timestamp)


def finish(run: Run | None = None) -> None:
    """Finish ``run``, or every open run (COMPLETED). Never raises."""
    if run is not None:
        run.finish()
        return
    for r in list(ops):
        r.finish()
