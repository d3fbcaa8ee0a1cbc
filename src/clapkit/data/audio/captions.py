"""Audio-caption manifests in their owners' formats.

Every audio is paired with each of its captions (one :class:`Pair` per caption), as in
the CLAP papers. Registered specs (``KIND:PATH``, :mod:`clapkit.data.specs`):

- ``csv:FILE`` - columns ``audio`` and ``caption`` (names selectable); audio paths relative
  to the CSV's folder or absolute.
- ``jsonl:FILE`` - one object a line with ``audio`` and ``caption`` (a string or a list).

Both read an optional ``language`` column / key: the caption's language code (``en``, ``de``,
``ja``, ...; a blank one is an error naming the line), and ``eval retrieval`` then scores
each language apart (``per_language``). A translated Clotho or AudioCaps is such a CSV: one
row per caption and language, e.g. ``audio,caption,language`` with
``development/a.wav,A dog barks.,en`` and ``development/a.wav,Ein Hund bellt.,de``.
- ``clotho:CSV`` - Clotho's ``file_name,caption_1..caption_5``; audio in ``audio_dir``
  (default: the CSV's folder).
- ``audiocaps:CSV`` - AudioCaps' ``audiocap_id,youtube_id,start_time,caption``; the audio
  file is found by ``audiocaps_pattern`` (fields ``{audiocap_id}``, ``{youtube_id}``,
  ``{start_time}``) in ``audio_dir``; by default the common download layouts are tried.

A labelled set (``esc50:``, ``folder:``, ``fsdd:``) where pairs are expected gives one
pair per clip and label template. A bad row (missing column, empty caption, missing
audio file) raises a :class:`~clapkit.errors.DataError` naming the file and line, or,
with ``skip_bad``, is counted in a :class:`Skipped` record that the commands write into
their outputs.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ..files import Collector, Skipped, check_row, csv_header, read_csv_rows
from ..records import Pair, clean_caption
from ..specs import PAIRS, ReadOptions, read_pairs, spec_kind
from ..tables import csv_pairs, jsonl_pairs
from .io import AUDIO_EXTENSIONS, resolve_audio
from .labelled import write_wavs

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
) -> list[Pair]:
    """Read an audio-caption spec into pairs (one per caption; see the module docstring)."""
    opts = ReadOptions("audio", Path(audio_dir) if audio_dir else None, audiocaps_pattern, audio_column, caption_column,
                       tuple(label_templates), skip_bad=skip_bad, require_media=require_audio)
    return read_pairs(spec, opts, skipped if skipped is not None else Skipped())


def _audio(path: Path, where: str, require_audio: bool) -> Path:
    resolved = resolve_audio(path)
    if require_audio and not resolved.is_file():
        raise DataError(f"audio file not found: {path}", where, reason="audio file not found")
    return resolved


def _resolver(opts: ReadOptions):
    return lambda file, where: _audio(file, where, opts.require_media)


def _write_csv(d: Path) -> tuple[str, Path]:
    write_wavs(d, [f"a{i}.wav" for i in range(3)])
    (d / "m.csv").write_text("audio,caption\n" + "".join(f"a{i}.wav,a dog barks {i}\n" for i in range(3)))
    return f"csv:{d / 'm.csv'}", d / "m.csv"


@spec_kind("csv", PAIRS, ("audio",), "FILE", "columns `audio,caption` (`data.audio_column`, `data.caption_column`), "
           "one row per pair, paths relative to the CSV; an optional `language` column (the caption's language code: "
           "a translated Clotho or AudioCaps)", example=_write_csv)
def read_csv(path: Path, opts: ReadOptions, skipped: Skipped) -> list[Pair]:
    return csv_pairs(path, opts, skipped, _resolver(opts))


def _write_jsonl(d: Path) -> tuple[str, Path]:
    import json

    write_wavs(d, [f"a{i}.wav" for i in range(2)])
    (d / "m.jsonl").write_text("".join(json.dumps({"audio": f"a{i}.wav", "caption": [f"rain {i}", "wind"]}) + "\n"
                                       for i in range(2)))
    return f"jsonl:{d / 'm.jsonl'}", d / "m.jsonl"


@spec_kind("jsonl", PAIRS, ("audio",), "FILE", '`{"audio": ..., "caption": "..." or [...]}` a line (optional '
           '`"language"`)', example=_write_jsonl)
def read_jsonl(path: Path, opts: ReadOptions, skipped: Skipped) -> list[Pair]:
    return jsonl_pairs(path, opts, skipped, _resolver(opts))


def _write_clotho(d: Path) -> tuple[str, Path]:
    write_wavs(d, [f"c{i}.wav" for i in range(2)])
    caps = ",".join(f"caption_{k}" for k in range(1, 6))
    (d / "clotho.csv").write_text(f"file_name,{caps}\n" + "".join(
        f"c{i}.wav," + ",".join(f"a bird sings {i} {k}" for k in range(5)) + "\n" for i in range(2)))
    return f"clotho:{d / 'clotho.csv'}", d / "clotho.csv"


def _clotho_sound_ids(captions: Path) -> dict[str, str]:
    """file_name -> "freesound:<sound_id>" from Clotho's metadata file beside the captions
    (``clotho_metadata_<split>.csv`` for ``clotho_captions_<split>.csv``, as Zenodo ships
    them: ``file_name,keywords,sound_id,sound_link,...``); empty without one."""
    meta = captions.with_name(captions.name.replace("clotho_captions_", "clotho_metadata_"))
    if meta == captions or not meta.is_file():
        return {}
    out = {}
    for line, row in read_csv_rows(meta, ["file_name", "sound_id"]):
        sid = (row["sound_id"] or "").strip()
        if not sid.isdigit():
            raise DataError(f"sound_id {sid!r} is not a Freesound id", f"{meta} line {line}")
        out[(row["file_name"] or "").strip()] = f"freesound:{sid}"
    return out


@spec_kind("clotho", PAIRS, ("audio",), "CSV", "Clotho's `file_name,caption_1..caption_5`; audio in `--audio-dir` "
           "(default: the CSV's folder)", example=_write_clotho)
def read_clotho(path: Path, opts: ReadOptions, skipped: Skipped) -> list[Pair]:
    c = Collector(opts.skip_bad, skipped)
    base = opts.media_dir or path.parent
    rows = read_csv_rows(path, ["file_name", "caption_1"])
    sound_ids = _clotho_sound_ids(path)
    cap_cols = [col for col in (rows and rows[0][1].keys() or []) if col and col.startswith("caption_")]
    for line, row in rows:
        where = f"{path} line {line}"

        def one(row=row, line=line, where=where):
            check_row(row, line, path, ["file_name", *cap_cols])
            audio = _audio(base / row["file_name"], where, opts.require_media)
            return [Pair(audio, clean_caption(row[col], f"{where} column {col}"), row["file_name"], where,
                         sound_ids.get(row["file_name"].strip()))
                    for col in cap_cols]

        c(one)
    return c.items


def _write_audiocaps(d: Path) -> tuple[str, Path]:
    write_wavs(d, [f"Y{i}abc.wav" for i in range(2)])
    (d / "ac.csv").write_text("audiocap_id,youtube_id,start_time,caption\n" +
                              "".join(f"{10 + i},{i}abc,30,an engine idles {i}\n" for i in range(2)))
    return f"audiocaps:{d / 'ac.csv'}", d / "ac.csv"


@spec_kind("audiocaps", PAIRS, ("audio",), "CSV", "AudioCaps' `audiocap_id,youtube_id,start_time,caption`; the file is "
           "found by `data.audiocaps_pattern` (e.g. `Y{youtube_id}.wav`) or, by default, the usual download names "
           "(`{youtube_id}_{start_time}`, `Y{youtube_id}`, `{youtube_id}`, `{audiocap_id}`, any audio extension)",
           example=_write_audiocaps)
def read_audiocaps(path: Path, opts: ReadOptions, skipped: Skipped) -> list[Pair]:
    c = Collector(opts.skip_bad, skipped)
    base = opts.media_dir or path.parent
    cols = ["audiocap_id", "youtube_id", "start_time", "caption"]
    for line, row in read_csv_rows(path, cols):
        where = f"{path} line {line}"

        def one(row=row, line=line, where=where):
            check_row(row, line, path, cols)
            audio = _audiocaps_file(base, row, opts.audiocaps_pattern, where, opts.require_media)
            return [Pair(audio, clean_caption(row["caption"], where), row["youtube_id"] + "_" + row["start_time"], where,
                         f"youtube:{row['youtube_id'].strip()}")]

        c(one)
    return c.items


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
