"""``vggsound:CSV``: VGGSound's ``vggsound.csv`` as published (no header;
``youtube_id,start_seconds,label,split`` with ``split`` ``train`` or ``test``), its 309
labels, sorted, as the classes (over both splits, so the class set does not depend on
the split). ``--split test`` (the default) or ``train``. The clips are in ``--audio-dir``
(default: the CSV's folder), found under the names downloaders write:
``{id}_{start:06d}``, ``{id}_{start}``, ``{id}_{start*1000}_{(start+10)*1000}`` and
``{id}``, any audio extension (extract the audio of an ``.mp4`` first). Videos vanish, so
each clip a download lacks is an error naming the row, or with ``--skip-bad`` skipped and
counted.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ...errors import DataError
from ..files import Collector, Skipped, read_text
from ..records import LabelledClip
from ..specs import LABELLED, ReadOptions, spec_kind
from .io import AUDIO_EXTENSIONS
from .labelled import write_wavs


def _candidates(ytid: str, start: int) -> list[str]:
    return [f"{ytid}_{start:06d}", f"{ytid}_{start}", f"{ytid}_{start * 1000}_{(start + 10) * 1000}", ytid]


def _write_example(d: Path) -> tuple[str, Path]:
    (d / "vggsound.csv").write_text("---g-f_I2yQ,1,people marching,test\n--0PQM4-hqg,30,waterfall burbling,train\n"
                                    "--56QUhyDQM,185,playing tennis,test\n--5OkAjCI7g,40,people belly laughing,test\n")
    write_wavs(d, ["---g-f_I2yQ_000001.wav", "--56QUhyDQM_185.wav", "--5OkAjCI7g.wav"])
    return f"vggsound:{d / 'vggsound.csv'}", d / "vggsound.csv"


@spec_kind("vggsound", LABELLED, ("audio",), "CSV", "VGGSound's `vggsound.csv` (`youtube_id,start_seconds,label,split`, "
           "no header; `--split test|train`); clips in `--audio-dir` by the downloaders' names", example=_write_example)
def read_vggsound(path: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    split = opts.split or "test"
    if split not in ("test", "train"):
        raise DataError(f"vggsound split {split!r}: choose test or train")
    rows = [(n, r) for n, r in enumerate(csv.reader(io.StringIO(read_text(path))), 1) if r]
    names = sorted({r[2].strip() for _, r in rows if len(r) == 4 and r[2].strip()})
    index = {name: i for i, name in enumerate(names)}
    folder = opts.media_dir or path.parent
    if not folder.is_dir():
        raise DataError("audio folder not found (give --audio-dir)", str(folder))
    files = {f.stem: f for f in sorted(folder.iterdir()) if f.suffix.lower() in AUDIO_EXTENSIONS}
    c = Collector(opts.skip_bad, skipped)
    for n, row in rows:
        where = f"{path} line {n}"

        def one(row=row, where=where):
            if len(row) != 4 or not row[2].strip() or row[3].strip() not in ("train", "test"):
                raise DataError("expected youtube_id,start_seconds,label,split (train or test)", where,
                                reason="malformed row")
            if row[3].strip() != split:
                return []
            try:
                start = int(float(row[1]))
            except ValueError as exc:
                raise DataError(f"start_seconds {row[1]!r} is not a number", where, reason="malformed row") from exc
            ytid = row[0].strip()
            file = next((files[s] for s in _candidates(ytid, start) if s in files), None)
            if file is None:
                raise DataError(f"no clip for {ytid} at {start} s in {folder} (tried {', '.join(_candidates(ytid, start))})",
                                where, reason="clip not downloaded")
            return [LabelledClip(file, index[row[2].strip()], None, where, source=f"youtube:{ytid}")]

        c(one)
    return c.items, names
