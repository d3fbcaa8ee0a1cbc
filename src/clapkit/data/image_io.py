"""Image decoding and the image pipeline of the dual encoder, run in DataLoader workers.

An image is referred to by one of:

- a :class:`~pathlib.Path` (a file on disk);
- a :class:`TarMember` (a file inside a tar shard: its byte offset and size, read
  with one seek, never unpacked);
- an :class:`ArrayImage` (row ``index`` of a uint8 array: MNIST, CIFAR).

:func:`open_image` decodes any of them with Pillow: JPEG, PNG, WebP, BMP, TIFF and the
first frame of a GIF; EXIF orientation applied; grayscale, palette, CMYK and RGBA
converted to RGB (transparent pixels composited over white, so a transparent
background does not turn black). A file that cannot be decoded, or decodes to zero
width or height, is a :class:`~clapkit.errors.DataError` naming it.

:class:`ImageDataset` turns references into normalised tensors (3, S, S):

- evaluation: resize the shorter side to S (bicubic), centre crop S x S; deterministic;
- training: a random resized crop (area fraction in ``image.crop_scale``, aspect ratio
  in [3/4, 4/3], as torchvision's RandomResizedCrop draws it) resized to S, then a
  horizontal flip with probability ``image.flip_p``; every draw comes from a generator
  seeded by (seed, epoch, index), so a resumed run and any number of workers see the
  same pixels; ``image.augment: false`` trains on the evaluation transform instead
  (CyCLIP's setting);
- normalisation ``(x - image.mean) / image.std`` per channel.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError
from .datasets import SeededItems
from .files import TarMember, keep_good

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_BILINEAR = Image.Resampling.BILINEAR
_BICUBIC = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class ArrayImage:
    """Row ``index`` of ``array`` (N, H, W) or (N, H, W, 3) uint8; ``source`` names the set."""

    source: str
    index: int
    array: np.ndarray = field(compare=False, hash=False, repr=False)

    def __str__(self) -> str:
        return f"{self.source}[{self.index}]"


ImageRef = Path | TarMember | ArrayImage


def open_image(ref: ImageRef, where: str | None = None, header_only: bool = False) -> Image.Image:
    """The image ``ref`` as an RGB Pillow image (see the module docstring)."""
    where = where or str(ref)
    if isinstance(ref, ArrayImage):
        return Image.fromarray(np.ascontiguousarray(ref.array[ref.index])).convert("RGB")
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


class ImageTransform:
    """Pillow image -> normalised float tensor (3, S, S); see the module docstring."""

    def __init__(self, settings: dict, train: bool):
        self.size = int(settings["size"])
        self.mean = torch.tensor(settings["mean"], dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(settings["std"], dtype=torch.float32).view(3, 1, 1)
        self.scale = tuple(settings["crop_scale"])
        self.flip_p = float(settings["flip_p"])
        self.train = train and settings.get("augment", True)  # augment off: the evaluation transform

    def __call__(self, im: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        s = self.size
        if self.train:
            box = random_resized_crop_box(im.width, im.height, self.scale, rng)
            im = im.resize((s, s), _BICUBIC, box=box)
            if rng.random() < self.flip_p:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            resized, box = centre_crop_box(im.width, im.height, s)
            im = im.resize(resized, _BICUBIC).crop(box)
        x = torch.from_numpy(np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0)
        return (x - self.mean) / self.std


class ImageDataset(SeededItems):
    """Normalised images of ``items`` (anything with ``.media``, ``.where``); the image
    twin of :class:`~clapkit.data.datasets.ClipDataset`: item ``i`` or ``(epoch, i)``
    -> (tensor, i); training draws seeded by (seed, epoch, i)."""

    def __init__(self, items: Sequence, settings: dict, train: bool = False, seed: int = 0):
        self.items = list(items)
        self.transform = ImageTransform(settings, train)
        self.train, self.seed = train, seed

    def draw(self, item, rng: np.random.Generator | None) -> torch.Tensor:
        return self.transform(open_image(item.media, f"{item.where}: {item.media}"), rng)
