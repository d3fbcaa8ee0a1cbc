"""The records every reader produces, at the bottom of :mod:`clapkit.data`: a medium with
one caption (:class:`Pair`), and the checks and indexes every caption reader shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError


@dataclass(frozen=True)
class Pair:
    """One medium (an audio file or an image) with one caption. ``media_id`` groups the
    captions of one clip or image."""

    media: Path  # or an image reference of clapkit.data.image_io (a tar member)
    caption: str
    media_id: str
    where: str  # "FILE line N", for error messages


def unique_clips(pairs: list[Pair]) -> list[Pair]:
    """The first pair of each distinct audio file, in order of first appearance."""
    seen: dict[Path, Pair] = {}
    for p in pairs:
        seen.setdefault(p.media, p)
    return list(seen.values())


def clip_index(pairs: list[Pair]) -> tuple[list[Pair], list[int]]:
    """:func:`unique_clips` and, for each pair, the row of its clip among them."""
    clips = unique_clips(pairs)
    row = {c.media: i for i, c in enumerate(clips)}
    return clips, [row[p.media] for p in pairs]


def clean_caption(text, where: str) -> str:
    """A caption stripped of surrounding space; an empty or missing (non-text) one is an error."""
    caption = text.strip() if isinstance(text, str) else ""
    if not caption:
        raise DataError("empty caption", where)
    return caption
