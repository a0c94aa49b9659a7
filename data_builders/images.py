"""Safe image loading and deterministic saving.

`load_file` turns whatever a dataset holds into an upright 8-bit RGB array or raises `ItemError` with a reason:
paths that leave the dataset folder, missing, corrupt or truncated files, images over the pixel limit
(decompression bombs), EXIF rotation (applied, so boxes refer to the upright image), and the modes photos come in
(grayscale, 16-bit, palette, RGBA, CMYK). Transparent pixels are composited over white.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps

from data_builders.records import FileImage, ItemError

# a source file whose own bytes can serve as the positive image: already upright 8-bit RGB in a format we store
_COPYABLE = {"JPEG": ".jpg", "PNG": ".png"}


@dataclass
class Loaded:
    pixels: np.ndarray  # (H, W, 3) uint8, C-contiguous
    copy_from: str | None = None  # a file holding exactly these pixels, for storing the positive without re-encoding
    suffix: str = ""
    orientation: int = 1  # the file's EXIF orientation (1: upright as stored); the pixels are already turned upright


def resolve_inside(ref: FileImage) -> Path:
    root = Path(ref.root).resolve()
    path = (root / ref.path).resolve()
    if not path.is_relative_to(root):
        raise ItemError("path_outside", f"image path {ref.path!r} leaves the dataset folder {root}")
    return path


def load_file(ref: FileImage, max_pixels: int) -> Loaded:
    path = resolve_inside(ref)
    if not path.is_file():
        raise ItemError("missing_image", f"image not found: {ref.path}")
    with open(path, "rb") as handle:
        data = handle.read()
    loaded = decode(data, max_pixels, ref.path)
    if loaded.copy_from == "":
        loaded.copy_from = str(path)
    return loaded


def decode(data: bytes, max_pixels: int, name: str) -> Loaded:
    """Decode encoded image bytes to upright RGB; `copy_from` is "" when the bytes themselves are reusable."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never half an image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ItemError(
                    "too_many_pixels",
                    f"{name}: {width}x{height} is over the {max_pixels}-pixel limit (decompression bomb?)",
                )
            image.load()
    except ItemError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ItemError("too_many_pixels", f"{name}: {err}") from None
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as err:
        raise ItemError("corrupt_image", f"{name}: corrupt or truncated image ({err})") from None
    fmt = image.format or ""
    orientation = image.getexif().get(0x0112, 1)
    try:
        upright = ImageOps.exif_transpose(image)
        pixels = to_rgb(upright)
    except (OSError, ValueError) as err:
        raise ItemError("corrupt_image", f"{name}: cannot convert to RGB ({err})") from None
    reusable = (
        image.mode == "RGB" and fmt in _COPYABLE and orientation in (1, None) and "transparency" not in image.info
    )
    turn = orientation if isinstance(orientation, int) and orientation in _STORED_TO_UPRIGHT else 1
    return Loaded(pixels, "" if reusable else None, _COPYABLE.get(fmt, ""), turn)


# where a point (x, y) of the stored W x H pixels lands in the upright image, for each EXIF orientation: the turns
# ImageOps.exif_transpose makes (2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse,
# 8 rotate 90 counter-clockwise); tests/data_builders/test_exif.py checks each against Pillow's own pixels
_STORED_TO_UPRIGHT = {
    1: lambda x, y, w, h: (x, y),
    2: lambda x, y, w, h: (w - x, y),
    3: lambda x, y, w, h: (w - x, h - y),
    4: lambda x, y, w, h: (x, h - y),
    5: lambda x, y, w, h: (y, x),
    6: lambda x, y, w, h: (h - y, x),
    7: lambda x, y, w, h: (h - y, w - x),
    8: lambda x, y, w, h: (y, w - x),
}


def upright_boxes(boxes: list[Any] | None, orientation: int, upright: tuple[int, int], frame: tuple[int, int] | None,
                  name: str) -> list[Any] | None:  # fmt: skip
    """Boxes drawn on an EXIF-tagged file, in the upright image the builder stores.

    `frame` is the (width, height) the source says its boxes were drawn on (COCO's images entry). It equals the
    stored size when the annotation tool showed the pixels as stored (browsers ignored the tag on images until
    2020, when COCO and RefCOCO had long been annotated; cv2 with IGNORE_ORIENTATION, kwcoco), the upright size when
    it applied the tag (browsers since 2020, Label Studio, VIA): the first are turned, the second kept. When both
    sizes match (orientations 2-4, square images) the stored frame is assumed, as for COCO. Neither:
    `size_mismatch`. Malformed boxes pass through for `clean_boxes` to judge.

    >>> upright_boxes([[10, 8, 30, 28]], 6, (64, 96), (96, 64), "a.jpg")  # stored 96x64, turned 90 deg clockwise
    [[36, 10, 56, 30]]
    """
    if orientation == 1 or frame is None or not boxes:
        return boxes
    swap = orientation >= 5
    stored = (upright[1], upright[0]) if swap else upright
    if tuple(frame) != stored:
        if tuple(frame) == upright:
            return boxes
        raise ItemError(
            "size_mismatch",
            f"{name}: the annotation says {frame[0]}x{frame[1]}, the file is {stored[0]}x{stored[1]} stored "
            f"(EXIF orientation {orientation}: {upright[0]}x{upright[1]} upright)",
        )
    turn = _STORED_TO_UPRIGHT[orientation]
    out: list[Any] = []
    for box in boxes:
        if isinstance(box, list | tuple) and len(box) == 4 and all(isinstance(v, int | float) for v in box):
            (ax, ay), (bx, by) = turn(box[0], box[1], *stored), turn(box[2], box[3], *stored)
            out.append([min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)])
        else:
            out.append(box)
    return out


def to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        rgb = image
    elif mode == "CMYK":
        rgb = _cmyk_to_rgb(image)
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and 32-bit gray: scale the full range down to 8 bits instead of clipping at 255
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, rgba).convert("RGB")
    else:  # 1, L, P, YCbCr, LAB, HSV
        rgb = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    # with an embedded ICC profile the colour-managed transform is right; Pillow's plain formula is the fallback
    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass
    return image.convert("RGB")


def encode(pixels: np.ndarray, image_format: str, jpeg_quality: int = 95) -> bytes:
    """Encode with every parameter explicit, so the same pixels always give the same bytes."""
    buffer = io.BytesIO()
    image = Image.fromarray(pixels, "RGB")
    if image_format == "png":
        # level 1: the pixels are exact at any level; higher levels cost 2-4x the time for ~5% smaller files
        image.save(buffer, format="PNG", compress_level=1, optimize=False)
    else:
        image.save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0, optimize=False, progressive=False)
    return buffer.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary name and rename, so a killed build never leaves a half-written file under `path`."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
