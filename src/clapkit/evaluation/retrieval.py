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

    Captions that carry a language (:attr:`Pair.language`: a ``language`` column,
    ``xtd10:``, ``crossmodal3600:``) add ``per_language``: each language scored apart on
    the same embeddings (:func:`language_retrieval`, with ``vs_en``) and the text
    tokenizer's coverage of its captions (:func:`tokenizer_coverage`); without languages
    the result is as before.
    """
    clips, rows = clip_index(pairs)
    if windows is not None and windows.pool != "mean":
        raise ConfigError("--pool max is for zero-shot scores; retrieval pools the windows by mean")
    judged = None if relevance is None else judged_queries(relevance, pairs, clips, skip_bad)  # before embedding
    languages = caption_languages(pairs)  # every caption with a language or none: checked before embedding too
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
    by_language = {}
    if languages is not None:
        by_language = {"per_language": language_retrieval(media_emb, text_emb, rows, languages, m, bootstrap, seed)}
        for lang, r in by_language["per_language"].items():
            r["tokenizer"] = tokenizer_coverage(model, [p.caption for p in pairs if p.language == lang])
    return {f"text_to_{m}": t2m, f"{m}_to_text": both["audio_to_text"], **graded,
            "audio" if m == "audio" else "images": len(clips), "captions": len(pairs),
            **({"bootstrap": {"resamples": bootstrap, "seed": seed, "level": 0.95, "over": "queries"}} if bootstrap else {}),
            **by_language, **info}


REFERENCE_LANGUAGE = "en"  # what each language's number is compared with (`vs_en`)


def caption_languages(pairs: list[Pair]) -> list[str] | None:
    """Each caption's language code, or None when no caption carries one; a set where only
    some do is an error naming the first caption without one."""
    if all(p.language is None for p in pairs):
        return None
    missing = next((p for p in pairs if p.language is None), None)
    if missing is not None:
        raise DataError("some captions carry a language and this one does not; give every caption one (or none)",
                        missing.where)
    return [p.language for p in pairs]


def language_retrieval(media_emb: np.ndarray, text_emb: np.ndarray, rows, languages: list[str], medium: str = "audio",
                       bootstrap: int = 0, seed: int = 0, reference: str = REFERENCE_LANGUAGE) -> dict:
    """Retrieval of each caption language apart, on one embedding of the media and captions
    (``rows[j]``: the media row of caption j; ``languages[j]``: its language). For each
    language: text-to-media (its captions as queries against every media item) and
    media-to-text (each media item that has captions in it, against its captions in it),
    each with R@1/5/10, mAP@10 and ranks as :func:`~clapkit.evaluation.metrics.retrieval_metrics`
    gives them (and 95% intervals with ``bootstrap``). Every language ranks against the same
    pool, all media items (so a language that captions fewer items is not scored on an
    easier pool, and ``vs_en`` compares like with like); where every item has captions in
    every language these are the numbers of a run on that language's captions alone. Keyed by language, ``reference`` (English) first then
    by code; every other language gets ``vs_en``: its R@1 minus the reference's (negative:
    the language loses). Text-to-media has no paired test: its queries are different
    captions in each language, so only the difference (and each side's interval) is
    given. Media-to-text is paired, the same media items queried in both languages: the
    difference over the items with captions in both, its paired-bootstrap interval and
    p-value (:func:`~clapkit.evaluation.uncertainty.paired_bootstrap`) and McNemar's exact p."""
    from .metrics import retrieval_metrics
    from .uncertainty import mcnemar, paired_bootstrap

    rows, langs = np.asarray(rows), np.asarray(languages, dtype=object)
    t2m_key, m2t_key = f"text_to_{medium}", f"{medium}_to_text"
    sim = media_emb @ text_emb.T  # (media, captions)
    order = sorted(set(languages), key=lambda x: (x != reference, x))
    out, hits = {}, {}
    for lang in order:
        idx = np.flatnonzero(langs == lang)
        own = rows[idx]
        items = list(dict.fromkeys(own.tolist()))  # its media items, in first-appearance order (as a run of its own)
        t2m = retrieval_metrics(sim[:, idx].T, [np.array([a]) for a in own], bootstrap=bootstrap, seed=seed)
        m2t = retrieval_metrics(sim[np.ix_(items, idx)], [np.flatnonzero(own == a) for a in items], bootstrap=bootstrap,
                                seed=seed, keep_ranks=True, laion_map=True)
        hits[lang] = dict(zip(items, m2t.pop("ranks") <= 1, strict=True))
        out[lang] = {t2m_key: t2m, m2t_key: m2t, "captions": int(len(idx)), "media": len(items),
                     "media_without_captions": int(media_emb.shape[0] - len(items))}
    if reference not in out:
        return out
    ref = out[reference]
    for lang in order[1:]:
        r = out[lang]
        shared = [a for a in hits[lang] if a in hits[reference]]
        text = {"difference": r[t2m_key]["R@1"] - ref[t2m_key]["R@1"], "paired": False,
                "why": f"the queries are {lang} captions on one side and {reference} captions on the other: no "
                       "item is scored twice, so there is no paired test (each side's interval is under its ci)"}
        media = {"difference": None, "paired": True, "items": len(shared)}
        if shared:
            a = np.array([hits[lang][x] for x in shared])
            b = np.array([hits[reference][x] for x in shared])
            d = a.astype(float) - b.astype(float)
            lo, hi, p = paired_bootstrap(lambda w, d=d: float((w * d).sum() / w.sum()), len(d), bootstrap or 1000, seed)
            media.update(difference=float(d.mean()), ci=[lo, hi], p_value=p, test="paired_bootstrap",
                         mcnemar_p=mcnemar(a, b)["p_value"])
        r[f"vs_{reference}"] = {"metric": "R@1", "sign": f"{lang} minus {reference} (negative: {lang} is worse)",
                                t2m_key: text, m2t_key: media}
    return out


def _text_tokenizer(model):
    """The text tower's tokenizer: ``model.text.tokenizer`` (a transformers tokenizer, or
    open_clip's, whose HF-backed kinds wrap a transformers one as ``.tokenizer``)."""
    tok = getattr(getattr(model, "text", None), "tokenizer", None)
    inner = getattr(tok, "tokenizer", None)
    return inner if inner is not None and hasattr(inner, "convert_ids_to_tokens") else tok


def _byte_level(tok) -> bool:
    """Whether ``tok`` encodes any text as bytes (GPT-2, RoBERTa and CLIP's byte-level BPE,
    a BPE with byte fallback): then no token is ever unknown."""
    if hasattr(tok, "byte_encoder"):  # the Python GPT-2 / CLIP tokenizers, open_clip's SimpleTokenizer
        return True
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return False
    pre = backend.pre_tokenizer
    state = pre.__getstate__() if pre is not None else b""
    return b'"ByteLevel"' in (state if isinstance(state, bytes) else str(state).encode()) or bool(
        getattr(backend.model, "byte_fallback", False))


def tokenizer_coverage(model, texts: list[str]) -> dict:
    """How the text tower's tokenizer covers ``texts``: ``unk_share``, the share of their
    tokens (special tokens left out) that are the tokenizer's unknown token, and
    ``tokens_per_word`` (words: whitespace-separated, so a Chinese or Japanese sentence
    written without spaces is one word; ``tokens_per_char`` counts characters other than
    space). A byte-level BPE tokenizer (``byte_level``) never emits an unknown token: its
    unk share is 0 by construction, and tokens per word is what shows a script it was not
    trained on."""
    tok = _text_tokenizer(model)
    if tok is None:
        return {"available": False, "why": "the model's text tower has no tokenizer clapkit can read"}
    if hasattr(tok, "convert_ids_to_tokens"):  # a transformers tokenizer
        ids = tok(list(texts), add_special_tokens=False, truncation=False)["input_ids"] if texts else []
        unk_id, unk = tok.unk_token_id, tok.unk_token
    elif hasattr(tok, "encode"):  # open_clip's SimpleTokenizer (byte-level BPE, no unknown token)
        ids, unk_id, unk = [tok.encode(t) for t in texts], None, None
    else:
        return {"available": False, "why": f"{type(tok).__name__} is no tokenizer clapkit can count with"}
    byte_level = _byte_level(tok)
    tokens = sum(len(x) for x in ids)
    unknown = 0 if unk_id is None else sum(int(i == unk_id) for x in ids for i in x)
    words = sum(len(t.split()) for t in texts)
    chars = sum(len("".join(t.split())) for t in texts)
    return {"available": True, "tokenizer": type(tok).__name__, "texts": len(texts), "words": words, "tokens": tokens,
            "unknown_tokens": unknown, "unk_token": unk if unk_id is not None else None,
            "unk_share": unknown / tokens if tokens else 0.0, "tokens_per_word": tokens / words if words else 0.0,
            "tokens_per_char": tokens / chars if chars else 0.0, "byte_level": byte_level,
            **({"note": "byte-level BPE: every text is encoded as bytes, so no token is unknown (unk share 0 by "
                        "construction); tokens per word shows how well it knows the script"} if byte_level else {})}


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
