import csv
import json

import pytest
import torch
from conftest import tiny_overrides

from clapkit.config import load_config
from clapkit.data.audio.synthetic import EVAL_WORDS, write_leakage_set
from clapkit.errors import ConfigError
from clapkit.models.towers.audio import build_audio_tower
from clapkit.training.backbone import train_audio_backbone


@pytest.fixture(scope="module")
def leakage_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("leakset")
    meta = write_leakage_set(folder, seed=2, sr=8000, seconds=0.5, pretrain_clips=3, train_clips=2, eval_clips=2)
    return folder, meta


def test_leakage_set_and_its_clean_split(tmp_path, leakage_set):
    from clapkit.audit.leakage import audit_leakage

    folder, meta = leakage_set
    assert len(meta["eval_classes"]) == 8 and len(meta["pretrain_classes_matching_eval"]) == 8
    r = audit_leakage([str(folder / "train_dirty.csv")], f"folder:{folder / 'eval'}", tmp_path, write_clean=tmp_path / "clean.csv")
    eval_words = set(EVAL_WORDS.values())
    with open(folder / "train_dirty.csv") as fh:  # a caption is dirty iff it uses an evaluation word
        expected = sum(1 for row in csv.DictReader(fh)
                       if eval_words & set(row["caption"].lower().replace(",", " ").replace(".", " ").split()))
    assert r["total"]["pairs"] == 32 * 2 * 3 and r["total"]["dirty_pairs"] == expected > 0
    with open(tmp_path / "clean.csv") as fh:
        clean = [row["caption"].lower() for row in csv.DictReader(fh)]
    assert len(clean) == r["total"]["pairs"] - r["total"]["dirty_pairs"]
    assert not any(w in c.replace(",", " ").replace(".", " ").split() for c in clean for w in eval_words)


def test_backbone_pretraining_excludes_classes_and_loads_into_clap(tmp_path, tiny_bert, leakage_set):
    folder, meta = leakage_set
    cfg = load_config(None, tiny_overrides(tiny_bert) + [f"backbone.data=folder:{folder / 'pretrain'}", "backbone.epochs=2"])
    cfg["backbone"]["exclude"] = meta["pretrain_classes_matching_eval"]
    s = train_audio_backbone(cfg, tmp_path)
    assert len(s["classes"]) == 24 and not set(s["classes"]) & set(meta["pretrain_classes_matching_eval"])
    assert s["train_clips"] + s["val_clips"] == 24 * 3
    cfg["model"]["audio"]["checkpoint"] = s["weights"]
    tower = build_audio_tower(cfg["model"]["audio"], 8000)
    from safetensors.torch import load_file

    saved = load_file(s["weights"])
    assert all(torch.equal(v, saved[k]) for k, v in tower.state_dict().items())
    cfg["backbone"]["exclude"] = ["no_such_class"]
    with pytest.raises(ConfigError, match="no_such_class not among the classes"):
        train_audio_backbone(cfg, tmp_path / "x")
    # runtime.precision: a bf16 run of the same recipe learns to within a few points of it
    cfg["backbone"]["exclude"] = meta["pretrain_classes_matching_eval"]
    cfg["runtime"]["precision"] = "bf16"
    b16 = train_audio_backbone(cfg, tmp_path / "bf16")
    with open(tmp_path / "metrics.csv") as fa, open(tmp_path / "bf16" / "metrics.csv") as fb:
        la, lb = (float(r["train_loss"]) for r in csv.DictReader(fa)), (float(r["train_loss"]) for r in csv.DictReader(fb))
        for a, b in zip(la, lb, strict=True):
            assert b == pytest.approx(a, rel=0.05) and b != a
    assert b16["classes"] == s["classes"]


@pytest.mark.slow
def test_leakage_matrix_end_to_end(tmp_path, tiny_bert):
    from clapkit.experiments.leakage import run_leakage_matrix

    cfg = load_config("leakage-cpu", tiny_overrides(tiny_bert) + [
        "train.epochs=2", "train.frozen_epochs=1", "backbone.epochs=1", "model.text.name=minilm"])
    r = run_leakage_matrix(cfg, tmp_path)
    assert set(r["cells"]) == {f"{t}_{p}" for t in ("dirty", "clean") for p in ("dirty", "clean", "none")}
    assert r["cells"]["clean_none"]["train_pairs"] < r["cells"]["dirty_none"]["train_pairs"]
    for key in ("silhouette_E_a_vs_accuracy", "S_E_a_E_t_vs_log_accuracy"):
        assert r["correlations"][key]["n"] == 6
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["cells"] == r["cells"]
    assert "| dirty |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "tsne_matrix.png").stat().st_size > 10_000


@pytest.mark.slow
def test_improvement_experiment_end_to_end(tmp_path, tiny_bert):
    from clapkit.experiments.improvement import run_improvement

    cfg = load_config("improvement-cpu", tiny_overrides(tiny_bert) + [
        "train.epochs=1", "improvement.student_epochs=1", "improvement.sigma=-1", "improvement.label_threshold=-1",
        "data.fraction=0.1"])
    r = run_improvement(cfg, tmp_path)
    assert set(r["zeroshot"]) == {"teacher", "student_du_clip", "student_du_soft_clip", "student_ds_clip", "student_ds_soft_clip"}
    assert set(r["chance"]) == {"unseen", "seen"}
    assert r["curation"]["du"]["pairs"] == r["curation"]["du"]["audio_pool"] * 2  # sigma -1 keeps every top-2 match
    assert (tmp_path / "results.md").read_text().startswith("# Improvement")
    # every curated manifest is audited against every evaluation set, counted independently here
    import csv as _csv

    from clapkit.audit.leakage import default_word_list, scan
    from clapkit.data.audio.captions import load_pairs
    from clapkit.data.text import load_label_names

    assert set(r["leakage"]) == {"teacher", "du", "ds"}
    for strategy in ("du", "ds"):
        with open(tmp_path / f"curated_{strategy}.csv", newline="") as fh:
            n_rows = sum(1 for _ in _csv.DictReader(fh))
        pairs = load_pairs(f"csv:{tmp_path / f'curated_{strategy}.csv'}", require_audio=False)
        for ev in ("unseen", "seen"):
            words = default_word_list(load_label_names(f"folder:{tmp_path / 'data' / ev}"))
            dirty = sum(1 for d in scan(pairs, words).dirty if d)
            got = r["leakage"][strategy][ev]
            assert (got["pairs"], got["dirty_pairs"]) == (n_rows, dirty)
            assert got["dirty_fraction"] == pytest.approx(dirty / n_rows)
    assert "Leakage of the training data" in (tmp_path / "results.md").read_text()
