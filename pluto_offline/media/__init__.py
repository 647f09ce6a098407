"""Files and media logged offline: ``Image``, ``Audio``, ``Video``, ``Text``, ``File``,
``Artifact`` with the stock SDK's constructors (docs/media.md).

    run.log({"samples": [pluto_offline.Image(a) for a in batch]})

Pillow and numpy are optional (``pip install 'pluto-offline[media]'``): they are imported only
for the objects that need them, never by ``import pluto_offline``.
"""

from pluto_offline.media.kinds import Artifact, Audio, File, Image, Text, Video

__all__ = ["Artifact", "Audio", "File", "Image", "Text", "Video"]
