"""``gtzan:ROOT``: GTZAN genre collection, as released (``ROOT/genres/<genre>/<genre>.000NN.au``)
or as the common re-release ships it (``ROOT/genres_original/<genre>/<genre>.000NN.wav``),
or ``ROOT`` itself holding the genre folders. The ten genres, sorted, are the classes
(``blues``, ``classical``, ..., ``rock``); a file in a genre folder whose name does not
start with its genre is an error naming it (skipped and counted with ``skip_bad``). The
known unreadable clip of the re-release (``jazz.00054.wav``) is found by the file check.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ..files import Collector, Skipped
from ..records import LabelledClip
from ..specs import LABELLED, ReadOptions, spec_kind
from ..tables import class_folders
from .io import AUDIO_EXTENSIONS
from .labelled import write_wavs


def _genres_folder(root: Path) -> Path:
    for name in ("genres", "genres_original"):
        if (root / name).is_dir():
            return root / name
    if root.is_dir():
        return root
    raise DataError("folder not found (expected genres/ or genres_original/)", str(root))


def _write_example(d: Path) -> tuple[str, Path]:
    for genre in ("blues", "jazz"):
        write_wavs(d / "genres_original" / genre, [f"{genre}.0000{i}.wav" for i in range(2)])
    return f"gtzan:{d}", d / "genres_original" / "blues" / "blues.00000.wav"


@spec_kind("gtzan", LABELLED, ("audio",), "ROOT", "GTZAN: `genres/<genre>/<genre>.000NN.au` (or `genres_original/` "
           "with `.wav`); the genres, sorted, are the classes", example=_write_example)
def read_gtzan(root: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    folder = _genres_folder(root)
    names = class_folders(folder, "audio files (GTZAN's genres)")
    c = Collector(opts.skip_bad, skipped)
    for label, genre in enumerate(names):
        for file in sorted(f for f in (folder / genre).iterdir() if f.suffix.lower() in AUDIO_EXTENSIONS):
            def one(file=file, label=label, genre=genre):
                if not file.name.startswith(f"{genre}."):
                    raise DataError(f"not a {genre} clip (GTZAN names them {genre}.000NN)", str(file),
                                    reason="unexpected file name")
                return [LabelledClip(file, label, None, str(file))]

            c(one)
    if not c.items:
        raise DataError("no audio files in the genre folders", str(folder))
    return c.items, names
