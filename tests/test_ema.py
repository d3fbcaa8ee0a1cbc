"""train.ema: the weight average against a hand-written EMA, in the loop (evaluation,
checkpoint/, weights.json, last/) and across a resume and a SIGKILL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_overrides, train_clap_stopped_then_resumed
from safetensors.torch import load_file

from clapkit.config import load_config
from clapkit.errors import ConfigError
from clapkit.models.dual import DualEncoder
from clapkit.training.clap import ClapTrainer, train_clap
from clapkit.training.ema import WeightAverage
from clapkit.training.loop import Loop


def _hand_ema(snapshots: list[dict], decay: float, start_step: int) -> dict:
    """The EMA of weight snapshots taken after steps 1, 2, ...: a copy up to ``start_step + 1``,
    then decay * ema + (1 - decay) * w (float64 here); integer tensors copied."""
    ema: dict = {}
    for step, w in enumerate(snapshots, start=1):
        for k, v in w.items():
            if step <= start_step + 1 or not v.is_floating_point():
                ema[k] = v.double() if v.is_floating_point() else v.clone()
            else:
                ema[k] = decay * ema[k] + (1 - decay) * v.double()
    return ema


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a.double(), b.double(), rtol=1e-6, atol=1e-7) and a.dtype == b.dtype or (
        not a.is_floating_point() and torch.equal(a, b))


def test_the_average_is_the_hand_written_ema_of_parameters_and_buffers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    ema = WeightAverage(model, decay=0.8, start_step=2)
    snapshots = []
    for step in range(1, 7):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).sum().backward()
        opt.step()
        ema.update(model, step)
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    hand = _hand_ema(snapshots, 0.8, 2)
    got = dict(zip(ema.names, ema.shadow, strict=True))
    assert set(got) == set(hand)  # parameters and buffers (BatchNorm's running statistics, its step count)
    assert all(_close(got[k], hand[k].to(got[k].dtype)) for k in hand)
    assert torch.equal(got["1.num_batches_tracked"], torch.tensor(6))
    assert ema.updates == 3 and ema.step == 6
    assert not torch.allclose(got["0.weight"], model[0].weight)  # an average, not the weights
    own = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.applied(model):
        assert torch.equal(model[0].weight, got["0.weight"]) and torch.equal(model[1].running_mean, got["1.running_mean"])
    assert all(torch.equal(own[k], v) for k, v in model.state_dict().items())  # restored exactly
    again = WeightAverage(model, decay=0.8, start_step=2)
    again.load_state_dict(ema.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.shadow, ema.shadow, strict=True)) and again.updates == 3
    with pytest.raises(ValueError, match="train.ema.decay = 1.0"):
        WeightAverage(model, decay=1.0)


@pytest.mark.parametrize("start_step", [0, 3])
def test_the_average_is_timms_model_ema_v3(start_step):
    """timm's ModelEmaV3 (update_after_step, no warmup, buffers averaged), stepped with the
    count of optimizer steps as timm's train.py does, gives the same average."""
    from timm.utils.model_ema import ModelEmaV3

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    ours = WeightAverage(model, decay=0.9, start_step=start_step)
    timm = ModelEmaV3(model, decay=0.9, update_after_step=start_step, use_warmup=False)
    for step in range(1, 9):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).sum().backward()
        opt.step()
        ours.update(model, step)
        timm.update(model, step=step)
        theirs = timm.module.state_dict()
        for name, value in zip(ours.names, ours.shadow, strict=True):
            assert torch.allclose(value, theirs[name], rtol=0, atol=1e-6), (step, name)
    assert ours.updates == 8 - (start_step + 1)


def _cfg(tiny_bert, synthetic, *extra):
    return load_config(None, tiny_overrides(tiny_bert) + [
        f"data.train=[csv:{synthetic / 'train.csv'}]", "data.fraction=0.25", "train.batch_size=4", "train.epochs=2", "train.ema.decay=0.7",
        "train.ema.start_step=2", *extra])


def test_training_averages_every_step_evaluates_and_checkpoints_the_average(tmp_path, tiny_bert, tiny_synthetic,
                                                                             monkeypatch):
    """The loop's average equals the hand-written EMA of the weights after each step; the
    evaluation sees it (train.ema.eval), checkpoint/ holds it with weights.json
    (train.ema.checkpoint), last/ holds the trained weights."""
    snapshots, evaluated = [], []
    run_step, evaluate = Loop._run_step, ClapTrainer.evaluate

    def keep(self, batch):
        out = run_step(self, batch)
        snapshots.append({k: v.detach().clone() for k, v in self.recipe.model.state_dict().items()})
        return out

    def seen(self, epoch, results):
        evaluated.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return evaluate(self, epoch, results)

    monkeypatch.setattr(Loop, "_run_step", keep)
    monkeypatch.setattr(ClapTrainer, "evaluate", seen)
    summary = train_clap(_cfg(tiny_bert, tiny_synthetic, "data.val_fraction=0"), tmp_path / "run")  # no val: last is best
    steps = summary["steps"]
    assert steps >= 6 and len(snapshots) == steps
    per_epoch = steps // 2
    assert len(evaluated) == 2
    for epoch, weights in enumerate(evaluated, start=1):  # each epoch's evaluation: the average at its end
        hand = _hand_ema(snapshots[: epoch * per_epoch], 0.7, 2)
        assert all(_close(weights[k], hand[k].to(weights[k].dtype)) for k in hand)
    hand = _hand_ema(snapshots, 0.7, 2)
    best = DualEncoder.load(tmp_path / "run" / "checkpoint").state_dict()
    assert all(_close(best[k], hand[k].to(best[k].dtype)) for k in hand)
    assert json.loads((tmp_path / "run" / "checkpoint" / "weights.json").read_text()) == {
        "weights": "ema", "decay": 0.7, "start_step": 2, "updates": steps - 3, "step": steps}
    last = DualEncoder.load(tmp_path / "run" / "last").state_dict()
    assert all(torch.equal(last[k], snapshots[-1][k]) for k in last)  # the trained weights, for --resume
    assert not (tmp_path / "run" / "last" / "weights.json").exists()
    state = torch.load(tmp_path / "run" / "last" / "trainer_state.pt", weights_only=False)["ema"]
    assert state["updates"] == steps - 3 and state["decay"] == 0.7

    # the average for neither: evaluation and checkpoint/ see the trained weights, the average is still kept
    evaluated.clear()
    snapshots.clear()
    train_clap(_cfg(tiny_bert, tiny_synthetic, "data.val_fraction=0", "train.ema.eval=false",
                    "train.ema.checkpoint=false"), tmp_path / "plain")
    assert all(torch.equal(evaluated[-1][k], snapshots[-1][k]) for k in snapshots[-1])
    best = DualEncoder.load(tmp_path / "plain" / "checkpoint").state_dict()
    assert all(torch.equal(best[k], snapshots[-1][k]) for k in best)
    assert not (tmp_path / "plain" / "checkpoint" / "weights.json").exists()
    assert torch.load(tmp_path / "plain" / "last" / "trainer_state.pt", weights_only=False)["ema"]["updates"] == steps - 3


def test_the_average_resumes_exactly_after_a_stop_and_a_sigkill(tmp_path, tiny_bert, tiny_synthetic, monkeypatch):
    """Stopped after epoch 1, or SIGKILLed right after a mid-epoch step checkpoint, then
    resumed: the average, checkpoint/ and last/ of the run never stopped, bit for bit."""
    extra = [f"data.val=[csv:{tiny_synthetic / 'test.csv'}]", "runtime.save_every_steps=3"]
    train_clap(_cfg(tiny_bert, tiny_synthetic, *extra), tmp_path / "straight")
    train_clap_stopped_then_resumed(_cfg(tiny_bert, tiny_synthetic, *extra), tmp_path / "stopped", 1, monkeypatch)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_cfg(tiny_bert, tiny_synthetic, *extra)))
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("kill_worker.py")), str(cfg_path),
                           str(tmp_path / "killed"), "1", "3"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    train_clap(load_config(cfg_path), tmp_path / "killed", resume=True)
    straight = torch.load(tmp_path / "straight" / "last" / "trainer_state.pt", weights_only=False)["ema"]
    for run in ("stopped", "killed"):
        again = torch.load(tmp_path / run / "last" / "trainer_state.pt", weights_only=False)["ema"]
        assert again["updates"] == straight["updates"] and again["step"] == straight["step"]
        assert all(torch.equal(a, b) for a, b in zip(again["shadow"], straight["shadow"], strict=True)), run
        for folder in ("checkpoint", "last"):
            a, b = (load_file(tmp_path / r / folder / "model.safetensors") for r in ("straight", run))
            assert all(torch.equal(a[k], b[k]) for k in a), (run, folder)


def test_a_decay_outside_zero_to_one_is_refused(tiny_bert, tiny_synthetic):
    for bad in ("train.ema.decay=1.0", "train.ema.decay=-0.1", "train.ema.start_step=-1"):
        with pytest.raises(ConfigError, match=r"train.ema = .*decay is in \[0, 1\)"):
            _cfg(tiny_bert, tiny_synthetic, bad)
