"""``fsd50k:ROOT``: FSD50K as Zenodo publishes it, multi-label (200 AudioSet classes).

- ``ROOT/FSD50K.ground_truth/vocabulary.csv``: ``index,label,mid`` lines, no header; the
  class order, names (``Electric_guitar``; ``_`` read as a space in prompts) and AudioSet
  mids (the set's ``class_ids``: ``--classnames audioset:class_labels_indices.csv`` or
  ``audioset:ontology.json`` spells the classes as AudioSet does, "Gunshot, gunfire", as
  LAION-CLAP's FSD50K label file does; :func:`as_audioset_name` for a mid a file lacks);
- ``ROOT/FSD50K.ground_truth/eval.csv`` (``fname,labels,mids``) and ``dev.csv``
  (``fname,labels,mids,split``, ``split`` being ``train`` or ``val``): ``labels`` is a
  quoted, comma-separated list of vocabulary names (the leaf labels with their
  ancestors, as published);
- ``ROOT/FSD50K.eval_audio/{fname}.wav`` and ``ROOT/FSD50K.dev_audio/{fname}.wav``.

``split``: ``eval`` (the default, the published test set), ``dev``, or dev's ``train``
or ``val``. A label not in the vocabulary, an empty label list or a missing clip is an
error naming the file and row (skipped and counted with ``skip_bad``).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ..files import Collector, Skipped, check_row, read_csv_rows, read_text
from ..records import LabelledClip
from ..specs import LABELLED, ReadOptions, spec_kind
from .io import resolve_audio
from .labelled import write_wavs

SPLITS = ("eval", "dev", "train", "val")


def _vocabulary(path: Path) -> tuple[list[str], list[str]]:
    """The class names and mids of ``vocabulary.csv``, in index order."""
    rows: dict[int, tuple[str, str]] = {}
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split(",")
        if len(cols) != 3 or not cols[0].strip().isdigit() or not cols[1].strip() or not cols[2].strip():
            raise DataError("expected index,label,mid", f"{path} line {n}")
        rows[int(cols[0])] = (cols[1].strip(), cols[2].strip())
    if not rows or sorted(rows) != list(range(len(rows))):
        raise DataError(f"the indices must be 0..{len(rows) - 1}, each once", str(path))
    return [rows[i][0] for i in range(len(rows))], [rows[i][1] for i in range(len(rows))]


def as_audioset_name(label: str) -> str:
    """The AudioSet display name a vocabulary label was written from: FSD50K writes ", " as
    "_and_" and spaces as "_" ("Gunshot, gunfire" -> ``Gunshot_and_gunfire``). For the eight
    FSD50K classes that AudioSet's 527-class list lacks (Crash cymbal, Human voice, ...)."""
    return label.replace("_and_", ", ").replace("_", " ")


def _write_example(d: Path) -> tuple[str, Path]:
    gt = d / "FSD50K.ground_truth"
    gt.mkdir()
    (gt / "vocabulary.csv").write_text("0,Electric_guitar,/m/02sgy\n1,Guitar,/m/0342h\n2,Bark,/m/05tny_\n")
    (gt / "eval.csv").write_text('fname,labels,mids\n37199,"Electric_guitar,Guitar","/m/02sgy,/m/0342h"\n'
                                 '100,Bark,/m/05tny_\n')
    (gt / "dev.csv").write_text('fname,labels,mids,split\n64760,"Guitar",/m/0342h,train\n5,Bark,/m/05tny_,val\n')
    write_wavs(d / "FSD50K.eval_audio", ["37199.wav", "100.wav"])
    write_wavs(d / "FSD50K.dev_audio", ["64760.wav", "5.wav"])
    return f"fsd50k:{d}", gt / "eval.csv"


@spec_kind("fsd50k", LABELLED, ("audio",), "ROOT", "FSD50K: `FSD50K.ground_truth/{dev,eval}.csv` (`fname,labels,mids"
           "[,split]`, quoted comma-separated labels) + `vocabulary.csv` + `FSD50K.{dev,eval}_audio/`; multi-label; "
           "`--split eval|dev|train|val`", example=_write_example)
def read_fsd50k(root: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str], list[str]]:
    split = opts.split or "eval"
    if split not in SPLITS:
        raise DataError(f"fsd50k split {split!r}: choose one of {', '.join(SPLITS)}")
    gt = root / "FSD50K.ground_truth"
    names, mids = _vocabulary(gt / "vocabulary.csv")
    index = {n: i for i, n in enumerate(names)}
    table = gt / ("eval.csv" if split == "eval" else "dev.csv")
    audio = root / ("FSD50K.eval_audio" if split == "eval" else "FSD50K.dev_audio")
    need = ["fname", "labels"] + (["split"] if split in ("train", "val") else [])
    c = Collector(opts.skip_bad, skipped)
    for line, row in read_csv_rows(table, need):
        where = f"{table} line {line}"

        def one(row=row, line=line, where=where):
            check_row(row, line, table, need)
            if split in ("train", "val") and row["split"].strip() != split:
                return []
            labels = [x.strip() for x in row["labels"].split(",") if x.strip()]
            if not labels:
                raise DataError("no labels", where, reason="no labels")
            unknown = [x for x in labels if x not in index]
            if unknown:
                raise DataError(f"label(s) {', '.join(unknown)} not in {gt / 'vocabulary.csv'}", where,
                                reason="unknown label")
            file = resolve_audio(audio / f"{row['fname'].strip()}.wav")
            if not file.is_file():
                raise DataError(f"audio file not found: {file}", where, reason="audio file not found")
            ids = tuple(dict.fromkeys(index[x] for x in labels))
            if not row["fname"].strip().isdigit():
                raise DataError(f"fname {row['fname']!r} is not a Freesound id", where, reason="malformed row")
            return [LabelledClip(file, ids[0], None, where, ids, source=f"freesound:{row['fname'].strip()}")]

        c(one)
    return c.items, names, mids
