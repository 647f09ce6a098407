"""pluto_offline: the Pluto SDK API, journaled locally; plutosync delivers it.

    import pluto_offline as pluto
    run = pluto.init(project="mnist", config={"lr": 0.1})
    run.log({"loss": 0.25})
    run.finish()

Nothing here opens a socket or imports ``syncd``.
"""

from pluto_offline.datatypes import Graph, Histogram, Table
from pluto_offline.errors import JournalError, JournalVersionError, RunExistsError
from pluto_offline.media import Artifact, Audio, File, Image, Text, Video
from pluto_offline.run import Run
from pluto_offline.sdk import finish, init, log, ops
from pluto_offline.waiting import wait

__all__ = [
    "Artifact", "Audio", "File", "Graph", "Histogram", "Image", "JournalError",
    "JournalVersionError", "Run", "RunExistsError", "Table", "Text", "Video", "finish", "init",
    "log", "ops", "wait",
]
