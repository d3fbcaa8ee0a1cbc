"""``voc2007:ROOT``: Pascal VOC 2007 as its devkit unpacks it, multi-label over the 20
classes (classification as CLIP_benchmark reads it).

``ROOT`` is ``VOCdevkit/VOC2007`` (or a folder holding it): ``ImageSets/Main/{split}.txt``
(one image id a line; ``--split test`` by default, or ``trainval``, ``train``, ``val``),
``Annotations/{id}.xml`` (its ``object/name`` elements) and ``JPEGImages/{id}.jpg``.
An image carries every class one of its objects names, ``difficult`` ones included
(VOC's own classification protocol would ignore an image whose only instances of a
class are difficult; that is not applied here), as CLIP_benchmark's ``PASCALVoc2007``
reads them (``tests/test_clip_benchmark.py`` compares the two on one devkit layout). The
classes are VOC's 20, in the devkit's order (CLIP_benchmark's class names for it); an object name outside them, a missing or malformed XML and a missing
image are errors naming the file (skipped and counted with ``skip_bad``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ...errors import DataError
from ..files import Collector, Skipped, read_lines
from ..records import LabelledClip
from ..specs import LABELLED, ReadOptions, spec_kind
from .captions import _write_png, image_file

CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
           "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def _root(path: Path) -> Path:
    for sub in ("", "VOC2007", "VOCdevkit/VOC2007"):
        if (path / sub / "ImageSets" / "Main").is_dir():
            return path / sub
    raise DataError("no ImageSets/Main (expected VOCdevkit/VOC2007 as the devkit unpacks it)", str(path))


def _write_example(d: Path) -> tuple[str, Path]:
    voc = d / "VOCdevkit" / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "Annotations").mkdir()
    objects = {"000001": ["dog", "person"], "000002": ["train"], "000004": ["car", "car"]}
    for image_id, names in objects.items():
        _write_png(voc / "JPEGImages" / f"{image_id}.jpg")
        body = "".join(f"<object><name>{n}</name><difficult>0</difficult></object>" for n in names)
        (voc / "Annotations" / f"{image_id}.xml").write_text(f"<annotation><filename>{image_id}.jpg</filename>{body}"
                                                              "</annotation>")
    (voc / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in objects))
    return f"voc2007:{d}", voc / "Annotations" / "000001.xml"


@spec_kind("voc2007", LABELLED, ("image",), "ROOT", "Pascal VOC 2007 (`VOCdevkit/VOC2007`): `ImageSets/Main/test.txt`, "
           "`Annotations/*.xml`, `JPEGImages/`; multi-label over its 20 classes (`--split`)", example=_write_example)
def read_voc2007(path: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    root = _root(path)
    ids = read_lines(root / "ImageSets" / "Main" / f"{opts.split or 'test'}.txt")
    index = {n: i for i, n in enumerate(CLASSES)}
    c = Collector(opts.skip_bad, skipped)
    for image_id in ids:
        xml = root / "Annotations" / f"{image_id.strip()}.xml"

        def one(image_id=image_id.strip(), xml=xml):
            try:
                tree = ET.parse(xml)
            except FileNotFoundError as exc:
                raise DataError("annotation not found", str(xml), reason="annotation not found") from exc
            except ET.ParseError as exc:
                raise DataError(f"not valid XML ({exc})", str(xml), reason="malformed annotation") from exc
            names = [(o.findtext("name") or "").strip() for o in tree.getroot().iter("object")]
            unknown = sorted({n for n in names if n not in index})
            if unknown or not names:
                raise DataError(f"object name(s) {', '.join(unknown) or '(none)'}; VOC's classes are "
                                f"{', '.join(CLASSES)}", str(xml), reason="unknown class")
            labels = tuple(sorted({index[n] for n in names}))
            image = image_file(root / "JPEGImages" / f"{image_id}.jpg", str(xml))
            return [LabelledClip(image, labels[0], None, str(xml), labels)]

        c(one)
    return c.items, list(CLASSES)
