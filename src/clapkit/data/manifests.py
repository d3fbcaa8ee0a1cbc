"""Audio-caption manifests in their owners' formats.

Every audio is paired with each of its captions (one :class:`Pair` per caption), as in
the CLAP papers. Supported specs (``KIND:PATH``):

- ``csv:FILE`` - columns ``audio`` and ``caption`` (names selectable); audio paths relative
  to the CSV's folder or absolute.
- ``jsonl:FILE`` - one object a line with ``audio`` and ``caption`` (a string or a list).
- ``clotho:CSV`` - Clotho's ``file_name,caption_1..caption_5``; audio in ``audio_dir``
  (default: the CSV's folder).
- ``audiocaps:CSV`` - AudioCaps' ``audiocap_id,youtube_id,start_time,caption``; the audio
  file is found by ``audiocaps_pattern`` (fields ``{audiocap_id}``, ``{youtube_id}``,
  ``{start_time}``) in ``audio_dir``; by default the common download layouts are tried.

A bad row (missing column, empty caption, missing audio file) raises a
:class:`~clapkit.errors.DataError` naming the file and line, or, with ``skip_bad``, is
counted in a :class:`Skipped` record that the commands write into their outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError
from .audio import AUDIO_EXTENSIONS, resolve_audio
from .files import Collector, Skipped, check_row, csv_header, parse_spec, read_csv_rows, read_text
from .labelled import load_labelled
from .records import Pair, clean_caption, clip_index, unique_clips  # noqa: F401  (their home was here)

AUDIOCAPS_PATTERNS = (
    "{youtube_id}_{start_time}",
    "Y{youtube_id}",
    "{youtube_id}",
    "{audiocap_id}",
    "Y{youtube_id}_{start_time}.000_{end_time}.000",
)


def detect_spec(arg: str) -> str:
    """``KIND:PATH`` as given, or a bare caption file with its kind read off its header
    (Clotho's ``file_name,caption_1..``, AudioCaps' ``audiocap_id,youtube_id,..``,
    otherwise ``csv:``; ``.jsonl`` files are ``jsonl:``)."""
    kind = str(arg).split(":", 1)[0]
    if kind in ("csv", "jsonl", "clotho", "audiocaps", "esc50", "folder"):
        return str(arg)
    path = Path(arg)
    if path.suffix.lower() == ".jsonl":
        return f"jsonl:{path}"
    if not path.is_file():
        raise DataError("file not found", str(path))
    header = csv_header(path)
    if "file_name" in header and "caption_1" in header:
        return f"clotho:{path}"
    if {"audiocap_id", "youtube_id", "caption"} <= set(header):
        return f"audiocaps:{path}"
    return f"csv:{path}"


def _audio(path: Path, where: str, require_audio: bool) -> Path:
    resolved = resolve_audio(path)
    if require_audio and not resolved.is_file():
        raise DataError(f"audio file not found: {path}", where, reason="audio file not found")
    return resolved


def load_pairs(
    spec: str,
    audio_dir: str | Path | None = None,
    audiocaps_pattern: str | None = None,
    skip_bad: bool = False,
    skipped: Skipped | None = None,
    require_audio: bool = True,
    audio_column: str = "audio",
    caption_column: str = "caption",
    label_templates: tuple[str, ...] | list[str] = ("This is a sound of {label}.",),
    resolve=None,
) -> list[Pair]:
    """Read a manifest spec into pairs (one per caption).

    ``resolve(path, where)`` turns a csv:/jsonl: media path into the pair's medium (by
    default an audio file, checked when ``require_audio``); the image loaders pass
    their own, so csv:/jsonl: rows are read here for both media.
    """
    skipped = skipped if skipped is not None else Skipped()
    if str(spec).startswith("wds:"):  # audio-text shards (image shards: clapkit.data.image_sets)
        from .shards import wds_pairs

        attempt = Collector(skip_bad, skipped)
        wds_pairs(str(spec)[4:], "audio", attempt)
        return attempt.items
    kind, path = parse_spec(spec, ("csv", "jsonl", "clotho", "audiocaps", "esc50", "folder", "wds"))
    if resolve is None:
        def resolve(file: Path, where: str) -> Path:
            return _audio(file, where, require_audio)
    if kind in ("esc50", "folder"):
        labelled = load_labelled(spec, skip_bad=skip_bad)
        skipped.reasons.update(labelled.skipped.reasons)
        skipped.examples += labelled.skipped.examples
        texts = labelled.label_texts()
        return [
            Pair(c.media, tpl.format(label=texts[c.label]), str(c.media), c.where)
            for c in labelled.clips
            for tpl in label_templates
        ]
    base = Path(audio_dir) if audio_dir else path.parent
    attempt = Collector(skip_bad, skipped)
    pairs = attempt.items

    if kind == "jsonl":
        for n, line in enumerate(read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path} line {n}"

            def one(line=line, where=where):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"not valid JSON ({exc.msg})", where) from exc
                if not isinstance(obj, dict) or audio_column not in obj or caption_column not in obj:
                    raise DataError(f"needs keys '{audio_column}' and '{caption_column}'", where)
                caps = obj[caption_column]
                caps = caps if isinstance(caps, list) else [caps]
                if not isinstance(obj[audio_column], str) or not obj[audio_column].strip():
                    raise DataError(f"'{audio_column}' must be a non-empty path", where)
                media = resolve(_join(base, obj[audio_column]), where)
                return [Pair(media, clean_caption(c, where), str(obj[audio_column]), where) for c in caps]

            attempt(one)
        return pairs

    if kind == "csv":
        rows = read_csv_rows(path, [audio_column, caption_column])
        for line, row in rows:
            where = f"{path} line {line}"

            def one(row=row, line=line, where=where):
                check_row(row, line, path, [audio_column, caption_column])
                if not row[audio_column].strip():
                    raise DataError(f"empty {audio_column} path", where)
                media = resolve(_join(base, row[audio_column].strip()), where)
                return [Pair(media, clean_caption(row[caption_column], where), row[audio_column].strip(), where)]

            attempt(one)
        return pairs

    if kind == "clotho":
        rows = read_csv_rows(path, ["file_name", "caption_1"])
        cap_cols = [c for c in (rows and rows[0][1].keys() or []) if c and c.startswith("caption_")]
        for line, row in rows:
            where = f"{path} line {line}"

            def one(row=row, line=line, where=where):
                check_row(row, line, path, ["file_name", *cap_cols])
                audio = _audio(base / row["file_name"], where, require_audio)
                return [Pair(audio, clean_caption(row[c], f"{where} column {c}"), row["file_name"], where) for c in cap_cols]

            attempt(one)
        return pairs

    # audiocaps
    cols = ["audiocap_id", "youtube_id", "start_time", "caption"]
    rows = read_csv_rows(path, cols)
    for line, row in rows:
        where = f"{path} line {line}"

        def one(row=row, line=line, where=where):
            check_row(row, line, path, cols)
            audio = _audiocaps_file(base, row, audiocaps_pattern, where, require_audio)
            return [Pair(audio, clean_caption(row["caption"], where), row["youtube_id"] + "_" + row["start_time"], where)]

        attempt(one)
    return pairs


def _join(base: Path, rel: str) -> Path:
    p = Path(rel).expanduser()
    return p if p.is_absolute() else base / p


def _audiocaps_file(base: Path, row: dict, pattern: str | None, where: str, require: bool) -> Path:
    try:
        start = int(float(row["start_time"]))
    except ValueError as exc:
        raise DataError(f"start_time {row['start_time']!r} is not a number", where) from exc
    fields = {
        "audiocap_id": row["audiocap_id"],
        "youtube_id": row["youtube_id"],
        "start_time": start,
        "end_time": start + 10,
    }
    patterns = [pattern] if pattern else list(AUDIOCAPS_PATTERNS)
    tried = []
    for pat in patterns:
        name = pat.format(**fields)
        # only an audio extension is an extension: AudioSet's "Y{id}_30.000_40.000" has dots
        has_ext = Path(name).suffix.lower() in AUDIO_EXTENSIONS
        candidate = resolve_audio(base / (name if has_ext else name + ".wav"))
        if candidate.is_file() or not require:
            return candidate
        tried.append(candidate.name)
    raise DataError(
        f"audio file not found in {base} (tried {', '.join(tried)}); set data.audiocaps_pattern",
        where,
    )
