"""Labelled audio sets for zero-shot evaluation and classification.

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

from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .audio import AUDIO_EXTENSIONS, resolve_audio
from .files import Skipped, parse_spec, read_csv_rows, read_lines


@dataclass(frozen=True)
class LabelledClip:
    """One labelled audio clip or image (``media``: a path or an image reference)."""

    media: Path
    label: int
    fold: int | None
    where: str


@dataclass
class LabelledSet:
    clips: list[LabelledClip]
    class_names: list[str]  # index = label
    skipped: Skipped

    def label_texts(self) -> list[str]:
        """Class names as words (``door_wood_knock`` -> ``door wood knock``)."""
        return [name.replace("_", " ") for name in self.class_names]


def load_labelled(
    spec: str,
    folds: list[int] | None = None,
    classes: list[str] | None = None,
    skip_bad: bool = False,
    label: str = "digit",
) -> LabelledSet:
    """A labelled audio set (images: :func:`clapkit.data.media.load_labelled_media`),
    optionally restricted to some folds and classes."""
    kind, path = parse_spec(spec, ("esc50", "folder", "fsdd"))
    skipped = Skipped()
    if kind == "esc50":
        clips, names = _esc50(path, skip_bad, skipped)
    elif kind == "fsdd":
        clips, names = _fsdd(path, label, skip_bad, skipped)
    else:
        clips, names = folder_per_class(path, AUDIO_EXTENSIONS, "audio files")
    return select(LabelledSet(clips, names, skipped), spec, folds, classes)


def select(data: LabelledSet, spec: str, folds: list[int] | None = None, classes: list[str] | None = None) -> LabelledSet:
    """The items of some folds and classes of a labelled set; the selected classes
    become the candidate set, in the set's own order."""
    clips, names = data.clips, data.class_names
    if folds:
        if any(c.fold is None for c in clips):
            raise DataError(f"{spec}: --folds given but this set has no folds")
        clips = [c for c in clips if c.fold in set(folds)]
    if classes:
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise DataError(f"{spec}: unknown class(es) {', '.join(unknown)}")
        keep = [i for i, n in enumerate(names) if n in set(classes)]
        remap = {old: new for new, old in enumerate(keep)}
        clips = [LabelledClip(c.media, remap[c.label], c.fold, c.where) for c in clips if c.label in remap]
        names = [names[i] for i in keep]
    if not clips:
        raise DataError(f"{spec}: no clips left after the fold/class selection")
    return LabelledSet(clips, names, data.skipped)


def _esc50(root: Path, skip_bad: bool, skipped: Skipped) -> tuple[list[LabelledClip], list[str]]:
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
            audio = resolve_audio(root / "audio" / row["filename"])
            if not audio.is_file():
                raise DataError(f"audio file not found: {root / 'audio' / row['filename']}", where, reason="audio file not found")
            clips.append(LabelledClip(audio, target, fold, where))
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.add(exc)
    if not names:
        raise DataError("no rows", str(meta))
    n = max(names) + 1
    missing = [i for i in range(n) if i not in names]
    if missing:
        raise DataError(f"targets {missing} never occur; targets must be 0..{n - 1}", str(meta))
    return clips, [names[i] for i in range(n)]


def class_folders(root: Path, noun: str = "audio files") -> list[str]:
    """The sorted class sub-folder names of a folder-per-class set."""
    if not root.is_dir():
        raise DataError("folder not found", str(root))
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"no class sub-folders (expected one folder of {noun} per class)", str(root))
    return names


def folder_per_class(root: Path, extensions: tuple[str, ...], noun: str) -> tuple[list[LabelledClip], list[str]]:
    """Every file with one of ``extensions`` under each class sub-folder (sorted), labelled
    by its folder: the ESC-50-free audio layout and ImageNet's."""
    names = class_folders(root, noun)
    clips = []
    for label, name in enumerate(names):
        files = sorted(f for f in (root / name).rglob("*") if f.suffix.lower() in extensions)
        clips.extend(LabelledClip(f, label, None, str(f)) for f in files)
    return clips, names


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


def load_label_names(spec: str) -> list[str]:
    """Class names only (no audio needed): ``esc50:ROOT`` (from ``meta/esc50.csv``),
    ``folder:DIR`` (sub-folder names) or ``txt:FILE`` (one class a line)."""
    kind, path = parse_spec(spec, ("esc50", "folder", "txt"))
    if kind == "txt":

        return list(dict.fromkeys(read_lines(path)))
    if kind == "folder":
        return class_folders(path)
    meta = path / "meta" / "esc50.csv"
    names: dict[int, str] = {}
    for line, row in read_csv_rows(meta, ["target", "category"]):
        try:
            names.setdefault(int(row["target"]), row["category"].strip())
        except (TypeError, ValueError) as exc:
            raise DataError("target must be an integer", f"{meta} line {line}") from exc
    return [names[k] for k in sorted(names)]
