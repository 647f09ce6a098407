"""``File``, ``Artifact``, ``Text``, ``Image``, ``Audio``, ``Video``: the stock constructors.

Each object only remembers what it was given; ``log()`` turns it into a :class:`Prepared`
(cheap conversions only) and the stager makes the bytes. File names follow the stock SDK
(``pluto/file.py``): ``<caption>.<uuid4><ext>`` or ``<uuid4><ext>``; a ``File``'s ``name=``
takes the caption's place. The uuid is drawn at each ``log()`` (:func:`file_name`), not at
construction, so every name is unique per (run, logName): the server's storage key is
project/run/logName/fileName, and a repeated name would overwrite the earlier file's bytes.

    run.log({"samples": [pluto.Image(a, caption=f"digit {i}") for i, a in enumerate(batch)],
             "config": pluto.File("conf.yaml"), "ckpt": pluto.Artifact("model.pt")})
"""

from __future__ import annotations

import logging
import mimetypes
import os
import re
import uuid
from typing import Any, NamedTuple

from pluto_offline.media import arrays

logger = logging.getLogger("pluto_offline")
_INVALID = re.compile(r"[^a-zA-Z0-9_\-.]")  # the stock SDK's sanitising
_VIDEO_FORMATS = ("mp4", "webm", "ogg", "gif")


class Prepared(NamedTuple):
    """What ``log()`` writes for one file: how its bytes are made and from what."""

    how: str  # "path" (copied from ``path``), "raw" (``payload`` as is), "png", "wav", "gif"
    ext: str  # ".png"; "" for none
    payload: Any = b""  # a buffer
    params: dict | None = None  # the shape ``how`` needs
    path: str | None = None  # a file given by path


class File:
    """A file given by path; staged from it later, if it is unchanged by then."""

    kind = "FILE"
    _name: str | None = None  # the file name's start (``file_name``)
    _caption: str | None = None

    def __init__(self, path: str, name: str | None = None, **kwargs: Any) -> None:
        self._path: str | None = os.path.abspath(path)
        if not os.path.isfile(self._path):
            raise FileNotFoundError(f"{type(self).__name__}: no such file: {path}")
        self._name = name_base(name)
        self._ext = os.path.splitext(path)[1]

    def _prepare(self) -> Prepared:
        assert self._path is not None
        return Prepared("path", self._ext, path=self._path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({file_name(self._name, self._ext, '<uuid>')!r})"


def name_base(name: str | None) -> str | None:
    """What a file name starts with: a caption or ``name=``, sanitised; None for none."""
    return _INVALID.sub("-", name) if name else None


def file_name(base: str | None, ext: str, uid: str | None = None) -> str:
    """A new name for one logged file: ``<base>.<uuid4><ext>`` or ``<uuid4><ext>``. Drawn once
    per ``log()`` and journaled with the file, so a resend reuses it; the uuid keeps it unique
    in its (run, logName) even across processes and journals writing the same run."""
    uid = uid or str(uuid.uuid4())
    return f"{base}.{uid}{ext}" if base else f"{uid}{ext}"


class Artifact(File):
    """A file to keep (a checkpoint): from a path, or bytes. ``metadata`` is kept locally."""

    kind = "ARTIFACT"

    def __init__(self, data: str | bytes | bytearray | None = None, caption: str | None = None,
                 metadata: dict | None = None, **kwargs: Any) -> None:
        self._name = name_base(caption)
        self._caption = caption
        self._metadata = metadata or {}
        self._bytes: bytes | None = None
        self._path = None
        self._ext = ""
        if isinstance(data, str) and os.path.isfile(data):
            self._path = os.path.abspath(data)
            self._ext = os.path.splitext(data)[1]
        elif isinstance(data, (bytes, bytearray)):
            self._bytes = bytes(data)
        else:
            raise ValueError(f"Artifact: {data!r} is neither an existing file nor bytes")

    def add_file(self, path: str, name: str | None = None) -> None:
        """The stock SDK's older way to give the path."""
        self._name = name_base(name)
        self._path = os.path.abspath(path)
        self._ext = os.path.splitext(path)[1]

    def _prepare(self) -> Prepared:
        if self._path is not None:
            return Prepared("path", self._ext, path=self._path)
        return Prepared("raw", self._ext, self._bytes or b"")


class Text(File):
    """A string (staged as ``.txt``), or an existing file's path."""

    kind = "TEXT"

    def __init__(self, data: Any, caption: str | None = None) -> None:
        self._name = name_base(caption)
        self._caption = caption
        self._path = None
        self._ext = ".txt"
        if isinstance(data, str) and os.path.isfile(data):
            self._path = os.path.abspath(data)
            self._ext = os.path.splitext(data)[1]
        else:
            self._text = data if isinstance(data, str) else str(data)

    def _prepare(self) -> Prepared:
        if self._path is not None:
            return Prepared("path", self._ext, path=self._path)
        return Prepared("raw", self._ext, self._text.encode())


class Image(File):
    """An image from a path, PNG bytes, a PIL image, a numpy array (HW, HWC or CHW, uint8 or
    float), a torch tensor or a matplotlib figure. ``boxes``/``masks``/``annotations`` are
    accepted and not sent (docs/media.md)."""

    kind = "IMAGE"

    def __init__(self, data: Any, caption: str | None = None, boxes: Any = None,
                 masks: Any = None, annotations: Any = None) -> None:
        self._name = name_base(caption)
        self._caption = caption
        self._path = None
        self._ext = ".png"
        self._data = data
        if boxes or masks or annotations:
            _warn_once("annotations", "pluto_offline: Image boxes/masks/annotations are not "
                       "sent by pluto-offline yet; the image is")
        if isinstance(data, str):
            self._path = os.path.abspath(data)
            self._ext = os.path.splitext(data)[1]
        elif isinstance(data, (bytes, bytearray)):
            self._data = bytes(data)
        elif arrays.class_name(data).startswith("matplotlib."):
            self._data = arrays.figure_pixels(data)  # now: the figure changes after this

    def _prepare(self) -> Prepared:
        if self._path is not None:
            return Prepared("path", self._ext, path=self._path)
        if isinstance(self._data, bytes):
            return Prepared("raw", self._ext, self._data)
        px = self._data if isinstance(self._data, arrays.Pixels) else \
            arrays.image_pixels(self._data)
        return Prepared("png", ".png", px.data, {"width": px.width, "height": px.height,
                                                  "channels": px.channels})


class _Recording(File):
    """Audio and Video: given by a path, bytes, or an array the SDK encodes."""

    _ext: str

    def _from_array(self, data: Any) -> bool:
        """Take ``data``; True when it is an array (neither a path nor bytes)."""
        self._data = data
        if isinstance(data, str):
            self._path = os.path.abspath(data)
            self._ext = os.path.splitext(data)[1]
            return False
        if isinstance(data, (bytes, bytearray)):
            self._data = bytes(data)
            return False
        return True


class Audio(_Recording):
    """A clip from a path, WAV bytes, or a numpy waveform at ``rate`` Hz (16-bit WAV)."""

    kind = "AUDIO"

    def __init__(self, data: Any, rate: int | None = 48000, caption: str | None = None,
                 **kwargs: Any) -> None:
        rate = kwargs.get("sample_rate", rate)
        self._name = name_base(caption)
        self._caption = caption
        self._path = None
        self._ext = ".wav"
        self._rate = int(rate) if rate is not None else 48000
        self._from_array(data)

    def _prepare(self) -> Prepared:
        if self._path is not None:
            return Prepared("path", self._ext, path=self._path)
        if isinstance(self._data, bytes):
            return Prepared("raw", self._ext, self._data)
        pcm, channels = arrays.pcm16(self._data)
        return Prepared("wav", ".wav", pcm, {"rate": self._rate, "channels": channels})


class Video(_Recording):
    """A video from a path, bytes, or a (T, C, H, W) / (B, T, C, H, W) uint8 array at
    ``rate`` fps. An array is written as an animated GIF (Pillow; docs/media.md): mp4 from
    arrays needs an ffmpeg encoder pluto-offline does not bundle."""

    kind = "VIDEO"

    def __init__(self, data: Any, rate: int | None = 30, caption: str | None = None,
                 format: str | None = None, **kwargs: Any) -> None:  # noqa: A002
        rate = kwargs.get("fps", rate)
        self._name = name_base(caption)
        self._caption = caption
        self._path = None
        self._ext = f".{format}" if format in _VIDEO_FORMATS else ".mp4"
        self._rate = int(rate) if rate is not None else 30
        if self._from_array(data):
            if format not in (None, "gif"):
                raise ValueError(f"Video: an array is written as a GIF offline (format='gif'); "
                                 f"{format!r} from an array needs an ffmpeg encoder: give a "
                                 "file path or bytes instead")
            self._ext = ".gif"
            try:
                import PIL  # noqa: F401  (checked now: the GIF is made later)
            except ImportError:
                raise arrays.EncoderMissing("a Video from an array is encoded with Pillow, "
                                            f"which is not installed: {arrays.MEDIA_EXTRA}") \
                    from None

    def _prepare(self) -> Prepared:
        if self._path is not None:
            return Prepared("path", self._ext, path=self._path)
        if isinstance(self._data, bytes):
            return Prepared("raw", self._ext, self._data)
        frames, t, h, w, c = arrays.video_frames(self._data)
        return Prepared("gif", ".gif", frames, {"frames": t, "height": h, "width": w,
                                                "channels": c, "rate": self._rate})


def content_type(name: str) -> str:
    """The PUT's Content-Type, as the stock SDK guesses it from the name."""
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)
