"""``audioset:CSV``: an AudioSet segment list as Google publishes it (``eval_segments.csv``,
``balanced_train_segments.csv``, ``unbalanced_train_segments.csv``), multi-label over
its 527 classes.

- the CSV: ``#`` comment lines, then ``YTID, start_seconds, end_seconds,
  "mid,mid,..."`` (a space after each comma; the labels quoted);
- ``class_labels_indices.csv`` beside it (``index,mid,display_name``): the class order
  and names (``Speech``, ``"Male speech, man speaking"``);
- the clips in ``--audio-dir`` (default: the CSV's folder), found by YTID and start time
  under the names downloaders write: ``Y{YTID}_{start:.3f}_{end:.3f}``,
  ``{YTID}_{start:.3f}_{end:.3f}``, ``{YTID}_{int(start)}``, ``Y{YTID}``, ``{YTID}``,
  any audio extension.

Videos vanish from YouTube, so a published list always names clips a download lacks:
each is an error naming the row, or with ``--skip-bad`` skipped and counted (report the
count beside the score). A mid not in the class list is an error naming the row.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ...errors import DataError
from ..files import Collector, Skipped, read_csv_rows, read_text
from ..records import LabelledClip
from ..specs import LABELLED, ReadOptions, spec_kind
from .io import AUDIO_EXTENSIONS
from .labelled import write_wavs


def audioset_classes(path: Path) -> tuple[list[str], dict[str, int]]:
    """The display names of AudioSet's ``class_labels_indices.csv`` in index order, and
    each mid's index."""
    names, index = [], {}
    for line, row in read_csv_rows(path, ["index", "mid", "display_name"]):
        if not (row["index"] or "").strip().isdigit() or int(row["index"]) != len(names) or not row["mid"]:
            raise DataError(f"expected index {len(names)}, a mid and a display_name", f"{path} line {line}")
        index[row["mid"].strip()] = len(names)
        names.append((row["display_name"] or "").strip())
    if not names:
        raise DataError("no classes", str(path))
    return names, index


def display_names(path: Path) -> dict[str, str]:
    """mid -> display name, from ``class_labels_indices.csv`` (AudioSet's 527 classes, or
    any excerpt of it: the indices are not needed to spell a class) or from AudioSet's
    ``ontology.json`` (all 632 classes, FSD50K's eight outside the 527 among them)."""
    if path.suffix.lower() == ".json":
        import json

        try:
            items = json.loads(read_text(path))
        except ValueError as exc:
            raise DataError(f"not valid JSON ({exc})", str(path)) from exc
        if not isinstance(items, list) or not all(isinstance(i, dict) and {"id", "name"} <= set(i) for i in items):
            raise DataError("expected AudioSet's ontology.json: a list of {id, name, ...} records", str(path))
        return {str(i["id"]): str(i["name"]) for i in items}
    out = {}
    for line, row in read_csv_rows(path, ["mid", "display_name"]):
        mid, name = (row["mid"] or "").strip(), (row["display_name"] or "").strip()
        if not mid or not name:
            raise DataError("expected a mid and a display_name", f"{path} line {line}")
        out[mid] = name
    return out


def _candidates(ytid: str, start: float, end: float) -> list[str]:
    return [f"Y{ytid}_{start:.3f}_{end:.3f}", f"{ytid}_{start:.3f}_{end:.3f}", f"{ytid}_{int(start)}", f"Y{ytid}", ytid]


def _write_example(d: Path) -> tuple[str, Path]:
    (d / "class_labels_indices.csv").write_text('index,mid,display_name\n0,/m/09x0r,"Speech"\n'
                                                 '1,/m/05zppz,"Male speech, man speaking"\n2,/m/0bt9lr,"Dog"\n')
    (d / "eval_segments.csv").write_text(
        "# Segments csv created Sun Mar  5 10:54:25 2017\n# num_ytids=3, num_segs=3, num_unique_labels=3\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        '--4gqARaEJE, 0.000, 10.000, "/m/09x0r,/m/05zppz"\n--BfvyPmVMo, 20.000, 30.000, "/m/0bt9lr"\n'
        '-0BIyqJj9ZU, 30.000, 40.000, "/m/09x0r"\n')
    write_wavs(d, ["Y--4gqARaEJE_0.000_10.000.wav", "--BfvyPmVMo_20.wav", "Y-0BIyqJj9ZU.wav"])
    return f"audioset:{d / 'eval_segments.csv'}", d / "eval_segments.csv"


@spec_kind("audioset", LABELLED, ("audio",), "CSV", "AudioSet's `eval_segments.csv` / `balanced_train_segments.csv` "
           "with `class_labels_indices.csv` beside it; clips in `--audio-dir` found by YTID and start time "
           "(`Y{YTID}_{start}_{end}`, `{YTID}_{start}`, `Y{YTID}`, ...); multi-label", example=_write_example)
def read_audioset(path: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str], list[str]]:
    names, index = audioset_classes(path.parent / "class_labels_indices.csv")
    folder = opts.media_dir or path.parent
    if not folder.is_dir():
        raise DataError("audio folder not found (give --audio-dir)", str(folder))
    files = {f.stem: f for f in sorted(folder.iterdir()) if f.suffix.lower() in AUDIO_EXTENSIONS}
    c = Collector(opts.skip_bad, skipped)
    text = read_text(path)
    for n, row in enumerate(csv.reader(io.StringIO(text), skipinitialspace=True), 1):
        if not row or row[0].startswith("#"):
            continue
        where = f"{path} line {n}"

        def one(row=row, where=where):
            if len(row) != 4:
                raise DataError(f"{len(row)} fields; expected YTID, start_seconds, end_seconds, positive_labels", where,
                                reason="malformed row")
            ytid = row[0].strip()
            try:
                start, end = float(row[1]), float(row[2])
            except ValueError as exc:
                raise DataError("start_seconds and end_seconds must be numbers", where, reason="malformed row") from exc
            mids = [m.strip() for m in row[3].split(",") if m.strip()]
            unknown = [m for m in mids if m not in index]
            if not mids or unknown:
                raise DataError(f"label(s) {', '.join(unknown) or '(none)'} not in class_labels_indices.csv", where,
                                reason="unknown label")
            file = next((files[s] for s in _candidates(ytid, start, end) if s in files), None)
            if file is None:
                raise DataError(f"no clip for {ytid} at {start:g} s in {folder} (tried "
                                f"{', '.join(_candidates(ytid, start, end))})", where, reason="clip not downloaded")
            ids = tuple(dict.fromkeys(index[m] for m in mids))
            return [LabelledClip(file, ids[0], None, where, ids, source=f"youtube:{ytid}")]

        c(one)
    return c.items, names, list(index)
