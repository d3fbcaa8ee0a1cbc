"""Teacher curation of unpaired audio (or images) and captions (an "Improvement-Set").

A teacher CLAP (or CLIP) embeds a pool of unpaired audio (images) and a pool of
captions; the two are paired by cosine similarity of their projected embeddings:

- **DU** (domain-unspecific): keep, for each audio, its ``top_k`` most similar captions
  whose similarity is at least ``sigma`` (0.7 in the paper).
- **DS** (domain-specific): first keep only captions whose highest text-to-text
  similarity to a list of in-domain labels (e.g. ESC-50's class names) reaches
  ``label_threshold`` (0.6-0.75 in the paper), then match as DU.

Matching uses FAISS inner product on L2-normalised vectors: exact (``IndexFlatIP``) by
default, HNSW as the approximate option for pools of millions. Audio queries go in
batches, so memory is bounded by the caption index plus one batch, and time grows
linearly with the audio pool.

Embeddings are cached on disk (:class:`clapkit.inference.cache.EmbeddingCache`) keyed by the teacher's
fingerprint and each item's id: a re-run reuses them; a changed model (other weights)
or a changed audio file (size or modification time) is embedded again. The cache is a
folder of ``.npy`` chunks with an SQLite index, so lookups and appends never load or
rewrite what is stored, and :func:`curate` streams the audio pool through it batch by
batch: its memory is the caption index plus one batch, whatever the size of the pool.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.audio import AUDIO_EXTENSIONS
from .errors import ConfigError, DataError
from .inference.cache import EmbeddingCache, media_key


@dataclass(frozen=True)
class PoolItem:
    media: Path
    where: str


def iter_media_pool(spec: str | Path, medium: str = "audio") -> Iterator[PoolItem]:
    """Unpaired audio or images as a stream: a folder (walked recursively, in sorted
    order) or a CSV with an ``audio`` / ``image`` column (paths relative to the CSV or
    absolute)."""
    from .data.files import iter_csv_rows
    from .data.image.io import IMAGE_EXTENSIONS

    extensions = IMAGE_EXTENSIONS if medium == "image" else AUDIO_EXTENSIONS
    path = Path(spec)
    if path.is_dir():
        found = False
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                if os.path.splitext(name)[1].lower() in extensions:
                    found = True
                    f = Path(root) / name
                    yield PoolItem(f, str(f))
        if not found:
            raise DataError(f"no {medium} files in the folder", str(path))
        return
    for line, row in iter_csv_rows(path, [medium]):
        if not (row[medium] or "").strip():
            raise DataError(f"empty {medium} path", f"{path} line {line}")
        p = Path(row[medium].strip())
        yield PoolItem(p if p.is_absolute() else path.parent / p, f"{path} line {line}")


def read_media_pool(spec: str | Path, medium: str = "audio") -> list[PoolItem]:
    """All of :func:`iter_media_pool`."""
    return list(iter_media_pool(spec, medium))


def build_index(emb: np.ndarray, kind: str = "exact"):
    import faiss

    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if kind == "exact":
        index = faiss.IndexFlatIP(emb.shape[1])
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(emb.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
    else:
        raise ConfigError(f"--index {kind!r}: choose exact or hnsw")
    index.add(emb)
    return index


class Matcher:
    """DU matching against a fixed caption set, one batch of audio queries at a time:
    each query's ``top_k`` captions whose similarity is at least ``sigma``."""

    def __init__(self, text_emb: np.ndarray, top_k: int = 1, sigma: float = 0.7, index: str = "exact"):
        self.index = build_index(text_emb, index) if len(text_emb) else None
        self.k, self.sigma = min(top_k, len(text_emb)), sigma

    def search(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows within the batch, caption rows, similarities) of the kept pairs, and each
        query's best similarity (NaN without captions)."""
        q = np.ascontiguousarray(batch, dtype=np.float32)
        if self.index is None:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0, np.float32), np.full(len(q), np.nan, np.float32)
        d, i = self.index.search(q, self.k)
        r, c = np.nonzero(d >= self.sigma)
        return r.astype(np.int64), i[r, c].astype(np.int64), d[r, c].astype(np.float32), d[:, 0].astype(np.float32)


def match(audio_emb: np.ndarray | Iterable[np.ndarray], text_emb: np.ndarray, top_k: int = 1, sigma: float = 0.7,
          index: str = "exact", batch_size: int = 8192) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """DU matching: (audio rows, caption rows, similarities) of the kept pairs, and every
    audio's best similarity (for the histogram).

    ``audio_emb`` is an array or an iterable of row batches (e.g. read from disk), so
    the audio pool never needs to be in memory at once.
    """
    if isinstance(audio_emb, np.ndarray):
        batches: Iterable[np.ndarray] = (audio_emb[s : s + batch_size] for s in range(0, len(audio_emb), batch_size))
    else:
        batches = audio_emb
    matcher = Matcher(text_emb, top_k, sigma, index)
    rows, cols, sims, best = [], [], [], []
    start = 0
    for batch in batches:
        r, c, d, b = matcher.search(batch)
        rows.append(r + start)
        cols.append(c)
        sims.append(d)
        best.append(b)
        start += len(batch)
    cat = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
    return cat(rows, np.int64), cat(cols, np.int64), cat(sims, np.float32), cat(best, np.float32)


def domain_filter(caption_emb: np.ndarray, label_emb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """DS: indices of captions whose best label similarity reaches ``threshold``, and
    every caption's best label similarity."""
    best = (caption_emb @ label_emb.T).max(axis=1)
    return np.flatnonzero(best >= threshold), best


def curate(
    teacher: str | Path, audio: str | Path, captions: str, out: str | Path, strategy: str = "du",
    sigma: float = 0.7, top_k: int = 1, labels: str | None = None, label_threshold: float = 0.65,
    label_template: str = "{label}", index: str = "exact", cache: str | Path | None = None,
    batch_size: int = 32, device="cpu", skip_bad: bool = False, pool_batch: int = 8192, num_workers: int = 0,
) -> dict:
    """Write a curated ``audio,caption,similarity,audio_id,caption_id`` manifest to ``out``
    (``image,...,image_id,...`` for an image teacher, whose pool ``audio`` is then a
    folder of images or a CSV with an ``image`` column) and its stats (``.stats.json``,
    ``.hist.png``) beside it.

    The captions (and their index) are held in memory; the audio pool streams through
    the cache and the matcher ``pool_batch`` clips at a time, and kept pairs go straight
    to the manifest. ``audio_id`` is a clip's position in the pool. Under ``torchrun``
    every process embeds its share of what the cache lacks (the teacher step) and the
    first writes the manifest and its stats.
    """
    from .data.audio.captions import detect_spec
    from .data.files import Skipped
    from .data.specs import ReadOptions, read_pairs
    from .data.text import load_label_names
    from .distributed import is_main

    if strategy not in ("du", "ds"):
        raise ConfigError(f"--strategy {strategy!r}: choose du or ds")
    if strategy == "ds" and not labels:
        raise ConfigError("--strategy ds needs --labels (esc50:ROOT, folder:DIR or txt:FILE)")
    t0 = time.time()
    out = Path(out)
    cache = EmbeddingCache(cache or out.parent / ".clapkit-cache", teacher, batch_size=batch_size, device=device,
                           num_workers=num_workers)
    skipped = Skipped()
    texts = list(dict.fromkeys(p.caption for p in read_pairs(
        detect_spec(captions), ReadOptions(cache.medium, require_media=False), Skipped())))
    text_emb = cache.text(texts)

    stats: dict = {"strategy": strategy, "sigma": sigma, "top_k": top_k, "index": index, "caption_pool": len(texts)}
    cand = np.arange(len(texts))
    if strategy == "ds":
        names = [n.replace("_", " ") for n in load_label_names(labels)]
        label_emb = cache.text([label_template.format(label=n) for n in names])
        cand, _ = domain_filter(text_emb, label_emb, label_threshold)
        stats.update(labels=labels, label_threshold=label_threshold, captions_in_domain=int(len(cand)))
    matcher = Matcher(text_emb[cand], top_k, sigma, index)
    del text_emb
    out.parent.mkdir(parents=True, exist_ok=True)
    n_pool = n_pairs = 0
    matched_clips, used = 0, set()
    best_parts = []
    tmp = out.with_name(f".{out.name}.tmp") if is_main() else Path(os.devnull)
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([cache.medium, "caption", "similarity", f"{cache.medium}_id", "caption_id"])
        for items, emb in cache.media_stream(iter_media_pool(audio, cache.medium), pool_batch, skip_bad, skipped):
            rows, cols, sims, best = matcher.search(emb)
            cols = cand[cols]
            for r, c, sim in zip(rows, cols, sims, strict=True):
                w.writerow([media_key(items[r].media), texts[c], f"{sim:.6f}", n_pool + int(r), int(c)])
            n_pool += len(items)
            n_pairs += len(rows)
            matched_clips += len(np.unique(rows))
            used.update(cols.tolist())
            best_parts.append(best)
    if is_main():
        os.replace(tmp, out)
    best = np.concatenate(best_parts) if best_parts else np.zeros(0, np.float32)
    finite = best[np.isfinite(best)]
    stats.update(
        audio_pool=n_pool, pairs=n_pairs, audio_matched=matched_clips, captions_used=len(used),
        best_similarity_quantiles={q: float(np.quantile(finite, float(q))) for q in ("0.1", "0.5", "0.9")} if len(finite) else {},
        cache=cache.stats | {"folder": str(cache.dir)}, skipped=skipped.to_dict(), seconds=time.time() - t0,
        manifest=str(out),
    )
    stem = out.with_suffix("")
    if is_main():
        Path(f"{stem}.stats.json").write_text(json.dumps(stats, indent=2))
        _histogram(finite, sigma, Path(f"{stem}.hist.png"), strategy)
    return stats


def _histogram(best: np.ndarray, sigma: float, path: Path, strategy: str) -> None:
    from .plotting import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(best, bins=50, color="#4477aa")
    ax.axvline(sigma, color="#cc3311", label=f"sigma = {sigma}")
    ax.set_xlabel("best caption similarity of each audio")
    ax.set_ylabel("audio clips")
    ax.set_title(f"teacher curation ({strategy.upper()})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
