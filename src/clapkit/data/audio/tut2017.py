"""``tut2017:ROOT``: TUT Acoustic Scenes 2017 as released (development or evaluation
package): ``ROOT/meta.txt`` (``audio/a001_0_10.wav<TAB>scene<TAB>location`` lines) and,
in the development package, ``ROOT/evaluation_setup/fold{1..4}_evaluate.txt`` (the
files each fold evaluates on). A clip's fold is the fold that evaluates it, so
``--folds 1`` is fold 1's evaluation list (the DCASE 2017 task 1 protocol); the 15 scenes,
sorted, are the classes (``cafe/restaurant`` read as written). A missing clip or a
malformed line names the file and line (skipped and counted with ``skip_bad``).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ..files import Collector, Skipped, read_text
from ..records import LabelledClip
from ..specs import LABELLED, ReadOptions, spec_kind
from .io import resolve_audio
from .labelled import write_wavs


def _folds(root: Path) -> dict[str, int]:
    setup, out = root / "evaluation_setup", {}
    for k in range(1, 10):
        path = setup / f"fold{k}_evaluate.txt"
        if path.is_file():
            for line in read_text(path).splitlines():
                if line.strip():
                    out.setdefault(line.split("\t")[0].strip(), k)
    return out


def _write_example(d: Path) -> tuple[str, Path]:
    rows = [("audio/a001_0_10.wav", "residential_area", "a001"), ("audio/b020_90_100.wav", "cafe/restaurant", "b020"),
            ("audio/a002_10_20.wav", "residential_area", "a002"), ("audio/b021_0_10.wav", "cafe/restaurant", "b021")]
    write_wavs(d / "audio", [Path(f).name for f, _, _ in rows])
    (d / "meta.txt").write_text("".join(f"{f}\t{s}\t{loc}\n" for f, s, loc in rows))
    (d / "evaluation_setup").mkdir()
    (d / "evaluation_setup" / "fold1_evaluate.txt").write_text("".join(f"{f}\t{s}\n" for f, s, _ in rows[:2]))
    (d / "evaluation_setup" / "fold2_evaluate.txt").write_text("".join(f"{f}\t{s}\n" for f, s, _ in rows[2:]))
    return f"tut2017:{d}", d / "meta.txt"


@spec_kind("tut2017", LABELLED, ("audio",), "ROOT", "TUT Acoustic Scenes 2017: `meta.txt` + `audio/`; a clip's fold "
           "is the `evaluation_setup/fold{k}_evaluate.txt` that lists it (`--folds`)", example=_write_example)
def read_tut2017(root: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    meta = root / "meta.txt"
    lines = [(n, line) for n, line in enumerate(read_text(meta).splitlines(), 1) if line.strip()]
    folds = _folds(root)
    parsed = Collector(opts.skip_bad, skipped)
    for n, line in lines:
        where = f"{meta} line {n}"

        def one(line=line, where=where):
            cols = line.split("\t")
            if len(cols) < 2 or not cols[0].strip() or not cols[1].strip():
                raise DataError("expected FILE<TAB>scene[<TAB>location]", where, reason="malformed line")
            file = resolve_audio(root / cols[0].strip())
            if not file.is_file():
                raise DataError(f"audio file not found: {file}", where, reason="audio file not found")
            return [(file, cols[1].strip(), folds.get(cols[0].strip()), where)]

        parsed(one)
    names = sorted({scene for _, scene, _, _ in parsed.items})
    if not names:
        raise DataError("no clips", str(meta))
    index = {s: i for i, s in enumerate(names)}
    return [LabelledClip(f, index[s], k, where) for f, s, k, where in parsed.items], names
