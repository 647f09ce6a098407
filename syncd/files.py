"""The files lane: delivers each run's staged files with the stock protocol, exactly once.

Beside the ordered lane (:mod:`syncd.replayer`), with its own journal connection, client and
thread, so a large artifact never holds back a run's metrics; the ordered lane holds only a
run's *status* until the files journaled before it are done (:meth:`FileLane.blocking`).

Per run, in file id order, a batch at a time (docs/media.md, "Exactly once"):

1. skip what any copy of this journal delivered: the run's ledger, ``config.plutoOffline.
   filesDelivered[<journal id>:<run key>]`` (every id at or below is done);
2. a file that may already have a row on the server (presigned before by this journal without
   a URL kept, or at or below ``filesSending`` of a copy) is looked up on the read side: a row
   whose object holds the bytes is done; a row without them can only be uploaded through a new
   presign (counted in ``file_delivery.resent``: the one way a second row appears); no row:
   presigned as new;
3. intent first: ``presigning`` in the journal and ``filesSending`` on the run, then
   ``POST /files``; the URLs are kept in the journal at once, so a daemon killed after that
   uploads with them (a PUT of the same bytes under the same name is harmless) and never
   presigns again;
4. PUT each (streamed), mark it done; then raise ``filesDelivered`` over the ids now done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import requests

from pluto_offline import journal
from pluto_offline.journal import filerows, staged
from pluto_offline.journal.filerows import FileRow
from syncd import filewire, finalstate, ledger, retry
from syncd.client import AuthError, ClientError, PlutoClient, RejectedError, TransientError

log = logging.getLogger("plutosync")

BATCH_FILES = 32  # files per presign request
URL_FRESH_MS = 50 * 60 * 1000  # a kept URL is used while younger (they expire after 1 h)
SLICE_S = 2.0  # a run's turn in a pass, between batches

_copies: dict[str, threading.Lock] = {}
_copies_guard = threading.Lock()


def copy_lock(copy: str) -> threading.Lock:
    """One lock per copy key (``<journal id>:<run key>``) in this process: copies of a journal
    pushed together deliver its files one batch at a time, each batch from ledger read to
    ``filesDelivered``. Without it a copy reading the ledger while another uploads finds a row
    without bytes yet, and presigns again: a second row (docs/media.md, "Exactly once")."""
    with _copies_guard:
        return _copies.setdefault(copy, threading.Lock())


class FileLane:
    """Delivers the files of one journal. ``run_pass`` does one round; :meth:`start` runs it
    in a thread of its own (its own connection and client) until ``stop`` is set."""

    def __init__(self, journal_path: str, settings: object, stop: threading.Event) -> None:
        self.path = journal_path
        self.settings = settings
        self.stop = stop
        self.wake = threading.Event()
        self.j: journal.Journal | None = None
        self.client: PlutoClient | None = None
        self.storage = requests.Session()  # no API key: storage URLs are presigned
        self._due: dict[int, retry.Backoff] = {}
        self._gate = retry.Backoff()  # a refused key or an unreachable server pauses every run
        self._quiet = retry.Quiet()
        self.thread: threading.Thread | None = None
        self.closing = threading.Event()  # this lane only (shutdown), where stop is everyone's
        self.uploaded_bytes = 0
        self.files_done = 0
        # uploaded_bytes and what the upload under way has sent: read by push's byte bar
        self.sent_bytes = 0

    # ------------------------------------------------------------------ the thread
    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="plutosync-files",
                                           daemon=True)
            self.thread.start()
        self.wake.set()

    def _stopping(self) -> bool:
        return self.stop.is_set() or self.closing.is_set()

    def _loop(self) -> None:
        while not self._stopping():
            self.wake.clear()
            try:
                worked = self.run_pass()
            except Exception:  # noqa: BLE001 - the lane must outlive one bad pass
                log.exception("files lane: unexpected error")
                worked = False
            if not worked:
                self.wake.wait(0.2)

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.wake.set()
            self.thread.join(timeout)

    def _open(self) -> journal.Journal:
        if self.j is None:
            self.j = journal.Journal.open(self.path)
            self.client = PlutoClient(self.settings)  # type: ignore[arg-type]
        return self.j

    # ------------------------------------------------------------------ passes
    def run_pass(self) -> bool:
        """Deliver what can be delivered now; True when something was sent."""
        j = self._open()
        now = time.monotonic()
        if now < self._gate.due:
            return False
        worked = False
        for key in filerows.runs_with_pending(j):
            if self._stopping():
                break
            due = self._due.setdefault(key, retry.Backoff())
            row = journal.get_run(j, key)
            if row is None or row.server_id is None or due.due > now:
                continue  # the ordered lane opens the run first
            done = False
            try:
                end = time.monotonic() + SLICE_S
                while time.monotonic() < end and not self._stopping():
                    if not self._batch(j, row):
                        break
                    worked = done = True
                if done:  # an answer for this run, not a pass with nothing ready
                    due.attempts = 0
                    self._gate.attempts = 0
            except (TransientError, AuthError) as exc:
                gate = self._gate if exc.code is None or isinstance(exc, AuthError) else due
                gate.failure(exc, self.client.answers if self.client else 0, default=1.0)
                if self._quiet.says(exc.code or "network"):  # once a minute, as the events'
                    log.warning("run %s/%s: files paused: %s; retrying with backoff",
                                row.project, row.name or row.run_id, exc.describe())
                break
        return worked

    def outstanding(self) -> list[int]:
        """Keys of runs with files left to deliver (including ones not staged yet)."""
        return filerows.runs_with_pending(self._open())

    # ------------------------------------------------------------------ one batch
    def _batch(self, j: journal.Journal, row: journal.RunRow) -> bool:
        """Deliver the run's next staged files; False when none is ready."""
        ready = []
        for f in filerows.pending(j, row.key, limit=BATCH_FILES):
            if not f.staged:
                break  # strictly in id order: the watermark counts contiguous ids
            ready.append(f)
        if not ready:
            return False
        assert self.client is not None and row.server_id is not None
        sid, copy = row.server_id, ledger.copy_key(j.id, row.key)
        lock = copy_lock(copy)
        if not lock.acquire(blocking=False):
            return False  # another copy is delivering these files: its ledger mark tells
        try:
            with finalstate.run_lock(row.project, row.run_id):
                delivered, sending = filewire.ledger_marks(self.client, sid, copy)
                done = [f.id for f in ready if f.id <= delivered]
                if done:
                    filerows.set_state(j, done, "done")
                    log.info("run %s/%s: %d file(s) were delivered by another copy of this "
                             "journal; not sent again", row.project, row.name or row.run_id,
                             len(done))
                rest = [f for f in ready if f.id > delivered]
                uploads = self._presigned(j, row, rest, sending)
            for f, url in uploads:
                self._upload(j, f, url)
            self._note_delivered(j, row, delivered)
        finally:
            lock.release()
        return True

    def _presigned(self, j: journal.Journal, row: journal.RunRow, files: list[FileRow],
                   sending: int) -> list[tuple[FileRow, str]]:
        """``(file, PUT URL)`` for each file still to upload, presigning only what the server
        cannot hold yet (module docstring, steps 2-3)."""
        assert self.client is not None and row.server_id is not None
        now = time.time() * 1000
        kept = [(f, f.url) for f in files
                if f.url and f.presigned_at and now - f.presigned_at < URL_FRESH_MS]
        kept_ids = {f.id for f, _ in kept}
        # presigned before without an answer (by this journal, or a copy: the run's note);
        # "unsent": its last presign never reached the server
        unsure = [f for f in files if f.id not in kept_ids and f.state != "unsent"
                  and (f.state is not None or f.id <= sending)]
        new = [f for f in files if f.id not in kept_ids and f not in unsure]
        again: list[FileRow] = []
        maybe: list[FileRow] = []  # no row yet, but the unanswered presign may still land
        if unsure:
            held = filewire.on_server(self.client, row.server_id, row.project,
                                      {f.log_name for f in unsure})
            done = []
            for f in unsure:
                found = held.get((f.log_name, f.file_name))
                if found is None:
                    new.append(f)
                    maybe.append(f)
                elif filewire.stored(self.storage, found, f.size or 0):
                    done.append(f.id)
                else:
                    again.append(f)
            if done:
                filerows.set_state(j, done, "done")
            if again:
                log.warning("run %s/%s: %d file(s) have a row on the server from a presign "
                            "whose answer was lost, and no bytes: presigned again (a second "
                            "row in the UI; counted)", row.project, row.name or row.run_id,
                            len(again))
        to_sign = sorted(new + again, key=lambda f: f.id)
        if not to_sign:
            return kept
        filerows.set_state(j, [f.id for f in to_sign], "presigning")
        if again or maybe:  # each a possible second row (seed 1199: a presign held past
            # the timeout was applied after the one sent again)
            filerows.set_state(j, [f.id for f in again + maybe], "presigning", resent=True)
        top = to_sign[-1].id
        if top > sending:
            filewire.note(self.client, row.server_id, filewire.FILES_SENDING,
                          ledger.copy_key(j.id, row.key), top)
        try:
            urls = filewire.presign(self.client, row.server_id, row.project, to_sign)
        except TransientError as exc:
            if exc.never_sent:  # no connection was made: nothing of it can land
                filerows.set_state(j, [f.id for f in to_sign], "unsent")
            raise
        except RejectedError as exc:
            if len(to_sign) == 1:
                filerows.set_state(j, [to_sign[0].id], "rejected", reason=exc.describe())
                log.warning("run %s/%s: the server refused file %s/%s (%s); recorded",
                            row.project, row.name or row.run_id, to_sign[0].log_name,
                            to_sign[0].file_name, exc.describe())
                return kept
            # which one? presign them one by one (a refused presign inserts no row)
            out = list(kept)
            for f in to_sign:
                out += self._presigned(j, row, [f], f.id)
            return out
        by_id = {f.id: urls[(f.log_name, f.file_name)] for f in to_sign}
        filerows.set_state(j, list(by_id), "presigned", url=by_id)
        return sorted(kept + [(f, by_id[f.id]) for f in to_sign], key=lambda p: p[0].id)

    def _upload(self, j: journal.Journal, f: FileRow, url: str) -> None:
        base = self.uploaded_bytes

        def sent(n: int) -> None:
            self.sent_bytes = base + n

        try:
            self._put(j, f, url, sent)
        finally:  # done, refused or to be tried again: only what was uploaded counts
            self.sent_bytes = self.uploaded_bytes

    def _put(self, j: journal.Journal, f: FileRow, url: str,
             sent: Callable[[int], None]) -> None:
        try:
            with staged.open_blob(j, f.blob or "") as body:
                filewire.put(self.storage, url, body, f.size or 0, f.content_type, sent)
        except FileNotFoundError:
            filerows.set_state(j, [f.id], "rejected",
                               reason="its staged bytes are missing from the journal")
            log.warning("file %s/%s: its staged bytes are missing; recorded as refused",
                        f.log_name, f.file_name)
            return
        except filewire.ExpiredUrl as exc:
            filerows.forget_url(j, f.id)
            raise TransientError(403, f"{exc}; the file is looked up and presigned again "
                                      "if need be") from None
        except RejectedError as exc:
            filerows.set_state(j, [f.id], "rejected", reason=exc.describe())
            return
        filerows.set_state(j, [f.id], "done")
        self.uploaded_bytes += f.size or 0
        self.files_done += 1

    def _note_delivered(self, j: journal.Journal, row: journal.RunRow, before: int) -> None:
        """Raise ``filesDelivered`` over the ids now done (stopping below any not done here,
        a lost file included: another copy may still deliver it)."""
        assert self.client is not None and row.server_id is not None
        top = filerows.delivered_through(j, row.key)
        if top > before:
            try:
                filewire.note(self.client, row.server_id, filewire.FILES_DELIVERED,
                              ledger.copy_key(j.id, row.key), top)
            except ClientError as exc:  # the files are done; a copy would look them up
                log.info("run %s/%s: could not note delivered files (%s)", row.project,
                         row.name or row.run_id, exc.describe())

    def blocking(self, j: journal.Journal, run: int, seq: int) -> int:
        """Files journaled before event ``seq`` of the run not delivered yet."""
        return filerows.blocking(j, run, seq)

    def try_now(self) -> None:
        """Every run's files on the next pass, whatever their backoff says (SIGUSR1)."""
        self._gate.due = 0.0
        for due in list(self._due.values()):
            due.due = 0.0
        self.wake.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop this lane's thread (the upload under way ends first, up to ``timeout``
        seconds) and close its connection and sessions: a push of many journals must not
        keep a thread and a connection per journal it has finished."""
        self.closing.set()
        self.join(timeout)
        if self.thread is None or not self.thread.is_alive():
            self.close()

    def close(self) -> None:
        self.storage.close()
        if self.client is not None:
            self.client.close()
        if self.j is not None:
            self.j.close()
