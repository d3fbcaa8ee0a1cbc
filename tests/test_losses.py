import math

import numpy as np
import pytest
import torch

from clapkit.losses import clip_logits, clip_loss


def reference_clip_loss(a, t, scale, clamp):
    """Loop-based CLIP loss from the definition."""
    n = a.shape[0]
    c = np.clip(scale * np.asarray(a, np.float64) @ np.asarray(t, np.float64).T, -clamp, clamp)
    rows = [-(c[i, i] - np.log(np.exp(c[i]).sum())) for i in range(n)]
    cols = [-(c[i, i] - np.log(np.exp(c[:, i]).sum())) for i in range(n)]
    return 0.5 * (np.mean(rows) + np.mean(cols))


def test_clip_loss_hand_computed_identity():
    # logits = I: each row's CE is log(1 + e^-1)
    eye = torch.eye(2)
    loss = clip_loss(eye, eye, 1.0, clamp=None)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_clip_loss_hand_computed_asymmetric():
    # sim = [[0.6, 0.8], [0.0, 1.0]] with scale 2: logits [[1.2, 1.6], [0, 2]]
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[0.6, 0.0], [0.8, 1.0]]).T.contiguous()  # rows (0.6, 0.8) and (0.0, 1.0)
    loss = clip_loss(a, t, 2.0, clamp=None).item()
    row = (-(1.2 - math.log(math.exp(1.2) + math.exp(1.6))) - (2 - math.log(1 + math.exp(2)))) / 2
    col = (-(1.2 - math.log(math.exp(1.2) + math.exp(0))) - (2 - math.log(math.exp(1.6) + math.exp(2)))) / 2
    assert loss == pytest.approx((row + col) / 2, abs=1e-6)


def test_clip_loss_matches_loop_reference_on_random_batch():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(7, 5, generator=g), dim=1)
    t = torch.nn.functional.normalize(torch.randn(7, 5, generator=g), dim=1)
    got = clip_loss(a.double(), t.double(), 14.3, clamp=100.0).item()
    assert got == pytest.approx(reference_clip_loss(a.double().numpy(), t.double().numpy(), 14.3, 100.0), rel=1e-10)


def test_logit_clamp_bounds_logits_and_stops_gradient():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    scale = torch.tensor(1000.0, requires_grad=True)
    logits = clip_logits(a, t, scale, clamp=100.0)
    assert torch.equal(logits, torch.tensor([[100.0, -100.0], [0.0, 0.0]]))
    loss = clip_loss(a, t, scale, clamp=100.0)
    loss.backward()
    # every non-zero logit is clamped, so the scale gets no gradient
    assert scale.grad.item() == 0.0
    assert loss.item() == pytest.approx(reference_clip_loss(a.numpy(), t.numpy(), 1000.0, 100.0), rel=1e-6)


def test_clip_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        clip_loss(torch.zeros(3, 4), torch.zeros(2, 4), 1.0)
