"""pluto_offline: the Pluto SDK API, journaled locally; plutosync delivers it."""
