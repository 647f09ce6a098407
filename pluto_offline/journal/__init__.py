"""The journal: one SQLite file shared by the SDK (writer) and plutosync (reader).

This module is the whole contract between the two sides; ``docs/journal.md`` describes the
format for other tools. Functions take a :class:`Journal` (a thin owner of one connection),
in the style of ``sqlite-utils``::

    j = Journal.open("/data/pluto")            # a directory (-> journal.db) or a .db file
    with j.transaction():
        key = add_run(j, project="mnist", run_id="abc", name="baseline")
        append_event(j, key, "create", payload={"config": {"lr": 0.1}, "tags": []})
    for run in runs_with_pending(j):
        events = pending_events(j, run.key, after=run.acked_seq)

Ownership: the SDK writes ``runs``, ``events`` and ``writers``; plutosync writes ``delivery``
and ``rejected``. Each side only reads the other's tables.
"""

from pluto_offline.journal.delivery import (  # noqa: F401
    LIFECYCLE_KINDS,
    OPENERS,
    _ensure_delivery,
    ack,
    all_runs,
    clear_reassert,
    event_counts,
    kills_to_report,
    last_event,
    last_lifecycle,
    lifecycle_time,
    live_writer_ids,
    mark_sent,
    note_reassert,
    only_attached,
    pending_events,
    prunable,
    prune,
    record_error,
    recover,
    redeliver_run,
    reject,
    reject_part,
    rejected_events,
    rereject,
    runs_to_reassert,
    runs_with_pending,
    sent_seq,
    server_fields,
    unmark_sent,
    unreject,
    writers,
)
from pluto_offline.journal.payloads import (  # noqa: F401
    metrics_ndjson,
    pack_metrics,
    unpack_metrics,
)
from pluto_offline.journal.store import (  # noqa: F401
    _SCHEMA,
    BUSY_TIMEOUT_MS,
    EVENT_KINDS,
    JOURNAL_FILE,
    SCHEMA_VERSION,
    SPILL_DIR,
    TERMINAL_STATUSES,
    Event,
    Journal,
    JournalError,
    JournalVersionError,
    RunRow,
    _create_private,
    _ensure_schema,
    _explain,
    _run_rows,
    _run_script,
    _schema_version,
    default_dir,
    now_ms,
    resolve_path,
)
from pluto_offline.journal.writes import (  # noqa: F401
    add_run,
    add_writer,
    append_event,
    append_events,
    end_writer,
    find_run,
    find_run_by_server_ref,
    get_run,
    last_step,
    set_run_state,
)
