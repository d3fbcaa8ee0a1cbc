"""Goldens: the final weights and logs of a tiny run of every training recipe, as today's
trainers produce them, and runs resumed from a mid-run ``last/`` that today's code wrote.

They are the gate of the training redesign (issue 21): whatever the loop becomes, every
recipe must still reach these numbers, and every old ``last/`` must resume to them.

- ``tests/goldens/RECIPE.json``: per tensor of the run's final ``last/`` (float64) the
  sum, the sum of squares and the sum against a fixed +-1 pattern seeded by the tensor's
  name, plus the numeric columns of ``metrics.csv`` (timings left out). Not the weights.
- ``tests/goldens/state/RECIPE/``: the run folder as it stood mid-run (a step checkpoint
  mid-epoch, or a SIGTERM mid-window for ``train cse``): ``config.yaml``, ``metrics.csv``
  and ``last/``, with the fixture folders' paths written as ``{NAME}`` placeholders.

Tolerance: a statistic may move by ``RTOL`` of its scale (``sqrt(n * sum x^2)`` for the two
sums, ``sum x^2`` itself) plus ``ATOL`` per element, a logged value by ``RTOL`` of itself.
The per-element floor is for weights with no true gradient (BERT's attention key biases:
softmax ignores them), which Adam moves by the rounding noise of their gradient alone, so
another thread count already moves them by about 1e-6. Float noise between CPUs stays
inside it (checked with one thread against the two the goldens were written with); a
changed random draw does not: one dropout mask drawn afresh, every other draw the run's own,
leaves the golden of every recipe (``test_one_other_dropout_mask_leaves_the_golden``).

The text tower of every recipe is a tiny BERT with a 70-token character vocabulary, so a
saved state is tens of kilobytes. Regenerate (only on purpose, saying why in the commit)
with ``CLAPKIT_WRITE_GOLDENS=1 python -m pytest tests/test_goldens.py``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import string
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_image_overrides, tiny_overrides, write_tones
from safetensors.torch import load_file

from clapkit.config import load_config
from clapkit.data.shards import shard_pattern

GOLDENS = Path(__file__).with_name("goldens")
RTOL = 1e-4
ATOL = 1e-5  # per element: the drift of a weight that only rounding noise moves (see mismatches)
WRITE = os.environ.get("CLAPKIT_WRITE_GOLDENS") == "1"


# --- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def char_bert(tmp_path_factory) -> str:
    """A 2-layer, 32-wide random BERT whose WordPiece vocabulary is characters (70 tokens)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("char-bert")
    chars = list(string.ascii_lowercase + string.digits + ".,'!?-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{c}" for c in string.ascii_lowercase]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def golden_data(tmp_path_factory, char_bert, tiny_synthetic, tiny_images, tiny_checkpoint) -> dict[str, Path]:
    """Every input of the recipes, by placeholder name."""
    root = tmp_path_factory.mktemp("golden-data")
    words = ["dog", "rain", "bell", "engine", "bird", "wind", "door", "clock"]
    corpus = root / "corpus.txt"
    corpus.write_text("".join(f"a {w} sound number {i}.\n" for i in range(4) for w in words))
    nli = root / "nli.csv"
    nli.write_text("sent0,sent1,hard_neg\n" + "".join(f"a {w} {i},the {w} sounds,no {w} at all\n"
                                                      for i in range(3) for w in words))
    tones = write_tones(root / "tones")
    from typer.testing import CliRunner

    from clapkit.cli import app

    shards = root / "shards"
    run = CliRunner().invoke(app, ["shards", "--data", f"csv:{tiny_synthetic / 'train.csv'}", "--out", str(shards),
                                   "--shard-size", "6", "--modality", "audio"])
    assert run.exit_code == 0, run.output
    return {"BERT": Path(char_bert), "SYNTHETIC": tiny_synthetic, "IMAGES": tiny_images, "TEACHER": tiny_checkpoint,
            "CORPUS": corpus, "NLI": nli, "TONES": tones, "SHARDS": shards, "DATA": root}


# --- the recipes -----------------------------------------------------------------------------
def _clap(d, *extra):
    return tiny_overrides(str(d["BERT"])) + [f"data.train=[csv:{d['SYNTHETIC'] / 'train.csv'}]", *extra]


def _cse(d, *extra):
    return [f"cse.model.name={d['BERT']}", f"cse.corpus=txt:{d['CORPUS']}", "cse.batch_size=8", "cse.other_batch_size=8",
            "cse.lr=1e-3", "cse.other_lr=1e-3", "cse.eval_steps=2", "cse.steps=4", "cse.model.max_length=16",
            "runtime.progress=false", "runtime.device=cpu", *extra]


_TONES = ["cse.model.audio.sample_rate=8000", "cse.model.audio.seconds=0.5", "cse.model.audio.n_mels=16",
          "cse.model.audio.n_fft=256", "cse.model.audio.hop_length=64", "cse.model.audio.patch=8",
          "cse.model.audio.stride=8"]

# name -> (trainer, overrides(data), where a mid-run state is cut: (epoch, batch) or a cse step)
RECIPES = {
    "clap_frozen_unfrozen": ("clap", lambda d: _clap(d, "train.epochs=3", "train.frozen_epochs=1", "train.lr_frozen=3e-3"),
                             (1, 2)),
    "clap_streamed": ("clap", lambda d: tiny_overrides(str(d["BERT"])) + [
        f"data.train={shard_pattern(sorted(d['SHARDS'].glob('*.tar')))}", "data.stream=true", "data.shuffle_buffer=16",
        "train.steps=6", "train.steps_per_epoch=3", "train.batch_size=8",
        f"data.val=[csv:{d['SYNTHETIC'] / 'test.csv'}]"], (1, 1)),
    "clip_cyclip": ("clap", lambda d: tiny_image_overrides(str(d["BERT"])) + [
        f"data.train=[csv:{d['IMAGES'] / 'train.csv'}]", "train.epochs=2", "train.cyclip.in_modal=0.25",
        "train.cyclip.cross_modal=0.25", "train.optimizer=adamw", "train.weight_decay=0.1",
        "train.val_objective=clip"], (1, 2)),
    "soft_labels": ("clap", lambda d: _clap(d, "train.epochs=2", "train.loss=soft_clip", f"train.soft.teacher={d['TEACHER']}",
                                   "train.val_objective=clip"),
                    (1, 2)),
    "joint_se_captions_cached": ("clap", lambda d: _clap(d, "train.epochs=2", "train.se.weight=0.5", "train.se.cache_chunk=8"),
                                 (1, 2)),
    "joint_se_nli": ("clap", lambda d: _clap(d, "train.epochs=2", "train.se.weight=0.5", "train.se.loss=nli",
                                             f"train.se.nli={d['NLI']}", "train.se.batch_size=8"), (1, 2)),
    "cse_unsup": ("cse", lambda d: _cse(d), 2),
    "cse_sup": ("cse", lambda d: _cse(d, "cse.mode=sup", f"cse.nli={d['NLI']}"), 2),
    "cse_image": ("cse", lambda d: _cse(d, "cse.mode=image", "cse.images=digits"), 2),
    "cse_audio_cached": ("cse", lambda d: _cse(d, "cse.mode=audio", f"cse.audio=fsdd:{d['TONES']}", "cse.cache_chunk=4",
                                               *_TONES), 2),
    "audio_backbone": ("backbone", lambda d: tiny_overrides(str(d["BERT"])) + [
        f"backbone.data=folder:{d['SYNTHETIC'] / 'unseen'}", "backbone.epochs=2", "backbone.batch_size=4"], None),
    "ddp_gloo_2": ("ddp", lambda d: _clap(d, "train.epochs=2", "train.frozen_epochs=1", "train.lr_frozen=3e-3"), None),
}


def _train(kind: str, cfg: dict, out: Path, resume: bool = False) -> None:
    if kind == "clap":
        from clapkit.training.clap import train_clap

        train_clap(cfg, out, resume=resume)
    elif kind == "cse":
        from clapkit.training.cse import train_cse

        train_cse(cfg, out, resume=resume)
    elif kind == "backbone":
        from clapkit.training.backbone import train_audio_backbone

        train_audio_backbone(cfg, out)
    else:  # two gloo processes through torchrun and the command line
        cfg_path = out.parent / f"{out.name}.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                               "29610", "-m", "clapkit.cli", "train", "clap", "--config", str(cfg_path), "--out", str(out)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]


def _weights(run: Path, kind: str) -> dict[str, torch.Tensor]:
    if kind == "backbone":
        return load_file(str(run / "audio_tower.safetensors"))
    last = run / "last"
    out = {}
    for f in sorted(last.rglob("*.safetensors")):
        prefix = str(f.relative_to(last).with_suffix(""))
        out.update({f"{prefix}/{k}": v for k, v in load_file(str(f)).items()})
    return out


def fingerprint(run: Path, kind: str) -> dict:
    tensors = {}
    for name, v in _weights(run, kind).items():
        x = v.double().flatten().numpy()
        sign = np.where(np.random.default_rng(zlib.crc32(name.encode())).random(x.size) < 0.5, -1.0, 1.0)
        tensors[name] = [float(x.sum()), float((x * x).sum()), float((x * sign).sum()), int(x.size)]
    rows = []
    with open(run / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: float(v) for k, v in row.items() if "seconds" not in k and _is_number(v)})
    return {"tensors": tensors, "metrics": rows}


def _is_number(v: str) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def mismatches(got: dict, want: dict) -> list[str]:
    """What differs beyond the tolerance (empty: the run is the golden)."""
    bad = []
    if set(got["tensors"]) != set(want["tensors"]):
        bad.append(f"tensor names differ: {sorted(set(got['tensors']) ^ set(want['tensors']))[:5]}")
    for name in sorted(set(got["tensors"]) & set(want["tensors"])):
        (s1, s2, s3, n), (w1, w2, w3, m) = got["tensors"][name], want["tensors"][name]
        scale = np.sqrt(max(w2, 1e-30) * m)
        tol1 = RTOL * scale + ATOL * m  # ATOL: a parameter with no true gradient (attention key biases)
        tol2 = RTOL * w2 + 2 * ATOL * np.sqrt(max(w2, 0.0) * m) + ATOL**2 * m  # moves by Adam's rounding noise only
        if n != m or abs(s2 - w2) > tol2 or abs(s1 - w1) > tol1 or abs(s3 - w3) > tol1:
            bad.append(f"{name}: {[s1, s2, s3]} != {[w1, w2, w3]}")
    if len(got["metrics"]) != len(want["metrics"]):
        bad.append(f"metrics.csv: {len(got['metrics'])} rows, the golden {len(want['metrics'])}")
    for i, (g, w) in enumerate(zip(got["metrics"], want["metrics"], strict=False)):
        for k, v in w.items():
            if k not in g or not (abs(g[k] - v) <= RTOL * abs(v) + 1e-9 or (np.isnan(v) and np.isnan(g[k]))):
                bad.append(f"metrics.csv row {i + 1} {k}: {g.get(k)} != {v}")
    return bad


# --- placeholders for a saved state --------------------------------------------------------------
def _to_placeholders(folder: Path, d: dict[str, Path]) -> None:
    for f in folder.rglob("*"):
        if f.suffix in (".yaml", ".json") and f.is_file():
            text = f.read_text()
            for key, path in sorted(d.items(), key=lambda kv: -len(str(kv[1]))):
                text = text.replace(str(path), "{" + key + "}")
            f.write_text(text)


def _from_placeholders(folder: Path, d: dict[str, Path]) -> None:
    for f in folder.rglob("*"):
        if f.suffix in (".yaml", ".json") and f.is_file():
            text = f.read_text()
            for key, path in d.items():
                text = text.replace("{" + key + "}", str(path))
            f.write_text(text)


def _cut(kind: str, cfg: dict, out: Path, where, monkeypatch) -> None:
    """Train until the mid-run point ``where``, leaving that ``last/`` behind (a crash)."""
    if kind == "clap":
        from clapkit.training.loop import Loop

        save = Loop.save

        class Cut(Exception):
            pass

        def save_then_stop(self, improved):
            save(self, improved)
            if (self.state["window"], self.state["step_in_window"]) == tuple(where):
                raise Cut

        monkeypatch.setattr(Loop, "save", save_then_stop)
        cfg = yaml.safe_load(yaml.safe_dump(cfg))
        cfg["runtime"]["save_every_steps"] = 1
        with pytest.raises(Cut):
            _train(kind, cfg, out)
        monkeypatch.setattr(Loop, "save", save)
    else:
        import signal

        from clapkit.training.cse import CseTrainer

        step = CseTrainer.train_step

        def step_then_term(self, i):
            result = step(self, i)
            if i == where:
                os.kill(os.getpid(), signal.SIGTERM)
            return result

        monkeypatch.setattr(CseTrainer, "train_step", step_then_term)
        _train(kind, cfg, out)
        monkeypatch.setattr(CseTrainer, "train_step", step)


# --- the tests ---------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_reaches_its_golden(recipe, golden_data, tmp_path):
    kind, overrides, _ = RECIPES[recipe]
    cfg = load_config(None, overrides(golden_data))
    _train(kind, cfg, tmp_path / "run")
    got = fingerprint(tmp_path / "run", kind)
    path = GOLDENS / f"{recipe}.json"
    if WRITE:
        if os.environ.get("CI"):
            pytest.fail("CLAPKIT_WRITE_GOLDENS is set under CI: goldens are written on purpose, never by CI")
        GOLDENS.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1) + "\n")
        return
    assert path.is_file(), f"{path}: no golden; write it with CLAPKIT_WRITE_GOLDENS=1 (on purpose only)"
    bad = mismatches(got, json.loads(path.read_text()))
    assert not bad, f"{recipe} left its golden:\n" + "\n".join(bad[:10])


@pytest.mark.parametrize("recipe", [r for r, (_, _, where) in RECIPES.items() if where is not None])
def test_an_old_last_resumes_to_the_golden(recipe, golden_data, tmp_path, monkeypatch):
    """A ``last/`` written mid-run by the code the goldens froze resumes to the golden."""
    kind, overrides, where = RECIPES[recipe]
    cfg = load_config(None, overrides(golden_data))
    state = GOLDENS / "state" / recipe
    if WRITE:
        if os.environ.get("CI"):
            pytest.fail("CLAPKIT_WRITE_GOLDENS is set under CI")
        _cut(kind, cfg, tmp_path / "cut", where, monkeypatch)
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir(parents=True)
        for name in ("config.yaml", "metrics.csv"):
            if (tmp_path / "cut" / name).is_file():
                shutil.copy(tmp_path / "cut" / name, state / name)
        shutil.copytree(tmp_path / "cut" / "last", state / "last")
        _to_placeholders(state, golden_data)
        return
    assert state.is_dir(), f"{state}: no saved state; write it with CLAPKIT_WRITE_GOLDENS=1 (on purpose only)"
    run = tmp_path / "run"
    shutil.copytree(state, run)
    _from_placeholders(run, golden_data)
    _train(kind, cfg, run, resume=True)
    bad = mismatches(fingerprint(run, kind), json.loads((GOLDENS / f"{recipe}.json").read_text()))
    assert not bad, f"{recipe} resumed from its old last/ left its golden:\n" + "\n".join(bad[:10])


MOVED_CALL = 5  # the dropout call (in training mode) whose mask is drawn afresh

SITE = """
import os
import torch
real = torch.nn.functional.dropout
seen = [0]
def dropout(input, p=0.5, training=True, inplace=False):
    if not (training and p > 0):
        return real(input, p, training, inplace)
    seen[0] += 1
    if seen[0] != int(os.environ["CLAPKIT_MOVED_DROPOUT_CALL"]):
        return real(input, p, training, inplace)
    real(input.clone(), p, training, False)  # the draw the run made, so every later draw is the run's own
    g = torch.Generator(device=input.device).manual_seed(20261207)
    keep = (torch.rand(input.shape, generator=g, device=input.device) >= p).to(input.dtype)
    out = input * keep / (1 - p)
    return input.copy_(out) if inplace else out
"""
INSTALL = "torch.nn.functional.dropout = dropout\n"  # what the torchrun processes' sitecustomize adds


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_one_other_dropout_mask_leaves_the_golden(recipe, golden_data, tmp_path, monkeypatch):
    """The tolerance is no blanket: the same run with one dropout mask drawn afresh (the
    5th in training mode, every other random draw the run's own) leaves the golden, in
    every recipe. The mask is moved in the test process, and in both torchrun processes of
    ddp_gloo_2 through a sitecustomize on their path."""
    if WRITE:
        pytest.skip("writing goldens")  # the one run that may skip (tests/conftest.py)
    kind, overrides, _ = RECIPES[recipe]
    cfg = load_config(None, overrides(golden_data))
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITE + INSTALL)
    monkeypatch.setenv("CLAPKIT_MOVED_DROPOUT_CALL", str(MOVED_CALL))
    if kind == "ddp":
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path / "site"),
                                                                       os.environ.get("PYTHONPATH")])))
    else:
        namespace: dict = {}
        exec(compile(SITE, "moved_dropout", "exec"), namespace)  # defines it; monkeypatch installs and restores it
        monkeypatch.setattr(torch.nn.functional, "dropout", namespace["dropout"])
    _train(kind, cfg, tmp_path / "run")
    if kind != "ddp":
        assert namespace["seen"][0] > MOVED_CALL, f"{recipe}: only {namespace['seen'][0]} dropout calls"
    assert mismatches(fingerprint(tmp_path / "run", kind), json.loads((GOLDENS / f"{recipe}.json").read_text()))


def test_the_moved_mask_is_gone_after_its_test():
    """The dropout of the test above is this process's again (a test after it trains as usual)."""
    import torch.nn.functional as F

    assert F.dropout.__module__ == "torch.nn.functional"
