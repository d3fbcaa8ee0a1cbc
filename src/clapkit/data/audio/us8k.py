"""``us8k:ROOT``: UrbanSound8K as published, for its 10-fold protocol.

``ROOT/metadata/UrbanSound8K.csv`` (``slice_file_name,fsID,start,end,salience,fold,
classID,class``) and ``ROOT/audio/fold1`` .. ``fold10``. Class index = ``classID``,
class name = ``class`` (``children_playing``, read as words in prompts). Only the folds
asked for (``--folds``) are read, so a fold folder that is absent is an error unless the
selection leaves it out; a missing clip or a malformed row names the file and row
(skipped and counted with ``skip_bad``).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ..files import Collector, Skipped, check_row, read_csv_rows
from ..records import LabelledClip
from ..specs import LABELLED, ReadOptions, spec_kind
from ..tables import dense_class_names
from .io import resolve_audio
from .labelled import write_wavs

COLUMNS = ["slice_file_name", "fold", "classID", "class"]


def _write_example(d: Path) -> tuple[str, Path]:
    (d / "metadata").mkdir()
    rows = [("100852-0-0-0.wav", 1, 0, "air_conditioner"), ("100648-1-0-0.wav", 1, 1, "car_horn"),
            ("101729-0-0-1.wav", 2, 0, "air_conditioner"), ("102857-1-0-0.wav", 2, 1, "car_horn")]
    for name, fold, _, _ in rows:
        write_wavs(d / "audio" / f"fold{fold}", [name])
    (d / "metadata" / "UrbanSound8K.csv").write_text(
        "slice_file_name,fsID,start,end,salience,fold,classID,class\n"
        + "".join(f"{n},{n.split('-')[0]},0.0,0.1,1,{f},{c},{k}\n" for n, f, c, k in rows))
    return f"us8k:{d}", d / "metadata" / "UrbanSound8K.csv"


@spec_kind("us8k", LABELLED, ("audio",), "ROOT", "UrbanSound8K: `ROOT/metadata/UrbanSound8K.csv` + "
           "`ROOT/audio/fold1..fold10/`; the 10-fold protocol (`--folds`; an absent fold folder is an error unless "
           "left out)", example=_write_example)
def read_us8k(root: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    meta = root / "metadata" / "UrbanSound8K.csv"
    rows = read_csv_rows(meta, COLUMNS)
    names: dict[int, str] = {}
    c = Collector(opts.skip_bad, skipped)
    wanted = set(opts.folds) if opts.folds else None
    for line, row in rows:
        where = f"{meta} line {line}"

        def one(row=row, line=line, where=where):
            check_row(row, line, meta, COLUMNS)
            try:
                fold, target = int(row["fold"]), int(row["classID"])
            except ValueError as exc:
                raise DataError("fold and classID must be integers", where, reason="malformed row") from exc
            name = row["class"].strip()
            if names.setdefault(target, name) != name:
                raise DataError(f"classID {target} is both {names[target]!r} and {name!r}", where)
            if wanted is not None and fold not in wanted:
                return []
            folder = root / "audio" / f"fold{fold}"
            if not folder.is_dir():
                raise DataError(f"fold folder {folder} not found; give --folds without fold {fold} to leave it out",
                                where)
            file = resolve_audio(folder / row["slice_file_name"].strip())
            if not file.is_file():
                raise DataError(f"audio file not found: {file}", where, reason="audio file not found")
            fs = row.get("fsID")  # the Freesound id; a metadata file without the column has none
            if fs is not None and not fs.strip().isdigit():
                raise DataError(f"fsID {fs!r} is not a Freesound id", where, reason="malformed row")
            return [LabelledClip(file, target, fold, where, source=f"freesound:{fs.strip()}" if fs is not None else None)]

        c(one)
    return c.items, dense_class_names(names, "classID", meta)
