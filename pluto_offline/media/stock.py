"""Objects of the stock SDK (``pluto.Image`` ...) passed to ``pluto_offline``'s ``log()``.

Mixed code keeps working: a stock object is read through its attributes (``pluto/file.py``
of pluto-ml 0.0.29: ``_path``, ``_bytes``, ``_image``/``_audio``/``_video``/``_text``,
``_name``, ``_ext``, ``_caption``, ``_rate``) into one of ours. Its name keeps the stock
name's start (the caption, or ``name=``), not the stock uuid or hash: ours draws a new uuid
at each ``log()``, so the same stock object logged twice gets two names. Nothing here imports
``pluto``: an object is recognised by its class's module.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pluto_offline.media import kinds

_OURS = {"File": kinds.File, "Artifact": kinds.Artifact, "Text": kinds.Text,
         "Image": kinds.Image, "Audio": kinds.Audio, "Video": kinds.Video}
# the uuid the stock SDK appends to a caption or name= (``<caption>.<uuid4>``), or is the name
_UUID_TAIL = re.compile(r"(^|\.)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_stock(value: Any) -> bool:
    t = type(value)
    return t.__module__ == "pluto.file" and any(c.__name__ == "File" for c in t.__mro__)


def convert(value: Any) -> kinds.File:
    """One of ours with the stock object's data, name and caption. Raises ``ValueError`` for
    a stock object that holds nothing to send (the stock SDK would drop it too)."""
    name = next(c.__name__ for c in type(value).__mro__ if c.__name__ in _OURS)
    ours = object.__new__(_OURS[name])
    ours._name = _base(value)
    ours._caption = getattr(value, "_caption", None)
    ours._path = None
    ours._ext = getattr(value, "_ext", "") or ""
    path = getattr(value, "_path", None)
    raw = getattr(value, "_bytes", None)
    if name == "Image":
        ours._data = raw
        if _is(value._image, "file") and path:
            ours._path = path
        elif raw is None:
            ours._data = value._image  # a PIL image (made by the stock constructor), a figure
            ours._ext = ".png"
    elif name in ("Audio", "Video"):
        ours._rate = value._rate
        ours._data = raw
        held = value._audio if name == "Audio" else value._video
        if _is(held, "file") and path:
            ours._path = path
        elif raw is None:
            ours._data = value._audio if name == "Audio" else getattr(value, "_data", None)
            if name == "Video":
                ours._ext = ".gif"
    elif name == "Text":
        if path:
            ours._path = path
        else:
            ours._text = value._text
    elif name == "Artifact":
        ours._metadata = getattr(value, "_metadata", {})
        ours._bytes = raw
        ours._path = path
        if path and not ours._ext:
            ours._ext = os.path.splitext(path)[1]
    else:
        ours._path = path
    if ours._path is None and getattr(ours, "_data", b"") is None and \
            getattr(ours, "_bytes", b"") is None:
        raise ValueError(f"a stock {name} with nothing to send")
    return ours


def _is(held: Any, marker: str) -> bool:
    """Whether a stock object's ``_image``/``_audio``/``_video`` is the string ``marker``: it
    may hold the data itself (a numpy waveform, whose ``==`` compares elementwise)."""
    return isinstance(held, str) and held == marker


def _base(value: Any) -> str | None:
    """The start of the stock object's name without its uuid; None when it is only a uuid or
    the content hash a stock ``File`` without ``name=`` gets."""
    name = getattr(value, "_name", None)
    if not isinstance(name, str) or name == getattr(value, "_id", None):
        return None
    return kinds.name_base(_UUID_TAIL.sub("", name))
