"""The one image pipeline, shared by CLIP training, zero-shot evaluation and
``train cse``: every image reference (:func:`clapkit.data.image.io.open_image`) and every
labelled image set (:mod:`clapkit.data.image.labelled`) goes through it.

:class:`ImageDataset` (CLIP) turns references into normalised tensors (3, S, S):

- evaluation: resize the shorter side to S (bicubic), centre crop S x S; deterministic;
- training: a random resized crop (area fraction in ``image.crop_scale``, aspect ratio
  in [3/4, 4/3], as torchvision's RandomResizedCrop draws it) resized to S, then a
  horizontal flip with probability ``image.flip_p``; every draw comes from a generator
  seeded by (seed, epoch, index), so a resumed run and any number of workers see the
  same pixels; ``image.augment: false`` trains on the evaluation transform instead
  (CyCLIP's setting);
- normalisation ``(x - image.mean) / image.std`` per channel.

:class:`ImageSet` (``train cse``) holds a labelled set's images as tensors (C, H, W) in
[0, 1], decoded per item: a grayscale array image (MNIST, digits) at its own size, any
other image opened as above, converted to ``channels`` and resized to ``size``
(bilinear). Nothing is decoded up front, so an ImageNet-sized folder costs its file
list in memory, not its pixels.

Batched image augmentations in torch (torchvision does not run beside our torch).

:class:`ImageAugment` draws SimCLR's view pipeline for a whole batch at once from a
``torch.Generator``: random resized crop (area fraction in ``scale``, aspect ratio in
``ratio``, bilinear resampling to ``size``), horizontal flip, colour jitter
(brightness, contrast, saturation, each a factor in ``[1 - s, 1 + s]``, applied with
probability ``jitter_p``) and grayscale (probability ``gray_p``, RGB only). Crop and
flip are one affine resampling per image (``affine_grid`` + ``grid_sample``), so a batch
costs two kernel calls, not a Python loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError
from .datasets import SeededItems
from .image.io import _BICUBIC, _BILINEAR, centre_crop_box, open_image, random_resized_crop_box
from .records import ArrayImage, LabelledSet


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


# --- train cse: a labelled set's images in [0, 1], and SimCLR's batched views --------------
LUMA = (0.299, 0.587, 0.114)


class ImageSet(Dataset):
    """The images of a labelled set for ``train cse`` (see the module docstring): item
    ``i`` is (C, H, W) in [0, 1] and its label; ``labels`` (N,) int64, ``class_names``."""

    def __init__(self, data: LabelledSet, size: int = 28, channels: int = 1):
        self.items = [c.media for c in data.clips]
        self.labels = torch.tensor([c.label for c in data.clips], dtype=torch.int64)
        self.class_names, self.skipped = data.class_names, data.skipped
        self.size, self.channels = size, channels

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int) -> torch.Tensor:
        ref = self.items[i]
        if isinstance(ref, ArrayImage) and ref.array.ndim == 3:  # grayscale, at its own size
            return torch.from_numpy(np.asarray(ref.array[ref.index]).astype(np.float32) / ref.scale)[None]
        im = open_image(ref).convert("L" if self.channels == 1 else "RGB").resize((self.size, self.size), _BILINEAR)
        arr = np.asarray(im, dtype=np.float32) / 255.0
        return torch.from_numpy(arr[None] if self.channels == 1 else arr.transpose(2, 0, 1).copy())

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.image(i), int(self.labels[i])

    def batch(self, idx) -> torch.Tensor:
        """(len(idx), C, H, W) images decoded in this process."""
        return torch.stack([self.image(int(i)) for i in idx])


def load_images(spec: str, size: int = 28, channels: int = 1, skip_bad: bool = False) -> ImageSet:
    """``cse.images``: any labelled image set (``digits``, ``mnist:DIR``, ``folder:DIR``,
    ``csv:FILE``, ``cifar:DIR``) as an :class:`ImageSet`; files have their headers checked
    now (a file Pillow cannot identify is an error, or skipped and counted)."""
    from .image.labelled import load_labelled_images

    data = load_labelled_images(spec, skip_bad)
    keep = []
    for clip in data.clips:
        if not isinstance(clip.media, ArrayImage):
            try:
                open_image(clip.media, clip.where, header_only=True)
            except DataError as exc:
                if not skip_bad:
                    raise
                data.skipped.add(exc)
                continue
        keep.append(clip)
    if not keep:
        raise DataError(f"{spec}: no readable images")
    return ImageSet(LabelledSet(keep, data.class_names, data.skipped), size, channels)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


class ImageAugment:
    def __init__(self, size: int, scale: tuple[float, float] = (0.2, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 flip_p: float = 0.5, jitter: float = 0.4, jitter_p: float = 0.8, gray_p: float = 0.2):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop scale {scale}: need 0 < low <= high <= 1")
        self.size, self.scale, self.ratio = size, scale, ratio
        self.flip_p, self.jitter, self.jitter_p, self.gray_p = flip_p, jitter, jitter_p, gray_p

    def _uniform(self, n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=g)

    def crop_flip(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        area = self._uniform(n, *self.scale, g)
        log_r = self._uniform(n, math.log(self.ratio[0]), math.log(self.ratio[1]), g)
        r = torch.exp(log_r)
        w = torch.sqrt(area * r).clamp(max=1.0)  # crop width and height as fractions of the image
        h = torch.sqrt(area / r).clamp(max=1.0)
        cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - w)  # centre in [-1, 1] coordinates, inside the image
        cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - h)
        flip = torch.where(torch.rand(n, generator=g) < self.flip_p, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        grid = F.affine_grid(theta.to(x), [n, x.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def colour(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, s = x.shape[0], self.jitter
        if s > 0:
            on = (torch.rand(n, generator=g) < self.jitter_p).to(x).view(n, 1, 1, 1)
            b, c, sat = (self._uniform(n, 1 - s, 1 + s, g).to(x).view(n, 1, 1, 1) for _ in range(3))
            y = x * b
            mean = (_gray(y) if x.shape[1] == 3 else y).mean((1, 2, 3), keepdim=True)
            y = (y - mean) * c + mean
            if x.shape[1] == 3:
                y = (y - _gray(y)) * sat + _gray(y)
            x = (on * y + (1 - on) * x).clamp(0, 1)
        if x.shape[1] == 3 and self.gray_p > 0:
            gray = (torch.rand(n, generator=g) < self.gray_p).to(x).view(n, 1, 1, 1)
            x = gray * _gray(x).expand_as(x) + (1 - gray) * x
        return x

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One augmented view of each image of ``x`` (N, C, H, W) in [0, 1]."""
        return self.colour(self.crop_flip(x, g), g)
