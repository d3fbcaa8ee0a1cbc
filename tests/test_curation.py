import csv
import json
import os

import numpy as np
import pytest

from clapkit.curation import curate, domain_filter, match, read_media_pool
from clapkit.errors import ConfigError
from clapkit.inference.cache import EmbeddingCache


def _unit(rows):
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_du_keeps_exactly_the_pairs_above_sigma():
    rng = np.random.default_rng(0)
    audio = _unit(rng.normal(size=(50, 8)))
    text = _unit(rng.normal(size=(30, 8)))
    sim = audio @ text.T
    for top_k in (1, 3):
        rows, cols, sims, best = match(audio, text, top_k=top_k, sigma=0.4, batch_size=7)
        expected = {(a, c) for a in range(50) for c in np.argsort(-sim[a])[:top_k] if sim[a, c] >= 0.4}
        assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == expected
        np.testing.assert_allclose(sims, sim[rows, cols], atol=1e-5)
        np.testing.assert_allclose(best, sim.max(axis=1), atol=1e-5)


def test_hnsw_index_finds_the_same_best_caption_here():
    rng = np.random.default_rng(1)
    audio, text = _unit(rng.normal(size=(40, 16))), _unit(rng.normal(size=(200, 16)))
    exact = match(audio, text, sigma=-1.0)
    approx = match(audio, text, sigma=-1.0, index="hnsw")
    assert (exact[1] == approx[1]).mean() >= 0.95


def test_ds_filters_captions_by_label_similarity():
    labels = _unit([[1, 0, 0], [0, 1, 0]])
    captions = _unit([[1, 0.1, 0], [0, 0, 1], [0.2, 1, 0], [0.5, 0.5, 1]])
    keep, best = domain_filter(captions, labels, threshold=0.9)
    assert keep.tolist() == [0, 2]
    np.testing.assert_allclose(best, (captions @ labels.T).max(1), atol=1e-6)


def test_embedding_cache_reuses_and_invalidates(tmp_path, tiny_checkpoint, tiny_synthetic):
    import shutil

    ckpt = tmp_path / "teacher"
    shutil.copytree(tiny_checkpoint, ckpt)
    pool_dir = tmp_path / "pool"
    shutil.copytree(tiny_synthetic / "unseen", pool_dir)
    pool = read_media_pool(pool_dir)
    c1 = EmbeddingCache(tmp_path / "cache", ckpt)
    first = c1.media(pool)
    assert c1.stats["audio_computed"] == 16
    c2 = EmbeddingCache(tmp_path / "cache", ckpt)
    np.testing.assert_array_equal(c2.media(pool), first)
    assert (c2.stats["audio_reused"], c2.stats["audio_computed"]) == (16, 0)
    assert c2._model is None  # a fully cached run never loads the teacher
    # a changed file is embedded again
    st = os.stat(pool[0].media)
    os.utime(pool[0].media, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c3 = EmbeddingCache(tmp_path / "cache", ckpt)
    c3.media(pool)
    assert (c3.stats["audio_reused"], c3.stats["audio_computed"]) == (15, 1)
    # a changed model gets a cache of its own
    st = os.stat(ckpt / "model.safetensors")
    os.utime(ckpt / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c4 = EmbeddingCache(tmp_path / "cache", ckpt)
    c4.media(pool)
    assert c4.stats["audio_computed"] == 16 and c4.dir != c1.dir


def test_curate_writes_manifest_and_stats_and_a_student_trains_on_it(tmp_path, tiny_checkpoint, tiny_synthetic, tiny_bert):
    from conftest import tiny_overrides

    from clapkit.config import load_config
    from clapkit.training.clap import train_clap

    out = tmp_path / "du.csv"
    s = curate(tiny_checkpoint, tiny_synthetic / "unseen", str(tiny_synthetic / "train.csv"), out, sigma=-1.0, top_k=2)
    assert (s["audio_pool"], s["pairs"], s["audio_matched"]) == (16, 32, 16)
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 32 and set(rows[0]) == {"audio", "caption", "similarity", "audio_id", "caption_id"}
    assert json.loads(out.with_suffix(".stats.json").read_text())["pairs"] == 32
    assert out.with_suffix(".hist.png").exists()
    ds = curate(tiny_checkpoint, tiny_synthetic / "unseen", str(tiny_synthetic / "train.csv"), tmp_path / "ds.csv",
                strategy="ds", labels=f"folder:{tiny_synthetic / 'unseen'}", label_threshold=2.0, sigma=-1.0)
    assert ds["captions_in_domain"] == 0 and ds["pairs"] == 0  # nothing reaches a similarity of 2
    with pytest.raises(ConfigError, match="needs --labels"):
        curate(tiny_checkpoint, tiny_synthetic / "unseen", str(tiny_synthetic / "train.csv"), tmp_path / "x.csv", strategy="ds")
    # the student: soft labels from the curation cache, starting from the teacher
    cfg = load_config(None, tiny_overrides(tiny_bert) + [
        f"data.train=[csv:{out}]", "train.epochs=1", "train.loss=soft_clip", f"train.soft.teacher={tiny_checkpoint}",
        f"train.soft.cache={tmp_path / '.clapkit-cache'}", f"model.init_from={tiny_checkpoint}"])
    summary = train_clap(cfg, tmp_path / "student")
    assert summary["loss"] == "soft_clip" and summary["teacher_cache"]["audio_computed"] == 0
    assert summary["teacher_cache"]["text_computed"] == 0


def test_cache_appends_chunks_without_rewriting_and_reads_memory_mapped(tmp_path, tiny_checkpoint, tiny_synthetic):
    pool = read_media_pool(tiny_synthetic / "unseen")
    cache = EmbeddingCache(tmp_path / "cache", tiny_checkpoint)
    first = cache.media(pool[:10])
    chunk0 = cache.dir / "audio" / "chunk-000000.npy"
    before = (chunk0.stat().st_ino, chunk0.stat().st_mtime_ns)
    both = EmbeddingCache(tmp_path / "cache", tiny_checkpoint).media(pool)  # 6 new clips: one new chunk
    assert (chunk0.stat().st_ino, chunk0.stat().st_mtime_ns) == before
    assert sorted(p.name for p in (cache.dir / "audio").glob("chunk-*.npy")) == ["chunk-000000.npy", "chunk-000001.npy"]
    assert np.load(cache.dir / "audio" / "chunk-000001.npy").shape == (6, first.shape[1])
    np.testing.assert_array_equal(both[:10], first)
    store = cache.store("audio")
    assert len(store.lookup([os.path.abspath(p.media) for p in pool])) == 16
    # rows come back in the order asked, across chunks
    order = [15, 0, 11, 3]
    np.testing.assert_array_equal(EmbeddingCache(tmp_path / "cache", tiny_checkpoint).media([pool[i] for i in order]),
                                  both[order])


def test_curate_streams_the_pool_in_batches_with_the_same_result(tmp_path, tiny_checkpoint, tiny_synthetic):
    args = (tiny_checkpoint, tiny_synthetic / "unseen", str(tiny_synthetic / "train.csv"))
    whole = curate(*args, tmp_path / "a.csv", sigma=0.2, top_k=2)
    streamed = curate(*args, tmp_path / "b.csv", sigma=0.2, top_k=2, pool_batch=3)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    for key in ("audio_pool", "pairs", "audio_matched", "captions_used", "best_similarity_quantiles"):
        assert whole[key] == streamed[key], key
    assert streamed["cache"]["audio_computed"] == 0  # the second run reads the first run's cache
    with open(tmp_path / "a.csv") as fh:
        rows = list(csv.DictReader(fh))
    pool = read_media_pool(tiny_synthetic / "unseen")
    assert all(os.path.abspath(pool[int(r["audio_id"])].audio) == r["audio"] for r in rows)


def test_curate_does_not_reopen_cached_files_and_reports_bad_pool_rows(tmp_path, tiny_checkpoint, tiny_synthetic,
                                                                        monkeypatch):
    import clapkit.data.audio.io as audio_io  # audio_info: every header read goes through its sf.info
    from clapkit.errors import DataError

    pool_csv = tmp_path / "pool.csv"
    files = sorted((tiny_synthetic / "unseen").rglob("*.wav"))[:4]
    pool_csv.write_text("audio\n" + "".join(f"{f}\n" for f in files))
    args = (tiny_checkpoint, pool_csv, str(tiny_synthetic / "train.csv"))
    curate(*args, tmp_path / "a.csv", sigma=-1.0)
    opened = []
    real = audio_io.sf.info
    monkeypatch.setattr(audio_io.sf, "info", lambda p, *a, **k: opened.append(p) or real(p, *a, **k))
    again = curate(*args, tmp_path / "b.csv", sigma=-1.0)
    assert opened == [] and again["cache"]["audio_reused"] == 4  # unchanged and cached: never reopened
    pool_csv.write_text(pool_csv.read_text() + "missing.wav\n")
    with pytest.raises(DataError, match=r"pool.csv line 6.*missing.wav"):
        curate(*args, tmp_path / "c.csv", sigma=-1.0)
    s = curate(*args, tmp_path / "c.csv", sigma=-1.0, skip_bad=True)
    assert s["audio_pool"] == 4 and s["skipped"]["count"] == 1
