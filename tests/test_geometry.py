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


def reference_topology(p, q, k_max):
    """max_k mean_i |N_k(p_i) & N_k(q_i)| / k by brute force: neighbours by cosine
    distance, the point itself left out, ties by index."""
    def neighbours(x, i, k):
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = [(1 - float(xn[i] @ xn[j]), j) for j in range(len(x)) if j != i]
        return {j for _, j in sorted(d)[:k]}

    return max(np.mean([len(neighbours(p, i, k) & neighbours(q, i, k)) / k for i in range(len(p))])
               for k in range(1, k_max + 1))


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
    p, q = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    r = topological_similarity(p, q, k_max=10)
    assert r["chance_k"] == pytest.approx([k / 199 for k in range(1, 11)])
    assert r["S"] == pytest.approx(reference_topology(p, q, 10), abs=1e-12)
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
    import torch

    from clapkit.audit.embeddings import audit_embeddings
    from clapkit.data.audio.labelled import load_labelled
    from clapkit.inference.embed import embed_media, embed_text
    from clapkit.models.dual import DualEncoder

    data = load_labelled(f"folder:{tiny_synthetic / 'unseen'}")
    model = DualEncoder.load(tiny_checkpoint)
    r = audit_embeddings(model, data, tmp_path, k_max=5)
    assert r["clips"] == 16 and r["classes"] == 8
    # the same quantities computed here from the model's embeddings with loop formulas
    y = np.array([c.label for c in data.clips])
    x_a = embed_media(model, data.clips, projected=False)
    with torch.no_grad():
        e_a = model.project_media(torch.from_numpy(x_a)).numpy()
    texts = [f"This is a sound of {t}." for t in data.label_texts()]
    x_t, e_t = embed_text(model, texts, projected=False), embed_text(model, texts, projected=True)
    # to float32 rounding: the audit projects in its own batches (2e-6 apart under torch 2.14.1)
    assert r["silhouette"]["x_a"] == pytest.approx(reference_silhouette(x_a, y), abs=1e-5)
    assert r["silhouette"]["E_a"] == pytest.approx(reference_silhouette(e_a, y), abs=1e-5)
    means = lambda x: np.stack([x[y == c].mean(0) for c in range(8)])  # noqa: E731
    expected = {"x_a_vs_E_a": reference_topology(means(x_a), means(e_a), 3),
                "x_t_vs_E_t": reference_topology(x_t, e_t, 3), "E_a_vs_E_t": reference_topology(means(e_a), e_t, 3)}
    for key, value in expected.items():
        assert r["topological_similarity"][key] == pytest.approx(value, abs=1e-9), key
        assert r["topological_detail"][key]["points"] == 8 and r["topological_detail"][key]["ks"] == [1, 2, 3]
    sim = e_a @ e_t.T
    assert r["zeroshot_accuracy"] == pytest.approx(np.mean([sim[i, y[i]] > np.delete(sim[i], y[i]).max()
                                                                for i in range(16)]))
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["silhouette"] == r["silhouette"]
    for f in ("tsne_E_a.png", "tsne_x_a.png", "tsne_E_t.png", "report.md"):
        assert (tmp_path / f).stat().st_size > 500
