"""Disk images blkback serves: the :class:`Image` interface and ``open_image``.

``params`` in the backend directory is ``FORMAT:PATH`` (libxl's form for
its qdisk backend); ``open_image`` turns it into an object with the
interface :class:`~.requests.Backend` executes requests on.  Formats:
``raw`` (a file or block device, :class:`~.requests.DiskImage`).  Any
other format is an :class:`ImageError` naming the formats served.
"""

from __future__ import annotations

from pyxen.services.blkback.requests import DiskImage, Image

FORMATS = ("raw",)


class ImageError(Exception):
    """An image that cannot be served; the message says what to fix."""


def open_image(path: str, fmt: str, *, read_only: bool) -> Image:
    if fmt not in FORMATS:
        raise ImageError(f"{path}: format '{fmt}' is not served (formats: "
                         f"{', '.join(FORMATS)})")
    if not path:
        raise ImageError("the device names no image (empty params)")
    try:
        return DiskImage(path, read_only=read_only)
    except OSError as e:
        raise ImageError(f"{path}: cannot open it {'read-only' if read_only else 'read-write'}"
                         f": {e.strerror or e}") from None
