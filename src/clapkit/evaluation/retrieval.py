"""Media-text retrieval on a caption manifest (several captions per clip or image)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.records import Pair, clip_index
from ..errors import ConfigError, DataError
from ..inference.embed import embed_text
from ..inference.features import embed_items
from ..models.dual import DualEncoder
from .metrics import audio_text_retrieval


def retrieval_eval(model: DualEncoder, pairs: list[Pair], batch_size: int = 32, device="cpu", progress: bool = False,
                   num_workers: int = 0, bootstrap: int = 0, seed: int = 0, windows=None, cache=None,
                   model_spec=None, relevance=None, skip_bad: bool = False) -> dict:
    """Text-to-media and media-to-text R@1/5/10, mAP@10 and median rank.

    Media rows are the distinct files of ``pairs`` (first-appearance order); every
    caption is a text query. Keys name the medium: ``text_to_audio`` / ``audio_to_text``
    and an ``audio`` count for audio, ``text_to_image`` / ``image_to_text`` and
    ``images`` for images; ``captions`` counts the queries. ``bootstrap`` resamples of
    each direction's queries give every R@k a 95% interval (``ci``). ``windows``: long
    clips as the mean of their sliding windows (:mod:`clapkit.inference.windows`, recorded
    under ``windows``); ``cache``: the embedding cache folder (keyed by ``model_spec``).

    ``relevance``: a relevance file (:mod:`clapkit.data.audio.relevance`) or its judgements:
    the text-to-media direction then scores the file's queries with its graded relevance
    (:func:`graded_text_retrieval`; ``mAP@16``, ``mAP@10``, ``nDCG@10``, R@k over all relevant
    items), the one-relevant result kept beside it as ``text_to_{medium}_paired`` and the
    file's record as ``relevance`` (``skip_bad``: its rows naming no caption or clip of the
    data counted there, not raised).
    """
    clips, rows = clip_index(pairs)
    if windows is not None and windows.pool != "mean":
        raise ConfigError("--pool max is for zero-shot scores; retrieval pools the windows by mean")
    judged = None if relevance is None else judged_queries(relevance, pairs, clips, skip_bad)  # before embedding
    feats, info = embed_items(model, clips, ("E",), batch_size, device, num_workers, cache, model_spec, windows,
                              progress=progress)
    media_emb = feats["E"]
    text_emb = embed_text(model, [p.caption for p in pairs], device=device)
    both = audio_text_retrieval(media_emb, text_emb, np.array(rows), bootstrap, seed)
    m = model.medium
    t2m, graded = both["text_to_audio"], {}
    if judged is not None:
        t2m = graded_text_retrieval(media_emb, text_emb, judged, bootstrap, seed)
        graded = {f"text_to_{m}_paired": both["text_to_audio"], "relevance": judged.record}
    return {f"text_to_{m}": t2m, f"{m}_to_text": both["audio_to_text"], **graded,
            "audio" if m == "audio" else "images": len(clips), "captions": len(pairs),
            **({"bootstrap": {"resamples": bootstrap, "seed": seed, "level": 0.95, "over": "queries"}} if bootstrap else {}),
            **info}


GRADED_KS = {"ks": (1, 5, 10), "map_ks": (16, 10), "ndcg_ks": (10,)}  # what a relevance file is scored with


@dataclass
class GradedQueries:
    """A relevance file on the evaluated data (:func:`judged_queries`): the pair of each
    judged query (its text embedding row), each query's grade of each judged clip (by row of
    :func:`~clapkit.data.records.clip_index`'s clips), and the file's record."""

    queries: list[int]
    grades: list[dict[int, float]]
    record: dict


def judged_queries(relevance, pairs: list[Pair], clips: list[Pair], skip_bad: bool = False) -> GradedQueries:
    """A relevance file (a path) or its judgements
    (:func:`~clapkit.data.audio.relevance.read_relevance`) matched to the evaluated pairs
    and clips (:func:`~clapkit.data.audio.relevance.match_relevance`); a row naming no
    caption or clip of the data raises, or with ``skip_bad`` is counted in the record."""
    from ..data.audio.relevance import match_relevance, read_relevance
    from ..data.files import Skipped

    source = str(relevance) if isinstance(relevance, str | Path) else None
    judgements = read_relevance(relevance) if source is not None else list(relevance)
    skipped = Skipped()
    queries, grades = match_relevance(judgements, pairs, clips, skip_bad, skipped)
    if not queries:
        raise DataError("no judgement of the relevance file names both a caption and a clip of the data", source)
    record = {"file": source, "judgements": len(judgements), "queries": len(queries),
              "relevant": int(sum(sum(g > 0 for g in q.values()) for q in grades)), "skipped": skipped.to_dict(),
              "ties": "pessimistic: a tied candidate of lower grade (a non-relevant one first) ranks first",
              "mAP": "DCASE 2025 task 6: the precision at each relevant rank <= k, summed, over the number of "
                     "relevant clips"}
    return GradedQueries(queries, grades, record)


def graded_text_retrieval(media_emb: np.ndarray, text_emb: np.ndarray, judged: GradedQueries, bootstrap: int = 0,
                          seed: int = 0, keep_ranks: bool = False) -> dict:
    """Text-to-media retrieval with several relevant clips per query: each judged caption
    (``text_emb`` rows are the pairs) against every clip (``media_emb`` rows), scored by
    :func:`~clapkit.evaluation.metrics.graded_retrieval_metrics` (``mAP@16`` and ``mAP@10``
    as DCASE 2025 task 6 computes them, ``nDCG@10``, R@1/5/10 over all relevant clips,
    ``hit@k``) with intervals over the queries."""
    from .metrics import graded_retrieval_metrics

    sim = text_emb[np.asarray(judged.queries)] @ media_emb.T
    return graded_retrieval_metrics(sim, judged.grades, bootstrap=bootstrap, seed=seed, keep_ranks=keep_ranks,
                                    **GRADED_KS)
