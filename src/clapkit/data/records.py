"""The records every reader produces, at the bottom of :mod:`clapkit.data`: a medium with
one caption (:class:`Pair`), a labelled medium (:class:`LabelledClip`, in a
:class:`LabelledSet`), an image held in an array (:class:`ArrayImage`), and the checks,
indexes and selections every reader shares."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import DataError
from .files import Skipped


@dataclass(frozen=True)
class Pair:
    """One medium (an audio file or an image) with one caption. ``media_id`` groups the
    captions of one clip or image."""

    media: Path  # or an image reference: a TarMember (a shard's member) or an ArrayImage
    caption: str
    media_id: str
    where: str  # "FILE line N", for error messages
    source: str | None = None  # the recording's source id where the format names it (see LabelledClip)
    language: str | None = None  # the caption's language code where the format gives one (csv:/jsonl: `language`,
    # xtd10:, crossmodal3600:); retrieval then scores each language apart (`per_language`)


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


@dataclass(frozen=True)
class InMemory:
    """Item ``index`` of ``source`` held in memory rather than in a file; named
    ``source[index]`` wherever a path would be (errors, cache keys, seeds)."""

    source: str
    index: int

    def __str__(self) -> str:
        return f"{self.source}[{self.index}]"


@dataclass(frozen=True)
class ArrayImage(InMemory):
    """Row ``index`` of ``array`` (N, H, W) or (N, H, W, 3) of whole numbers in
    [0, ``scale``] (uint8 MNIST and CIFAR: 255; scikit-learn's digits: 16); ``source``
    names the set."""

    array: np.ndarray = field(compare=False, hash=False, repr=False)
    scale: float = 255.0


@dataclass(frozen=True)
class ArrayAudio(InMemory):
    """Waveform ``index`` of ``source`` given in memory (the Python API's
    ``encode_audio``): mono float samples at ``sample_rate``, decoded and resampled like a file."""

    wave: np.ndarray = field(compare=False, hash=False, repr=False)
    sample_rate: int = 0


@dataclass(frozen=True)
class MemoryImage(InMemory):
    """Image ``index`` of ``source`` given in memory as a Pillow image (the Python API's
    ``encode_image``); converted to RGB as a decoded file is."""

    image: object = field(compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class Window:
    """``seconds`` of an audio clip from ``start`` (sliding-window evaluation,
    :mod:`clapkit.inference.windows`); the audio pipelines cut it from the decoded clip."""

    media: Path
    where: str
    start: float
    seconds: float

    def cut(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        a = int(round(self.start * sample_rate))
        return wave[a : a + int(round(self.seconds * sample_rate))]


@dataclass(frozen=True)
class LabelledClip:
    """One labelled audio clip or image (``media``: a path or an image reference). In a
    multi-label set ``labels`` holds every label of the item (``label`` is its first)."""

    media: Path
    label: int
    fold: int | None
    where: str
    labels: tuple[int, ...] = ()
    # the recording's source id, where the format names it: "freesound:ID" (ESC-50's src_file,
    # UrbanSound8K's fsID, FSD50K's fname, Clotho's sound_id) or "youtube:ID" (AudioSet, VGGSound,
    # AudioCaps); `audit overlap` matches training and evaluation items by it
    source: str | None = None


@dataclass
class LabelledSet:
    clips: list[LabelledClip]
    class_names: list[str]  # index = label
    skipped: Skipped
    multilabel: bool = False  # items may carry several labels (FSD50K, AudioSet, VOC): scored by mAP
    # each class's id in a published ontology, where the format names one (FSD50K's and AudioSet's
    # AudioSet mids, "/m/09x0r"): class-name files spelled in that ontology are matched through it
    class_ids: list[str] | None = None

    def targets(self) -> np.ndarray:
        """(items, classes) bool: which classes each item carries."""
        y = np.zeros((len(self.clips), len(self.class_names)), dtype=bool)
        for i, c in enumerate(self.clips):
            y[i, list(c.labels or (c.label,))] = True
        return y

    def label_texts(self) -> list[str]:
        """Class names as words (``door_wood_knock`` -> ``door wood knock``)."""
        return [name.replace("_", " ") for name in self.class_names]


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
        if data.multilabel:  # an item stays when it carries a kept class; its other labels go
            kept = [(c, tuple(remap[x] for x in c.labels if x in remap)) for c in clips]
            clips = [replace(c, label=ls[0], labels=ls) for c, ls in kept if ls]
        else:
            clips = [replace(c, label=remap[c.label]) for c in clips if c.label in remap]
        names = [names[i] for i in keep]
        ids = [ids[i] for i in keep] if (ids := data.class_ids) else None
    else:
        ids = data.class_ids
    if not clips:
        raise DataError(f"{spec}: no clips left after the fold/class selection")
    return LabelledSet(clips, names, data.skipped, data.multilabel, ids)
