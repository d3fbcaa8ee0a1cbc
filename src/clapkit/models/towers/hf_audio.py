"""Pretrained transformers audio encoders as clapkit's audio tower: ``model.audio.name:
hf:PATH`` (a folder or hub name), the backbones CLAPs are built on and the leakage paper
asks about:

==============================  ===================================  ==================
``model_type``                  the tower (x)                        front end
==============================  ===================================  ==================
audio-spectrogram-transformer   ``ASTModel``                         its feature extractor
whisper                         Whisper's encoder                    (fbank, log-mel,
wav2vec2, hubert, wavlm, ...    the model                            normalised waveform,
clap                            ``ClapAudioModel`` (HTSAT)           ...): each model's
pe_audio                        Perception Encoder's audio encoder   own, saved beside it
==============================  ===================================  ==================

The tower takes waveforms at its feature extractor's sampling rate (the run's
``audio.sample_rate`` and ``normalize`` are set to what the extractor expects, as an HF
image tower sets ``image.size/mean/std``), runs them through that extractor, then the
model, then ``model.audio.pooling``: ``pooled`` (the model's own pooled output: AST's mean
of its two tokens, HTSAT's and PE's), ``mean`` (the last hidden states averaged over time;
the extractor's attention mask, where it returns one, is handed to the model), ``first``
(the first token); ``auto``: ``pooled`` where the model has one, else ``mean``. A
checkpoint saves the tower's config and extractor in ``audio_tower/`` (its weights are in
``model.safetensors``), so it reloads without the source.

A padded batch of clips of differing lengths (``forward(wave, mask)``, ``audio.crop:
variable``) goes to the extractor as real-length waves: one that pads each clip to its
own fixed size (AST, Whisper, CLAP) gives what it gives each clip alone; one that pads a
batch to its longest clip (wav2vec2's, HuBERT's, WavLM's: asked to) returns an attention
mask where its config says so, which the model gets and ``mean`` pooling reads (the
output frames it marks). Without that mask (wav2vec2-base's extractor: GroupNorm models
take zeros, as transformers advises) the padded frames are part of the output.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from ...errors import ConfigError
from . import register_tower

PREFIX = "hf:"
POOLINGS = ("auto", "pooled", "mean", "first")
_HALVES = {"clap": "audio_config", "pe_audio": "audio_config"}  # dual models: keep the audio half


def _audio_half(config, name: str, config_only: bool):
    """The audio encoder of ``config`` (from ``name``'s weights unless ``config_only``)."""
    from transformers import AutoModel, ClapAudioModel, PeAudioEncoder
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    kind = config.model_type
    if config_only:  # a checkpoint's tower: the architecture alone, its weights come from the checkpoint
        if kind in _HALVES:
            return {"clap": ClapAudioModel, "pe_audio": PeAudioEncoder}[kind](getattr(config, _HALVES[kind]))
        return WhisperEncoder(config) if kind == "whisper" else AutoModel.from_config(config)
    model = AutoModel.from_pretrained(name)
    if kind == "whisper":
        return model.get_encoder()
    return {"clap": lambda: model.audio_model, "pe_audio": lambda: model.audio_encoder}.get(kind, lambda: model)()


class HFAudioTower(nn.Module):
    """A transformers audio encoder with its own feature extractor (see the module docstring)."""

    accepts_mask = True  # forward(wave, mask): real-length waves to the extractor

    def __init__(self, name: str, pooling: str = "auto", config_only: bool = False):
        super().__init__()
        from transformers import AutoConfig, AutoFeatureExtractor

        if pooling not in POOLINGS:
            raise ConfigError(f"model.audio.pooling = {pooling!r}; choose one of {', '.join(POOLINGS)}")
        try:
            config = AutoConfig.from_pretrained(name)
            self.extractor = AutoFeatureExtractor.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model.audio.name = hf:{name}: not a transformers audio model folder or hub name with its "
                              f"feature extractor ({exc})") from exc
        self.source, self.config, self.model_type = name, config, config.model_type
        self.model = _audio_half(config, name, config_only)
        self.sample_rate = int(self.extractor.sampling_rate)
        sub = getattr(config, _HALVES.get(config.model_type, ""), None) or config
        self.embed_dim = int(getattr(sub, "hidden_size", None) or sub.d_model)
        self._accepts = set(inspect.signature(self.model.forward).parameters)
        # an extractor that refuses clips of differing lengths unless told to pad (wav2vec2's)
        padding = inspect.signature(type(self.extractor).__call__).parameters.get("padding")
        self._pads_batches = padding is not None and padding.default is False
        self.pooling = pooling if pooling != "auto" else ("pooled" if self._has_pooler() else "mean")

    def _has_pooler(self) -> bool:
        return self.model_type in ("audio-spectrogram-transformer", "clap", "pe_audio")

    def features(self, wave: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The extractor's inputs for a batch of waveforms (B, T) at :attr:`sample_rate`;
        with ``mask`` (B, T), each wave up to its real length."""
        waves = list(wave.detach().float().cpu().numpy())
        extra = {}
        if mask is not None:
            waves = [w[:n] for w, n in zip(waves, mask.sum(dim=1).tolist(), strict=True)]
            extra = {"padding": True} if self._pads_batches else {}
        out = self.extractor(waves, sampling_rate=self.sample_rate, return_tensors="pt", **extra)
        return {k: v.to(wave.device) for k, v in out.items() if k in self._accepts}

    def forward(self, wave: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        inputs = self.features(wave, mask)
        out = self.model(**inputs)
        if self.pooling == "pooled":
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise ConfigError(f"hf:{self.source} ({self.model_type}) has no pooled output; use model.audio.pooling "
                                  "= mean or first")
            return pooled
        hidden = out.last_hidden_state
        if self.pooling == "first":
            return hidden[:, 0]
        frames = self._frame_mask(inputs, hidden.shape[1]) if mask is not None else None
        if frames is None:
            return hidden.mean(dim=1)
        frames = frames.to(hidden.dtype)[:, :, None]
        return (hidden * frames).sum(dim=1) / frames.sum(dim=1).clamp_min(1)

    def _frame_mask(self, inputs: dict[str, torch.Tensor], frames: int) -> torch.Tensor | None:
        """The output frames of the real input (B, frames), from the attention mask the
        extractor returned and the model took; None without one."""
        am = inputs.get("attention_mask")
        if am is None:
            return None
        if hasattr(self.model, "_get_feature_vector_attention_mask"):  # wav2vec2, HuBERT, WavLM: conv downsampling
            return self.model._get_feature_vector_attention_mask(frames, am)
        return am if am.shape[1] == frames else None

    def save_config(self, folder: Path) -> None:
        """The config and extractor a checkpoint rebuilds this tower from (``config_only``)."""
        self.config.save_pretrained(folder)
        self.extractor.save_pretrained(folder)


def audio_settings(audio_cfg: dict, tower: nn.Module) -> dict:
    """``audio.sample_rate`` and ``normalize`` as an HF tower's extractor wants its input
    (the rate it was trained at; raw samples: the extractor normalises); other towers: as given."""
    if not isinstance(tower, HFAudioTower):
        return audio_cfg
    return dict(audio_cfg, sample_rate=tower.sample_rate, normalize=False)


@register_tower("audio", "hf", "hf:PATH - a transformers audio encoder (AST, Whisper's encoder, wav2vec2, HuBERT, "
                "WavLM, CLAP's HTSAT, PE audio) with its feature extractor; model.audio.pooling")
def build_hf_audio(a: dict, config_folder: str | Path | None = None, **_) -> nn.Module:
    name = a["name"][len(PREFIX):] if a["name"].startswith(PREFIX) else ""
    if not name:
        raise ConfigError("model.audio.name: give hf:FOLDER or hf:ORG/NAME, e.g. hf:MIT/ast-finetuned-audioset-10-10-0.4593")
    if config_folder is not None:
        return HFAudioTower(str(config_folder), a.get("pooling", "auto"), config_only=True)
    return HFAudioTower(name, a.get("pooling", "auto"))
