"""Opening an image for a model, with the same pixel cap as the data builders.

Pillow's own guard against decompression bombs warns above ~89 MP and raises `DecompressionBombError` above
~179 MP, as a traceback. Train, SFT, eval and infer instead apply `data.max_image_pixels` (by default the builders'
cap, `MAX_IMAGE_PIXELS`) from the image header, before any pixel is decoded: an image over it is rejected with a
clear reason (`data.oversize_images=reject`, the default: a manifest `mmrl build` wrote never holds one), or
shrunk to the cap (`downscale`). Shrinking asks the decoder for a reduced image first (`Image.draft`: JPEG decodes
at 1/2 to 1/8 scale), so a huge JPEG is never decoded whole; other formats have no reduced decode in Pillow and are
decoded, then resized. A shrunk image keeps its aspect ratio; boxes in 0-1000 frames (Qwen2-VL, Qwen3-VL) mean
the same on it, while Qwen2.5-VL's absolute frame can move by up to one 28-pixel cell of the resized grid.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

MAX_IMAGE_PIXELS = 50_000_000  # larger images are decompression bombs or mistakes; the builders reject them too


def open_rgb(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS, oversize: str = "reject") -> Any:
    """The image at `path` as an RGB PIL image of at most `max_pixels` pixels.

    Raises OSError for a missing or unreadable file and ValueError for one over the cap (with `reject`)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap below decides, not Pillow's
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as err:  # over Pillow's hard limit: its message names the size
            raise ValueError(f"image {path} is over the {max_pixels}-pixel cap ({err})") from None
        with image:
            width, height = image.size
            if width * height <= max_pixels:
                return image.convert("RGB")
            if oversize != "downscale":
                raise ValueError(
                    f"image {path} is {width}x{height}, over the {max_pixels}-pixel cap (data.max_image_pixels; "
                    "data.oversize_images=downscale shrinks it instead)"
                )
            scale = math.sqrt(max_pixels / (width * height))
            size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
            image.draft("RGB", size)  # a reduced decode where the format has one; a no-op elsewhere
            return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
