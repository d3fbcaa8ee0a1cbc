"""Media-text retrieval on a caption manifest (several captions per clip or image)."""

from __future__ import annotations

import numpy as np

from ..data.records import Pair, clip_index
from ..errors import ConfigError
from ..inference.embed import embed_text
from ..inference.features import embed_items
from ..models.dual import DualEncoder
from .metrics import audio_text_retrieval


def retrieval_eval(model: DualEncoder, pairs: list[Pair], batch_size: int = 32, device="cpu", progress: bool = False,
                   num_workers: int = 0, bootstrap: int = 0, seed: int = 0, windows=None, cache=None,
                   model_spec=None) -> dict:
    """Text-to-media and media-to-text R@1/5/10, mAP@10 and median rank.

    Media rows are the distinct files of ``pairs`` (first-appearance order); every
    caption is a text query. Keys name the medium: ``text_to_audio`` / ``audio_to_text``
    and an ``audio`` count for audio, ``text_to_image`` / ``image_to_text`` and
    ``images`` for images; ``captions`` counts the queries. ``bootstrap`` resamples of
    each direction's queries give every R@k a 95% interval (``ci``). ``windows``: long
    clips as the mean of their sliding windows (:mod:`clapkit.inference.windows`, recorded
    under ``windows``); ``cache``: the embedding cache folder (keyed by ``model_spec``).
    """
    clips, rows = clip_index(pairs)
    if windows is not None and windows.pool != "mean":
        raise ConfigError("--pool max is for zero-shot scores; retrieval pools the windows by mean")
    feats, info = embed_items(model, clips, ("E",), batch_size, device, num_workers, cache, model_spec, windows,
                              progress=progress)
    media_emb = feats["E"]
    text_emb = embed_text(model, [p.caption for p in pairs], device=device)
    both = audio_text_retrieval(media_emb, text_emb, np.array(rows), bootstrap, seed)
    m = model.medium
    return {f"text_to_{m}": both["text_to_audio"], f"{m}_to_text": both["audio_to_text"],
            "audio" if m == "audio" else "images": len(clips), "captions": len(pairs),
            **({"bootstrap": {"resamples": bootstrap, "seed": seed, "level": 0.95, "over": "queries"}} if bootstrap else {}),
            **info}
