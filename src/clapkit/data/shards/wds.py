"""WebDataset tar shards, the format LAION-CLAP and open_clip train from: reading them in
place and writing them from any manifest clapkit reads.

A shard is a tar of samples; the members of one sample share a key (``{key}.flac``,
``{key}.json``). clapkit reads

- audio-text: ``{key}.flac|wav|ogg|mp3`` with ``{key}.json`` (its ``text`` field: a
  caption or a list of captions, LAION-CLAP's layout) or ``{key}.txt``;
- image-text: ``{key}.jpg|jpeg|png|webp`` with ``{key}.txt`` (open_clip's layout) or
  ``{key}.json``.

Each shard is read once, as a stream, to index its members (the captions are read,
the media are not); a clip or an image is then read in place (offset + size), never
unpacked. ``wds:PATTERN`` names the shards: a file, a glob or a brace range
(``shards/{000000..000099}.tar``). The pairs come out in shard order, then member
order, so a manifest written to shards reads back as the same pairs in the same order,
and a run seeded alike draws the same batches from either.
"""

from __future__ import annotations

import glob
import io
import json
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

from ...errors import DataError
from ..files import Collector, Skipped, TarMember
from ..records import Pair, clean_caption
from ..specs import PAIRS, ReadOptions, spec_kind

TEXT_EXTENSIONS = ("json", "txt")
MEDIA_EXTENSIONS = {"audio": ("flac", "wav", "ogg", "oga", "mp3"), "image": ("jpg", "jpeg", "png", "webp")}


def expand_shards(pattern: str) -> list[Path]:
    """Shard files of ``pattern``: brace ranges ``{000..099}`` and lists ``{a,b}``, then globs."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m:
        body, head, tail = m.group(1), pattern[: m.start()], pattern[m.end() :]
        r = re.fullmatch(r"(\d+)\.\.(\d+)", body)
        parts = [str(i).zfill(len(r.group(1))) for i in range(int(r.group(1)), int(r.group(2)) + 1)] if r \
            else body.split(",")
        return [p for part in parts for p in expand_shards(head + part + tail)]
    if any(ch in pattern for ch in "*?["):
        return [Path(p) for p in sorted(glob.glob(pattern))]
    return [Path(pattern)]


def index_tar(tar: Path) -> dict[str, dict[str, tuple[int, int, bytes | None]]]:
    """``{key: {ext: (offset, size, data)}}`` of a shard, read as one stream, in member
    order; ``data`` holds the bytes of the ``.txt`` and ``.json`` members only."""
    out: dict = {}
    try:
        with tarfile.open(tar, mode="r|*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                folder, _, base = member.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                if not dot or stem.startswith("."):
                    continue
                key = f"{folder}/{stem}" if folder else stem
                ext = ext.lower()
                data = tf.extractfile(member).read() if ext in TEXT_EXTENSIONS else None
                out.setdefault(key, {})[ext] = (member.offset_data, member.size, data)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"not a readable tar shard ({exc})", str(tar), reason="unreadable shard") from exc
    return out


def _captions(parts: dict, where: str) -> list[str]:
    """The sample's captions: the ``text`` field of its ``.json`` (a string or a list,
    LAION-CLAP's layout), else its ``.txt`` (open_clip's; a ``.json`` without ``text``
    is then just metadata, as img2dataset writes it)."""
    try:
        if "json" in parts:
            try:
                obj = json.loads(parts["json"][2].decode("utf-8"))
            except json.JSONDecodeError as exc:
                raise DataError(f"the .json is not valid JSON ({exc.msg})", where) from exc
            if isinstance(obj, dict) and "text" in obj:
                text = obj["text"]
                return text if isinstance(text, list) else [text]
        if "txt" in parts:
            return [parts["txt"][2].decode("utf-8")]
        raise DataError("no caption: the .json has no 'text' field and there is no .txt", where, reason="incomplete sample")
    except UnicodeDecodeError as exc:
        raise DataError("the caption is not UTF-8", where) from exc


def wds_pairs(pattern: str, medium: str, c: Collector) -> None:
    """Collect the (media, caption) pairs of the shards of ``pattern`` into ``c``: one
    pair per caption; a sample without a medium or a caption is a bad record."""
    if not pattern:
        raise DataError("data spec 'wds:': the shard pattern after 'wds:' is empty")
    shards = expand_shards(pattern)
    if not shards:
        raise DataError(f"no shard matches {pattern}")
    exts = MEDIA_EXTENSIONS[medium]
    for tar in shards:
        if not tar.is_file():
            c.fail(DataError("shard not found", str(tar), reason="shard not found"))
            continue
        try:
            members = index_tar(tar)
        except DataError as exc:
            c.fail(exc)
            continue
        for key, parts in members.items():
            where = f"{tar} sample {key}"

            def one(key=key, parts=parts, where=where, tar=tar):
                ext = next((e for e in exts if e in parts), None)
                if ext is None or not any(t in parts for t in TEXT_EXTENSIONS):
                    raise DataError(f"needs {'an image' if medium == 'image' else 'audio'} ({'|'.join(exts)}) and a "
                                    f".json or .txt caption; has {', '.join(sorted(parts))}", where,
                                    reason="incomplete sample")
                offset, size, _ = parts[ext]
                media = TarMember(tar, f"{key}.{ext}", offset, size)
                return [Pair(media, clean_caption(cap, where), f"{tar}#{key}", where) for cap in _captions(parts, where)]

            c(one)


def _write_example(d: Path) -> tuple[str, Path]:
    import numpy as np
    import soundfile as sf

    members = []
    for i in range(2):
        buf = io.BytesIO()
        sf.write(buf, (0.1 * np.sin(np.arange(800) / 5)).astype(np.float32), 8000, format="FLAC")
        members += [(f"s{i}.flac", buf.getvalue()), (f"s{i}.json", json.dumps({"text": [f"a bell {i}"]}).encode())]
    write_tar(d / "shard-000000.tar", members)
    return f"wds:{d / 'shard-{000000..000000}.tar'}", d / "shard-000000.tar"


@spec_kind("wds", PAIRS, ("audio", "image"), "PATTERN", "WebDataset shards (audio: `{key}.flac|wav|ogg|mp3` + "
           "`{key}.json` (LAION-CLAP) or `.txt`; images: `{key}.jpg|png|webp` + `{key}.txt` (open_clip) or `.json`), a "
           "glob or a brace range `shards/{000000..000099}.tar`; each shard is indexed once as a stream and media "
           "are read in place, never unpacked", example=_write_example)
def read_wds(path: Path, opts: ReadOptions, skipped: Skipped) -> list[Pair]:
    c = Collector(opts.skip_bad, skipped)
    wds_pairs(str(path), opts.medium, c)
    return c.items


def write_shards(pairs: list[Pair], out: str | Path, shard_size: int, read: Callable[[object], tuple[bytes, str]],
                 prefix: str = "shard") -> list[Path]:
    """Write ``pairs`` as shards of ``shard_size`` samples in ``out``: one sample per
    medium (first-appearance order) holding its file's bytes and ``{key}.json`` with its
    captions in order (``{"text": [...]}``), plus ``{key}.txt`` when it has one caption
    (open_clip reads that). ``read(media)`` gives a medium's bytes and extension. Each
    shard is written to a temporary name and renamed, so a shard on disk is complete."""
    if shard_size < 1:
        raise DataError(f"--shard-size {shard_size}: give at least 1 sample a shard")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    samples: dict = {}
    for p in pairs:
        samples.setdefault(p.media, []).append(p.caption)
    written, items = [], list(samples.items())
    width = max(6, len(str(max(0, (len(items) - 1) // shard_size))))
    for s in range(0, len(items), shard_size):
        path = out / f"{prefix}-{s // shard_size:0{width}d}.tar"
        members = []
        for n, (media, captions) in enumerate(items[s : s + shard_size], start=s):
            key = f"{n:09d}"
            data, ext = read(media)
            members += [(f"{key}.{ext}", data), (f"{key}.json", json.dumps({"text": captions}).encode())]
            if len(captions) == 1:
                members.append((f"{key}.txt", captions[0].encode()))
        tmp = path.with_name(path.name + ".tmp")
        write_tar(tmp, members)
        tmp.replace(path)
        written.append(path)
    return written


def write_tar(path: str | Path, members: list[tuple[str, bytes]]) -> None:
    """A tar of ``(name, bytes)`` members, in order (mtime 0: the same bytes every time)."""
    with tarfile.open(path, "w") as tf:
        for name, blob in members:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))


def shard_pattern(paths: list[Path]) -> str:
    """The ``wds:`` spec of shards :func:`write_shards` wrote (a brace range)."""
    if len(paths) == 1:
        return f"wds:{paths[0]}"
    first, last = paths[0].stem.rsplit("-", 1), paths[-1].stem.rsplit("-", 1)
    return f"wds:{paths[0].parent / first[0]}-{{{first[1]}..{last[1]}}}.tar"
