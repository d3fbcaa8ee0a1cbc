"""Labelled image sets for contrastive training of the shared encoder (VisualCSE).

- ``mnist:DIR`` - MNIST in its IDX files (``*-images-idx3-ubyte`` with the matching
  ``*-labels-idx1-ubyte``, gzipped or not; ``t10k`` and/or ``train``);
- ``folder:DIR`` - one sub-folder of images per class (decoded with Pillow, converted
  to ``channels`` and resized to ``size`` x ``size``);
- ``digits`` - scikit-learn's 8 x 8 handwritten digits (shipped, offline; the default).

An :class:`ImageSet` is a torch ``Dataset``: item ``i`` is a float tensor (C, H, W) in
[0, 1] and its integer label. Nothing is decoded up front: MNIST and digits stay in
their compact uint8 arrays, a folder is a list of files whose headers are checked when
it is read (a file Pillow cannot identify is an error, or skipped and counted with
``skip_bad``) and whose pixels are decoded when a batch asks for them, in DataLoader
workers during training. An ImageNet-sized folder therefore costs its file list in
memory, not its float32 pixels.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .files import Skipped, parse_spec
from .image_io import _BILINEAR, IMAGE_EXTENSIONS, open_image
from .labelled import folder_per_class


class ImageSet(Dataset):
    """Labelled images, decoded per item. ``labels`` (N,) int64; ``class_names``."""

    def __init__(self, labels: torch.Tensor, class_names: list[str], skipped: Skipped,
                 pixels: np.ndarray | None = None, files: list[Path] | None = None,
                 size: int = 28, channels: int = 1, scale: float = 255.0):
        self.labels, self.class_names, self.skipped = labels, class_names, skipped
        self.pixels, self.files = pixels, files  # (N, H, W) uint8-like array, or image files
        self.size, self.channels, self.scale = size, channels, scale

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> torch.Tensor:
        if self.pixels is not None:
            return torch.from_numpy(self.pixels[i].astype(np.float32) / self.scale)[None]
        return _decode(self.files[i], self.size, self.channels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.image(i), int(self.labels[i])

    def batch(self, idx) -> torch.Tensor:
        """(len(idx), C, H, W) images decoded in this process."""
        return torch.stack([self.image(int(i)) for i in idx])


def _open_image(path: Path, size: int | None = None, channels: int = 1) -> np.ndarray | None:
    """The image at ``path`` converted and resized to (size, size) in [0, 1], or, with
    ``size`` None, only its header read; an unreadable file is a DataError naming it."""
    if size is None:
        open_image(path, header_only=True)
        return None
    im = open_image(path).convert("L" if channels == 1 else "RGB").resize((size, size), _BILINEAR)
    return np.asarray(im, dtype=np.float32) / 255.0


def _decode(path: Path, size: int, channels: int) -> torch.Tensor:
    arr = _open_image(path, size, channels)
    return torch.from_numpy(arr[None] if channels == 1 else arr.transpose(2, 0, 1).copy())


def _idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST format): magic 0x0000 + type 0x08 (ubyte) + ndim, then
    ndim big-endian int32 sizes and the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read ({exc})", str(path)) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError("not an IDX file of unsigned bytes (magic 0x00 0x00 0x08 ndim)", str(path))
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"header says shape {dims} ({int(np.prod(dims))} bytes) but the file holds "
                        f"{data.size} data bytes", str(path))
    return data.reshape(dims)


def load_mnist(folder: Path) -> ImageSet:
    found = sorted(p for p in folder.iterdir() if "images-idx3-ubyte" in p.name) if folder.is_dir() else []
    if not found:
        raise DataError("no *-images-idx3-ubyte[.gz] file (expected MNIST's IDX files)", str(folder))
    images, labels = [], []
    for img_path in found:
        lab_path = img_path.with_name(img_path.name.replace("images-idx3", "labels-idx1"))
        if not lab_path.is_file():
            raise DataError(f"no labels file {lab_path.name} beside it", str(img_path))
        x, y = _idx(img_path), _idx(lab_path)
        if x.ndim != 3:
            raise DataError(f"images must be (N, rows, cols); the header says {x.shape}", str(img_path))
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{len(y)} labels for {len(x)} images", str(lab_path))
        images.append(x)
        labels.append(y)
    x = np.concatenate(images)
    y = torch.from_numpy(np.concatenate(labels).astype(np.int64))
    return ImageSet(y, [str(d) for d in range(int(y.max()) + 1)], Skipped(), pixels=x, size=x.shape[1])


def load_digits_set() -> ImageSet:
    from sklearn.datasets import load_digits

    d = load_digits()
    return ImageSet(torch.from_numpy(d.target.astype(np.int64)), [str(c) for c in d.target_names], Skipped(),
                    pixels=d.images.astype(np.float32), size=8, scale=16.0)


def load_image_folder(root: Path, size: int, channels: int, skip_bad: bool = False) -> ImageSet:
    """One sub-folder per class; headers are checked now, pixels decoded per item."""
    clips, names = folder_per_class(root, IMAGE_EXTENSIONS, "images")
    skipped, files, labels = Skipped(), [], []
    for clip in clips:
        try:
            _open_image(clip.media)  # the header only
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.add(exc)
            continue
        files.append(clip.media)
        labels.append(clip.label)
    if not files:
        raise DataError("no images (extensions " + ", ".join(IMAGE_EXTENSIONS) + ")", str(root))
    return ImageSet(torch.tensor(labels), names, skipped, files=files, size=size, channels=channels)


def load_images(spec: str, size: int = 28, channels: int = 1, skip_bad: bool = False) -> ImageSet:
    """An image set from ``mnist:DIR``, ``folder:DIR`` or ``digits``."""
    if spec == "digits":
        return load_digits_set()
    kind, path = parse_spec(spec, ("mnist", "folder"))
    if kind == "mnist":
        return load_mnist(path)
    return load_image_folder(path, size, channels, skip_bad)
