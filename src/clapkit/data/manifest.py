"""Evaluation-set manifests: which files a lab's copy of a dataset holds, with the SHA-256
of each, so two copies can be compared (missing clips, re-encoded files) and a score
restricted to the items every copy shares with equal content.

An item's id is its media path relative to the dataset's root folder, with ``/``
separators, so it reads the same on every machine. The root is the common folder of the
items' media unless given; when comparing with a manifest, the nearest folder above that
common folder with the manifest's ``root_name`` is taken instead, so a fold or class
selection of a set (all of whose files sit in one subfolder) keeps the ids of the whole.

The file's layout (``clapkit-manifest/1``)::

    {"format": "clapkit-manifest/1", "spec": "esc50:/data/ESC-50", "medium": "audio",
     "root_name": "audio", "count": 2,
     "items": [{"id": "1-100032-A-0.ogg", "sha256": "...", "bytes": 1234, "label": "dog"},
               ...]}

``items`` are sorted by id, one per file (a clip with several captions appears once,
labelled with its first caption).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath

import numpy as np

from ..atomic import atomic_write_text
from ..errors import DataError

FORMAT = "clapkit-manifest/1"
EXAMPLES = 20  # example ids kept per category of compare()
_CHUNK = 1 << 20


def _path_of(item) -> Path:
    """The item's media file; an item held in memory or inside an archive has none."""
    media = item.media
    if isinstance(media, (str, os.PathLike)):
        return Path(os.path.abspath(media))
    raise DataError(f"{media} is not a file on disk ({type(media).__name__}): a manifest lists files, so sets held "
                    "in memory or read from archives (shards) cannot have one", getattr(item, "where", None))


def dataset_root(items: Iterable) -> Path:
    """The common folder of the items' media files."""
    folders = {str(_path_of(i).parent) for i in items}
    if not folders:
        raise DataError("no items: a manifest needs at least one file")
    try:
        return Path(os.path.commonpath(sorted(folders)))
    except ValueError as exc:  # different drives (Windows)
        raise DataError(f"the items' files share no common folder ({exc}); give the root") from exc


def item_id(item, root: str | os.PathLike) -> str:
    """``item``'s media path relative to ``root``, with ``/`` separators."""
    path, top = _path_of(item), os.path.abspath(root)
    try:
        inside = os.path.commonpath([str(path), top]) == top
    except ValueError:  # different drives (Windows)
        inside = False
    if not inside:
        raise DataError(f"{path} is not under the root {top}", getattr(item, "where", None))
    return PurePath(os.path.relpath(path, top)).as_posix()


def _aligned_root(items: Sequence, root_name: str | None) -> Path:
    """The common folder of ``items``, or the nearest folder above it named ``root_name``
    (a manifest's root), so ids of a subset match the ids of the whole set."""
    common = dataset_root(items)
    if root_name:
        for folder in (common, *common.parents):
            if folder.name == root_name:
                return folder
    return common


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256, for this process


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks; a file already hashed in this process
    (same path, size and modification time) is not read again, so comparing a copy with
    several manifests, then intersecting, in every cell of a bench, reads each file once."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def _hashes(paths: Iterable[Path], where: dict[Path, str | None] | None = None) -> dict[Path, tuple[str, int]]:
    """(sha256, bytes) of each distinct path, each file read once; a progress bar on a terminal."""
    from tqdm.auto import tqdm

    distinct = list(dict.fromkeys(paths))
    out: dict[Path, tuple[str, int]] = {}
    for path in tqdm(distinct, desc="sha256", unit="file", leave=False, disable=None if len(distinct) > 100 else True):
        try:
            out[path] = (file_sha256(path), path.stat().st_size)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}", (where or {}).get(path)) from exc
    return out


def _label(item, class_names: Sequence[str] | None) -> str | None:
    caption = getattr(item, "caption", None)
    if isinstance(caption, str):
        return caption
    label = getattr(item, "label", None)
    if class_names is not None and isinstance(label, int) and 0 <= label < len(class_names):
        return class_names[label]
    return None


def _items_and_names(items) -> tuple[list, list[str] | None]:
    """A LabelledSet's clips and class names, or a sequence of records as given."""
    if hasattr(items, "clips") and hasattr(items, "class_names"):
        return list(items.clips), list(items.class_names)
    return list(items), None


def build_manifest(items, spec: str, medium: str, root: str | os.PathLike | None = None,
                   class_names: Sequence[str] | None = None) -> dict:
    """The manifest of ``items`` (records with a ``media`` path, or a LabelledSet, whose
    class names then label the items): one entry per distinct file, sorted by id."""
    items, names = _items_and_names(items)
    names = list(class_names) if class_names is not None else names
    root = Path(os.path.abspath(root)) if root is not None else dataset_root(items)
    first: dict[str, object] = {}
    for item in items:
        first.setdefault(item_id(item, root), item)
    paths = {i: _path_of(item) for i, item in first.items()}
    hashes = _hashes(paths.values(), {p: getattr(first[i], "where", None) for i, p in paths.items()})
    entries = []
    for i in sorted(first):
        sha, size = hashes[paths[i]]
        entry = {"id": i, "sha256": sha, "bytes": size}
        if (label := _label(first[i], names)) is not None:
            entry["label"] = label
        entries.append(entry)
    return {"format": FORMAT, "spec": spec, "medium": medium, "root_name": root.name, "items": entries,
            "count": len(entries)}


def write_manifest(manifest: dict, path: str | os.PathLike) -> None:
    """Write ``manifest`` as JSON, atomically (the ``path`` key read_manifest adds is left out)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in manifest.items() if k not in ("items", "path")]
    items = ",\n".join(f"  {json.dumps(e)}" for e in manifest.get("items", []))
    atomic_write_text(path, "{\n" + ",\n".join([*head, f' "items": [\n{items}\n ]']) + "\n}\n")


def read_manifest(path: str | os.PathLike) -> dict:
    """A manifest written by :func:`write_manifest`, checked; ``path`` is added to it."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError("manifest not found", where) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the manifest: {exc}", where) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"not a JSON manifest ({exc.msg} at line {exc.lineno})", where) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise DataError(f"not a clapkit manifest: expected format {FORMAT!r}, found "
                        + (repr(found) if found is not None else "none"), where)
    entries = data.get("items")
    if not isinstance(entries, list):
        raise DataError("'items' must be a list", where)
    seen: set[str] = set()
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DataError(f"item {n} is not an object", where)
        for key in ("id", "sha256"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise DataError(f"item {n} has no {key}", where)
        if entry["id"] in seen:
            raise DataError(f"duplicate id {entry['id']!r} (item {n})", where)
        seen.add(entry["id"])
    if "count" in data and data["count"] != len(entries):
        raise DataError(f"count {data['count']} but {len(entries)} items", where)
    return {**data, "path": where}


def _ids_and_hashes(items: Sequence, manifests: Sequence[dict], root) -> tuple[list[list[str]], list[str]]:
    """For each manifest, every item's id under the root that matches it; every item's hash."""
    ids = []
    for m in manifests:
        r = Path(os.path.abspath(root)) if root is not None else _aligned_root(items, m.get("root_name"))
        ids.append([item_id(i, r) for i in items])
    paths = [_path_of(i) for i in items]
    hashes = _hashes(paths, {p: getattr(i, "where", None) for p, i in zip(paths, items, strict=True)})
    return ids, [hashes[p][0] for p in paths]


def _category(ids: Iterable[str]) -> dict:
    ids = sorted(ids)
    return {"count": len(ids), "examples": ids[:EXAMPLES]}


def _stem(i: str) -> str:
    return PurePath(i).with_suffix("").as_posix()


def _by_stem(ids: Iterable[str]) -> dict[str, str]:
    """Id without its extension -> id, for the stems only one id has."""
    found: dict[str, list[str]] = {}
    for i in ids:
        found.setdefault(_stem(i), []).append(i)
    return {k: v[0] for k, v in found.items() if len(v) == 1}


def compare(items, manifest: dict, root: str | os.PathLike | None = None) -> dict:
    """The files of ``items`` (here) against a manifest of another copy: the ids with equal
    content (``same``), with other content (``different_content``), only here and only
    there; counts are of distinct files, each with up to 20 example ids (those here). A
    file re-encoded under another extension (``x.wav`` there, ``x.ogg`` here) counts as
    different content, and in its ``other_extension``."""
    items, _ = _items_and_names(items)
    (ids,), hashes = _ids_and_hashes(items, [manifest], root)
    here = dict(zip(ids, hashes, strict=True))
    there = {e["id"]: e["sha256"] for e in manifest["items"]}
    same = [i for i in here if i in there and here[i] == there[i]]
    different = [i for i in here if i in there and here[i] != there[i]]
    only_here = [i for i in here if i not in there]
    only_there = [i for i in there if i not in here]
    stems_there = _by_stem(only_there)
    renamed = {i: stems_there[k] for k, i in _by_stem(only_here).items() if k in stems_there}
    only_here = [i for i in only_here if i not in renamed]
    only_there = sorted(set(only_there) - set(renamed.values()))
    r = {"manifest": manifest.get("path"), "spec": manifest.get("spec"), "here": len(here), "there": len(there),
         "same": _category(same), "different_content": {**_category([*different, *renamed]),
                                                        "other_extension": len(renamed)},
         "only_here": _category(only_here), "only_there": _category(only_there)}
    r["identical"] = r["same"]["count"] == len(here) == len(there)
    return r


def shared_mask(items, manifests: Sequence[dict], root: str | os.PathLike | None = None) -> np.ndarray:
    """(len(items),) bool: the items whose file is in every manifest with the same SHA-256
    (every item when no manifest is given)."""
    items, _ = _items_and_names(items)
    mask = np.ones(len(items), dtype=bool)
    if not manifests or not items:
        return mask
    ids, hashes = _ids_and_hashes(items, manifests, root)
    for m, m_ids in zip(manifests, ids, strict=True):
        there = {e["id"]: e["sha256"] for e in m["items"]}
        mask &= np.array([there.get(i) == h for i, h in zip(m_ids, hashes, strict=True)], dtype=bool)
    return mask


def against_copies(data, manifests, intersect: bool = False) -> dict:
    """What ``eval zeroshot --manifest`` and a bench's ``--manifest`` record: this copy of a
    labelled set compared with each other lab's manifest (``copies``: :func:`compare`), and
    with ``intersect`` the set narrowed, in place, to the items every manifest holds with the
    same content (``intersect``: kept and left-out counts), so every model and lab scores the
    same items."""
    from ..errors import ConfigError

    if intersect and not manifests:
        raise ConfigError("--intersect scores the items every --manifest holds: give at least one --manifest")
    if not manifests:
        return {}
    read = [read_manifest(p) for p in manifests]
    out = {"copies": [compare(data.clips, m) for m in read]}
    if intersect:
        keep = shared_mask(data.clips, read)
        if not keep.any():
            raise ConfigError("--intersect: no item is held, with the same content, by this copy and every --manifest")
        out["intersect"] = {"kept": int(keep.sum()), "left_out": int((~keep).sum())}
        data.clips = [c for c, k in zip(data.clips, keep, strict=True) if k]
    return out
