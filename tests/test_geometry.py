import json

import numpy as np
import pytest

from clapkit.evaluation.geometry import class_means, silhouette, topological_similarity, tsne_2d


def reference_silhouette(x, labels):
    """Loop-based silhouette with cosine distance (Rousseeuw 1987)."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = 1 - xn @ xn.T
    s = []
    for i in range(len(x)):
        same = (labels == labels[i]) & (np.arange(len(x)) != i)
        if not same.any():
            s.append(0.0)
            continue
        a = d[i, same].mean()
        b = min(d[i, labels == c].mean() for c in np.unique(labels) if c != labels[i])
        s.append((b - a) / max(a, b))
    return float(np.mean(s))


def test_silhouette_against_direct_formula():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 1.0, (20, 8)) for m in (0, 2, 4)]) + 5
    y = np.repeat([0, 1, 2], 20)
    assert silhouette(x, y) == pytest.approx(reference_silhouette(x, y), abs=1e-10)
    with pytest.raises(ValueError, match="two classes"):
        silhouette(x, np.zeros(60))


def _circle(degrees):
    a = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(a), np.sin(a)], axis=1)


ANGLES = [0, 10, 25, 180, 190, 205]


def test_identical_clouds_give_one():
    p = np.random.default_rng(1).normal(size=(30, 5))
    r = topological_similarity(p, p * 3.0, k_max=10)  # scale does not change cosine neighbours
    assert r["S"] == 1.0 and r["S_k"] == [1.0] * 10


def test_permuted_cloud_hand_computed():
    p = _circle(ANGLES)
    q = _circle([ANGLES[i] for i in (0, 1, 5, 3, 4, 2)])  # rows 2 and 5 swapped
    r = topological_similarity(p, q, k_max=2)
    # k=1: nearest neighbours P [1,0,1,4,3,4], Q [1,0,4,4,3,1] -> 4 of 6 agree
    # k=2: overlaps 1,1,0,1,1,0 of 2 each -> 4/12
    assert r["S_k"] == pytest.approx([4 / 6, 4 / 12])
    assert (r["S"], r["k"]) == (pytest.approx(4 / 6), 1)
    literal = topological_similarity(p, q, k_max=2, include_self=True)
    # self included: N_2 = {i, nearest}; overlaps 2,2,1,2,2,1 of 2 -> 10/12 (and S_1 would be 1 always)
    assert literal["ks"] == [2] and literal["S"] == pytest.approx(10 / 12)


def test_unrelated_clouds_near_chance():
    rng = np.random.default_rng(2)
    r = topological_similarity(rng.normal(size=(200, 16)), rng.normal(size=(200, 16)), k_max=10)
    assert r["S_k"][9] == pytest.approx(r["chance_k"][9], abs=0.03)


def test_class_means():
    x = np.array([[1.0, 0], [3, 0], [0, 2]])
    np.testing.assert_allclose(class_means(x, np.array([0, 0, 2]), 3)[[0, 2]], [[2, 0], [0, 2]])
    assert np.isnan(class_means(x, np.array([0, 0, 2]), 3)[1]).all()


def test_tsne_is_reproducible_with_a_seed():
    x = np.random.default_rng(3).normal(size=(40, 6))
    np.testing.assert_array_equal(tsne_2d(x, seed=7), tsne_2d(x, seed=7))
    assert tsne_2d(x, seed=7).shape == (40, 2)


def test_audit_embeddings_report(tmp_path, tiny_checkpoint, tiny_synthetic):
    from clapkit.audit.embeddings import audit_embeddings
    from clapkit.data.labelled import load_labelled
    from clapkit.models.clap import ClapModel

    data = load_labelled(f"folder:{tiny_synthetic / 'unseen'}")
    r = audit_embeddings(ClapModel.load(tiny_checkpoint), data, tmp_path, k_max=5)
    assert r["clips"] == 16 and r["classes"] == 8
    assert -1 <= r["silhouette"]["x_a"] <= 1 and -1 <= r["silhouette"]["E_a"] <= 1
    for key in ("x_a_vs_E_a", "x_t_vs_E_t", "E_a_vs_E_t"):
        assert 0 <= r["topological_similarity"][key] <= 1
        assert r["topological_detail"][key]["points"] == 8
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["silhouette"] == r["silhouette"]
    for f in ("tsne_E_a.png", "tsne_x_a.png", "tsne_E_t.png", "report.md"):
        assert (tmp_path / f).stat().st_size > 500
