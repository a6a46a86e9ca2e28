"""The key-image picture of an analysis as a PNG a browser shows.

The analysis writes its key images as one DICOM Secondary Capture (``key_images_sc.dcm``,
:mod:`reports.key_image_sc`), the picture PACS viewers show; browsers show no DICOM, so the
console serves the same pixels as PNG, decoded from that file, never drawn again.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

__all__ = ["key_image_png"]


def key_image_png(path: Path) -> bytes:
    """The pixels of the Secondary Capture at ``path`` as PNG (RGB or 8-bit grey, as stored).

    Raises ``ValueError`` when the file holds no picture a PNG can carry.
    """
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"{path.name} holds {pixels.ndim}-D {pixels.dtype} pixels, not an 8-bit picture")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
