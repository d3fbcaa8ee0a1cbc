"""The one switch between audio and images on the data side.

The trainer, the caches and the evaluations ask this module for a medium's pairs,
file checks and torch dataset, so the rest of clapkit is written once for both media:

==================  ==========================================  =============================================
                    audio (``model.modality: audio``)           image (``model.modality: image``)
==================  ==========================================  =============================================
caption manifests   the kinds of clapkit.data.specs (``clapkit formats``), and any labelled set, one pair per template
labelled sets       the kinds of clapkit.data.specs (``clapkit formats``)
file check          header (soundfile)                          full decode (Pillow)
dataset item        fixed-length waveform (``audio.crop:        normalised (3, S, S) pixels
                    variable``: the whole clip in training)
training draw       segment, seeded (seed, epoch, i)            crop + flip, seeded (seed, epoch, i)
==================  ==========================================  =============================================
"""

from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import Dataset

from .audio.captions import load_pairs
from .audio.io import load_audio
from .audio.labelled import load_labelled
from .datasets import ClipDataset, ExtractedClips, check_audio_files
from .files import Skipped
from .image.captions import load_image_pairs
from .image.io import check_images, open_image
from .image.labelled import load_labelled_images
from .image_datasets import ImageDataset
from .records import LabelledSet, Pair, Window, select


class RawMedia(Dataset):
    """Decoded media with no transform, for a model that preprocesses its own inputs:
    RGB Pillow images, or whole waveforms at ``sample_rate``. Item ``i`` -> (media, i)."""

    def __init__(self, items: Sequence, medium: str, sample_rate: int | None = None):
        self.items, self.medium, self.sample_rate = list(items), medium, sample_rate

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        where = f"{item.where}: {item.media}"
        if self.medium == "image":
            return open_image(item.media, where), i
        wave = load_audio(item.media, self.sample_rate, where)
        return (item.cut(wave, self.sample_rate) if isinstance(item, Window) else wave), i


def medium_of(cfg: dict) -> str:
    return cfg["model"].get("modality", "audio")


def media_dataset(cfg: dict, items: Sequence, train: bool = False, seed: int = 0, extract=None) -> Dataset:
    """Item ``i`` or ``(epoch, i)`` -> (tensor, i) for the config's medium; with ``extract``
    (a fused public CLAP's feature function) whole clips through it instead."""
    if medium_of(cfg) == "image":
        return ImageDataset(items, cfg["image"], train, seed)
    a = cfg["audio"]
    if extract is not None:
        return ExtractedClips(items, a["sample_rate"], extract, train=train, seed=seed)
    return ClipDataset(items, a["sample_rate"], a["segment_seconds"], a["normalize"], train=train, seed=seed,
                       pad=a.get("pad", "zero"), crop=a.get("crop", "fixed"), max_seconds=a.get("max_seconds", 30.0))


def check_media(medium: str, items: Sequence, skip_bad: bool, skipped: Skipped) -> list:
    """Open every distinct file of ``items``; drop (and count) or raise on the bad ones."""
    return (check_images if medium == "image" else check_audio_files)(items, skip_bad, skipped)


def load_media_pairs(cfg: dict, spec: str, skipped: Skipped, checked: bool = False) -> list[Pair]:
    """The caption pairs of ``spec`` for the config's medium, with the ``data.*`` options;
    ``checked``: their files opened too (:func:`check_media`)."""
    d, skip = cfg["data"], cfg["runtime"]["skip_bad"]
    if medium_of(cfg) == "image":
        pairs = load_image_pairs(spec, d["image_dir"], skip, skipped, d["image_column"],
                                 d["caption_column"], d["split"])
    else:
        pairs = load_pairs(spec, d["audio_dir"], d["audiocaps_pattern"], skip, skipped,
                           audio_column=d["audio_column"], caption_column=d["caption_column"],
                           label_templates=d["label_templates"])
    return check_media(medium_of(cfg), pairs, skip, skipped) if checked else pairs


def is_labelled_set(spec: str, medium: str) -> bool:
    """Whether ``spec`` is read as a labelled set rather than caption pairs: a labelled kind
    that is no caption kind, or a ``csv:`` of images with a ``label`` column."""
    from . import specs
    from .files import csv_header, parse_spec

    if not specs.is_kind(spec, specs.LABELLED, medium):
        return False
    return not specs.is_kind(spec, specs.PAIRS, medium) or (
        spec.startswith("csv:") and "label" in csv_header(parse_spec(spec, ("csv",))[1]))


def load_labelled_media(spec: str, medium: str, folds: list[int] | None = None, classes: list[str] | None = None,
                        skip_bad: bool = False, checked: bool = False, split: str | None = None,
                        media_dir=None) -> LabelledSet:
    """A labelled set of ``medium`` with its fold and class selection; ``checked``: its
    files opened too (:func:`check_media`), else not yet."""
    if medium == "image":
        data = select(load_labelled_images(spec, skip_bad, split=split or "test"), spec, folds, classes)
    else:
        data = load_labelled(spec, folds, classes, skip_bad, split=split, media_dir=media_dir)
    if checked:
        data.clips = check_media(medium, data.clips, skip_bad, data.skipped)
    return data
