"""``stl10:ROOT``: STL-10's binary release (``stl10_binary/``, or ``ROOT`` itself):
``{split}_X.bin`` (uint8 images, 3 x 96 x 96 each, stored column-major as the authors'
readers take them), ``{split}_y.bin`` (uint8 labels 1..10) and ``class_names.txt``;
``--split test`` by default, or ``train``. A file whose size is no whole number of
images, or labels that do not match them, is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError
from ..files import Skipped, read_text
from ..records import ArrayImage, LabelledClip
from ..specs import LABELLED, ReadOptions, spec_kind

SIDE = 96


def _folder(path: Path) -> Path:
    return path / "stl10_binary" if (path / "stl10_binary").is_dir() else path


def _write_example(d: Path) -> tuple[str, Path]:
    folder = d / "stl10_binary"
    folder.mkdir(parents=True)
    pixels = (np.arange(3 * 3 * SIDE * SIDE) % 251).astype(np.uint8)
    (folder / "test_X.bin").write_bytes(pixels.tobytes())
    (folder / "test_y.bin").write_bytes(bytes([1, 2, 1]))
    (folder / "class_names.txt").write_text("airplane\nbird\n")
    return f"stl10:{d}", folder / "test_X.bin"


@spec_kind("stl10", LABELLED, ("image",), "ROOT", "STL-10's binary files (`stl10_binary/test_X.bin`, `test_y.bin`, "
           "`class_names.txt`; `--split`)", example=_write_example)
def read_stl10(path: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    folder, split = _folder(path), opts.split or "test"
    names = [n.strip() for n in read_text(folder / "class_names.txt").splitlines() if n.strip()]
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    for f in (x_path, y_path):
        if not f.is_file():
            raise DataError("file not found (expected STL-10's binary release)", str(f))
    raw = np.fromfile(x_path, dtype=np.uint8)
    if raw.size == 0 or raw.size % (3 * SIDE * SIDE):
        raise DataError(f"{raw.size} bytes is no whole number of 3 x {SIDE} x {SIDE} images", str(x_path))
    images = raw.reshape(-1, 3, SIDE, SIDE).transpose(0, 3, 2, 1)  # column-major planes -> (N, H, W, 3)
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != len(images) or labels.min(initial=0) < 0 or labels.max(initial=0) >= len(names):
        raise DataError(f"{len(labels)} labels in 1..{len(names)} expected for {len(images)} images", str(y_path))
    return [LabelledClip(ArrayImage(str(x_path), i, images), int(y), None, f"{x_path} image {i}")
            for i, y in enumerate(labels.tolist())], names
