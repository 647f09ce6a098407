"""plutosync: replays pluto-offline journals to a Pluto server, and a local Pluto-compatible server."""

__version__ = "0.1.0"
