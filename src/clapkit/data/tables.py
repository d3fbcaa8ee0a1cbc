"""Layouts that audio and images share: a caption table (``csv:``, ``jsonl:``) and a
folder of one sub-folder per class (``folder:``). Each medium registers them with its
own media check (:mod:`clapkit.data.audio.captions`, :mod:`clapkit.data.image.captions`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError
from .files import Collector, Skipped, check_row, read_csv_rows, read_text
from .records import LabelledClip, Pair, clean_caption
from .specs import ReadOptions

Resolve = Callable[[Path, str], object]  # (file, where) -> the pair's medium, or a DataError


def join(base: Path, rel: str, where: str) -> Path:
    """``rel`` under ``base`` unless absolute (``~`` expanded); a path that cannot be one
    (an unknown ``~user``, a NUL byte) is a DataError at ``where``."""
    try:
        p = Path(rel).expanduser()
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"not a usable path: {rel!r} ({exc})", where, reason="bad path") from exc
    return p if p.is_absolute() else base / p


LANGUAGE = "language"  # the optional column / key of a caption's language code (csv:, jsonl:)


def caption_language(value, where: str) -> str:
    """A caption's language code (``en``, ``de``, ``ja``, ...) stripped of surrounding space;
    a blank or non-text one is an error at ``where``."""
    code = value.strip() if isinstance(value, str) else ""
    if not code:
        raise DataError(f"empty {LANGUAGE} (give each caption a language code such as en, de or ja)", where,
                        reason=f"empty {LANGUAGE}")
    return code


def csv_pairs(path: Path, opts: ReadOptions, skipped: Skipped, resolve: Resolve) -> list[Pair]:
    """``csv:FILE``: one pair a row from its ``opts.column`` and ``opts.caption_column``;
    paths relative to ``opts.media_dir``, else the CSV's folder. An optional ``language``
    column gives each caption its language (a blank cell is an error naming the line)."""
    c, base, media_column, caption_column = Collector(opts.skip_bad, skipped), opts.media_dir or path.parent, \
        opts.column, opts.caption_column
    for line, row in read_csv_rows(path, [media_column, caption_column]):
        where = f"{path} line {line}"

        def one(row=row, line=line, where=where):
            check_row(row, line, path, [media_column, caption_column])
            if not row[media_column].strip():
                raise DataError(f"empty {media_column} path", where)
            media = resolve(join(base, row[media_column].strip(), where), where)
            language = caption_language(row[LANGUAGE], where) if LANGUAGE in row else None
            return [Pair(media, clean_caption(row[caption_column], where), row[media_column].strip(), where,
                         language=language)]

        c(one)
    return c.items


def jsonl_pairs(path: Path, opts: ReadOptions, skipped: Skipped, resolve: Resolve) -> list[Pair]:
    """``jsonl:FILE``: one object a line, its caption a string or a list of strings; an
    optional ``language`` key gives the line's captions their language."""
    c, base, media_column, caption_column = Collector(opts.skip_bad, skipped), opts.media_dir or path.parent, \
        opts.column, opts.caption_column
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"

        def one(line=line, where=where):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"not valid JSON ({exc.msg})", where) from exc
            if not isinstance(obj, dict) or media_column not in obj or caption_column not in obj:
                raise DataError(f"needs keys '{media_column}' and '{caption_column}'", where)
            caps = obj[caption_column]
            caps = caps if isinstance(caps, list) else [caps]
            if not isinstance(obj[media_column], str) or not obj[media_column].strip():
                raise DataError(f"'{media_column}' must be a non-empty path", where)
            media = resolve(join(base, obj[media_column], where), where)
            language = caption_language(obj[LANGUAGE], where) if LANGUAGE in obj else None
            return [Pair(media, clean_caption(cap, where), str(obj[media_column]), where, language=language)
                    for cap in caps]

        c(one)
    return c.items


def dense_class_names(names: dict[int, str], column: str, path: Path) -> list[str]:
    """The class names of a table that gives each row a class index in ``column``
    (ESC-50's ``target``, UrbanSound8K's ``classID``): the indices must be 0..n-1."""
    if not names:
        raise DataError("no rows", str(path))
    n = max(names) + 1
    missing = [i for i in range(n) if i not in names]
    if missing:
        raise DataError(f"{column} values {missing} never occur; they must be 0..{n - 1}", str(path))
    return [names[i] for i in range(n)]


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
