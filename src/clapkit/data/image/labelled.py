"""Labelled image sets in their owners' formats, for zero-shot classification and for
``train cse`` (both read them here, and decode them through
:mod:`clapkit.data.image_datasets`). Registered specs (:mod:`clapkit.data.specs`):

- ``folder:DIR`` - one sub-folder of images per class (the ImageNet layout);
- ``csv:FILE`` - ``image,label`` columns (e.g. the shared emoji ``labels.csv``);
- ``mnist:DIR`` - MNIST in its IDX files (``*-images-idx3-ubyte`` with the matching
  ``*-labels-idx1-ubyte``, gzipped or not; ``t10k`` and/or ``train``);
- ``cifar:DIR`` - CIFAR-10's ``test_batch`` + ``batches.meta`` or CIFAR-100's ``test`` +
  ``meta``, in DIR or its ``cifar-10-batches-py`` / ``cifar-100-python`` folder (the
  ``train`` split on request);
- ``digits`` - scikit-learn's 8 x 8 handwritten digits (shipped, offline; ``train cse``'s
  default).

Array sets (MNIST, CIFAR, digits) stay in their compact arrays: an item is an
:class:`~clapkit.data.records.ArrayImage`, a row of the array.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..files import Collector, Skipped, iter_csv_rows
from ..records import ArrayImage, LabelledClip, LabelledSet
from ..specs import LABELLED, ReadOptions, read_labelled, spec_kind
from ..tables import folder_per_class, join
from .captions import _write_png, image_file
from .io import IMAGE_EXTENSIONS


def load_labelled_images(spec: str, skip_bad: bool = False, image_column: str = "image",
                         split: str = "test") -> LabelledSet:
    """A labelled image set (see the module docstring)."""
    data = read_labelled(spec, ReadOptions("image", media_column=image_column, split=split, skip_bad=skip_bad))
    if not data.clips:
        raise DataError(f"{spec}: no images")
    return data


def _write_folder(d: Path) -> tuple[str, Path]:
    for name in ("cat", "dog"):
        for i in range(2):
            _write_png(d / name / f"{i}.png")
    return f"folder:{d}", d / "cat" / "0.png"


@spec_kind("folder", LABELLED, ("image",), "DIR", "one sub-folder of images per class (the ImageNet layout)",
           example=_write_folder)
def read_folder(path: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    return folder_per_class(path, IMAGE_EXTENSIONS, "images")


def _write_labels_csv(d: Path) -> tuple[str, Path]:
    for i in range(4):
        _write_png(d / f"e{i}.png")
    (d / "labels.csv").write_text("image,label\n" + "".join(f"e{i}.png,{'ab'[i % 2]}\n" for i in range(4)))
    return f"csv:{d / 'labels.csv'}", d / "labels.csv"


@spec_kind("csv", LABELLED, ("image",), "FILE", "`image,label` columns (e.g. the shared emoji `labels.csv`); classes "
           "sorted by name", example=_write_labels_csv)
def read_labels_csv(path: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    return _labels_csv(path, opts.column, opts.skip_bad, skipped)


def _write_mnist(d: Path) -> tuple[str, Path]:
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    (d / "t10k-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + np.array([3, 4, 4], ">i4").tobytes()
                                               + images.tobytes())
    (d / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + np.array([3], ">i4").tobytes() + bytes([0, 1, 2]))
    return f"mnist:{d}", d / "t10k-images-idx3-ubyte"


@spec_kind("mnist", LABELLED, ("image",), "DIR", "MNIST's IDX files (`t10k-images-idx3-ubyte` + "
           "`t10k-labels-idx1-ubyte`, and/or `train-*`; gzipped or not)", example=_write_mnist)
def read_mnist(path: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    pixels, labels = load_mnist(path)
    return ([LabelledClip(ArrayImage(str(path), i, pixels), int(y), None, f"{path} item {i}")
             for i, y in enumerate(labels.tolist())], [str(d) for d in range(int(labels.max()) + 1)])


def _write_cifar(d: Path) -> tuple[str, Path]:
    with open(d / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [b"cat", b"dog"]}, fh)
    with open(d / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251, b"labels": [0, 1]}, fh)
    return f"cifar:{d}", d / "test_batch"


@spec_kind("cifar", LABELLED, ("image",), "DIR", "CIFAR-10 (`test_batch` + `batches.meta`) or CIFAR-100 (`test` + "
           "`meta`) python batches", example=_write_cifar)
def read_cifar(path: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    return _cifar(path, opts.split or "test")


@spec_kind("digits", LABELLED, ("image",), "", "scikit-learn's 8 x 8 handwritten digits (shipped with it, offline)",
           bare=True)
def read_digits(path: Path | None, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    pixels = d.images.astype(np.uint8)  # whole numbers 0..16
    return ([LabelledClip(ArrayImage("digits", i, pixels, scale=16.0), int(y), None, f"digits item {i}")
             for i, y in enumerate(d.target.tolist())], [str(c) for c in d.target_names])


def _labels_csv(path: Path, image_column: str, skip_bad: bool, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    rows, bad = [], Collector(skip_bad, skipped)
    for line, row in iter_csv_rows(path, [image_column, "label"]):
        where = f"{path} line {line}"
        try:
            if None in row or row.get(image_column) is None or row.get("label") is None:
                raise DataError("row does not match the header", where, reason="malformed row")
            label = row["label"].strip()
            if not row[image_column].strip() or not label:
                raise DataError(f"empty {image_column} or label", where, reason="empty value")
            rows.append((image_file(join(path.parent, row[image_column].strip(), where), where), label, where))
        except DataError as exc:
            bad.fail(exc)
    names = sorted({label for _, label, _ in rows})
    index = {n: i for i, n in enumerate(names)}
    return [LabelledClip(f, index[label], None, where) for f, label, where in rows], names


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError("file not found (expected CIFAR's python batches)", str(path))
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
    except Exception as exc:  # noqa: BLE001 (a damaged pickle raises whatever its bytes say)
        raise DataError(f"not a CIFAR python batch ({type(exc).__name__}: {exc})", str(path)) from exc
    if not isinstance(batch, dict):
        raise DataError(f"not a CIFAR python batch (a {type(batch).__name__}, not a dict)", str(path))
    return batch


def _class_names(path: Path, key: bytes) -> list[str]:
    names = _unpickle(path).get(key)
    if not isinstance(names, list) or not all(isinstance(n, bytes) for n in names):
        raise DataError(f"no {key.decode()!r} list of names", str(path))
    try:
        return [n.decode() for n in names]
    except UnicodeDecodeError as exc:
        raise DataError(f"a class name is not UTF-8 ({exc.reason})", str(path)) from exc


def _cifar(root: Path, split: str) -> tuple[list[LabelledClip], list[str]]:
    for sub in ("", "cifar-10-batches-py", "cifar-100-python"):
        folder = root / sub if sub else root
        if (folder / "batches.meta").is_file():  # CIFAR-10
            names = _class_names(folder / "batches.meta", b"label_names")
            files, key = (["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]), b"labels"
            break
        if (folder / "meta").is_file():  # CIFAR-100
            names = _class_names(folder / "meta", b"fine_label_names")
            files, key = ["test" if split == "test" else "train"], b"fine_labels"
            break
    else:
        raise DataError("no CIFAR batches.meta (CIFAR-10) or meta (CIFAR-100) file", str(root))
    clips = []
    for name in files:
        path = folder / name
        batch = _unpickle(path)
        if b"data" not in batch or key not in batch:
            raise DataError(f"no {key.decode()!r} or 'data' entry", str(path))
        try:
            data, labels = np.asarray(batch[b"data"], dtype=np.uint8), [int(y) for y in batch[key]]
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(f"'data' or {key.decode()!r} is not an array of bytes and labels ({exc})", str(path)) from exc
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise DataError(f"data {data.shape} and {len(labels)} labels; expected (N, 3072) and N", str(path))
        pixels = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        clips += [LabelledClip(ArrayImage(str(path), i, pixels), int(y), None, f"{path} item {i}")
                  for i, y in enumerate(labels)]
    return clips, names


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
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"the header names {ndim} dimensions but the file ends inside it", str(path))
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"header says shape {dims} ({int(np.prod(dims))} bytes) but the file holds "
                        f"{data.size} data bytes", str(path))
    return data.reshape(dims)


def load_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's images (N, rows, cols) uint8 and labels (N,) of every IDX pair in ``folder``."""
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
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)
