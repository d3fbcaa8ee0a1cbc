"""The registry of data spec kinds: what ``KIND:PATH`` means, for which medium and role.

A data spec names a format and where it is (``clotho:captions.csv``, ``esc50:ESC-50``).
Each format's reader registers itself in the file that reads it::

    @spec_kind("esc50", LABELLED, ("audio",), "ROOT", "`ROOT/meta/esc50.csv` + `ROOT/audio/`", example=_write_esc50)
    def read_esc50(path, opts, skipped): ...

and this module finds every such file by importing the modules of the medium packages
(:mod:`clapkit.data.audio`, ``image``, ``text``, ``shards``) the first time a kind is
looked up, so a new format is one new file in one of them. The loaders
(``load_pairs``, ``load_labelled``, ...), the CLI's help strings, ``clapkit formats``,
the README's format table and the format fuzz test all read the same registry.

A reader is ``read(path, opts, skipped) -> result``; ``opts`` is a :class:`ReadOptions`
(each reader takes the fields it needs) and ``skipped`` counts what ``skip_bad`` left
out. What a result is depends on the role:

=========  =======================================  ==============================
role       result                                   loader
=========  =======================================  ==============================
pairs      ``list[Pair]`` (one per caption)          load_pairs, load_image_pairs
labelled   ``(list[LabelledClip], class names)``    load_labelled, load_labelled_images
           or ``(..., class ids)`` (AudioSet mids);
           an item with several ``labels`` makes
           the set multi-label
names      class names                              load_label_names
sts        ``list[StsSet]``                          load_sts
corpus     sentences                                load_corpus
=========  =======================================  ==============================

``example(folder) -> (spec, file)`` writes a minimal valid copy of the format's layout
into ``folder`` and returns its spec and the file a corruption test should break.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..discovery import import_package
from ..errors import DataError

PAIRS, LABELLED, NAMES, STS, CORPUS = "pairs", "labelled", "names", "sts", "corpus"
ROLES = {PAIRS: "caption pairs", LABELLED: "labelled sets", NAMES: "class names", STS: "STS sets",
         CORPUS: "sentence corpora"}
MEDIA = ("audio", "image", "text")
_PACKAGES = ("audio", "image", "text", "shards")


@dataclass(frozen=True)
class ReadOptions:
    """What a reader may be told beside its path (each takes the fields it needs)."""

    medium: str = "audio"
    media_dir: Path | None = None  # clotho:, audiocaps:, coco:, karpathy:, flickr: media folder; csv:/jsonl: base
    audiocaps_pattern: str | None = None
    media_column: str | None = None  # csv:/jsonl: column or key of the media path (default: the medium's name)
    caption_column: str = "caption"
    label_templates: tuple[str, ...] = ("This is a sound of {label}.",)
    split: str | None = None  # karpathy: captions, cifar:/stsb:/sick: items, fsdd: nothing
    label: str = "digit"  # fsdd: digit | speaker
    folds: tuple[int, ...] | None = None  # labelled sets with folds: only these are read (us8k: their folders)
    skip_bad: bool = False
    require_media: bool = True  # caption pairs: the media files must exist

    @property
    def column(self) -> str:
        return self.media_column or self.medium


@dataclass(frozen=True)
class SpecKind:
    kind: str
    role: str
    media: tuple[str, ...]
    read: Callable = field(repr=False)
    arg: str  # what the path is: ROOT, DIR, CSV, FILE, JSON, PATTERN
    layout: str  # what it reads, one line (help, README, `clapkit formats`)
    example: Callable[[Path], tuple[str, Path]] | None = field(default=None, repr=False)
    bare: bool = False  # the kind alone is a spec (``digits``); no path
    module: str = ""


_REGISTRY: dict[tuple[str, str, str], SpecKind] = {}
_ORDER: dict[tuple[str, str, str], int] = {}  # (role, kind, module) -> registration number


def spec_kind(kind: str, role: str, media: tuple[str, ...], arg: str, layout: str,
              example: Callable[[Path], tuple[str, Path]] | None = None, bare: bool = False):
    """Register the decorated reader as ``KIND:PATH`` for ``role`` and each of ``media``."""
    if role not in ROLES or not set(media) <= set(MEDIA):
        raise ValueError(f"spec kind {kind!r}: role {role!r} / media {media!r}; roles {list(ROLES)}, media {MEDIA}")

    def register(read: Callable) -> Callable:
        for medium in media:
            known = _REGISTRY.get((role, medium, kind))
            if known is not None and known.module != read.__module__:
                raise ValueError(f"spec kind {kind}: ({role}, {medium}) is registered by {known.module} already")
            _REGISTRY[(role, medium, kind)] = SpecKind(kind, role, tuple(media), read, arg, layout, example, bare,
                                                       read.__module__)
        _ORDER.setdefault((role, kind, read.__module__), len(_ORDER))
        return read

    return register


def _discover() -> None:
    for name in _PACKAGES:
        import_package(f"{__package__}.{name}")


def _order(k: SpecKind) -> tuple[str, int]:
    return k.module, _ORDER[(k.role, k.kind, k.module)]


def kinds(role: str, medium: str) -> list[SpecKind]:
    """The kinds of ``role`` for ``medium``, by file and, within a file, in the order it
    registers them (so listings do not depend on which files were imported first)."""
    _discover()
    return sorted((k for (r, m, _), k in _REGISTRY.items() if r == role and m == medium), key=_order)


def all_kinds() -> list[SpecKind]:
    """Every registered kind once (a kind read for several media is listed once)."""
    _discover()
    seen: dict[tuple[str, str, str], SpecKind] = {}
    for k in _REGISTRY.values():
        seen.setdefault((k.role, k.kind, k.module), k)
    return sorted(seen.values(), key=_order)


def names_of(role: str, medium: str) -> tuple[str, ...]:
    return tuple(k.kind for k in kinds(role, medium))


def is_kind(spec: str, role: str, medium: str) -> bool:
    return str(spec).partition(":")[0] in names_of(role, medium)


def lookup(spec: str, role: str, medium: str) -> tuple[SpecKind, Path | None]:
    """The registered kind of ``spec`` and its path; a DataError that lists the kinds
    for this role and medium when it names none of them."""
    kind, sep, path = str(spec).partition(":")
    found = {k.kind: k for k in kinds(role, medium)}
    entry = found.get(kind)
    if entry is not None and entry.bare and not sep:
        return entry, None
    if entry is None or not sep:
        listed = ", ".join(k for k in found)
        raise DataError(f"data spec {spec!r}: expected KIND:PATH with KIND one of {listed} "
                        f"({medium} {ROLES[role]}; `clapkit formats` lists what each reads)")
    if not path:
        raise DataError(f"data spec {spec!r}: the {entry.arg.lower()} after '{kind}:' is empty (e.g. {kind}:{entry.arg})")
    return entry, Path(path).expanduser()


def read(spec: str, role: str, medium: str, opts: ReadOptions | None = None, skipped=None):
    """Read ``spec`` with its registered reader (see the module docstring for results)."""
    from .files import Skipped

    entry, path = lookup(spec, role, medium)
    return entry.read(path, opts or ReadOptions(medium=medium), skipped if skipped is not None else Skipped())


def read_pairs(spec: str, opts: ReadOptions, skipped) -> list:
    """The caption pairs of ``spec`` for ``opts.medium``: a caption kind's own, or, for a
    labelled set (``esc50:``, ``folder:``, ...), one pair per item and label template
    (``data.label_templates``), each class name with ``_`` read as a space."""
    from .records import Pair

    if not is_kind(spec, PAIRS, opts.medium) and is_kind(spec, LABELLED, opts.medium):
        data = read_labelled(spec, opts, skipped)
        texts = data.label_texts()
        return [Pair(c.media, tpl.format(label=texts[c.label]), str(c.media), c.where, c.source)
                for c in data.clips for tpl in opts.label_templates]
    return read(spec, PAIRS, opts.medium, opts, skipped)


def read_labelled(spec: str, opts: ReadOptions, skipped=None):
    """The :class:`~clapkit.data.records.LabelledSet` of ``spec`` for ``opts.medium``; what
    ``skip_bad`` leaves out is counted in ``skipped`` (a fresh record by default)."""
    from .files import Skipped
    from .records import LabelledSet

    skipped = skipped if skipped is not None else Skipped()
    clips, names, *ids = read(spec, LABELLED, opts.medium, opts, skipped)
    return LabelledSet(clips, names, skipped, multilabel=any(c.labels for c in clips), class_ids=ids[0] if ids else None)


def help_for(role: str, *media: str) -> str:
    """A CLI help fragment: the kinds of ``role`` for each medium, e.g.
    ``audio: esc50:ROOT, folder:DIR; images: folder:DIR, csv:FILE``."""
    parts = []
    for medium in media:
        listed = ", ".join(k.kind if k.bare else f"{k.kind}:{k.arg}" for k in kinds(role, medium))
        parts.append(f"{medium}: {listed}" if len(media) > 1 else listed)
    return "; ".join(parts)


def markdown_table(medium: str, roles: tuple[str, ...] = (PAIRS, LABELLED)) -> str:
    """The README's table of the formats of ``medium``: spec, role, what it reads."""
    rows = ["| spec | reads | format |", "| --- | --- | --- |"]
    for role in roles:
        for k in kinds(role, medium):
            spec = f"`{k.kind}`" if k.bare else f"`{k.kind}:{k.arg}`"
            rows.append(f"| {spec} | {ROLES[role]} | {k.layout.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)
