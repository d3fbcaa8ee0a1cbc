"""The one training loop: objectives registered from outside, SigLIP, gradient caching over
both towers, monitors, the backbone recipe's resume and SIGTERM, config upgrades."""

from __future__ import annotations

import csv
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides, write_tiny_public_model
from safetensors.torch import load_file

from clapkit.config import load_config
from clapkit.errors import ConfigError
from clapkit.losses import clip_loss, siglip_loss
from clapkit.training.clap import ClapTrainer, train_clap
from clapkit.training.objectives import OBJECTIVES, Objective, register


def _cfg(bert, synthetic, *extra):
    return load_config(None, tiny_overrides(bert) + [f"data.train=[csv:{synthetic / 'train.csv'}]", *extra])


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.rglob("*.safetensors")):
        out.update({f"{f.relative_to(folder)}/{k}": v for k, v in load_file(str(f)).items()})
    return out


def test_an_objective_registered_in_a_test_file_trains_without_touching_the_loop(tmp_path, tiny_bert, tiny_synthetic):
    seen = []

    @register("test_half_clip")
    class HalfClip(Objective):  # half the CLIP loss, with its own (unused by the formula) parameter
        def __init__(self, cfg):
            super().__init__(cfg)
            self.offset = torch.nn.Parameter(torch.zeros(()))

        def forward(self, e_m, e_t, scale, rows):
            loss = 0.5 * clip_loss(e_m, e_t, scale) + 0.0 * self.offset
            if rows.split == "train":
                seen.append(loss.item())
            return loss

    try:
        s = train_clap(_cfg(tiny_bert, tiny_synthetic, "train.loss=test_half_clip", "train.epochs=2"), tmp_path / "run")
    finally:
        del OBJECTIVES["test_half_clip"]
    rows = _rows(tmp_path / "run")
    per_epoch = len(seen) // 2
    assert s["loss"] == "test_half_clip" and len(rows) == 2 and per_epoch >= 1
    for e, row in enumerate(rows):  # the logged training loss is the objective's, step by step
        assert float(row["train_loss"]) == pytest.approx(np.mean(seen[e * per_epoch : (e + 1) * per_epoch]), rel=1e-6)
    assert (tmp_path / "run" / "checkpoint" / "objective.safetensors").is_file()  # its parameter is saved


def test_an_unknown_objective_is_refused_with_the_registered_ones(tiny_bert, tiny_synthetic, tmp_path):
    with pytest.raises(ConfigError, match=r"train.loss = 'sigmoid'.*clip.*siglip.*soft_clip"):
        ClapTrainer(_cfg(tiny_bert, tiny_synthetic, "train.loss=sigmoid"), tmp_path)


def test_siglip_loss_equals_a_loop_over_every_pair():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(5, 4, dtype=torch.float64), dim=-1).requires_grad_()
    t = torch.nn.functional.normalize(torch.randn(5, 4, dtype=torch.float64), dim=-1).requires_grad_()
    scale, bias = torch.tensor(10.0, dtype=torch.float64, requires_grad=True), torch.tensor(-10.0, dtype=torch.float64,
                                                                                           requires_grad=True)
    want = 0.0
    for i in range(5):
        for j in range(5):
            z = scale * (a[i] @ t[j]) + bias
            want = want - torch.nn.functional.logsigmoid(z if i == j else -z)
    want = want / 5
    got = siglip_loss(a, t, scale, bias)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    g_want = torch.autograd.grad(want, (a, t, scale, bias))
    g_got = torch.autograd.grad(siglip_loss(a, t, scale, bias), (a, t, scale, bias))
    for x, y in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_siglip_trains_its_bias_and_resumes_exactly(tmp_path, tiny_bert, tiny_synthetic):
    extra = ("train.loss=siglip", "model.init_temperature=0.1")
    two = train_clap(_cfg(tiny_bert, tiny_synthetic, *extra, "train.epochs=2"), tmp_path / "two")
    train_clap(_cfg(tiny_bert, tiny_synthetic, *extra, "train.epochs=1"), tmp_path / "split")
    train_clap(_cfg(tiny_bert, tiny_synthetic, *extra, "train.epochs=2"), tmp_path / "split", resume=True)
    bias = load_file(str(tmp_path / "two" / "last" / "objective.safetensors"))["logit_bias"]
    assert two["loss"] == "siglip" and bias.item() != -10.0  # the learnt bias moved
    a, b = _weights(tmp_path / "two" / "last"), _weights(tmp_path / "split" / "last")
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_a_public_siglip_fine_tunes_with_its_own_bias(tmp_path):
    from clapkit.data.image.synthetic import write_synthetic_images
    from clapkit.models.public.loader import load_model

    public = write_tiny_public_model("siglip", tmp_path / "siglip", dropout=False)
    write_synthetic_images(tmp_path / "img", seed=1, pixels=48, train_images=3, test_images=1, unseen_images=1)
    before = load_model(public).model.logit_bias.item()
    cfg = load_config("clip-cpu", [f"model.init_from={public}", f"data.train=[csv:{tmp_path / 'img' / 'train.csv'}]",
                                   "train.loss=siglip", "train.epochs=1", "train.frozen_epochs=0", "train.batch_size=8",
                                   "train.lr_unfrozen=1e-2", "runtime.progress=false"])
    s = train_clap(cfg, tmp_path / "run")
    tuned = load_model(tmp_path / "run" / "checkpoint")
    assert s["loss"] == "siglip" and tuned.family == "siglip"  # saved back in transformers format
    assert tuned.model.logit_bias.item() != before  # the model's own bias trained, not a second one
    assert not (tmp_path / "run" / "checkpoint" / "objective.safetensors").exists()


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_gradient_caching_over_both_towers_equals_the_plain_step(tmp_path, tiny_bert_no_dropout, tiny_synthetic, loss):
    cfg = _cfg(tiny_bert_no_dropout, tiny_synthetic, "model.projector.dropout=0", "model.audio.dropout=0",
               f"train.loss={loss}", "train.cyclip.in_modal=0.3", "train.cyclip.cross_modal=0.2")
    tr = ClapTrainer(cfg, tmp_path / loss)
    tr._start_phase("unfrozen")
    tr.model.eval()  # BatchNorm with running statistics: chunks and the whole batch see the same
    batch = tr._batches(0)[0]
    results = {}
    for chunk in (0, 3):
        tr.cfg["train"]["cache_chunk"] = chunk
        tr.model.zero_grad(set_to_none=True)
        tr.objective.zero_grad(set_to_none=True)
        loss_value = tr._loss(**tr._inputs("train", batch), idx=batch)
        if not chunk:
            loss_value.backward()
        grads = {n: p.grad.clone() for n, p in [*tr.model.named_parameters(), *tr.objective.named_parameters()]
                 if p.grad is not None}
        results[chunk] = (loss_value.item(), grads)
    (l0, g0), (l3, g3) = results[0], results[3]
    assert l3 == pytest.approx(l0, rel=1e-6) and set(g0) == set(g3) and len(g0) > 10
    for k in g0:
        torch.testing.assert_close(g3[k], g0[k], rtol=1e-4, atol=1e-6, msg=k)


def test_gradient_caching_trains_a_run(tmp_path, tiny_bert, tiny_synthetic):
    s = train_clap(_cfg(tiny_bert, tiny_synthetic, "train.cache_chunk=4", "train.epochs=1"), tmp_path / "run")
    assert s["steps"] >= 1 and math.isfinite(float(_rows(tmp_path / "run")[0]["train_loss"]))


def test_the_monitor_picks_the_epoch_a_hand_computation_picks(tmp_path, tiny_bert, tiny_synthetic):
    zeroshot = f"folder:{tiny_synthetic / 'unseen'}"
    for monitor, column, best_of in (("zeroshot_top1", "zeroshot_top1", np.argmax), ("train_loss", "train_loss", np.argmin)):
        out = tmp_path / monitor
        s = train_clap(_cfg(tiny_bert, tiny_synthetic, "train.epochs=4", f"train.monitor={monitor}",
                            f"train.eval.zeroshot={zeroshot}", f"train.eval.retrieval=csv:{tiny_synthetic / 'test.csv'}",
                            "train.eval_every=2"), out)
        rows = _rows(out)
        values = [float(r[column]) for r in rows]
        assert s["monitor"] == monitor and s["best_epoch"] == int(best_of(values)) + 1  # first of the ties
        assert s[f"best_{monitor}"] == pytest.approx(values[s["best_epoch"] - 1])
        r1 = [float(r["retrieval_r1"]) for r in rows]  # the other evaluators: every eval_every epochs
        assert math.isnan(r1[0]) and math.isnan(r1[2]) and not math.isnan(r1[1]) and not math.isnan(r1[3])
        assert 0.0 <= min(v for v in values if not math.isnan(v))


def test_a_monitor_the_run_does_not_log_is_refused(tmp_path, tiny_bert, tiny_synthetic):
    with pytest.raises(ConfigError, match=r"train.monitor = 'zeroshot_top1'.*train.eval.zeroshot"):
        ClapTrainer(_cfg(tiny_bert, tiny_synthetic, "train.monitor=zeroshot_top1"), tmp_path / "a")
    with pytest.raises(ConfigError, match="train.eval.probe: no such evaluator; registered: .*retrieval.*sts_dev.*zeroshot"):
        ClapTrainer(_cfg(tiny_bert, tiny_synthetic, "train.eval={probe: x}"), tmp_path / "b")
    with pytest.raises(ConfigError, match="train.eval.zeroshot: this recipe has no"):  # train cse has no media tower
        from clapkit.training.monitors import Evaluators

        Evaluators(_cfg(tiny_bert, tiny_synthetic, "train.eval.zeroshot=folder:x"), None, torch.device("cpu"), allowed=())


def test_an_evaluator_registered_in_one_file_is_logged_and_can_be_the_monitor(tmp_path, tiny_bert, tiny_synthetic):
    """A new evaluator is one file: registered (here, from this test file) under a name,
    train.eval.<name> logs its metric every eval_every windows and train.monitor may pick it."""
    from clapkit.training import evaluators

    @evaluators.register_evaluator("scale", ("logit_scale",), needs="media")
    class Scale:
        def __init__(self, spec, cfg, medium):
            self.factor = float(spec)

        def __call__(self, model, batch_size, device):
            return {"logit_scale": self.factor * float(model.logit_scale.exp())}

    try:
        s = train_clap(_cfg(tiny_bert, tiny_synthetic, "train.epochs=2", "train.eval.scale=2", "train.monitor=logit_scale"),
                       tmp_path / "run")
        rows = _rows(tmp_path / "run")
        values = [float(r["logit_scale"]) for r in rows]
        assert s["monitor"] == "logit_scale" and s["best_epoch"] == int(np.argmax(values)) + 1 and values[0] > 2.0
    finally:
        evaluators._EVALUATORS.pop("scale", None)


def test_validation_uses_the_training_objective_unless_told_clip(tmp_path, tiny_bert, tiny_synthetic):
    cyclip = ("train.cyclip.in_modal=0.5", "train.cyclip.cross_modal=0.5", "train.epochs=1", "data.val_fraction=0.4")
    logged = {}
    for choice in ("train", "clip"):
        tr = ClapTrainer(_cfg(tiny_bert, tiny_synthetic, *cyclip, f"train.val_objective={choice}"), tmp_path / choice)
        tr.fit()  # the row's validation ran on the final model: recompute both from it
        with_terms, plain = tr.val_loss(objective=True), tr.val_loss(objective=False)
        assert with_terms > plain  # CyCLIP's terms are >= 0 and not all zero
        logged[choice] = float(_rows(tmp_path / choice)[0]["val_loss"])
        assert logged[choice] == pytest.approx(with_terms if choice == "train" else plain, rel=1e-6)
    assert _rows(tmp_path / "train")[0]["train_loss"] == _rows(tmp_path / "clip")[0]["train_loss"]  # training alike


# --- the audio backbone on the loop --------------------------------------------------------------
def _backbone(bert, synthetic, *extra):
    return load_config(None, tiny_overrides(bert) + [f"backbone.data=folder:{synthetic / 'unseen'}", "backbone.batch_size=2",
                                                     *extra])


def test_the_backbone_resumes_exactly_and_stops_on_sigterm(tmp_path, tiny_bert, tiny_synthetic, monkeypatch):
    from clapkit.training.backbone import BackboneTrainer, train_audio_backbone

    train_audio_backbone(_backbone(tiny_bert, tiny_synthetic, "backbone.epochs=2"), tmp_path / "two")
    step = BackboneTrainer.step
    calls = []

    def step_then_term(self, batch):
        out = step(self, batch)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(BackboneTrainer, "step", step_then_term)
    s = train_audio_backbone(_backbone(tiny_bert, tiny_synthetic, "backbone.epochs=2"), tmp_path / "cut")
    monkeypatch.setattr(BackboneTrainer, "step", step)
    assert s["stopped"] == "SIGTERM" and s["steps"] == 3
    train_audio_backbone(_backbone(tiny_bert, tiny_synthetic, "backbone.epochs=2"), tmp_path / "cut", resume=True)
    a, b = _weights(tmp_path / "two" / "last"), _weights(tmp_path / "cut" / "last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert load_file(str(tmp_path / "cut" / "audio_tower.safetensors")).keys() == \
        load_file(str(tmp_path / "two" / "audio_tower.safetensors")).keys()
    assert [r["epoch"] for r in _rows(tmp_path / "cut")] == ["1", "2"]


def test_the_backbone_skips_a_non_finite_step(tmp_path, tiny_bert, tiny_synthetic, monkeypatch):
    from clapkit.training.backbone import BackboneTrainer

    tr = BackboneTrainer(_backbone(tiny_bert, tiny_synthetic, "backbone.epochs=1"), tmp_path)
    real = tr.net.forward
    count = []

    def nan_once(x):
        count.append(1)
        out = real(x)
        return out * float("nan") if len(count) == 1 else out

    monkeypatch.setattr(tr.net, "forward", nan_once)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    s = tr.fit()
    assert s["skipped_steps"] == 1 and s["steps"] >= 2
    assert all(torch.isfinite(v).all() for v in tr.model.state_dict().values() if v.is_floating_point())
    assert any(not torch.equal(before[k], v) for k, v in tr.model.state_dict().items())


# --- configs --------------------------------------------------------------------------------------
def _old_layout(cfg: dict) -> dict:
    """``cfg`` written the way config_version 1 and 2 wrote it: the runtime keys in train and data."""
    from clapkit.config import MOVED

    cfg = {k: v for k, v in cfg.items() if k != "runtime"}
    for old, new in MOVED.items():
        cfg[old[0]][old[1]] = load_config(None)[new[0]][new[1]]
    return cfg


def test_a_config_dump_from_before_the_loop_keeps_its_validation_loss(tmp_path):
    import yaml

    old = _old_layout(load_config(None, ["runtime.precision=bf16"]))
    old.pop("config_version")
    old["train"].pop("val_objective")
    old["train"]["precision"] = "bf16"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    with pytest.warns(UserWarning, match="before config_version 2.*train.val_objective = clip"):
        cfg = load_config(str(path))
    assert cfg["train"]["val_objective"] == "clip" and cfg["config_version"] == 3
    assert cfg["runtime"]["precision"] == "bf16" and "precision" not in cfg["train"]
    partial = tmp_path / "mine.yaml"  # a user's own partial file is no dump: today's defaults
    partial.write_text("train:\n  epochs: 3\n")
    assert load_config(str(partial))["train"]["val_objective"] == "train"


def test_the_runtime_keys_old_names_are_read_at_their_new_place(tmp_path):
    import warnings

    import yaml

    from clapkit.config import complete

    v2 = _old_layout(load_config(None))
    v2["config_version"] = 2
    v2["train"]["device"], v2["data"]["num_workers"] = "cpu", 3
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(v2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # moving keys changes nothing a run computes: no warning
        cfg = load_config(str(path))
    assert cfg == load_config(None, ["runtime.device=cpu", "runtime.num_workers=3"])
    assert cfg["config_version"] == 3 and "device" not in cfg["train"] and "num_workers" not in cfg["data"]
    # --set lines and a checkpoint's config.json of the old layout
    assert load_config(None, ["train.precision=bf16", "data.skip_bad=true"])["runtime"] == {
        **load_config(None)["runtime"], "precision": "bf16", "skip_bad": True}
    assert complete(v2)["runtime"]["device"] == "cpu"
    with pytest.raises(ConfigError, match=r"'train.precision' \(the old name of 'runtime.precision'\) = 'bf16' "
                                          r"contradicts 'runtime.precision' = 'fp16'"):
        path.write_text("train: {precision: bf16}\nruntime: {precision: fp16}\n")
        load_config(str(path))
    with pytest.raises(ConfigError, match="'runtime.num_workers' = -1"):
        load_config(None, ["runtime.num_workers=-1"])


def test_every_preset_carries_only_its_recipes_sections_and_the_runtime():
    import yaml

    from clapkit.config import RECIPE_SECTIONS, _preset_path, list_presets

    for name in list_presets():
        data = yaml.safe_load(_preset_path(name).read_text())
        recipe = data["recipe"] if "recipe" in data else load_config(name)["recipe"]
        assert recipe in RECIPE_SECTIONS, name
        extra = set(data) - {"base", "recipe", "seed", "runtime", *RECIPE_SECTIONS[recipe]}
        assert not extra, f"{name} carries {extra}, which recipe {recipe} does not read"


def test_clapkit_config_prints_the_sections_of_the_presets_recipe():
    import yaml
    from typer.testing import CliRunner

    from clapkit.cli import app

    for preset, sections in (("cse-cpu", {"data", "cse", "train"}), ("demo", {"data", "audio", "image", "model", "train"})):
        out = CliRunner().invoke(app, ["config", "--config", preset])
        assert out.exit_code == 0, out.output
        shown = yaml.safe_load(out.output.split("# presets:")[0])
        assert set(shown) == {"config_version", "recipe", "seed", "runtime"} | sections, preset
        assert shown["recipe"] == ("cse" if preset == "cse-cpu" else "clap")
        whole = yaml.safe_load(CliRunner().invoke(app, ["config", "--config", preset, "--all"]).output.split("# presets:")[0])
        assert set(whole) == set(load_config(None)) and whole[next(iter(sections))] == shown[next(iter(sections))]
    with pytest.raises(ConfigError, match="'recipe' = 'clapp'"):
        load_config(None, ["recipe=clapp"])
