"""Microsoft CLAP's 2022 weights (``CLAP_weights_2022.pth``, what ``msclap.CLAP(version="2022")``
reads) behind clapkit's dual-encoder interface: a ``.pth`` whose ``model`` state dict holds
``audio_encoder.base`` (PANNs' CNN14) and ``caption_encoder.base`` (BERT).

The towers are clapkit's own: CNN14 (:class:`~clapkit.models.towers.audio.Cnn14`, PANNs'
module names, so msclap's ``audio_encoder.base.*`` load strictly) and transformers' BERT,
with msclap 1.3.4's ``Projection`` (``models/clap.py``: two bias-free linears, GELU,
dropout, a residual and a layer norm) on each. What makes the embeddings msclap's
(``get_audio_embeddings`` / ``get_text_embeddings``, ``CLAPWrapper.py``):

- audio at 44.1 kHz, 5 s: a shorter clip repeated (``ceil``) and cut to 5 s; a longer one
  cropped at ``random.randrange(len - 5 s)`` (seeded by the clip here, from Python's
  ``random`` module there); msclap resamples files with torchaudio's ``Resample``, clapkit
  with soxr, so files at another rate agree only closely;
- the mel front end inside CNN14 (window 1024, hop 320, 64 bands, 50-14000 Hz);
- texts through the ``bert-base-uncased`` tokenizer padded to 100 tokens, the text
  embedding BERT's first token (not its pooler) through the projection; BERT's config
  (heads, epsilon) from ``bert-base-uncased``, as msclap builds it;
- msclap returns the projections unnormalised and normalises in ``compute_similarity``;
  E here is normalised, and ``scale()`` is ``logit_scale.exp()`` as there.

msclap 2023 (HTSAT + GPT-2) is not read yet: its file is named in the error.
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..formats import msclap_version
from ..towers.audio import Cnn14
from .base import PublicDualEncoder, Tokens

SAMPLE_RATE, SECONDS, TEXT_LEN, TEXT_MODEL = 44100, 5, 100, "bert-base-uncased"  # configs/config_2022.yml


class Projection(nn.Module):
    """msclap's projection head: ``layer_norm(l1(x) + dropout(l2(gelu(l1(x)))))``."""

    def __init__(self, d_in: int, d_out: int, p: float = 0.5):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)
        self.drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.linear1(x)
        return self.layer_norm(first + self.drop(self.linear2(F.gelu(first))))


def _crop_or_repeat(wave: np.ndarray, seed: int) -> np.ndarray:
    """msclap's ``load_audio_into_tensor`` on a clip at 44.1 kHz (see the module docstring)."""
    n = SECONDS * SAMPLE_RATE
    if n >= len(wave):
        return np.tile(wave, int(np.ceil(n / len(wave))))[:n]
    start = random.Random(seed).randrange(len(wave) - n)
    return wave[start:start + n]


class MsclapDualEncoder(PublicDualEncoder):
    kind = "msclap"

    def __init__(self, path: str | Path, text_model: str | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoTokenizer, BertModel

        version = msclap_version(path)
        if version != "2022":
            raise ConfigError(f"{path}: msclap {version or 'unknown'} weights; clapkit reads msclap's 2022 weights "
                              "(CNN14 + BERT); the 2023 ones (HTSAT + GPT-2) are not read yet")
        sd = torch.load(str(path), map_location="cpu", weights_only=True)["model"]
        text_model = text_model or TEXT_MODEL
        try:
            config = AutoConfig.from_pretrained(text_model)
            tokenizer = AutoTokenizer.from_pretrained(text_model)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: msclap builds its text encoder on {text_model}'s config and tokenizer, which this "
                              f"machine cannot read ({exc}); pass text_model=FOLDER") from exc
        text_sd = {k[len("caption_encoder.base."):]: v for k, v in sd.items() if k.startswith("caption_encoder.base.")}
        config.vocab_size = text_sd["embeddings.word_embeddings.weight"].shape[0]
        config.num_hidden_layers = len({k.split(".")[2] for k in text_sd if k.startswith("encoder.layer.")})
        config.intermediate_size = text_sd["encoder.layer.0.intermediate.dense.weight"].shape[0]
        config.max_position_embeddings = text_sd["embeddings.position_embeddings.weight"].shape[0]
        d_proj = sd["audio_encoder.projection.linear1.weight"].shape[0]
        self.audio = Cnn14(SAMPLE_RATE, 1024, 320, 64, 50.0, 14000.0,
                           classes_num=sd["audio_encoder.base.fc_audioset.weight"].shape[0])
        self.audio_projection = Projection(2048, d_proj)
        self.text_model = BertModel(config, add_pooling_layer="pooler.dense.weight" in text_sd)
        self.text_projection = Projection(config.hidden_size, d_proj)
        self.logit_scale = nn.Parameter(sd["logit_scale"].clone())
        parts = {"audio.": "audio_encoder.base.", "audio_projection.": "audio_encoder.projection.",
                 "text_model.": "caption_encoder.base.", "text_projection.": "caption_encoder.projection."}
        mine = {}
        for ours, theirs in parts.items():
            mine.update({ours + k[len(theirs):]: v for k, v in sd.items() if k.startswith(theirs)})
        mine["logit_scale"] = sd["logit_scale"]
        missing, unexpected = self.load_state_dict(mine, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        unexpected = [k for k in unexpected if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ConfigError(f"{path}: its weights do not fit msclap 2022's CNN14 + BERT layout "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        self.family, self.medium, self.source = "msclap-2022", "audio", str(path)
        self.sample_rate = SAMPLE_RATE
        self.text = Tokens(tokenizer, "max_length")
        self.text.max_length = TEXT_LEN
        self.frozen: frozenset[str] = frozenset()
        self.tower_prefixes = {"audio": "audio.", "text": "text_model."}
        self._trainable = {n for n, _ in self.named_parameters()}
        self.logit_clamp = None
        self.cfg = {"model": {"modality": "audio", "source": str(path), "family": self.family}}
        self.eval()

    def preprocess(self, media: list, keys: list | None = None) -> dict[str, torch.Tensor]:
        """Each clip repeated or cropped to 5 s as msclap does, the crop seeded by its key."""
        keys = list(keys) if keys is not None else [None] * len(media)
        waves = [_crop_or_repeat(np.asarray(w, np.float32), zlib.crc32(str(k).encode()) if k is not None else 0)
                 for w, k in zip(media, keys, strict=True)]
        return {"wave": torch.from_numpy(np.stack(waves))}

    def media_backbone(self, inputs) -> torch.Tensor:
        return self.audio(inputs["wave"] if isinstance(inputs, dict) else inputs)

    def text_backbone(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.text_model(**tokens).last_hidden_state[:, 0]

    def project_media(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio_projection(x).float(), dim=-1)

    def project_text(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projection(x).float(), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp()

    def logit_scale_parameter(self) -> nn.Parameter:
        return self.logit_scale
