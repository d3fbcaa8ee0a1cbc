"""Teacher curation of unpaired audio and captions (an "Improvement-Set").

A teacher CLAP embeds a pool of unpaired audio and a pool of captions; audio and
captions are paired by cosine similarity of their projected embeddings:

- **DU** (domain-unspecific): keep, for each audio, its ``top_k`` most similar captions
  whose similarity is at least ``sigma`` (0.7 in the paper).
- **DS** (domain-specific): first keep only captions whose highest text-to-text
  similarity to a list of in-domain labels (e.g. ESC-50's class names) reaches
  ``label_threshold`` (0.6-0.75 in the paper), then match as DU.

Matching uses FAISS inner product on L2-normalised vectors: exact (``IndexFlatIP``) by
default, HNSW as the approximate option for pools of millions. Audio queries go in
batches, so memory is bounded by the caption index plus one batch, and time grows
linearly with the audio pool.

Embeddings are cached on disk (:class:`EmbeddingCache`) keyed by the teacher's
fingerprint and each item's id: a re-run reuses them; a changed model (other weights)
or a changed audio file (size or modification time) is embedded again.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.audio import AUDIO_EXTENSIONS
from .errors import ConfigError, DataError


def model_fingerprint(checkpoint: str | Path) -> str:
    """Hash of a checkpoint's config and the size and mtime of its weight files."""
    checkpoint = Path(checkpoint)
    h = hashlib.sha1()
    for rel in ("config.json", "model.safetensors", "text/model.safetensors", "text/config.json"):
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


class EmbeddingCache:
    """Projected teacher embeddings on disk: ``folder/<fingerprint>/{audio,text}.npz``.

    ``model_loader`` is called only when something is missing, so a fully cached run
    never loads the teacher.
    """

    def __init__(self, folder: str | Path, checkpoint: str | Path, model_loader: Callable | None = None,
                 batch_size: int = 32, device="cpu"):
        self.checkpoint = Path(checkpoint)
        self.dir = Path(folder) / model_fingerprint(checkpoint)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._loader = model_loader
        self._model = None
        self.batch_size, self.device = batch_size, device
        self.stats = {"audio_reused": 0, "audio_computed": 0, "text_reused": 0, "text_computed": 0}

    def model(self):
        if self._model is None:
            if self._loader is None:
                from .models.clap import ClapModel

                self._model = ClapModel.load(self.checkpoint).to(self.device).eval()
            else:
                self._model = self._loader()
        return self._model

    def _lookup(self, name: str, ids: list[str], stamps: list[str], compute) -> np.ndarray:
        path = self.dir / f"{name}.npz"
        known: dict[str, tuple[str, int]] = {}
        old = None
        if path.exists():
            old = np.load(path, allow_pickle=False)
            known = {i: (s, r) for r, (i, s) in enumerate(zip(old["ids"].tolist(), old["stamps"].tolist(), strict=True))}
        rows = [known.get(i) for i in ids]
        missing = [n for n, (r, s) in enumerate(zip(rows, stamps, strict=True)) if r is None or r[0] != s]
        self.stats[f"{name}_reused"] += len(ids) - len(missing)
        self.stats[f"{name}_computed"] += len(missing)
        new = compute(missing) if missing else None
        dim = new.shape[1] if new is not None else old["emb"].shape[1]
        out = np.empty((len(ids), dim), dtype=np.float32)
        fresh = dict(zip(missing, range(len(missing)), strict=True))
        for n, r in enumerate(rows):
            out[n] = new[fresh[n]] if n in fresh else old["emb"][r[1]]
        if missing:  # merge into the cache file, atomically
            keep = {i: (s, old["emb"][r]) for i, (s, r) in known.items()} if old is not None else {}
            for n in missing:
                keep[ids[n]] = (stamps[n], out[n])
            tmp = path.with_name(f".{name}.tmp.npz")
            np.savez(tmp, ids=np.array(list(keep)), stamps=np.array([v[0] for v in keep.values()]),
                     emb=np.stack([v[1] for v in keep.values()]).astype(np.float32))
            os.replace(tmp, path)
        return out

    def audio(self, items: Sequence) -> np.ndarray:
        """E_a of ``items`` (have ``.audio``); ids are absolute paths, stamps size:mtime."""
        from .evaluation.embed import embed_audio

        ids = [str(Path(i.audio).resolve()) for i in items]
        stamps = [_file_stamp(Path(i.audio)) for i in items]
        return self._lookup("audio", ids, stamps, lambda miss: embed_audio(
            self.model(), [items[n] for n in miss], self.batch_size, device=self.device))

    def text(self, texts: Sequence[str]) -> np.ndarray:
        """E_t of ``texts``; ids are the texts' hashes."""
        from .evaluation.embed import embed_text

        ids = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        return self._lookup("text", ids, [""] * len(ids), lambda miss: embed_text(
            self.model(), [texts[n] for n in miss], device=self.device))


@dataclass(frozen=True)
class PoolItem:
    audio: Path
    where: str


def read_audio_pool(spec: str | Path) -> list[PoolItem]:
    """Unpaired audio: a folder (searched recursively) or a CSV with an ``audio`` column."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise DataError("no audio files in the folder", str(path))
        return [PoolItem(f, str(f)) for f in files]
    from .data.manifests import _read_csv_rows

    rows = _read_csv_rows(path, ["audio"])
    items = []
    for line, row in rows:
        if not (row["audio"] or "").strip():
            raise DataError("empty audio path", f"{path} line {line}")
        p = Path(row["audio"].strip())
        items.append(PoolItem(p if p.is_absolute() else path.parent / p, f"{path} line {line}"))
    return items


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
    rows, cols, sims, best = [], [], [], []
    idx = build_index(text_emb, index) if len(text_emb) else None
    k = min(top_k, len(text_emb))
    start = 0
    for batch in batches:
        q = np.ascontiguousarray(batch, dtype=np.float32)
        if idx is None:
            best.append(np.full(len(q), np.nan, np.float32))
        else:
            d, i = idx.search(q, k)
            best.append(d[:, 0].astype(np.float32))
            r, c = np.nonzero(d >= sigma)
            rows.append(r + start)
            cols.append(i[r, c])
            sims.append(d[r, c])
        start += len(q)
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
    batch_size: int = 32, device="cpu", skip_bad: bool = False,
) -> dict:
    """Write a curated ``audio,caption,similarity,audio_id,caption_id`` manifest to ``out``
    and its stats (``.stats.json``, ``.hist.png``) beside it."""
    from .data.datasets import check_audio_files
    from .data.labelled import load_label_names
    from .data.manifests import Skipped, detect_spec, load_pairs

    if strategy not in ("du", "ds"):
        raise ConfigError(f"--strategy {strategy!r}: choose du or ds")
    if strategy == "ds" and not labels:
        raise ConfigError("--strategy ds needs --labels (esc50:ROOT, folder:DIR or txt:FILE)")
    t0 = time.time()
    out = Path(out)
    cache = EmbeddingCache(cache or out.parent / ".clapkit-cache", teacher, batch_size=batch_size, device=device)
    skipped = Skipped()
    pool = check_audio_files(read_audio_pool(audio), skip_bad, skipped)
    texts = list(dict.fromkeys(p.caption for p in load_pairs(detect_spec(captions), require_audio=False)))
    audio_emb, text_emb = cache.audio(pool), cache.text(texts)

    stats: dict = {"strategy": strategy, "sigma": sigma, "top_k": top_k, "index": index,
                   "audio_pool": len(pool), "caption_pool": len(texts)}
    cand = np.arange(len(texts))
    if strategy == "ds":
        names = [n.replace("_", " ") for n in load_label_names(labels)]
        label_emb = cache.text([label_template.format(label=n) for n in names])
        cand, _ = domain_filter(text_emb, label_emb, label_threshold)
        stats.update(labels=labels, label_threshold=label_threshold, captions_in_domain=int(len(cand)))
    rows, cols, sims, best = match(audio_emb, text_emb[cand], top_k, sigma, index)
    cols = cand[cols]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["audio", "caption", "similarity", "audio_id", "caption_id"])
        for r, c, s in zip(rows, cols, sims, strict=True):
            w.writerow([str(Path(pool[r].audio).resolve()), texts[c], f"{s:.6f}", int(r), int(c)])
    finite = best[np.isfinite(best)]
    stats.update(
        pairs=int(len(rows)), audio_matched=int(len(np.unique(rows))), captions_used=int(len(np.unique(cols))),
        best_similarity_quantiles={q: float(np.quantile(finite, float(q))) for q in ("0.1", "0.5", "0.9")} if len(finite) else {},
        cache=cache.stats | {"folder": str(cache.dir)}, skipped=skipped.to_dict(), seconds=time.time() - t0,
        manifest=str(out),
    )
    stem = out.with_suffix("")
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
