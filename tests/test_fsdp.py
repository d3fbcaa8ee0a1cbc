"""``runtime.parallel: fsdp``: ``train clap`` on two gloo processes with FSDP2 shards, against
the same run under DDP, through torchrun and the command line (tests/fsdp_worker.py).

The runs: DDP for three epochs; FSDP stopped after two, then resumed (``--resume``) for the
third. Each has a frozen epoch (cached backbone outputs) and unfrozen ones, BatchNorm and
dropout in training mode, and a weight average (``train.ema``, written to ``checkpoint/``);
``runtime.eval_batch_size`` 40 splits the cache's and the evaluation's text batches unevenly
between the processes (3 and 1 batches: per-unit gathers would hang there).

Tolerance: none. Every process computes what it computes under DDP (the full weights are
gathered before each unit's forward; the same rows, dropout masks and BatchNorm statistics),
the gradients are the same halves summed (DDP's all-reduce, FSDP's reduce-scatter), Adam is
elementwise, and ``last/`` carries the optimizer state and the average whole, cut again into
the same shards on resume. What can differ is the gradient norm, summed in another order (each
shard's, then across processes): with ``grad_clip`` active that moves the weights by float
rounding (at most 1.3e-6 here with ``grad_clip: 0.5``), so these runs clip nothing
(``grad_clip: 0``). The average is not used for evaluation (``train.ema.eval: false``): on
the CPU each process averages its own BatchNorm statistics, and ``last/`` keeps the first's,
so with it a resumed run's validation loss moves by about 3e-7 (under DDP as well).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_overrides
from safetensors.torch import load_file

from clapkit.config import load_config

WORKER = Path(__file__).with_name("fsdp_worker.py")
EPOCHS = 3


def _torchrun(record: Path, port: int, *args) -> None:
    record.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), str(WORKER), str(record), *map(str, args)], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert, tiny_synthetic) -> dict[str, Path]:
    """ddp (three epochs), cut (fsdp: its first two) and resumed (the cut run, resumed for the third)."""
    root = tmp_path_factory.mktemp("fsdp")
    base = tiny_overrides(tiny_bert) + [f"data.train=[csv:{tiny_synthetic / 'train.csv'}]", "train.frozen_epochs=1",
                                        "train.lr_frozen=3e-3", "train.grad_clip=0", "train.ema.decay=0.5",
                                        "train.ema.eval=false", "runtime.eval_batch_size=40", "runtime.device=cpu"]

    def config(name: str, *extra: str) -> Path:
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(load_config(None, base + list(extra))))
        return path

    ddp, resumed = root / "ddp", root / "resumed"
    _torchrun(root / "record-ddp", 29661, "train", "clap", "--config",
              config("ddp", "runtime.parallel=ddp", f"train.epochs={EPOCHS}"), "--out", ddp)
    _torchrun(root / "record-cut", 29662, "train", "clap", "--config",
              config("cut", "runtime.parallel=fsdp", f"train.epochs={EPOCHS - 1}"), "--out", resumed)
    shutil.copytree(resumed, root / "cut")
    _torchrun(root / "record-resumed", 29663, "train", "clap", "--config",
              config("fsdp", "runtime.parallel=fsdp", f"train.epochs={EPOCHS}"), "--out", resumed, "--resume")
    return {"ddp": ddp, "cut": root / "cut", "resumed": resumed, "root": root}


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def _tensors(run: Path, sub: str) -> dict[str, torch.Tensor]:
    folder = run / sub
    return {f"{f.relative_to(folder)}/{k}": v for f in sorted(folder.rglob("*.safetensors"))
            for k, v in load_file(str(f)).items()}


def _state(run: Path) -> dict:
    return torch.load(run / "last" / "trainer_state.pt", map_location="cpu", weights_only=False)


@pytest.mark.slow
def test_fsdp_shards_every_unit_and_logs_the_ddp_run(runs):
    for record in ("record-cut", "record-resumed"):  # the resumed run shards the model it loaded from last/
        for rank in (0, 1):  # each process holds half of the model (and the 0-d temperature whole)
            held = json.loads((runs["root"] / record / f"shard{rank}.json").read_text())
            assert held["units"] == 9  # 2 BERT layers, 2 conv blocks, the 2 towers, 2 projectors, the model
            assert held["local"] < 0.51 * held["whole"]
    assert not list((runs["root"] / "record-ddp").glob("shard*.json"))
    cut, ddp = _rows(runs["cut"]), _rows(runs["ddp"])
    assert [r["phase"] for r in ddp] == ["frozen", "unfrozen", "unfrozen"]
    assert cut == ddp[: EPOCHS - 1]  # every logged number: losses, temperature, learning rate
    assert json.loads((runs["cut"] / "summary.json").read_text())["processes"] == 2


@pytest.mark.slow
def test_fsdp_checkpoints_are_whole_and_load_in_one_process(runs):
    from clapkit.models.dual import DualEncoder

    for sub in ("checkpoint", "last"):  # the cut run's, after epoch 2
        model = DualEncoder.load(runs["cut"] / sub)
        saved = _tensors(runs["cut"], sub)
        assert len(saved) > 70 and all(torch.isfinite(v).all() for v in saved.values())
        with torch.no_grad():
            e = model.encode_text(model.text.tokenize(["a dog barks"]))
        assert e.shape == (1, 16)
    assert json.loads((runs["cut"] / "checkpoint" / "weights.json").read_text())["weights"] == "ema"
    # last/'s optimizer state and weight average are whole: every tensor of DDP's shape
    ours, theirs = _state(runs["cut"]), _state(runs["ddp"])
    o, t = ours["updates"]["model"]["optimizer"], theirs["updates"]["model"]["optimizer"]
    assert o["state"].keys() == t["state"].keys() and len(o["state"]) > 50
    assert all(o["state"][i][k].shape == v.shape for i in t["state"] for k, v in t["state"][i].items())
    assert [s.shape for s in ours["ema"]["shadow"]] == [s.shape for s in theirs["ema"]["shadow"]]


@pytest.mark.slow
def test_fsdp_resumed_ends_with_the_ddp_run_exactly(runs):
    resumed, ddp = runs["resumed"], runs["ddp"]
    assert _rows(resumed) == _rows(ddp)
    for sub in ("last", "checkpoint"):
        one, other = _tensors(ddp, sub), _tensors(resumed, sub)
        assert one.keys() == other.keys()
        assert [k for k in one if not torch.equal(one[k], other[k])] == [], sub
    ours, theirs = _state(resumed), _state(ddp)
    o, t = ours["updates"]["model"]["optimizer"], theirs["updates"]["model"]["optimizer"]
    assert o["param_groups"] == t["param_groups"] and o["state"].keys() == t["state"].keys()
    assert all(torch.equal(o["state"][i][k], t["state"][i][k]) for i in t["state"] for k in t["state"][i])
    assert ours["ema"]["names"] == theirs["ema"]["names"]
    assert all(torch.equal(x, y) for x, y in zip(ours["ema"]["shadow"], theirs["ema"]["shadow"], strict=True))


@pytest.mark.parametrize("recipe", ["cse", "audio-backbone"])
def test_recipes_that_do_not_shard_refuse_fsdp(tmp_path, recipe):
    from typer.testing import CliRunner

    from clapkit.cli import app
    from clapkit.errors import ConfigError

    run = CliRunner().invoke(app, ["train", recipe, "--set", "runtime.parallel=fsdp", "--out", str(tmp_path / "run")])
    assert isinstance(run.exception, ConfigError), run.output  # `clapkit` prints it and exits with 2
    message = str(run.exception)
    assert message.startswith(f"runtime.parallel = fsdp: train {recipe} does not shard its model")
    assert "fsdp applies to train clap and train clip" in message and not (tmp_path / "run").exists()


def test_fsdp_refuses_a_public_model(tmp_path):
    """A public model fine-tuned trains under ddp: FSDP would reduce the parameters a batch
    does not reach as zeros (moving them by weight decay and momentum) and replace
    parameters an objective holds (SigLIP's bias). Refused before anything is sharded."""
    from conftest import write_tiny_public_model

    from clapkit.errors import ConfigError
    from clapkit.models.public.hf import HFDualEncoder
    from clapkit.training.parallel import shard

    model = HFDualEncoder(write_tiny_public_model("clip", tmp_path / "clip"))
    with pytest.raises(ConfigError, match=r"runtime.parallel = fsdp shards clapkit's own dual encoder; HFDualEncoder "
                                          r"\(a public model fine-tuned from model.init_from\) trains under ddp.*"
                                          r"set runtime.parallel: ddp"):
        shard(model)
