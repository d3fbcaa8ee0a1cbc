"""Audio-text retrieval on a caption manifest (several captions per audio)."""

from __future__ import annotations

import numpy as np

from ..data.manifests import Pair, clip_index
from ..models.clap import ClapModel
from .embed import embed_audio, embed_text
from .metrics import audio_text_retrieval


def retrieval_eval(model: ClapModel, pairs: list[Pair], batch_size: int = 32, device="cpu", progress: bool = False) -> dict:
    """Text-to-audio and audio-to-text R@1/5/10, mAP@10 and median rank.

    Audio rows are the distinct files of ``pairs`` (first-appearance order); every
    caption is a text query.
    """
    clips, rows = clip_index(pairs)
    text_audio = np.array(rows)
    audio_emb = embed_audio(model, clips, batch_size, device=device, progress=progress)
    text_emb = embed_text(model, [p.caption for p in pairs], device=device)
    out = audio_text_retrieval(audio_emb, text_emb, text_audio)
    out.update(audio=len(clips), captions=len(pairs))
    return out
