"""What S0 measures of the language encoder inside a dual encoder (`clapkit eval language`).

For any model :func:`clapkit.models.public.loader.load_model` loads:

- language-encoder quality: the STS table (Spearman x 100) on the text backbone output
  x_t and on the projected E_t, and SentEval's transfer tasks on x_t (raw, as SentEval
  takes embeddings);
- the geometry of the evaluation pairs (a caption manifest): text-space uniformity of
  E_t over the distinct captions (and of x_t, normalised), cross-modal alignment
  (Wang and Isola: E ||E_m - E_t||^2 over matched media-caption pairs) and the modality
  gap (||mean E_m - mean E_t||, media and captions each counted once).

Uniformity and alignment are lower-is-better; S0 reports that sentence-embedding
training raises text-space uniformity (more negative values) and lowers cross-modal
alignment (larger distances).
"""

from __future__ import annotations

import numpy as np

from ..data.records import clip_index
from ..inference.embed import embed_media, embed_text
from .geometry import alignment, modality_gap, uniformity


def pair_geometry(model, pairs: list, batch_size: int = 32, device="cpu", num_workers: int = 0) -> dict:
    clips, rows = clip_index(pairs)
    e_m = embed_media(model, clips, batch_size, device=device, num_workers=num_workers)
    captions = [p.caption for p in pairs]
    e_t = embed_text(model, captions, device=device)
    distinct = list(dict.fromkeys(captions))
    first = {c: i for i, c in reversed(list(enumerate(captions)))}
    e_t_distinct = e_t[[first[c] for c in distinct]]
    x_t = embed_text(model, distinct, projected=False, device=device)
    x_t = x_t / np.linalg.norm(x_t, axis=1, keepdims=True)
    return {
        "pairs": len(pairs), "media": len(clips), "captions": len(distinct),
        "uniformity_E_t": uniformity(e_t_distinct), "uniformity_x_t": uniformity(x_t),
        "alignment": alignment(e_m[np.asarray(rows)], e_t), "modality_gap": modality_gap(e_m, e_t_distinct),
    }
