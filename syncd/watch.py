"""Wake the daemon when the journal changes: watchdog (inotify & co.) plus polling.

Notifications make delivery immediate on local disks. They do not see writes made by another
host on NFS or Lustre, and some systems run out of inotify watches, so the daemon also polls
every ``poll`` seconds whatever happens; the watcher only makes it sooner.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger("plutosync")


class _ShutdownRace(logging.Filter):
    """watchdog's inotify emitter logs an ERROR when it reads once more after its observer was
    stopped (a race in its own shutdown, harmless: the daemon is exiting). In plutosync.log it
    read as a failure of ours; other watchdog messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


_FILTER = _ShutdownRace()


class Watcher:
    def __init__(self, journal_file: Path, wake: threading.Event) -> None:
        self.journal_file = journal_file
        self.wake = wake
        self.observer = None

    def start(self) -> bool:
        """Start notifications; False (polling only) when the platform refuses them."""
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            log.info("watchdog is not installed: polling the journal for changes")
            return False
        inotify_log = logging.getLogger("watchdog.observers.inotify")
        if _FILTER not in inotify_log.filters:
            inotify_log.addFilter(_FILTER)
        name = self.journal_file.name
        wake = self.wake

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                # journal.db, journal.db-wal: a commit by a writer (or by us, harmlessly)
                if Path(str(event.src_path)).name.startswith(name) and not str(
                    event.src_path).endswith(".lock"):
                    wake.set()

        try:
            observer = Observer()
            observer.schedule(_Handler(), str(self.journal_file.parent), recursive=False)
            observer.daemon = True
            observer.start()
        except OSError as exc:  # e.g. inotify watch limit reached
            log.info("file notifications unavailable (%s): polling the journal for changes", exc)
            return False
        self.observer = observer
        return True

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=2)
            self.observer = None
