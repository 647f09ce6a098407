"""Whether this process is an interactive session: ``python -i``, the REPL, ``code.interact``,
IPython, Jupyter. There an exception or ``KeyboardInterrupt`` at the prompt ends nothing (see
:mod:`pluto_offline.lifecycle`), as in the stock SDK.

Checked when an exception or signal arrives, never on the ``log()`` path.
"""

from __future__ import annotations

import sys


def interactive() -> bool:
    """True in ``python -i`` (also while its script runs), at a REPL prompt (``sys.ps1``:
    the REPL, ``code.InteractiveConsole``), and under IPython or a Jupyter kernel."""
    if sys.flags.interactive or hasattr(sys, "ps1"):
        return True
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        return ipython.get_ipython() is not None
    except Exception:  # a half-imported or unusual IPython
        return False
