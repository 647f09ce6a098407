"""Encoders the stager runs off the training thread: raw pixels → PNG, PCM → WAV, frames → GIF.

PNG and WAV need only the standard library (``zlib``, ``wave``), so a daemon recovering a killed
job's images and clips needs no imaging package. GIF needs Pillow; without it
:class:`EncoderMissing` names the packages to install.

    >>> png = encode_png(b"\\x00\\xff\\x00", width=1, height=1, channels=3)
    >>> png[:8] == PNG_MAGIC
    True
"""

from __future__ import annotations

import io
import struct
import wave
import zlib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# channels -> PNG colour type (ISO 15948 table 6.1): grey, grey+alpha, RGB, RGBA
_COLOUR = {1: 0, 2: 4, 3: 2, 4: 6}
# What to install, as a command that works: pluto-offline is not on PyPI (README), so the extra
# only exists for an install from a clone; the packages themselves can always be installed.
MEDIA_EXTRA = ("pip install numpy Pillow (or, in a pluto-offline clone: "
               "pip install '.[media]')")


class EncoderMissing(RuntimeError):
    """An optional encoder package is not installed; the message says what to install."""


def encode_png(pixels: bytes | memoryview, *, width: int, height: int, channels: int,
               level: int = 6) -> bytes:
    """A PNG of 8-bit ``pixels`` (rows of ``width * channels`` bytes, top to bottom).

    Filter type 0 on every row and zlib ``level`` 6, as Pillow's default: the bytes decode to
    exactly the pixels given. Raises ``ValueError`` when the sizes do not match.
    """
    if channels not in _COLOUR:
        raise ValueError(f"a PNG holds 1 to 4 channels, not {channels}")
    stride = width * channels
    data = memoryview(pixels).cast("B")
    if len(data) != stride * height:
        raise ValueError(f"{len(data)} bytes are not {height} rows of {stride}")
    raw = bytearray((stride + 1) * height)
    for row in range(height):  # a zero filter byte before each row
        start = row * (stride + 1) + 1
        raw[start:start + stride] = data[row * stride:(row + 1) * stride]
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR[channels], 0, 0, 0)
    return b"".join((PNG_MAGIC, _chunk(b"IHDR", header),
                     _chunk(b"IDAT", zlib.compress(bytes(raw), level)), _chunk(b"IEND", b"")))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def encode_wav(pcm16: bytes | memoryview, *, rate: int, channels: int) -> bytes:
    """A WAV file of 16-bit little-endian PCM frames (interleaved ``channels``), as
    ``soundfile.write`` makes from a float waveform by default (subtype PCM_16)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(pcm16))
    return out.getvalue()


def encode_gif(frames: bytes | memoryview, *, count: int, width: int, height: int,
               channels: int, rate: int) -> bytes:
    """An animated GIF of ``count`` 8-bit frames (each ``height × width × channels``) at
    ``rate`` frames per second. Needs Pillow (:class:`EncoderMissing` otherwise)."""
    try:
        from PIL import Image as PILImage
    except ImportError:
        raise EncoderMissing(f"a Video from an array is encoded with Pillow, which is not "
                             f"installed: {MEDIA_EXTRA}") from None
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    size = width * height * channels
    data = bytes(frames)
    images = [PILImage.frombytes(mode, (width, height), data[i * size:(i + 1) * size])
              for i in range(count)]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(1, round(1000 / max(rate, 1))), loop=0)
    return out.getvalue()


def encode(how: str, payload: memoryview, params: dict) -> bytes:
    """The file's bytes from an incoming payload: ``how`` is ``raw`` (as given), ``png``,
    ``wav`` or ``gif`` with the shape in ``params``. Raises ``ValueError`` for an unknown
    encoding (written by a newer SDK), :class:`EncoderMissing` for a missing package."""
    if how == "raw":
        return bytes(payload)
    if how == "png":
        return encode_png(payload, width=params["width"], height=params["height"],
                          channels=params["channels"])
    if how == "wav":
        return encode_wav(payload, rate=params["rate"], channels=params["channels"])
    if how == "gif":
        return encode_gif(payload, count=params["frames"], width=params["width"],
                          height=params["height"], channels=params["channels"],
                          rate=params["rate"])
    raise ValueError(f"unknown encoding {how!r} (written by a newer pluto-offline?)")
