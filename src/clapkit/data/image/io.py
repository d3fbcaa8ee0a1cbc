"""Image decoding: every image reference clapkit reads, as an RGB Pillow image.

An image is referred to by one of:

- a :class:`~pathlib.Path` (a file on disk);
- a :class:`TarMember` (a file inside a tar shard: its byte offset and size, read
  with one seek, never unpacked);
- an :class:`~clapkit.data.records.ArrayImage` (row ``index`` of an array: MNIST, CIFAR, digits);
- a :class:`~clapkit.data.records.MemoryImage` (a Pillow image handed to the Python API).

:func:`open_image` decodes any of them with Pillow: JPEG, PNG, WebP, BMP, TIFF and the
first frame of a GIF; EXIF orientation applied; grayscale, palette, CMYK and RGBA
converted to RGB (transparent pixels composited over white, so a transparent
background does not turn black). A file that cannot be decoded, or decodes to zero
width or height, is a :class:`~clapkit.errors.DataError` naming it.

The transforms that turn an image into a tensor (CLIP's and the sentence encoder's) are
in :mod:`clapkit.data.image_datasets`; this module needs Pillow only.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ...errors import DataError
from ..files import TarMember, keep_good
from ..records import ArrayImage, MemoryImage

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_BILINEAR = Image.Resampling.BILINEAR
_BICUBIC = Image.Resampling.BICUBIC


ImageRef = Path | TarMember | ArrayImage | MemoryImage


def open_image(ref: ImageRef, where: str | None = None, header_only: bool = False) -> Image.Image:
    """The image ``ref`` as an RGB Pillow image (see the module docstring)."""
    where = where or str(ref)
    if isinstance(ref, MemoryImage):
        if not isinstance(ref.image, Image.Image) or ref.image.width == 0 or ref.image.height == 0:
            raise DataError("give a Pillow image with pixels (or an image file's path)", where, reason="not an image")
        return _to_rgb(ref.image)
    if isinstance(ref, ArrayImage):
        pixels = np.asarray(ref.array[ref.index])
        if ref.scale != 255.0:
            pixels = np.round(pixels.astype(np.float32) * (255.0 / ref.scale))
        return Image.fromarray(np.ascontiguousarray(pixels.astype(np.uint8))).convert("RGB")
    try:
        source = io.BytesIO(ref.read()) if isinstance(ref, TarMember) else ref
        im = Image.open(source)
        if im.width == 0 or im.height == 0:
            raise DataError("the image has zero width or height", where, reason="empty image")
        if header_only:
            return im
        im.seek(0)  # a GIF's (or TIFF's) first frame
        im = ImageOps.exif_transpose(im)
        return _to_rgb(im)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError("image file not found", where, reason="image file not found") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image ({exc})", where, reason="unreadable image") from exc


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        im.load()
        return im
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def check_images(items: Sequence, skip_bad: bool, skipped) -> list:
    """Decode every distinct image of ``items`` (anything with ``.media`` and ``.where``)
    once; drop (and count) or raise on the bad ones, before training starts."""
    bad: dict = {}
    for item in items:
        if item.media in bad or isinstance(item.media, ArrayImage):
            continue
        try:
            open_image(item.media, f"{item.where}: {item.media}")
        except DataError as exc:
            bad[item.media] = exc
    return keep_good(list(items), bad, skip_bad, skipped, "image(s)")


def random_resized_crop_box(width: int, height: int, scale: tuple[float, float], rng: np.random.Generator,
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a crop covering an area fraction in ``scale`` with
    aspect ratio in ``ratio`` (log-uniform); ten tries, then the centre crop that fits
    ``ratio`` (torchvision's RandomResizedCrop rule)."""
    area = width * height
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(*log_r))
        w, h = int(round(math.sqrt(target * r))), int(round(math.sqrt(target / r)))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    r_in = width / height
    if r_in < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif r_in > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def centre_crop_box(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The size after resizing the shorter side to ``size``, and the centre crop in it."""
    s = size / min(width, height)
    w, h = max(size, int(round(width * s))), max(size, int(round(height * s)))
    left, top = (w - size) // 2, (h - size) // 2
    return (w, h), (left, top, left + size, top + size)
