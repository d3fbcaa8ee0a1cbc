"""``food101:ROOT``: Food-101 as its archive unpacks (``food-101/``): ``meta/classes.txt``
(``apple_pie``, ...), ``meta/labels.txt`` (the same classes readable: ``Apple pie``),
``meta/test.txt`` / ``meta/train.txt`` (``apple_pie/1011328`` lines, ``--split test`` by
default) and ``images/<class>/<id>.jpg``. Class names are the readable ones of
``labels.txt`` (``classes.txt``'s, ``_`` read as a space, when it is absent); a line
naming a class not in ``classes.txt`` or a missing image is an error naming the file
and line (skipped and counted with ``skip_bad``).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ..files import Collector, Skipped, read_text
from ..records import LabelledClip
from ..specs import LABELLED, ReadOptions, spec_kind
from .captions import _write_png, image_file


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def _write_example(d: Path) -> tuple[str, Path]:
    (d / "meta").mkdir(parents=True)
    (d / "meta" / "classes.txt").write_text("apple_pie\nbaby_back_ribs\n")
    (d / "meta" / "labels.txt").write_text("Apple pie\nBaby back ribs\n")
    items = ["apple_pie/1005649", "apple_pie/1011328", "baby_back_ribs/1003", "baby_back_ribs/1004"]
    for item in items:
        _write_png(d / "images" / f"{item}.jpg")
    (d / "meta" / "test.txt").write_text("".join(f"{i}\n" for i in items))
    return f"food101:{d}", d / "meta" / "test.txt"


@spec_kind("food101", LABELLED, ("image",), "ROOT", "Food-101: `meta/test.txt` (or `train.txt`, `--split`), "
           "`meta/classes.txt` with `labels.txt`'s readable names, `images/<class>/<id>.jpg`", example=_write_example)
def read_food101(path: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    root = path / "food-101" if (path / "food-101" / "meta").is_dir() else path
    classes = _lines(root / "meta" / "classes.txt")
    readable = root / "meta" / "labels.txt"
    names = _lines(readable) if readable.is_file() else [c.replace("_", " ") for c in classes]
    if len(names) != len(classes):
        raise DataError(f"{len(names)} names for the {len(classes)} classes of classes.txt", str(readable))
    index = {cls: i for i, cls in enumerate(classes)}
    split = root / "meta" / f"{opts.split or 'test'}.txt"
    c = Collector(opts.skip_bad, skipped)
    for n, line in enumerate(read_text(split).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{split} line {n}"

        def one(item=line.strip(), where=where):
            cls, sep, _ = item.partition("/")
            if not sep or cls not in index:
                raise DataError(f"{item!r}: expected CLASS/ID with CLASS one of classes.txt", where, reason="unknown class")
            return [LabelledClip(image_file(root / "images" / f"{item}.jpg", where), index[cls], None, where)]

        c(one)
    return c.items, names
