"""Audio towers: waveform (B, T) -> embedding x_a (B, embed_dim).

- :class:`Cnn14` - PANNs CNN14 with the module names and shapes of the published
  ``Cnn14_mAP=0.431.pth`` (its ``model`` state dict loads strictly, extractors and the
  AudioSet head included); its forward is PANNs' ``Cnn14.forward`` up to the 2048-d
  ``embedding`` (dropout 0.5, relu(fc1), dropout 0.5), checked against
  ``panns_inference.models.Cnn14`` in the tests. SpecAugment and mixup, which PANNs
  applies while training on AudioSet, are not part of the embedding and are left out.
- :class:`SmallCNN` - a few conv blocks over a log-mel, for CPU training.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..frontend import LogMel, PannsLogmel, PannsSpectrogram
from . import build_tower, register_tower


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU, then average pooling (PANNs' ConvBlock)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(conv.weight)

    def forward(self, x: torch.Tensor, pool: tuple[int, int] = (2, 2)) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool) if pool != (1, 1) else x


def panns_global_pool(x: torch.Tensor) -> torch.Tensor:
    """PANNs' ``Cnn14`` pooling: mean over mel bins, then max + mean over time."""
    x = x.mean(dim=3)  # (B, C, frames)
    return x.max(dim=2).values + x.mean(dim=2)


def smoothed_global_pool(x: torch.Tensor) -> torch.Tensor:
    """SmallCNN's pooling: mean over mel bins, a 3-frame max + mean smoothing over time
    (as PANNs' decision-level models do), then max + mean over time."""
    x = x.mean(dim=3)
    x = F.max_pool1d(x, 3, 1, 1) + F.avg_pool1d(x, 3, 1, 1)
    return x.max(dim=2).values + x.mean(dim=2)


class Cnn14(nn.Module):
    """PANNs CNN14 (Kong et al., 2020). Defaults: 32 kHz, window 1024, hop 320, 64 mels, 50-14000 Hz."""

    embed_dim = 2048

    def __init__(
        self, sample_rate: int = 32000, n_fft: int = 1024, hop_length: int = 320, n_mels: int = 64,
        fmin: float = 50.0, fmax: float = 14000.0, classes_num: int = 527, dropout: float = 0.2,
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.spectrogram_extractor = PannsSpectrogram(n_fft, hop_length)
        self.logmel_extractor = PannsLogmel(sample_rate, n_fft, n_mels, fmin, fmax)
        self.bn0 = nn.BatchNorm2d(n_mels)
        widths = [1, 64, 128, 256, 512, 1024, 2048]
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, classes_num)  # kept so the checkpoint loads strictly
        self.fc_audioset.requires_grad_(False)  # not used for the embedding
        self.dropout = dropout

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.logmel_extractor(self.spectrogram_extractor(wave))  # (B, 1, frames, mels)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, (2, 2) if i < 6 else (1, 1))
            x = F.dropout(x, self.dropout, self.training)
        x = F.dropout(panns_global_pool(x), 0.5, self.training)
        return F.dropout(F.relu(self.fc1(x)), 0.5, self.training)

    def load_panns(self, path: str | Path) -> None:
        """Load a PANNs checkpoint (``{"model": state_dict, ...}``) strictly."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"model.audio.checkpoint: file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"{path}: not a CNN14 checkpoint with the PANNs layout ({exc})") from exc


class SmallCNN(nn.Module):
    """Log-mel + ``len(channels)`` ConvBlocks + smoothed max + mean pooling + a linear layer.

    The smoothing is this tower's own (kept so that checkpoints trained with it evaluate
    unchanged); CNN14 pools exactly as PANNs' ``Cnn14`` does.
    """

    def __init__(
        self, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 320, n_mels: int = 64,
        fmin: float = 50.0, fmax: float = 8000.0, channels: list[int] | None = None, dropout: float = 0.2,
    ):
        super().__init__()
        channels = list(channels or [16, 32, 64, 128])
        self.frontend = LogMel(sample_rate, n_fft, hop_length, n_mels, fmin, fmax)
        self.bn0 = nn.BatchNorm2d(n_mels)
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in zip([1, *channels[:-1]], channels, strict=True))
        self.embed_dim = channels[-1] * 2
        self.fc = nn.Linear(channels[-1], self.embed_dim)
        self.dropout = dropout

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.frontend(wave)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for block in self.blocks:
            x = F.dropout(block(x), self.dropout, self.training)
        return F.relu(self.fc(smoothed_global_pool(x)))


def build_audio_tower(cfg: dict, sample_rate: int, config_folder: str | Path | None = None) -> nn.Module:
    """Build the tower named by ``model.audio`` for audio at ``sample_rate``; ``config_folder``
    rebuilds a checkpoint's HF tower (``audio_tower/``)."""
    return build_tower("audio", cfg, sample_rate=sample_rate, config_folder=config_folder)


def _frontend(a: dict, sample_rate: int) -> dict:
    return dict(sample_rate=sample_rate, n_fft=a["n_fft"], hop_length=a["hop_length"], n_mels=a["n_mels"],
                fmin=a["fmin"], fmax=min(a["fmax"], sample_rate / 2), dropout=a["dropout"])


@register_tower("audio", "cnn14", "PANNs CNN14 (2048-d); model.audio.checkpoint: PANNs' .pth or a train "
                "audio-backbone .safetensors")
def build_cnn14(a: dict, sample_rate: int, **_) -> nn.Module:
    common = _frontend(a, sample_rate)
    ckpt = a.get("checkpoint")
    tower = Cnn14(**common)
    if ckpt and Path(ckpt).suffix == ".safetensors":  # written by `train audio-backbone`; else PANNs' .pth
        load_tower_weights(tower, ckpt)
    elif ckpt:
        tower.load_panns(ckpt)
        if sample_rate != 32000:
            # The checkpoint's filterbank is for 32 kHz; keep the conv weights, rebuild melW.
            fresh = PannsLogmel(sample_rate, a["n_fft"], a["n_mels"], a["fmin"], common["fmax"])
            tower.logmel_extractor.melW.data.copy_(fresh.melW.data)
    return tower


@register_tower("audio", "small_cnn", "conv blocks over a log-mel (model.audio.channels), for CPU")
def build_small_cnn(a: dict, sample_rate: int, **_) -> nn.Module:
    tower = SmallCNN(channels=a["channels"], **_frontend(a, sample_rate))
    if a.get("checkpoint"):
        load_tower_weights(tower, a["checkpoint"])
    return tower


def load_tower_weights(tower: nn.Module, path: str | Path) -> None:
    """Load a tower's own state dict from a ``.safetensors`` file, strictly."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.audio.checkpoint: file not found: {path}")
    try:
        tower.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: weights do not fit model.audio = {type(tower).__name__} ({exc})") from exc
