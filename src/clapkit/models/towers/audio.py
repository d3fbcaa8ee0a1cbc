"""Audio towers: waveform (B, T) -> embedding x_a (B, embed_dim).

- :class:`Cnn14` - PANNs CNN14 with the module names and shapes of the published
  ``Cnn14_mAP=0.431.pth`` (its ``model`` state dict loads strictly, extractors and the
  AudioSet head included); its forward is PANNs' ``Cnn14.forward`` up to the 2048-d
  ``embedding`` (dropout 0.5, relu(fc1), dropout 0.5), checked against
  ``panns_inference.models.Cnn14`` in the tests. SpecAugment and mixup, which PANNs
  applies while training on AudioSet, are not part of the embedding and are left out.
- :class:`SmallCNN` - a few conv blocks over a log-mel, for CPU training.

Both accept a padded batch of clips of differing lengths (``accepts_mask``; ``audio.crop:
variable``): ``forward(wave, mask)``, ``mask`` (B, T) True on each clip's real samples,
a prefix of its row. The log-mel of each clip is its own (:mod:`clapkit.models.frontend`),
padded frames are zeroed before every conv (as the conv's own zero padding), the real
frame count follows the 2 x 2 average pools (floor), and the time pooling reads real
frames only, so in eval mode a padded clip's embedding is that of the clip alone. In
training mode BatchNorm's batch statistics are taken over the real frames only
(:func:`masked_batch_norm`; a ``SyncBatchNorm`` under torchrun sees the padded frames too).
A batch too short for the pools is padded further; a clip shorter than the last pool's
input frames keeps one frame there (it has no unpadded embedding to equal: unpadded it
is too short for the tower).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..frontend import LogMel, PannsLogmel, PannsSpectrogram, valid_frames
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

    def forward(self, x: torch.Tensor, pool: tuple[int, int] = (2, 2), mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (B, 1, frames, 1), 1 on real frames: padded frames are zeroed before
        each conv and left out of BatchNorm's batch statistics."""
        if mask is None:
            x = F.relu(self.bn1(self.conv1(x)))
            x = F.relu(self.bn2(self.conv2(x)))
        else:
            x = F.relu(masked_batch_norm(self.bn1, self.conv1(x * mask), mask))
            x = F.relu(masked_batch_norm(self.bn2, self.conv2(x * mask), mask))
        return F.avg_pool2d(x, pool) if pool != (1, 1) else x


def masked_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``bn(x)`` with training-mode batch statistics (and the running ones they update)
    over the positions where ``mask`` (B, 1, frames, 1) is 1; in eval mode, or for a
    ``SyncBatchNorm``, ``bn(x)`` itself.

    One fused ``batch_norm`` does it: the padded positions are set to the real positions'
    mean ``m`` and the real ones to ``m + k (x - m)``, ``k = sqrt(all / real)``, so the
    batch's mean is ``m`` and its variance that of the real positions; the weight is
    divided by ``k``. The same function of ``x``, so the same gradients; the running
    variance's unbiasing is then corrected from ``all`` positions to the real ones."""
    if not bn.training or isinstance(bn, nn.SyncBatchNorm):
        return bn(x)
    xf, mask = x.float(), mask.float()
    total = x.shape[0] * x.shape[2] * x.shape[3]
    n = mask.sum() * x.shape[3]
    k = torch.sqrt(total / n)
    mean = (xf.sum(dim=3, keepdim=True) * mask).sum(dim=(0, 2, 3)) / n
    shifted = torch.lerp(mean[:, None, None], xf, k * mask)  # mean + k mask (x - mean)
    weight = (bn.weight.float() if bn.affine else torch.ones_like(mean)) / k
    bias = bn.bias.float() if bn.affine else None
    if not bn.track_running_stats:
        return F.batch_norm(shifted, None, None, weight, bias, True, 0.0, bn.eps).to(x.dtype)
    bn.num_batches_tracked += 1
    factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    running_mean, running_var = bn.running_mean.clone(), bn.running_var.clone()  # updated by batch_norm
    out = F.batch_norm(shifted, running_mean, running_var, weight, bias, True, factor, bn.eps)
    with torch.no_grad():  # batch_norm unbiased the variance by total / (total - 1): make it n / (n - 1)
        kept = (1 - factor) * bn.running_var
        bn.running_var.copy_(kept + (running_var - kept) * (n / (n - 1).clamp_min(1)) * ((total - 1) / total))
        bn.running_mean.copy_(running_mean)
    return out.to(x.dtype)


def frame_mask(frames: torch.Tensor, total: int) -> torch.Tensor:
    """(B, 1, total, 1) float: 1 on the first ``frames[b]`` frames of row ``b``."""
    return (torch.arange(total, device=frames.device)[None, :] < frames[:, None]).float()[:, None, :, None]


def padded_for(wave: torch.Tensor, mask: torch.Tensor, hop_length: int, pools: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``wave`` and ``mask`` padded further where the batch has fewer frames than ``pools``
    2 x 2 pools need (``2 ** pools``)."""
    short = (2**pools - 1) * hop_length - wave.shape[1]
    if short > 0:
        wave, mask = F.pad(wave, (0, short)), F.pad(mask, (0, short))
    return wave, mask


def masked_time_pool(x: torch.Tensor, mask: torch.Tensor, smooth: bool = False) -> torch.Tensor:
    """:func:`panns_global_pool` (``smooth``: :func:`smoothed_global_pool`) over the real
    frames of ``mask`` (B, 1, frames, 1) only; the smoothing sees a padded frame as its own
    padding (-inf to the max, 0 to the mean)."""
    real = mask[:, :, :, 0] > 0  # (B, 1, frames)
    x = x.mean(dim=3)
    if smooth:
        x = F.max_pool1d(x.masked_fill(~real, -torch.inf), 3, 1, 1) + F.avg_pool1d(torch.where(real, x, 0.0), 3, 1, 1)
    top = x.masked_fill(~real, -torch.inf).max(dim=2).values
    return top + torch.where(real, x, 0.0).sum(dim=2) / real.sum(dim=2)


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
    accepts_mask = True  # forward(wave, mask): see the module docstring

    def __init__(
        self, sample_rate: int = 32000, n_fft: int = 1024, hop_length: int = 320, n_mels: int = 64,
        fmin: float = 50.0, fmax: float = 14000.0, classes_num: int = 527, dropout: float = 0.2,
    ):
        super().__init__()
        self.sample_rate, self.hop_length = sample_rate, hop_length
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

    def forward(self, wave: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            return self._masked(wave, mask)
        x = self.logmel_extractor(self.spectrogram_extractor(wave))  # (B, 1, frames, mels)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, (2, 2) if i < 6 else (1, 1))
            x = F.dropout(x, self.dropout, self.training)
        x = F.dropout(panns_global_pool(x), 0.5, self.training)
        return F.dropout(F.relu(self.fc1(x)), 0.5, self.training)

    def _masked(self, wave: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of a padded batch (see the module docstring)."""
        wave, mask = padded_for(wave, mask, self.hop_length, 5)
        lengths = mask.sum(dim=1)
        x = self.logmel_extractor(self.spectrogram_extractor(wave, lengths))
        frames = valid_frames(lengths, self.hop_length)
        m = frame_mask(frames, x.shape[2])
        x = masked_batch_norm(self.bn0, x.transpose(1, 3), m).transpose(1, 3)
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, (2, 2) if i < 6 else (1, 1), m)
            x = F.dropout(x, self.dropout, self.training)
            if i < 6:
                frames = (frames // 2).clamp_min(1)
                m = frame_mask(frames, x.shape[2])
        x = F.dropout(masked_time_pool(x, m), 0.5, self.training)
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

    accepts_mask = True  # forward(wave, mask): see the module docstring

    def __init__(
        self, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 320, n_mels: int = 64,
        fmin: float = 50.0, fmax: float = 8000.0, channels: list[int] | None = None, dropout: float = 0.2,
    ):
        super().__init__()
        channels = list(channels or [16, 32, 64, 128])
        self.hop_length = hop_length
        self.frontend = LogMel(sample_rate, n_fft, hop_length, n_mels, fmin, fmax)
        self.bn0 = nn.BatchNorm2d(n_mels)
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in zip([1, *channels[:-1]], channels, strict=True))
        self.embed_dim = channels[-1] * 2
        self.fc = nn.Linear(channels[-1], self.embed_dim)
        self.dropout = dropout

    def forward(self, wave: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            return self._masked(wave, mask)
        x = self.frontend(wave)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for block in self.blocks:
            x = F.dropout(block(x), self.dropout, self.training)
        return F.relu(self.fc(smoothed_global_pool(x)))

    def _masked(self, wave: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of a padded batch (see the module docstring)."""
        wave, mask = padded_for(wave, mask, self.hop_length, len(self.blocks))
        lengths = mask.sum(dim=1)
        x = self.frontend(wave, lengths)
        frames = valid_frames(lengths, self.hop_length)
        m = frame_mask(frames, x.shape[2])
        x = masked_batch_norm(self.bn0, x.transpose(1, 3), m).transpose(1, 3)
        for block in self.blocks:
            x = F.dropout(block(x, mask=m), self.dropout, self.training)
            frames = (frames // 2).clamp_min(1)
            m = frame_mask(frames, x.shape[2])
        return F.relu(self.fc(masked_time_pool(x, m, smooth=True)))


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
