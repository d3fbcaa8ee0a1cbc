"""``train cse`` under torchrun: two gloo processes, each with its share of every text and
image batch and the loss over the global batch, give the weights of one process."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from clapkit.config import load_config


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["unsup", "image"])
def test_two_processes_train_cse_as_one(tmp_path, tiny_bert_no_dropout, mode):
    words = ["dog", "rain", "bell", "engine", "bird", "wind", "door", "clock"]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"a {w} sound number {i}.\n" for i in range(4) for w in words))
    cfg = load_config(None, [f"cse.model.name={tiny_bert_no_dropout}", f"cse.corpus=txt:{corpus}", f"cse.mode={mode}",
                             "cse.images=digits", "cse.batch_size=8", "cse.other_batch_size=8", "cse.lr=1e-3",
                             "cse.other_lr=1e-3", "cse.steps=3", "cse.eval_steps=3", "cse.model.max_length=16",
                             "cse.augment.jitter_p=0", "runtime.progress=false", "runtime.device=cpu"])
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for n in (1, 2):
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
                               str(29700 + n + (10 if mode == "image" else 0)), "-m", "clapkit.cli", "train", "cse",
                               "--config", str(path), "--out", str(tmp_path / f"n{n}")],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    # Adam moves a weight by about lr (1e-3) a step whatever its gradient, so where a gradient is
    # near 0 its rounding noise moves the weight by up to a step: nearly every element agrees to
    # 1e-5 and none by half a step, which a missing share or an unsynchronised gradient fails
    off = total = 0
    for name in ("model.safetensors", "cse_extra.safetensors"):
        one, two = (load_file(str(tmp_path / f"n{n}" / "last" / name)) for n in (1, 2))
        assert one.keys() == two.keys()
        start = load_file(f"{tiny_bert_no_dropout}/model.safetensors") if name == "model.safetensors" else {}
        moved = [k for k in one if k in start and not torch.equal(one[k], start[k])]
        assert name != "model.safetensors" or moved  # it trained
        for k in one:
            diff = (two[k] - one[k]).abs()
            assert float(diff.max()) < 5e-4, k
            off, total = off + int((diff > 1e-5).sum()), total + diff.numel()
        if start:
            assert max(float((one[k] - start[k]).abs().max()) for k in moved) > 2e-3  # three steps of about lr
    assert off < 0.005 * total, (off, total)
    import csv

    rows = [list(csv.DictReader(open(tmp_path / f"n{n}" / "metrics.csv"))) for n in (1, 2)]
    for key in ("text_loss", "other_loss") if mode == "image" else ("text_loss",):  # the global batch's loss
        assert float(rows[1][0][key]) == pytest.approx(float(rows[0][0][key]), rel=1e-6)
    s1, s2 = (yaml.safe_load((tmp_path / f"n{n}" / "summary.json").read_text()) for n in (1, 2))
    assert (s1["processes"], s2["processes"]) == (1, 2) and s1["sentences_seen"] == s2["sentences_seen"]


def test_cse_under_torchrun_refuses_gradient_caching(tmp_path, tiny_bert, monkeypatch):
    from clapkit.errors import ConfigError
    from clapkit.training import cse

    monkeypatch.setattr(cse, "init_distributed", lambda: (0, 2))
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"sentence {i}.\n" for i in range(16)))
    cfg = load_config(None, [f"cse.model.name={tiny_bert}", f"cse.corpus=txt:{corpus}", "cse.batch_size=4",
                             "cse.cache_chunk=2", "runtime.device=cpu"])
    with pytest.raises(ConfigError, match="cse.cache_chunk .* one process"):
        cse.CseTrainer(cfg, tmp_path / "run")
