"""The shared multimodal sentence encoder of VisualCSE / AudioCSE.

One BERT-family Transformer (BERT, MiniLM, RoBERTa: any Hugging Face encoder with an
``encoder`` layer stack) encodes text through its own embedding layer, and images or
audio through small modality embeddings that feed the *same* Transformer layers:

- :class:`ImagePatchEmbedding` - ViT-style: non-overlapping ``patch`` x ``patch``
  convolutional patches, a learnt [CLS] token and learnt position embeddings (224 / 16
  -> 197 tokens in the paper; 28 / 4 -> 50 for MNIST, 8 / 2 -> 17 for the 8 x 8 digits).
- :class:`AudioPatchEmbedding` - SSAST-style: a log-mel filterbank (``n_mels`` x
  ``frames``, standardised per clip) cut into ``patch`` x ``patch`` patches with
  ``stride`` (overlapping when stride < patch), [CLS] and position embeddings.

Both end in LayerNorm and dropout, as the text model's own embedding layer does, so the
post-LN Transformer layers see inputs on the scale they were trained for. Image and
audio representations are the [CLS] output.

The text side is :class:`clapkit.models.text.TextEncoder`, the same class as the dual
encoder's text tower: SimCSE's default is ``pool: first`` with ``head: mlp`` (a fresh
Linear + Tanh) in training only (``head_at_eval: false``, SimCSE unsupervised; the old
``pooling: cls`` + ``mlp_only_train: true``); ``head: none`` is SimCSE's
``cls_before_pooler``, ``pool: mean`` its ``avg``. Image and audio [CLS] outputs go
through the same MLP head in training whenever the text has one.

Saved folders are at once a Hugging Face model folder (``AutoModel``), a
sentence-transformers folder (``SentenceTransformer(path)``: Transformer, Pooling and,
when evaluation uses the MLP head, a Dense/Tanh module) and a clapkit CSE checkpoint
(``cse_model.json`` + ``cse_extra.safetensors``: head and modality embeddings).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ..errors import ConfigError
from ..pooling import resolve_text_head
from .frontend import LogMel
from .text import TextEncoder


class _Tokens(nn.Module):
    """[CLS] + position embeddings + LayerNorm + dropout over a (B, P, h) patch sequence."""

    def __init__(self, hidden: int, n_patches: int, dropout: float, eps: float):
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, hidden))
        self.pos = nn.Parameter(torch.zeros(1, n_patches + 1, hidden))
        nn.init.trunc_normal_(self.cls, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls.expand(patches.shape[0], -1, -1), patches], dim=1) + self.pos
        return self.drop(self.norm(x))


class ImagePatchEmbedding(nn.Module):
    """(B, C, S, S) images in [0, 1] -> (B, 1 + (S / patch)^2, hidden) tokens."""

    def __init__(self, hidden: int, size: int, patch: int, channels: int, dropout: float = 0.1, eps: float = 1e-12):
        super().__init__()
        if size % patch:
            raise ConfigError(f"cse.model.image.size = {size} is not a multiple of cse.model.image.patch = {patch}")
        self.size, self.channels = size, channels
        self.proj = nn.Conv2d(channels, hidden, patch, stride=patch)
        self.tokens = _Tokens(hidden, (size // patch) ** 2, dropout, eps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1:] != (self.channels, self.size, self.size):
            raise ConfigError(
                f"images of shape {tuple(images.shape[1:])}, the image embedding expects "
                f"({self.channels}, {self.size}, {self.size}); set cse.model.image.size / channels to the data"
            )
        x = (images - 0.5) / 0.5
        return self.tokens(self.proj(x).flatten(2).transpose(1, 2))


class AudioPatchEmbedding(nn.Module):
    """(B, samples) waveforms -> log-mel (n_mels x frames) -> patch tokens."""

    def __init__(self, hidden: int, sample_rate: int, seconds: float, n_mels: int, n_fft: int, hop_length: int,
                 patch: int, stride: int, dropout: float = 0.1, eps: float = 1e-12,
                 fmin: float = 0.0, fmax: float | None = None, freq_mask: int = 0, time_mask: int = 0):
        super().__init__()
        self.samples = int(round(sample_rate * seconds))
        self.frames = 1 + self.samples // hop_length
        if n_mels < patch or self.frames < patch:
            raise ConfigError(f"audio patch {patch} is larger than the {n_mels} x {self.frames} filterbank; "
                              "lower cse.model.audio.patch or raise n_mels / seconds")
        self.logmel = LogMel(sample_rate, n_fft, hop_length, n_mels, fmin, fmax or sample_rate / 2)
        self.proj = nn.Conv2d(1, hidden, patch, stride=stride)
        grid = ((n_mels - patch) // stride + 1) * ((self.frames - patch) // stride + 1)
        self.tokens = _Tokens(hidden, grid, dropout, eps)
        self.freq_mask, self.time_mask = freq_mask, time_mask

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, n_mels, frames) log-mel standardised per clip, with SpecAugment-style
        masks of up to ``freq_mask`` bins and ``time_mask`` frames in training."""
        if wave.ndim != 2 or wave.shape[1] != self.samples:
            raise ConfigError(f"audio of shape {tuple(wave.shape)}; the audio embedding expects (batch, "
                              f"{self.samples}) samples (cse.model.audio.sample_rate x seconds)")
        x = self.logmel(wave).transpose(2, 3)  # (B, 1, mels, frames)
        x = (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True).clamp_min(1e-5)
        if self.training:
            for dim, width in ((2, self.freq_mask), (3, self.time_mask)):
                if width:
                    n, size = x.shape[0], x.shape[dim]
                    w = torch.randint(0, width + 1, (n, 1), device=x.device)
                    start = (torch.rand(n, 1, device=x.device) * (size - w + 1)).long()
                    idx = torch.arange(size, device=x.device)[None]
                    mask = (idx >= start) & (idx < start + w)
                    shape = (n, 1, size, 1) if dim == 2 else (n, 1, 1, size)
                    x = x.masked_fill(mask.view(shape), 0.0)
        return x

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.proj(self.spectrogram(wave)).flatten(2).transpose(1, 2))


class CseModel(TextEncoder):
    """The text encoder + optional image / audio embeddings over its shared layers.

    ``m`` is the ``cse.model`` config section (see :data:`clapkit.config.DEFAULTS`); it
    is kept with its pool, head and head_at_eval resolved (old names mapped).
    """

    def __init__(self, m: dict, modalities: tuple[str, ...] = (), path: str | None = None):
        pool, head, at_eval = resolve_text_head("cse.model", m)
        name = path or m["name"]
        super().__init__(name, pool, head, at_eval, m["max_length"], "cse.model.name",
                         legacy=m.get("pooling") is not None)
        if not hasattr(self.backbone, "encoder") or not hasattr(self.backbone.encoder, "layer"):
            raise ConfigError(f"cse.model.name = {name!r} ({type(self.backbone).__name__}) has no `encoder.layer` "
                              "stack; use a BERT-family encoder (BERT, MiniLM, RoBERTa)")
        self.m = {**m, "pool": self.pool, "head": self.head_type, "head_at_eval": self.head_at_eval, "pooling": None,
                  "mlp_only_train": None}
        cfg = self.backbone.config
        h, eps, drop = cfg.hidden_size, cfg.layer_norm_eps, cfg.hidden_dropout_prob
        self.hidden = h
        self.image = self.audio = None
        if "image" in modalities:
            i = m["image"]
            self.image = ImagePatchEmbedding(h, i["size"], i["patch"], i["channels"], drop, eps)
        if "audio" in modalities:
            a = m["audio"]
            self.audio = AudioPatchEmbedding(h, a["sample_rate"], a["seconds"], a["n_mels"], a["n_fft"],
                                             a["hop_length"], a["patch"], a["stride"], drop, eps,
                                             freq_mask=a["freq_mask"], time_mask=a["time_mask"])

    # --- encoding --------------------------------------------------------------------------
    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self(tokens)

    def _encode_patches(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = self.backbone.encoder(tokens).last_hidden_state[:, 0]
        return self.head(cls) if self.head is not None and self.training else cls

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        if self.image is None:
            raise ConfigError("this model has no image embedding (train it with cse.mode = image)")
        return self._encode_patches(self.image(images))

    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        if self.audio is None:
            raise ConfigError("this model has no audio embedding (train it with cse.mode = audio)")
        return self._encode_patches(self.audio(wave))

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64, normalize: bool = True) -> np.ndarray:
        """Evaluation embeddings, L2-normalised unless ``normalize`` is off (eval mode
        restored to the caller's mode)."""
        was = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        for i in range(0, len(texts), batch_size):
            z = self.encode_text(self.tokenize(texts[i : i + batch_size], device)).float()
            out.append((F.normalize(z, dim=-1) if normalize else z).cpu())
        self.train(was)
        return torch.cat(out).numpy()

    # --- saving ----------------------------------------------------------------------------
    def extra_state(self) -> dict[str, torch.Tensor]:
        """Parameters outside the Hugging Face backbone: head and modality embeddings."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def save(self, folder: str | Path) -> None:
        from ..atomic import save_weights

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        modalities = [x for x in ("image", "audio") if getattr(self, x) is not None]
        (folder / "cse_model.json").write_text(json.dumps({"model": self.m, "modalities": modalities}, indent=2))
        save_weights(self.extra_state(), folder / "cse_extra.safetensors")
        self.save_sentence_transformers(folder)  # Pooling (+ Dense: the head evaluation uses)

    @classmethod
    def load(cls, folder: str | Path) -> CseModel:
        folder = Path(folder)
        meta_path = folder / "cse_model.json"
        if not meta_path.is_file():
            raise ConfigError(f"{folder}: not a clapkit CSE checkpoint (no cse_model.json)")
        meta = json.loads(meta_path.read_text())
        model = cls(meta["model"], tuple(meta["modalities"]), path=str(folder))
        missing, unexpected = model.load_state_dict(load_file(str(folder / "cse_extra.safetensors")), strict=False)
        # before the one text encoder every CSE model saved an MLP head, used or not
        unexpected = [k for k in unexpected if not (k.startswith("head.") and model.head is None)]
        bad = [k for k in missing if not k.startswith("backbone.")] + list(unexpected)
        if bad:
            raise ConfigError(f"{folder / 'cse_extra.safetensors'}: keys do not match the model ({bad[:5]})")
        return model
