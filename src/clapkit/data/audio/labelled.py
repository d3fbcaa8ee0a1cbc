"""Labelled audio sets for zero-shot evaluation and classification.

Registered specs (:mod:`clapkit.data.specs`):

- ``esc50:ROOT`` - ESC-50 as published: ``ROOT/meta/esc50.csv``
  (``filename,fold,target,category,...``) and ``ROOT/audio/``. The csv names ``.wav``
  files; a re-encoded copy (``.ogg``, ``.flac``) with the same stem is accepted.
  Class index = ``target``, class name = ``category`` (``_`` shown as a space in prompts).
- ``folder:DIR`` - one sub-folder per class; the folder name is the label.
- ``fsdd:DIR`` - the Free Spoken Digit Dataset: ``{digit}_{speaker}_{index}.<ext>`` files
  in ``DIR`` or ``DIR/recordings``; the label is the digit (``label="digit"``) or the
  speaker (``label="speaker"``). Upstream's split: indices 0-4 test, 5-49 train.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError
from ..files import Skipped, read_csv_rows
from ..records import LabelledClip, LabelledSet, select
from ..specs import LABELLED, NAMES, ReadOptions, read_labelled, spec_kind
from ..tables import dense_class_names, folder_per_class
from .io import AUDIO_EXTENSIONS, resolve_audio


def load_labelled(
    spec: str,
    folds: list[int] | None = None,
    classes: list[str] | None = None,
    skip_bad: bool = False,
    label: str = "digit",
    split: str | None = None,
    media_dir: str | Path | None = None,
) -> LabelledSet:
    """A labelled audio set (images: :func:`clapkit.data.media.load_labelled_media`),
    optionally restricted to some folds and classes; ``split`` for the sets that have
    them (``fsd50k:``: eval, dev, or dev's train / val); ``media_dir`` where a set's
    list and its clips live apart (``audioset:``)."""
    opts = ReadOptions("audio", Path(media_dir) if media_dir else None, label=label, skip_bad=skip_bad, split=split,
                       folds=tuple(folds) if folds else None)
    data = read_labelled(spec, opts)
    return select(data, spec, folds, classes)


def write_wavs(folder: Path, names: list[str], seconds: float = 0.1, sr: int = 8000) -> None:
    """Short sine clips (the formats' examples)."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        sf.write(folder / name, (0.1 * np.sin(np.arange(int(seconds * sr)) / 5)).astype(np.float32), sr)


def _write_esc50(d: Path) -> tuple[str, Path]:
    (d / "meta").mkdir()
    write_wavs(d / "audio", [f"1-{i}-A-{i % 2}.wav" for i in range(4)])
    (d / "meta" / "esc50.csv").write_text("filename,fold,target,category,esc10,src_file,take\n" + "".join(
        f"1-{i}-A-{i % 2}.wav,{1 + i // 2},{i % 2},{'dog' if i % 2 == 0 else 'rain'},False,{i},A\n" for i in range(4)))
    return f"esc50:{d}", d / "meta" / "esc50.csv"


@spec_kind("esc50", LABELLED, ("audio",), "ROOT", "`ROOT/meta/esc50.csv` + `ROOT/audio/`; re-encoded audio (`.ogg` for "
           "the csv's `.wav`) is found", example=_write_esc50)
def read_esc50(path: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    return _esc50(path, opts.skip_bad, skipped, opts.folds)


def _write_folder(d: Path) -> tuple[str, Path]:
    for name in ("dog", "rain"):
        write_wavs(d / name, ["a.wav", "b.wav"])
    return f"folder:{d}", d / "dog" / "a.wav"


@spec_kind("folder", LABELLED, ("audio",), "DIR", "one sub-folder of audio files per class", example=_write_folder)
def read_folder(path: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    return folder_per_class(path, AUDIO_EXTENSIONS, "audio files")


def _write_fsdd(d: Path) -> tuple[str, Path]:
    write_wavs(d / "recordings", [f"{digit}_{who}_{k}.wav" for digit in (0, 1) for who in ("jackson", "theo")
                                  for k in range(2)])
    return f"fsdd:{d}", d / "recordings" / "0_jackson_0.wav"


@spec_kind("fsdd", LABELLED, ("audio",), "DIR", "the Free Spoken Digit Dataset's `{digit}_{speaker}_{index}.wav` "
           "(in `DIR` or `DIR/recordings`); labelled by digit, or speaker (`cse.audio_label`)", example=_write_fsdd)
def read_fsdd(path: Path, opts: ReadOptions, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    return _fsdd(path, opts.label, opts.skip_bad, skipped)


@spec_kind("esc50", NAMES, ("text",), "ROOT", "ESC-50's class names from `ROOT/meta/esc50.csv` (no audio needed)",
           example=_write_esc50)
def esc50_names(path: Path, opts: ReadOptions, skipped: Skipped) -> list[str]:
    meta = path / "meta" / "esc50.csv"
    names: dict[int, str] = {}
    for line, row in read_csv_rows(meta, ["target", "category"]):
        try:
            target = int(row["target"])
        except (TypeError, ValueError) as exc:
            raise DataError("target must be an integer", f"{meta} line {line}") from exc
        category = (row["category"] or "").strip()
        if not category:
            raise DataError("empty category", f"{meta} line {line}")
        names.setdefault(target, category)
    return [names[k] for k in sorted(names)]


def _esc50(root: Path, skip_bad: bool, skipped: Skipped, folds: tuple[int, ...] | None = None
           ) -> tuple[list[LabelledClip], list[str]]:
    """ESC-50's clips; with ``folds``, a row of another fold is not looked for (its class still
    counts), so a clip missing from an unselected fold is neither an error nor counted."""
    meta = root / "meta" / "esc50.csv"
    rows = read_csv_rows(meta, ["filename", "fold", "target", "category"])
    names: dict[int, str] = {}
    clips = []
    for line, row in rows:
        where = f"{meta} line {line}"
        try:
            try:
                target, fold = int(row["target"]), int(row["fold"])
            except (TypeError, ValueError) as exc:
                raise DataError("target and fold must be integers", where) from exc
            category = (row["category"] or "").strip()
            if not category:
                raise DataError("empty category", where)
            if names.setdefault(target, category) != category:
                raise DataError(f"target {target} is both {names[target]!r} and {category!r}", where)
            if folds and fold not in folds:
                continue
            audio = resolve_audio(root / "audio" / row["filename"])
            if not audio.is_file():
                raise DataError(f"audio file not found: {root / 'audio' / row['filename']}", where, reason="audio file not found")
            src = (row.get("src_file") or "").strip()  # the Freesound id; a meta file without the column has none
            if src and not src.isdigit():
                raise DataError(f"src_file {src!r} is not a Freesound id", where, reason="malformed row")
            clips.append(LabelledClip(audio, target, fold, where, source=f"freesound:{src}" if src else None))
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.add(exc)
    return clips, dense_class_names(names, "target", meta)


def _fsdd(root: Path, label: str, skip_bad: bool, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
    if label not in ("digit", "speaker"):
        raise DataError(f"fsdd label {label!r}: choose digit or speaker")
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    if not folder.is_dir():
        raise DataError("folder not found", str(root))
    parsed = []
    for f in sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS):
        parts = f.stem.split("_")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            err = DataError("name is not {digit}_{speaker}_{index}", str(f), reason="bad file name")
            if not skip_bad:
                raise err
            skipped.add(err)
            continue
        parsed.append((f, parts[0] if label == "digit" else parts[1]))
    if not parsed:
        raise DataError("no {digit}_{speaker}_{index} audio files", str(folder))
    names = sorted({n for _, n in parsed}, key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))
    index = {n: i for i, n in enumerate(names)}
    return [LabelledClip(f, index[n], None, str(f)) for f, n in parsed], names
