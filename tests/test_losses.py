import math

import numpy as np
import pytest
import torch

from clapkit.losses import clip_logits, clip_loss, siglip_loss


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


def reference_soft_loss(a, t, scale, ta, tt, weight, temp, similarity, clamp):
    """Loop-based soft-labelled CLIP loss."""
    a, t, ta, tt = (np.asarray(x, np.float64) for x in (a, t, ta, tt))
    n = a.shape[0]
    c = np.clip(scale * a @ t.T, -clamp, clamp)
    s = {"aa": ta @ ta.T, "tt": tt @ tt.T, "at": ta @ tt.T, "mean": 0.5 * (ta @ ta.T + tt @ tt.T)}[similarity]

    def softmax_row(v):
        e = np.exp(v - v.max())
        return e / e.sum()

    total_at = total_ta = 0.0
    for i in range(n):
        y_at = (1 - weight) * np.eye(n)[i] + weight * softmax_row(s[i] / temp)
        y_ta = (1 - weight) * np.eye(n)[i] + weight * softmax_row(s[:, i] / temp)
        log_p_at = c[i] - np.log(np.exp(c[i]).sum())
        log_p_ta = c[:, i] - np.log(np.exp(c[:, i]).sum())
        total_at -= (y_at * log_p_at).sum()
        total_ta -= (y_ta * log_p_ta).sum()
    return 0.5 * (total_at / n + total_ta / n)


@pytest.mark.parametrize("similarity", ["aa", "tt", "at", "mean"])
def test_soft_clip_loss_matches_loop_reference_values_and_gradients(similarity):
    from clapkit.losses import soft_clip_loss

    g = torch.Generator().manual_seed(1)
    norm = torch.nn.functional.normalize
    a, t = (norm(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1).requires_grad_() for _ in range(2))
    ta, tt = (norm(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1) for _ in range(2))
    loss = soft_clip_loss(a, t, 5.0, ta, tt, weight=0.7, temperature=0.2, similarity=similarity)
    ref = reference_soft_loss(a.detach(), t.detach(), 5.0, ta, tt, 0.7, 0.2, similarity, 100.0)
    assert loss.item() == pytest.approx(ref, rel=1e-10)
    loss.backward()
    # gradients against central finite differences of the reference
    eps = 1e-6
    for x, name in ((a, "a"), (t, "t")):
        num = np.zeros((6, 4))
        for i in range(6):
            for j in range(4):
                plus, minus = a.detach().clone(), a.detach().clone()
                tp, tm = t.detach().clone(), t.detach().clone()
                if name == "a":
                    plus[i, j] += eps
                    minus[i, j] -= eps
                else:
                    tp[i, j] += eps
                    tm[i, j] -= eps
                num[i, j] = (reference_soft_loss(plus, tp, 5.0, ta, tt, 0.7, 0.2, similarity, 100.0)
                             - reference_soft_loss(minus, tm, 5.0, ta, tt, 0.7, 0.2, similarity, 100.0)) / (2 * eps)
        np.testing.assert_allclose(x.grad.numpy(), num, atol=1e-6)


def test_soft_clip_loss_hard_only_equals_clip_loss():
    from clapkit.losses import soft_clip_loss

    g = torch.Generator().manual_seed(2)
    a, t, ta, tt = (torch.nn.functional.normalize(torch.randn(8, 5, generator=g), dim=1) for _ in range(4))
    hard = clip_loss(a, t, 14.0)
    assert torch.equal(soft_clip_loss(a, t, 14.0, ta, tt, weight=0.0), hard)
    # identical teacher items make the soft targets uniform over them
    same = torch.nn.functional.normalize(torch.ones(8, 5), dim=1)
    uniform = soft_clip_loss(a, t, 14.0, same, same, weight=1.0)
    logits = 14.0 * a @ t.T
    expected = 0.5 * (-(torch.log_softmax(logits, 1)).mean(1).mean() - (torch.log_softmax(logits.T, 1)).mean(1).mean())
    assert uniform.item() == pytest.approx(expected.item(), rel=1e-6)


def _views(n=6, d=5, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]


def _cos_ref(a, b):
    return torch.dot(a, b) / (a.norm() * b.norm())


def test_simcse_unsup_and_sup_against_loops():
    from clapkit.losses import simcse_loss, simcse_sup_loss

    z1, z2, z3 = _views()
    tau, w = 0.05, 0.3
    ref_u = sum(-torch.log(torch.exp(_cos_ref(z1[i], z2[i]) / tau)
                           / sum(torch.exp(_cos_ref(z1[i], z2[j]) / tau) for j in range(6))) for i in range(6)) / 6
    ref_s = sum(-torch.log(torch.exp(_cos_ref(z1[i], z2[i]) / tau) / (
        sum(torch.exp(_cos_ref(z1[i], z2[j]) / tau) for j in range(6))
        + sum(torch.exp(_cos_ref(z1[i], z3[j]) / tau + (w if i == j else 0.0)) for j in range(6)))) for i in range(6)) / 6
    for loss, ref in ((simcse_loss(z1, z2, tau), ref_u), (simcse_sup_loss(z1, z2, z3, tau, w), ref_s)):
        assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
        g_loss = torch.autograd.grad(loss, (z1, z2), retain_graph=True)
        g_ref = torch.autograd.grad(ref, (z1, z2), retain_graph=True)
        for a, b in zip(g_loss, g_ref, strict=True):
            torch.testing.assert_close(a, b)


def test_supcon_against_loop_and_equal_to_simclr_without_labels():
    from clapkit.losses import nt_xent_loss, supcon_loss

    z1, z2, _ = _views()
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    tau = 0.07
    views, lab = torch.cat([z1, z2]), torch.cat([labels, labels])
    total, anchors = 0.0, 0
    for i in range(12):
        denom = sum(torch.exp(_cos_ref(views[i], views[a]) / tau) for a in range(12) if a != i)
        pos = [p for p in range(12) if p != i and lab[p] == lab[i]]
        total = total - sum(torch.log(torch.exp(_cos_ref(views[i], views[p]) / tau) / denom) for p in pos) / len(pos)
        anchors += 1
    ref = total / anchors
    loss = supcon_loss(z1, z2, labels, tau)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    torch.testing.assert_close(torch.autograd.grad(loss, z1)[0], torch.autograd.grad(ref, z1)[0])
    # without labels SupCon is NT-Xent; with each sample its own label too
    assert nt_xent_loss(z1, z2, tau).item() == pytest.approx(supcon_loss(z1, z2, torch.arange(6), tau).item(), rel=1e-12)
    # NT-Xent by its own loop: one positive (the other view) per anchor
    ref_nt = sum(-torch.log(torch.exp(_cos_ref(views[i], views[(i + 6) % 12]) / tau)
                            / sum(torch.exp(_cos_ref(views[i], views[a]) / tau) for a in range(12) if a != i))
                 for i in range(12)) / 12
    assert nt_xent_loss(z1, z2, tau).item() == pytest.approx(ref_nt.item(), rel=1e-10)


def test_supcon_finite_when_a_class_has_one_sample():
    from clapkit.losses import supcon_loss

    z1, z2, _ = _views(n=3)
    loss = supcon_loss(z1, z2, torch.tensor([0, 1, 2]))
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z1.grad).all()


def test_cached_loss_equals_uncached_with_the_same_dropout(tiny_bert):
    """SimCSE on a tiny BERT with dropout: gradient caching gives the loss and gradients
    of the plain computation with the same chunks and dropout masks."""
    from clapkit.losses import cached_contrastive_backward, simcse_loss
    from clapkit.models.text import TextTower

    tower = TextTower(tiny_bert, "cls_before_pooler", max_length=16).train()
    sents = [f"sentence number {i} about {w}" for i, w in enumerate("dogs rain cars music wind bells".split())]
    batch = sents + sents  # two dropout views in one pass, masks drawn per row
    chunks = [batch[i : i + 4] for i in range(0, len(batch), 4)]

    def encode(texts):
        return tower(tower.tokenize(texts))

    def loss_fn(z):
        return simcse_loss(z[: len(sents)], z[len(sents):], 0.05)

    params = [p for p in tower.parameters() if p.requires_grad]
    torch.manual_seed(0)
    plain = loss_fn(torch.cat([encode(c) for c in chunks]))
    plain.backward()
    ref = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    torch.manual_seed(0)
    cached = cached_contrastive_backward(encode, chunks, loss_fn)
    assert cached.item() == pytest.approx(plain.item(), rel=1e-6)
    for p, g in zip(params, ref, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-4)
    # the views really differ (dropout is on), so replaying the masks is what makes it equal
    torch.manual_seed(1)
    z = torch.cat([encode(c) for c in chunks]).detach()
    assert not torch.allclose(z[: len(sents)], z[len(sents):])


def test_siglip_loss_equals_open_clips_own_values_and_gradients():
    """clapkit's siglip_loss against open_clip's SigLipLoss on the same features, scale
    and bias (open_clip passes the scale already exponentiated)."""
    from open_clip.loss import SigLipLoss

    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 5, dtype=torch.float64), dim=1).requires_grad_()
    t = torch.nn.functional.normalize(torch.randn(6, 5, dtype=torch.float64), dim=1).requires_grad_()
    log_scale = torch.tensor(np.log(10.0), dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-10.0, dtype=torch.float64, requires_grad=True)
    ours = siglip_loss(a, t, log_scale.exp(), bias)
    grads = torch.autograd.grad(ours, [a, t, log_scale, bias])
    ref = SigLipLoss()(a, t, log_scale.exp(), bias)
    ref_grads = torch.autograd.grad(ref, [a, t, log_scale, bias])
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    # by hand: -1/N sum log sigmoid(y z) with y = +1 on the diagonal, -1 elsewhere
    z = (10.0 * a @ t.T - 10.0).detach().numpy()
    y = 2 * np.eye(6) - 1
    assert ours.item() == pytest.approx(np.sum(np.log1p(np.exp(-y * z))) / 6, rel=1e-12)


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_cached_cross_modal_loss_equals_the_plain_step(loss):
    """Gradient caching over both towers: loss and every parameter gradient (towers with
    dropout, the scale, SigLIP's bias) equal embedding the same chunks with a graph."""
    from clapkit.losses import cached_cross_modal_backward

    torch.manual_seed(0)
    media_tower = torch.nn.Sequential(torch.nn.Linear(7, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 4))
    text_tower = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 4))
    log_scale, bias = torch.nn.Parameter(torch.tensor(2.0)), torch.nn.Parameter(torch.tensor(-3.0))
    params = [*media_tower.parameters(), *text_tower.parameters(), log_scale, bias]
    media, text = torch.randn(12, 7), torch.randn(12, 5)

    def enc_m(x):
        return torch.nn.functional.normalize(media_tower(x), dim=1)

    def enc_t(x):
        return torch.nn.functional.normalize(text_tower(x), dim=1)

    def loss_fn(e_m, e_t):
        if loss == "clip":
            return clip_loss(e_m, e_t, log_scale.exp())
        return siglip_loss(e_m, e_t, log_scale.exp(), bias)

    m_chunks, t_chunks = list(media.split(5)), list(text.split(5))
    torch.manual_seed(1)
    plain = loss_fn(torch.cat([enc_m(c) for c in m_chunks]), torch.cat([enc_t(c) for c in t_chunks]))
    plain.backward()
    want = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    after_plain = torch.get_rng_state()
    for p in params:
        p.grad = None
    torch.manual_seed(1)
    cached = cached_cross_modal_backward(enc_m, enc_t, m_chunks, t_chunks, loss_fn)
    assert torch.equal(torch.get_rng_state(), after_plain)  # the generator ends where the plain step leaves it
    assert cached.item() == pytest.approx(plain.item(), rel=1e-6)
    for p, w in zip(params, want, strict=True):
        got = p.grad if p.grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-7)
    assert (bias.grad is not None) == (loss == "siglip")
