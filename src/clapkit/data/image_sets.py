"""Image-caption manifests and labelled image sets in their owners' formats.

Image-caption specs (every image is paired with each of its captions):

- ``coco:JSON`` - COCO captions (``annotations/captions_{train,val}2017.json``:
  ``images[].{id,file_name}``, ``annotations[].{image_id,caption}``); images in
  ``image_dir`` (default: ``ROOT/val2017`` for ``ROOT/annotations/captions_val2017.json``
  when that folder exists, else the JSON's folder);
- ``karpathy:JSON`` - the Karpathy split files (``dataset_flickr30k.json``,
  ``dataset_flickr8k.json``, ``dataset_coco.json``): ``images[].{filename, filepath?,
  split, sentences[].raw}``; ``split`` keeps one split (``restval`` counts as ``train``);
  images in ``image_dir`` (default: a ``flickr30k-images``, ``Flicker8k_Dataset``,
  ``Flickr8k_Dataset`` or ``images`` folder beside the JSON, else its folder), under
  ``filepath`` when given (COCO's ``val2014``);
- ``flickr:TOKENFILE`` - Flickr30k's ``results_20130124.token`` / Flickr8k's
  ``Flickr8k.token.txt``: ``IMAGE#N<TAB>caption`` lines; images as for karpathy:;
- ``csv:FILE`` / ``jsonl:FILE`` - an ``image`` column / key (name selectable) and
  ``caption``, read by :func:`clapkit.data.manifests.load_pairs`;
- ``wds:PATTERN`` - WebDataset tar shards (``{key}.jpg|jpeg|png|webp`` + ``{key}.txt``
  or ``.json``, as open_clip and LAION write them), read in place: see
  :mod:`clapkit.data.shards`.

Labelled image specs, for zero-shot classification: ``folder:DIR`` (one sub-folder of
images per class, the ImageNet layout), ``csv:FILE`` (``image,label`` columns),
``mnist:DIR`` (the IDX files), ``cifar:DIR`` (CIFAR-10's ``test_batch`` +
``batches.meta`` or CIFAR-100's ``test`` + ``meta``, in DIR or its
``cifar-10-batches-py`` / ``cifar-100-python`` folder; the ``train`` split on request).

A bad row, record or file raises a DataError naming the file and row (JSON: the record
index and id), or with ``skip_bad`` is counted in the :class:`Skipped` record.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError
from .files import Collector, Skipped, iter_csv_rows, parse_spec, read_text
from .image_io import IMAGE_EXTENSIONS, ArrayImage
from .labelled import LabelledClip, LabelledSet, folder_per_class
from .manifests import Pair, clean_caption, load_pairs
from .shards import expand_shards, wds_pairs  # noqa: F401 (expand_shards: part of this module's API)

IMAGE_CAPTION_KINDS = ("coco", "karpathy", "flickr", "csv", "jsonl", "wds")
LABELLED_IMAGE_KINDS = ("folder", "csv", "mnist", "cifar")
_IMAGE_FOLDERS = ("flickr30k-images", "flickr30k_images", "Flicker8k_Dataset", "Flickr8k_Dataset", "images")


def _image_file(path: Path, where: str) -> Path:
    if not path.is_file():
        raise DataError(f"image file not found: {path}", where, reason="image file not found")
    return path


def _read_json(path: Path):
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", str(path)) from exc


def _records(data, key: str, path: Path) -> list:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataError(f"expected a JSON object with a '{key}' list", str(path))
    return data[key]


def _default_image_dir(path: Path, image_dir: str | Path | None) -> Path:
    if image_dir:
        return Path(image_dir)
    for name in _IMAGE_FOLDERS:
        if (path.parent / name).is_dir():
            return path.parent / name
    return path.parent


def _coco(path: Path, image_dir, split, c: Collector) -> None:
    data = _read_json(path)
    images, annotations = _records(data, "images", path), _records(data, "annotations", path)
    if image_dir:
        base = Path(image_dir)
    else:  # ROOT/annotations/captions_val2017.json -> ROOT/val2017
        guess = path.parent.parent / path.stem.rsplit("_", 1)[-1]
        base = guess if guess.is_dir() else path.parent
    files: dict = {}
    for n, rec in enumerate(images):
        where = f"{path} images[{n}]"
        if not isinstance(rec, dict) or "id" not in rec or not isinstance(rec.get("file_name"), str):
            c.fail(DataError("needs 'id' and 'file_name'", where, reason="malformed record"))
            continue
        files[rec["id"]] = (rec["file_name"], where)
    found: dict = {}

    for n, ann in enumerate(annotations):
        where = f"{path} annotations[{n}]"

        def one(ann=ann, where=where):
            if not isinstance(ann, dict) or "image_id" not in ann:
                raise DataError("needs 'image_id' and 'caption'", where)
            where = f"{where} (image_id {ann['image_id']})"
            if ann["image_id"] not in files:
                raise DataError("image_id not among the images", where, reason="unknown image_id")
            name, _ = files[ann["image_id"]]
            if name not in found:
                found[name] = _image_file(base / name, where)
            return [Pair(found[name], clean_caption(ann.get("caption"), where), str(ann["image_id"]), where)]

        c(one)


def _karpathy(path: Path, image_dir, split, c: Collector) -> None:
    data = _read_json(path)
    base = _default_image_dir(path, image_dir)
    for n, rec in enumerate(_records(data, "images", path)):
        where = f"{path} images[{n}]"

        def one(rec=rec, where=where):
            if not isinstance(rec, dict) or not isinstance(rec.get("filename"), str):
                raise DataError("needs 'filename', 'split' and 'sentences'", where)
            where = f"{where} ({rec['filename']})"
            rec_split = "train" if rec.get("split") == "restval" else rec.get("split")
            if split and rec_split != split:
                return []
            sentences = rec.get("sentences")
            if not isinstance(sentences, list) or not sentences:
                raise DataError("no 'sentences'", where, reason="no captions")
            image = _image_file(base / rec.get("filepath", "") / rec["filename"], where)
            media_id = str(rec.get("imgid", rec["filename"]))
            return [Pair(image, clean_caption(s.get("raw") if isinstance(s, dict) else None, f"{where} sentences[{k}]"),
                         media_id, where) for k, s in enumerate(sentences)]

        c(one)


def _flickr(path: Path, image_dir, split, c: Collector) -> None:
    text = read_text(path)
    base = _default_image_dir(path, image_dir)
    found: dict = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"

        def one(line=line, where=where):
            key, tab, caption = line.partition("\t")
            name, hash_, number = key.partition("#")
            if not tab or not hash_ or not number.strip().isdigit():
                raise DataError("expected IMAGE#N<TAB>caption", where, reason="malformed line")
            if name not in found:
                found[name] = _image_file(base / name, where)
            return [Pair(found[name], clean_caption(caption, where), name, where)]

        c(one)


def load_image_pairs(spec: str, image_dir: str | Path | None = None, skip_bad: bool = False,
                     skipped: Skipped | None = None, image_column: str = "image", caption_column: str = "caption",
                     split: str | None = None) -> list[Pair]:
    """Image-caption pairs of a spec (see the module docstring)."""
    skipped = skipped if skipped is not None else Skipped()
    kind, _, rest = str(spec).partition(":")
    if kind in ("csv", "jsonl"):
        base = Path(image_dir) if image_dir else None
        return load_pairs(spec, base, None, skip_bad, skipped, audio_column=image_column,
                          caption_column=caption_column, resolve=_image_file)
    if kind == "wds":
        c = Collector(skip_bad, skipped)
        wds_pairs(rest, "image", c)
        return c.items
    kind, path = parse_spec(spec, IMAGE_CAPTION_KINDS)
    c = Collector(skip_bad, skipped)
    {"coco": _coco, "karpathy": _karpathy, "flickr": _flickr}[kind](path, image_dir, split, c)
    return c.items


# --- labelled image sets -------------------------------------------------------------

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
            file = Path(row[image_column].strip()).expanduser()
            file = file if file.is_absolute() else path.parent / file
            rows.append((_image_file(file, where), label, where))
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
            return pickle.load(fh, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        raise DataError(f"not a CIFAR python batch ({exc})", str(path)) from exc


def _cifar(root: Path, split: str) -> tuple[list[LabelledClip], list[str]]:
    for sub in ("", "cifar-10-batches-py", "cifar-100-python"):
        folder = root / sub if sub else root
        if (folder / "batches.meta").is_file():  # CIFAR-10
            names = [n.decode() for n in _unpickle(folder / "batches.meta")[b"label_names"]]
            files, key = (["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]), b"labels"
            break
        if (folder / "meta").is_file():  # CIFAR-100
            names = [n.decode() for n in _unpickle(folder / "meta")[b"fine_label_names"]]
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
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or len(batch[key]) != len(data):
            raise DataError(f"data {data.shape} and {len(batch[key])} labels; expected (N, 3072) and N", str(path))
        pixels = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        clips += [LabelledClip(ArrayImage(str(path), i, pixels), int(y), None, f"{path} item {i}")
                  for i, y in enumerate(batch[key])]
    return clips, names


def load_labelled_images(spec: str, skip_bad: bool = False, image_column: str = "image",
                         split: str = "test") -> LabelledSet:
    """A labelled image set (see the module docstring)."""
    from .images import load_mnist

    kind, path = parse_spec(spec, LABELLED_IMAGE_KINDS)
    skipped = Skipped()
    if kind == "folder":
        clips, names = folder_per_class(path, IMAGE_EXTENSIONS, "images")
    elif kind == "csv":
        clips, names = _labels_csv(path, image_column, skip_bad, skipped)
    elif kind == "cifar":
        clips, names = _cifar(path, split)
    else:
        m = load_mnist(path)
        clips = [LabelledClip(ArrayImage(str(path), i, m.pixels), int(y), None, f"{path} item {i}")
                 for i, y in enumerate(m.labels.tolist())]
        names = m.class_names
    if not clips:
        raise DataError(f"{spec}: no images")
    return LabelledSet(clips, names, skipped)
