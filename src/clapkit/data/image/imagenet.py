"""``imagenet:ROOT``: the ImageNet-1k validation set in any of the layouts it is kept in,
with readable class names instead of ``n01440764``.

- synset folders: ``ROOT/n01440764/*.JPEG`` (or ``ROOT/val/n01440764/``), as
  torchvision's ``ImageNet`` and most copies hold it;
- flat, with Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``, the
  synset the first token of the prediction string) beside ``ILSVRC2012_val_*.JPEG``
  (in ``ROOT``, ``ROOT/val`` or, as the Kaggle release unpacks, ``ROOT/ILSVRC/Data/CLS-LOC/val``);
- flat, with the devkit's ``data/ILSVRC2012_validation_ground_truth.txt`` (one
  ILSVRC2012_ID a line, in file order) and ``data/meta.mat`` (read with scipy), in
  ``ROOT/ILSVRC2012_devkit_t12``.

The classes are the synsets sorted (the index order the published models and open_clip's
``IMAGENET_CLASSNAMES`` use, so ``--classnames open_clip:imagenet`` gives CLIP's cleaned
names); a class is named by the first words of ``LOC_synset_mapping.txt``
(``n01440764 tench, Tinca tinca``) or the devkit's ``words`` when present, else by its
synset id. A row naming a missing image, or a synset not in the mapping, is an error
naming the file and row (skipped and counted with ``skip_bad``).
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import DataError
from ..files import Collector, Skipped, read_csv_rows, read_text
from ..records import LabelledClip
from ..specs import LABELLED, ReadOptions, spec_kind
from .captions import _write_png, image_file
from .io import IMAGE_EXTENSIONS

WNID = re.compile(r"n\d{8}")


def _mapping(root: Path) -> dict[str, str]:
    for folder in (root, root.parent):
        path = folder / "LOC_synset_mapping.txt"
        if path.is_file():
            out = {}
            for line in read_text(path).splitlines():
                wnid, _, words = line.strip().partition(" ")
                if WNID.fullmatch(wnid):
                    out[wnid] = words.split(",")[0].strip() or wnid
            return out
    return {}


def _devkit(root: Path) -> tuple[list[str], dict[int, str], dict[str, str]] | None:
    kit = next((p for p in (root / "ILSVRC2012_devkit_t12", root.parent / "ILSVRC2012_devkit_t12") if p.is_dir()), None)
    if kit is None:
        return None
    from scipy.io import loadmat

    meta = kit / "data" / "meta.mat"
    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"not the devkit's meta.mat ({exc})", str(meta)) from exc
    ids = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    words = {str(s["WNID"]): str(s["words"]).split(",")[0].strip() for s in synsets}
    truth = kit / "data" / "ILSVRC2012_validation_ground_truth.txt"
    return [line.strip() for line in read_text(truth).splitlines() if line.strip()], ids, words


def _write_example(d: Path) -> tuple[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    (d / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    rows = [("ILSVRC2012_val_00000001", "n01440764"), ("ILSVRC2012_val_00000002", "n01443537"),
            ("ILSVRC2012_val_00000003", "n01440764")]
    for name, _ in rows:
        _write_png(d / "val" / f"{name}.JPEG")
    (d / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(
        f"{name},{wnid} 10 20 100 200 {wnid} 5 5 50 50\n" for name, wnid in rows))
    return f"imagenet:{d}", d / "LOC_val_solution.csv"


@spec_kind("imagenet", LABELLED, ("image",), "ROOT", "ImageNet-1k validation: synset folders, or the flat "
           "`ILSVRC2012_val_*.JPEG` with Kaggle's `LOC_val_solution.csv` or the devkit's ground truth and `meta.mat`; "
           "readable names from `LOC_synset_mapping.txt` or the devkit", example=_write_example)
def read_imagenet(root: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    if not root.is_dir():
        raise DataError("folder not found", str(root))
    # the Kaggle release keeps its images in ILSVRC/Data/CLS-LOC/val, beside LOC_val_solution.csv at the top
    images = next((f for f in (root / "val", root / "ILSVRC" / "Data" / "CLS-LOC" / "val") if f.is_dir()), root)
    names = _mapping(root)
    c = Collector(opts.skip_bad, skipped)
    folders = sorted(p.name for p in images.iterdir() if p.is_dir() and WNID.fullmatch(p.name))
    if folders:  # synset folders
        for label, wnid in enumerate(folders):
            for f in sorted(p for p in (images / wnid).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
                c.items.append(LabelledClip(f, label, None, str(f)))
        return c.items, [names.get(w, w) for w in folders]
    labelled: list[tuple[Path, str, str]] = []  # (image, wnid, where)
    solution = root / "LOC_val_solution.csv"
    devkit = None if solution.is_file() else _devkit(root)
    if solution.is_file():
        for line, row in read_csv_rows(solution, ["ImageId", "PredictionString"]):
            wnid = (row["PredictionString"] or "").split(" ")[0]
            labelled.append((images / f"{(row['ImageId'] or '').strip()}.JPEG", wnid, f"{solution} line {line}"))
    elif devkit is not None:
        truth, ids, words = devkit
        names = names or words
        for n, value in enumerate(truth, 1):
            name = f"ILSVRC2012_val_{n:08d}.JPEG"
            labelled.append((images / name, ids.get(int(value), "") if value.isdigit() else "", f"ground truth line {n}"))
    else:
        raise DataError("no synset folders, LOC_val_solution.csv or ILSVRC2012_devkit_t12 (see `clapkit formats`)",
                        str(root))
    wnids = sorted({w for _, w, _ in labelled if WNID.fullmatch(w)})
    index = {w: i for i, w in enumerate(wnids)}
    for file, wnid, where in labelled:
        def one(file=file, wnid=wnid, where=where):
            if wnid not in index:
                raise DataError(f"no synset id ({wnid!r})", where, reason="malformed row")
            return [LabelledClip(image_file(file, where), index[wnid], None, where)]

        c(one)
    return c.items, [names.get(w, w) for w in wnids]
