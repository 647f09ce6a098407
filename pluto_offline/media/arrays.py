"""Arrays and images to 8-bit pixels or 16-bit PCM, cheaply, on the training thread.

Only conversions happen here (no encoding, no hashing): a PNG or WAV is made from these bytes
later by the stager. numpy and Pillow are imported only when the caller passed their objects,
so ``import pluto_offline`` never needs them. The value rules mirror the stock SDK's
(``pluto/file.py``, ``make_compat_image_numpy``): an array with negative values is min-max
normalised, one whose maximum is at most 1 is scaled by 255, then clipped to 0..255.
"""

from __future__ import annotations

import io
from typing import Any, NamedTuple

from pluto_offline.journal.encoders import MEDIA_EXTRA, EncoderMissing


class Pixels(NamedTuple):
    data: Any  # a C-contiguous buffer of height × width × channels bytes
    height: int
    width: int
    channels: int


def numpy() -> Any:
    try:
        import numpy as np
    except ImportError:
        raise EncoderMissing(f"logging arrays needs numpy, which is not installed: "
                             f"{MEDIA_EXTRA}") from None
    return np


def class_name(value: Any) -> str:
    t = type(value)
    return f"{t.__module__}.{t.__qualname__}"


def image_pixels(value: Any) -> Pixels:
    """8-bit pixels of a numpy array (HW, HWC or CHW; any dtype), a PIL image, a torch tensor
    or a matplotlib figure. Raises ``ValueError`` for a shape that is not an image."""
    name = class_name(value)
    if name.startswith("PIL."):
        return pil_pixels(value)
    if name.startswith("matplotlib."):
        return figure_pixels(value)
    if name.startswith("torch."):
        value = value.detach().cpu().numpy()
    return array_pixels(value)


def array_pixels(value: Any) -> Pixels:
    np = numpy()
    a = np.asarray(value)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 2, 3, 4):
        a = a.transpose(1, 2, 0)  # CHW -> HWC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (2, 3, 4)) or 0 in a.shape:
        raise ValueError(f"an Image array must be H×W, H×W×C or C×H×W with 1 to 4 channels, "
                         f"not shape {tuple(a.shape)}")
    if a.dtype != np.uint8 or a.max() <= 1:  # the stock SDK's rules (its uint8 0/1 masks too)
        a = a.astype(np.float64)
        lo = a.min()
        if lo < 0:
            a = (a - lo) / (a.max() - lo)
        if a.max() <= 1:
            a = (a * 255).astype(np.int32)
        a = a.clip(0, 255).astype(np.uint8)
    a = np.ascontiguousarray(a)
    return Pixels(a, a.shape[0], a.shape[1], 1 if a.ndim == 2 else a.shape[2])


_PIL_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def pil_pixels(image: Any) -> Pixels:
    if image.mode not in _PIL_MODES:
        image = image.convert("RGBA" if "A" in image.mode or image.mode == "P" else "RGB")
    width, height = image.size
    return Pixels(image.tobytes(), height, width, _PIL_MODES[image.mode])


def figure_pixels(fig: Any) -> Pixels:
    """A matplotlib figure rendered (the one costly case: a figure cannot wait, it changes)."""
    try:
        from PIL import Image as PILImage
    except ImportError:
        raise EncoderMissing(f"an Image of a matplotlib figure needs Pillow: {MEDIA_EXTRA}") \
            from None
    if not hasattr(fig, "savefig"):
        fig = getattr(fig, "figure", None) or fig.gcf()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    return pil_pixels(PILImage.open(buf))


def pcm16(value: Any) -> tuple[Any, int]:
    """``(bytes of int16 little-endian frames, channels)`` of a waveform: float samples in
    [-1, 1] scaled by 32767 and rounded, as libsndfile (``soundfile.write``) does; int16 as is;
    shape (frames,) or (frames, channels)."""
    np = numpy()
    a = np.asarray(value)
    if a.ndim not in (1, 2) or a.size == 0:
        raise ValueError(f"an Audio array must be (frames,) or (frames, channels), not shape "
                         f"{tuple(a.shape)}")
    if a.dtype == np.int16:
        out = a.astype("<i2", copy=False)
    elif a.dtype == np.int32:
        out = (a >> 16).astype("<i2")
    else:
        out = np.rint(np.clip(a.astype(np.float64), -1.0, 1.0) * 32767).astype("<i2")
    return np.ascontiguousarray(out), 1 if a.ndim == 1 else a.shape[1]


def video_frames(value: Any) -> tuple[Any, int, int, int, int]:
    """``(uint8 frames T×H×W×C, T, H, W, C)`` of a (T, C, H, W) or (B, T, C, H, W) array, a
    batch laid out as a grid, as the stock SDK's ``make_compat_video_numpy``."""
    np = numpy()
    v = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    if v.ndim not in (4, 5):
        raise ValueError("video data must have 4 dimensions (time, channel, height, width) or "
                         f"5 (batch first), not shape {tuple(v.shape)}")
    if v.ndim == 4:
        v = v.reshape(1, *v.shape)
    b, t, c, h, w = v.shape
    if c not in (1, 3, 4):
        raise ValueError(f"video frames must have 1, 3 or 4 channels, not {c}")
    if v.dtype != np.uint8:
        v = v.astype(np.uint8)
    rows = 2 ** ((b.bit_length() - 1) // 2)
    cols = b // rows
    v = v[:rows * cols].reshape(rows, cols, t, c, h, w).transpose(2, 0, 4, 1, 5, 3)
    v = np.ascontiguousarray(v.reshape(t, rows * h, cols * w, c))
    return v, t, rows * h, cols * w, c
