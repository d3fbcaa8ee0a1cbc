"""Log-mel frontends in torch.

Two implementations of the same transform:

- :class:`LogMel` uses ``torch.stft`` (FFT) and is what the small towers use.
- :class:`PannsSpectrogram` + :class:`PannsLogmel` keep the parameter names and shapes
  of PANNs' torchlibrosa extractors (``stft.conv_real.weight``, ``stft.conv_imag.weight``,
  ``melW``) so that a published CNN14 state dict loads strictly; they compute the STFT
  as a strided convolution with the windowed DFT basis, exactly as PANNs does.

Both use a periodic Hann window, centred frames with reflect padding, the power
spectrum, a Slaney-normalised Slaney-scale mel filterbank and ``10 log10(max(x, 1e-10))``.
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
    def wrapped(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return forward(self, x.float())

    return wrapped


class LogMel(nn.Module):
    """Waveform (B, T) -> log-mel (B, 1, frames, n_mels)."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, fmin: float, fmax: float):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer(
            "mel", torch.from_numpy(mel_matrix(sample_rate, n_fft, n_mels, fmin, fmax)), persistent=False
        )

    @fp32
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            wave, self.n_fft, self.hop_length, window=self.window, center=True,
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
    """Power spectrogram with PANNs' parameter names: (B, T) -> (B, 1, frames, F)."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft = n_fft
        self.stft = _DFTConv(n_fft, hop_length)
        for p in self.parameters():
            p.requires_grad_(False)

    @fp32
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
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
