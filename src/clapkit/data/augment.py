"""Batched image augmentations in torch (torchvision does not run beside our torch).

:class:`ImageAugment` draws SimCLR's view pipeline for a whole batch at once from a
``torch.Generator``: random resized crop (area fraction in ``scale``, aspect ratio in
``ratio``, bilinear resampling to ``size``), horizontal flip, colour jitter
(brightness, contrast, saturation, each a factor in ``[1 - s, 1 + s]``, applied with
probability ``jitter_p``) and grayscale (probability ``gray_p``, RGB only). Crop and
flip are one affine resampling per image (``affine_grid`` + ``grid_sample``), so a batch
costs two kernel calls, not a Python loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


class ImageAugment:
    def __init__(self, size: int, scale: tuple[float, float] = (0.2, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 flip_p: float = 0.5, jitter: float = 0.4, jitter_p: float = 0.8, gray_p: float = 0.2):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop scale {scale}: need 0 < low <= high <= 1")
        self.size, self.scale, self.ratio = size, scale, ratio
        self.flip_p, self.jitter, self.jitter_p, self.gray_p = flip_p, jitter, jitter_p, gray_p

    def _uniform(self, n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=g)

    def crop_flip(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        area = self._uniform(n, *self.scale, g)
        log_r = self._uniform(n, math.log(self.ratio[0]), math.log(self.ratio[1]), g)
        r = torch.exp(log_r)
        w = torch.sqrt(area * r).clamp(max=1.0)  # crop width and height as fractions of the image
        h = torch.sqrt(area / r).clamp(max=1.0)
        cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - w)  # centre in [-1, 1] coordinates, inside the image
        cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - h)
        flip = torch.where(torch.rand(n, generator=g) < self.flip_p, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        grid = F.affine_grid(theta.to(x), [n, x.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def colour(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, s = x.shape[0], self.jitter
        if s > 0:
            on = (torch.rand(n, generator=g) < self.jitter_p).to(x).view(n, 1, 1, 1)
            b, c, sat = (self._uniform(n, 1 - s, 1 + s, g).to(x).view(n, 1, 1, 1) for _ in range(3))
            y = x * b
            mean = (_gray(y) if x.shape[1] == 3 else y).mean((1, 2, 3), keepdim=True)
            y = (y - mean) * c + mean
            if x.shape[1] == 3:
                y = (y - _gray(y)) * sat + _gray(y)
            x = (on * y + (1 - on) * x).clamp(0, 1)
        if x.shape[1] == 3 and self.gray_p > 0:
            gray = (torch.rand(n, generator=g) < self.gray_p).to(x).view(n, 1, 1, 1)
            x = gray * _gray(x).expand_as(x) + (1 - gray) * x
        return x

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One augmented view of each image of ``x`` (N, C, H, W) in [0, 1]."""
        return self.colour(self.crop_flip(x, g), g)
