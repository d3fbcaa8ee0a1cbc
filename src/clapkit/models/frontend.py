"""Log-mel frontends in torch.

Two implementations of the same transform:

- :class:`LogMel` uses ``torch.stft`` (FFT) and is what the small towers use.
- :class:`PannsSpectrogram` + :class:`PannsLogmel` keep the parameter names and shapes
  of PANNs' torchlibrosa extractors (``stft.conv_real.weight``, ``stft.conv_imag.weight``,
  ``melW``) so that a published CNN14 state dict loads strictly; they compute the STFT
  as a strided convolution with the windowed DFT basis, exactly as PANNs does.

Both use a periodic Hann window, centred frames with reflect padding, the power
spectrum, a Slaney-normalised Slaney-scale mel filterbank and ``10 log10(max(x, 1e-10))``.

Given ``lengths`` (a padded batch of clips of differing lengths, ``audio.crop:
variable``), each clip is reflect-padded at its own end (:func:`reflect_ends`), so its
first ``1 + length // hop`` frames (:func:`valid_frames`) are those of the clip alone;
the frames after them are not.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.audio_utils import mel_filter_bank

AMIN = 1e-10


def mel_matrix(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) filterbank, the same as ``librosa.filters.mel(...).T``."""
    fmax = min(fmax, sample_rate / 2)
    return mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=fmin,
        max_frequency=fmax,
        sampling_rate=sample_rate,
        norm="slaney",
        mel_scale="slaney",
    ).astype(np.float32)


def fp32(forward):
    """Run a frontend in float32 under mixed precision (``runtime.precision``): the STFT,
    the mel projection and the log lose too much in bf16 or fp16."""

    @functools.wraps(forward)
    def wrapped(self, x: torch.Tensor, *args) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return forward(self, x.float(), *args)

    return wrapped


def reflect_ends(wave: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, T) clips, row ``b`` real up to ``lengths[b]`` -> (B, T + 2 pad): each row
    reflect-padded by ``pad`` at both ends of its real part (what centred frames of the clip
    alone see; a clip of ``pad`` samples or fewer reflects what it has), zeros after."""
    pos = torch.arange(-pad, wave.shape[1] + pad, device=wave.device)[None, :]
    last = lengths.to(wave.device)[:, None].long() - 1
    src = pos.abs()
    src = torch.where(src > last, 2 * last - src, src)
    keep = (src >= 0) & (src <= last) & (pos <= last + pad)
    return wave.gather(1, src.clamp(0, wave.shape[1] - 1).expand(wave.shape[0], -1)) * keep


def valid_frames(lengths: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Centred frames of clips of ``lengths`` samples: ``1 + length // hop``."""
    return 1 + lengths.long() // hop_length


class LogMel(nn.Module):
    """Waveform (B, T) -> log-mel (B, 1, frames, n_mels); ``lengths``: see the module docstring."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, fmin: float, fmax: float):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer(
            "mel", torch.from_numpy(mel_matrix(sample_rate, n_fft, n_mels, fmin, fmax)), persistent=False
        )

    @fp32
    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is not None:
            wave = reflect_ends(wave, lengths, self.n_fft // 2)
        spec = torch.stft(
            wave, self.n_fft, self.hop_length, window=self.window, center=lengths is None,
            pad_mode="reflect", return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # (B, F, frames)
        mel = torch.matmul(power.transpose(1, 2), self.mel)
        return (10.0 * torch.log10(mel.clamp_min(AMIN))).unsqueeze(1)


class _DFTConv(nn.Module):
    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        n = np.arange(n_fft)
        k = np.arange(n_fft // 2 + 1)[:, None]
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
        basis = np.exp(-2j * np.pi * k * n / n_fft) * window
        self.conv_real = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop_length, bias=False)
        self.conv_imag = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop_length, bias=False)
        self.conv_real.weight.data = torch.tensor(basis.real[:, None, :], dtype=torch.float32)
        self.conv_imag.weight.data = torch.tensor(basis.imag[:, None, :], dtype=torch.float32)


class PannsSpectrogram(nn.Module):
    """Power spectrogram with PANNs' parameter names: (B, T) -> (B, 1, frames, F);
    ``lengths``: see the module docstring."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft = n_fft
        self.stft = _DFTConv(n_fft, hop_length)
        for p in self.parameters():
            p.requires_grad_(False)

    @fp32
    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is not None:
            x = reflect_ends(wave, lengths, self.n_fft // 2)[:, None, :]
        else:
            x = F.pad(wave[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        real, imag = self.stft.conv_real(x), self.stft.conv_imag(x)  # (B, F, frames)
        return (real.square() + imag.square()).transpose(1, 2)[:, None]


class PannsLogmel(nn.Module):
    """Mel projection and dB with PANNs' parameter name ``melW``: (B,1,frames,F) -> (B,1,frames,mels)."""

    def __init__(self, sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
        super().__init__()
        self.melW = nn.Parameter(
            torch.from_numpy(mel_matrix(sample_rate, n_fft, n_mels, fmin, fmax)), requires_grad=False
        )

    @fp32
    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.matmul(power, self.melW).clamp_min(AMIN))
