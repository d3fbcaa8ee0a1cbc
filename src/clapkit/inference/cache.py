"""The on-disk embedding cache of a checkpoint: E_m, x and E_t computed once, reused by
every evaluation command given ``--cache`` (whole items or sliding windows, fp32 or bf16),
by ``curate`` (the teacher's pool and captions) and by soft-label training (the teacher's
embeddings of every training pair).

``folder/<fingerprint>/{audio|image,text}/`` (and ``audio-x/``, ``audio+bf16/``, ...) holds chunked ``.npy`` files and a SQLite
index (see :class:`_Store`); the fingerprint changes when the checkpoint does, a stored
row is reused only while its file's size and mtime are unchanged, and the teacher is
loaded only when something is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError


def model_fingerprint(checkpoint: str | Path) -> str:
    """Hash of a checkpoint's config and the size and mtime of its weight files (a hub
    name, which is no local folder, by its name; an open_clip spec by its name and its
    local weights)."""
    from ..models.public.open_clip import is_open_clip, parse_open_clip

    files = ("config.json", "model.safetensors", "text/model.safetensors", "text/config.json")
    if is_open_clip(checkpoint):  # open_clip: the spec, and its weights file or folder's files when local
        name, pretrained = parse_open_clip(checkpoint)
        local = Path(name.removeprefix("local-dir:")) if name.startswith("local-dir:") else Path(pretrained or "")
        checkpoint = str(checkpoint)
        files = tuple(str(f) for f in ([local] if local.is_file() else sorted(local.glob("*")) if local.is_dir() else []))
    checkpoint = Path(checkpoint)
    h = hashlib.sha1(b"" if checkpoint.is_dir() else str(checkpoint).encode())
    if checkpoint.is_file():  # a weights file (a LAION-CLAP .pt): its own size and mtime
        h.update(_file_stamp(checkpoint).encode())
    for rel in files:
        f = checkpoint / rel
        if f.exists():
            st = f.stat()
            h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}".encode())
            if rel.endswith(".json"):
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _file_stamp(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def media_key(ref) -> str:
    """A cache id for a medium: the absolute path of a file; ``TAR#member`` of a tar
    member; ``SOURCE[i]`` of an array row."""
    from ..data.files import TarMember
    from ..data.records import ArrayImage

    if isinstance(ref, TarMember):
        return f"{os.path.abspath(ref.tar)}#{ref.name}"
    if isinstance(ref, ArrayImage):
        return str(ref)
    return os.path.abspath(ref)


def item_key(item) -> str:
    """The cache id of an item: its medium's :func:`media_key`; a sliding window's adds
    its start and length in seconds (``PATH@START+SECONDS``, exact floats), so a window
    is the same entry whichever hop cut it."""
    from ..data.records import Window

    key = media_key(item.media)
    return f"{key}@{item.start!r}+{item.seconds!r}" if isinstance(item, Window) else key


def media_stamp(ref) -> str:
    """size:mtime of the file holding ``ref`` (raises OSError when it is gone)."""
    from ..data.files import TarMember
    from ..data.records import ArrayImage

    if isinstance(ref, TarMember):
        return f"{_file_stamp(ref.tar)}@{ref.offset}"
    if isinstance(ref, ArrayImage):
        return ""
    return _file_stamp(Path(ref))


def checkpoint_medium(checkpoint: str | Path) -> str:
    """The medium of a checkpoint from its config.json: clapkit's ``model.modality``
    (audio if absent) or a Hugging Face dual encoder's ``model_type``."""
    from ..models.formats import detect, kind_medium
    from ..models.public.hf import hf_family

    kind = detect(checkpoint)
    if kind_medium(kind):
        return kind_medium(kind)
    path = Path(checkpoint) / "config.json"
    try:
        hf_family(checkpoint)  # an error naming what it is, for a model that is no dual encoder
        return json.loads(path.read_text())["model"].get("modality", "audio")
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise ConfigError(f"{checkpoint}: not a clapkit checkpoint (config.json unreadable: {exc})") from exc


class _Store:
    """One kind of embedding on disk: ``chunk-NNNNNN.npy`` files (float32 rows) and
    ``index.sqlite`` (id -> stamp, chunk, row).

    An append writes one new chunk (temporary file, then rename) and then indexes its
    rows in one transaction; a crash in between leaves an unindexed chunk, never a
    broken one. Reads memory-map only the chunks a batch needs and copy its rows out, so
    nothing stays mapped (mapped pages would count as resident memory).
    """

    LOOKUP = 900  # ids per SQL query (below SQLite's variable limit)

    def __init__(self, folder: Path):
        import sqlite3

        self.dir = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(folder / "index.sqlite"), timeout=600)
        self.db.execute("CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, stamp TEXT, chunk INTEGER, row INTEGER)")
        self.db.commit()

    def lookup(self, ids: Sequence[str]) -> dict[str, tuple[str, int, int]]:
        """{id: (stamp, chunk, row)} of the ``ids`` that are stored."""
        found: dict[str, tuple[str, int, int]] = {}
        for start in range(0, len(ids), self.LOOKUP):
            part = list(ids[start : start + self.LOOKUP])
            marks = ",".join("?" * len(part))
            for i, stamp, chunk, row in self.db.execute(f"SELECT id, stamp, chunk, row FROM items WHERE id IN ({marks})", part):
                found[i] = (stamp, chunk, row)
        return found

    def read(self, locations: list[tuple[int, int]], dim: int | None = None) -> np.ndarray:
        """Rows at ``(chunk, row)`` locations, in that order."""
        if not locations:
            return np.zeros((0, dim or 0), np.float32)
        chunks = np.array([c for c, _ in locations])
        rows = np.array([r for _, r in locations])
        out = None
        for c in np.unique(chunks):
            arr = np.load(self.dir / f"chunk-{c:06d}.npy", mmap_mode="r")
            if out is None:
                out = np.empty((len(locations), arr.shape[1]), np.float32)
            sel = np.flatnonzero(chunks == c)
            out[sel] = arr[rows[sel]]
            del arr
        return out

    def append(self, ids: Sequence[str], stamps: Sequence[str], emb: np.ndarray) -> None:
        cur = self.db.execute("SELECT COALESCE(MAX(chunk), -1) FROM items").fetchone()[0] + 1
        while (self.dir / f"chunk-{cur:06d}.npy").exists():  # an unindexed chunk of a crashed run
            cur += 1
        fd, tmp = tempfile.mkstemp(prefix=".chunk.", suffix=".npy", dir=self.dir)
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, np.ascontiguousarray(emb, dtype=np.float32))
        os.replace(tmp, self.dir / f"chunk-{cur:06d}.npy")
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?)",
                                [(i, st, cur, r) for r, (i, st) in enumerate(zip(ids, stamps, strict=True))])


class EmbeddingCache:
    """Projected teacher embeddings on disk: ``folder/<fingerprint>/{audio|image,text}/``
    (chunks and an index, see :class:`_Store`).

    ``model_loader`` is called only when something is missing, so a fully cached run
    never loads the teacher.
    """

    def __init__(self, folder: str | Path, checkpoint: str | Path, model_loader: Callable | None = None,
                 batch_size: int = 32, device="cpu", num_workers: int = 0):
        self.checkpoint = Path(checkpoint)
        self.dir = Path(folder) / model_fingerprint(checkpoint)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._loader = model_loader
        self._model = None
        self._stores: dict[str, _Store] = {}
        self.batch_size, self.device, self.num_workers = batch_size, device, num_workers
        self.medium = checkpoint_medium(checkpoint)
        self.stats = {f"{self.medium}_reused": 0, f"{self.medium}_computed": 0, "text_reused": 0, "text_computed": 0}

    def model(self):
        if self._model is None:
            if self._loader is None:
                from ..models.public.loader import load_model

                self._model = load_model(self.checkpoint, self.device).eval()
            else:
                self._model = self._loader()
        return self._model

    def store(self, name: str) -> _Store:
        if name not in self._stores:
            self._stores[name] = _Store(self.dir / name)
        return self._stores[name]

    def _lookup(self, name: str, ids: list[str], stamps: list[str], compute,
                known: dict[str, tuple[str, int, int]] | None = None) -> np.ndarray:
        """Embeddings of ``ids`` in order: stored rows whose stamp matches, the rest from
        ``compute(positions)`` (then stored). ``known``: a lookup of ``ids`` already made."""
        from ..distributed import barrier, is_main

        store = self.store(name)
        known = store.lookup(ids) if known is None else known
        missing = [n for n, (i, st) in enumerate(zip(ids, stamps, strict=True)) if i not in known or known[i][0] != st]
        self.stats[f"{name}_reused"] = self.stats.get(f"{name}_reused", 0) + len(ids) - len(missing)
        self.stats[f"{name}_computed"] = self.stats.get(f"{name}_computed", 0) + len(missing)
        barrier()  # under torchrun: every process has looked up before anything is written
        new = compute(missing) if missing else None  # each process embeds its share; all get the whole
        if new is not None and is_main():  # one writer
            store.append([ids[n] for n in missing], [stamps[n] for n in missing], new)
        barrier()
        miss = set(missing)
        hit = [n for n in range(len(ids)) if n not in miss]
        old = store.read([known[ids[n]][1:] for n in hit])
        out = np.empty((len(ids), new.shape[1] if new is not None else old.shape[1]), np.float32)
        if missing:
            out[missing] = new
        if hit:
            out[hit] = old
        return out

    def media(self, items: Sequence) -> np.ndarray:
        """E_m of ``items`` (have ``.media``); ids are :func:`media_key`, stamps size:mtime."""
        return self.media_features(items, ("E",))["E"]

    def media_features(self, items: Sequence, kinds: Sequence[str] = ("x", "E")) -> dict[str, np.ndarray]:
        """``{"x": backbone outputs, "E": E_m}`` of ``items`` (the ``kinds`` asked for;
        E in the store :meth:`media` reads, x beside it in ``<medium>-x/``, bf16 or compiled
        ones in ``<store>+bf16/``, ``<store>+compiled/``: :func:`~clapkit.inference.embed.store_tag`). An item may be a sliding window
        (:class:`~clapkit.data.records.Window`), stored under :func:`item_key`. The items
        any kind lacks are embedded once, in one pass of the tower, for every kind."""
        from .embed import media_features, store_tag

        ids, stamps = [item_key(i) for i in items], [media_stamp(i.media) for i in items]
        tag = store_tag()
        names = {k: (self.medium if k == "E" else f"{self.medium}-{k}") + tag for k in kinds}
        known = {k: self.store(names[k]).lookup(ids) for k in kinds}
        stale = sorted({n for k in kinds for n, (i, st) in enumerate(zip(ids, stamps, strict=True))
                        if known[k].get(i, ("",))[0] != st})
        fresh = {}
        if stale:
            fresh = media_features(self.model(), [items[n] for n in stale], tuple(kinds), self.batch_size, self.device,
                                   self.num_workers)
        row_of = {n: r for r, n in enumerate(stale)}
        return {k: self._lookup(names[k], ids, stamps, lambda miss, k=k: fresh[k][[row_of[n] for n in miss]], known[k])
                for k in kinds}

    def _embed_media(self, items: Sequence) -> Callable:
        from .embed import embed_media

        return lambda miss: embed_media(self.model(), [items[n] for n in miss], self.batch_size, device=self.device,
                                        num_workers=self.num_workers)

    def text(self, texts: Sequence[str]) -> np.ndarray:
        """E_t of ``texts``; ids are the texts' hashes."""
        from .embed import embed_text, store_tag

        ids = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        return self._lookup("text" + store_tag(), ids, [""] * len(ids), lambda miss: embed_text(
            self.model(), [texts[n] for n in miss], device=self.device))

    def media_stream(self, items: Iterable, batch: int = 8192, skip_bad: bool = False,
                     skipped=None) -> Iterator[tuple[list, np.ndarray]]:
        """(items, E_m) batch by batch for a stream of pool items. A cached item whose file
        is unchanged is not opened again; the others are checked (a bad file is an error
        naming it, or skipped and counted) and embedded."""
        from ..data.files import Skipped
        from ..data.media import check_media
        from .embed import store_tag

        skipped = skipped if skipped is not None else Skipped()
        name = self.medium + store_tag()
        for part in _batched(items, batch):
            stamps = [_stamp_or_none(i.media) for i in part]
            ids = [media_key(i.media) for i in part]
            known = self.store(name).lookup(ids)
            cached = [st is not None and known.get(i, ("",))[0] == st for i, st in zip(ids, stamps, strict=True)]
            fresh = [item for item, c in zip(part, cached, strict=True) if not c]  # missing files end here too
            good = {id(i) for i in check_media(self.medium, fresh, skip_bad, skipped)} if fresh else set()
            keep = [n for n, (item, c) in enumerate(zip(part, cached, strict=True)) if c or id(item) in good]
            if keep:
                kept = [part[n] for n in keep]
                yield kept, self._lookup(name, [ids[n] for n in keep], [stamps[n] for n in keep],
                                         self._embed_media(kept), known)


def _stamp_or_none(ref) -> str | None:
    try:
        return media_stamp(ref)
    except OSError:
        return None


def _batched(items: Iterable, n: int) -> Iterator[list]:
    part: list = []
    for item in items:
        part.append(item)
        if len(part) == n:
            yield part
            part = []
    if part:
        yield part
