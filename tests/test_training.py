import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import same_weights, tiny_image_overrides, tiny_overrides
from safetensors.torch import load_file

from clapkit.config import load_config
from clapkit.errors import ConfigError, DataError
from clapkit.training.clap import ClapTrainer, split_pairs, train_clap
from clapkit.training.common import atomic_dir, epoch_order, recover_dir, save_run, set_determinism


def _cfg(tiny_bert, synthetic, *extra):
    return load_config(None, tiny_overrides(tiny_bert) + [f"data.train=[csv:{synthetic / 'train.csv'}]", *extra])


def _val_losses(run: Path) -> list[float]:
    with open(run / "metrics.csv") as fh:
        return [float(r["val_loss"]) for r in csv.DictReader(fh)]


def test_tiny_training_lowers_validation_loss_and_writes_outputs(tmp_path, tiny_synthetic):
    # the shipped MiniLM frozen (cached), a tiny audio CNN learning
    cfg = _cfg("minilm", tiny_synthetic, "train.epochs=6", "train.frozen_epochs=6", "train.frozen_backbones=[text]",
               "train.lr_frozen=3e-3", "model.audio.channels=[8, 16]")
    summary = train_clap(cfg, tmp_path)
    losses = _val_losses(tmp_path)
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 0.3, losses
    assert summary["train_pairs"] + summary["val_pairs"] == 24 * 3 * 2
    assert summary["val_pairs"] == round(0.2 * 144)
    for name in ("config.json", "model.safetensors", "text/config.json"):
        assert (tmp_path / "checkpoint" / name).exists()
    assert (tmp_path / "last" / "trainer_state.pt").exists()
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 6 and saved["model"]["audio"]["channels"] == [8, 16]
    # the text tower of a checkpoint loads on its own
    from transformers import AutoModel

    AutoModel.from_pretrained(tmp_path / "checkpoint" / "text")


def test_resume_continues_exactly(tmp_path, tiny_bert, tiny_synthetic):
    """2 epochs + resume + 1 epoch == 3 epochs, across a frozen->unfrozen switch."""
    common = ("train.frozen_epochs=1", "train.lr_frozen=3e-3")
    train_clap(_cfg(tiny_bert, tiny_synthetic, "train.epochs=3", *common), tmp_path / "straight")
    train_clap(_cfg(tiny_bert, tiny_synthetic, "train.epochs=2", *common), tmp_path / "resumed")
    train_clap(_cfg(tiny_bert, tiny_synthetic, "train.epochs=3", *common), tmp_path / "resumed", resume=True)
    a = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ta = load_file(tmp_path / "straight" / "last" / "text" / "model.safetensors")
    tb = load_file(tmp_path / "resumed" / "last" / "text" / "model.safetensors")
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert _val_losses(tmp_path / "straight") == _val_losses(tmp_path / "resumed")


def test_resume_without_a_run_is_a_clear_error(tmp_path, tiny_bert, tiny_synthetic):
    with pytest.raises(ConfigError, match="no resumable run"):
        ClapTrainer(_cfg(tiny_bert, tiny_synthetic), tmp_path / "empty", resume=True)


def test_frozen_cache_gives_the_same_losses_as_no_cache(tmp_path, tiny_bert, tiny_synthetic):
    args = ("train.epochs=2", "train.frozen_epochs=2", "model.projector.dropout=0", "train.lr_frozen=3e-3")
    train_clap(_cfg(tiny_bert, tiny_synthetic, *args, "train.cache_frozen=true", "audio.segment_seconds=0.5"), tmp_path / "c")
    train_clap(_cfg(tiny_bert, tiny_synthetic, *args, "train.cache_frozen=false", "audio.segment_seconds=0.5"), tmp_path / "n")
    # clips are exactly segment long, so the cached segment equals every epoch's segment
    assert _val_losses(tmp_path / "c") == pytest.approx(_val_losses(tmp_path / "n"), abs=1e-5)


def test_bad_audio_in_manifest_fails_then_skips_and_counts(tmp_path, tiny_bert, tiny_synthetic):
    rows = (tiny_synthetic / "train.csv").read_text().splitlines()
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (tmp_path / "empty.wav").write_bytes(b"")
    for name in ("broken.wav", "empty.wav"):
        rows.append(f"{tmp_path / name},a caption")
    manifest = tmp_path / "train.csv"
    manifest.write_text("\n".join(rows).replace("audio/", f"{tiny_synthetic}/audio/") + "\n")
    base = tiny_overrides(tiny_bert) + [f"data.train=[csv:{manifest}]", "train.epochs=1"]
    with pytest.raises(DataError, match=r"train.csv line 146: .*broken.wav.*2 bad audio file"):
        train_clap(load_config(None, base), tmp_path / "run")
    summary = train_clap(load_config(None, base + ["runtime.skip_bad=true"]), tmp_path / "run")
    assert summary["skipped"]["count"] == 2
    assert summary["train_pairs"] + summary["val_pairs"] == 144


def test_split_by_audio_keeps_captions_together(tiny_synthetic):
    from clapkit.data.audio.captions import load_pairs

    pairs = load_pairs(f"csv:{tiny_synthetic / 'train.csv'}")
    train, val = split_pairs(pairs, 0.2, "audio", seed=0)
    assert not ({p.media for p in train} & {p.media for p in val})
    assert len(train) + len(val) == len(pairs)
    t2, v2 = split_pairs(pairs, 0.2, "pair", seed=0)
    assert len(v2) == round(0.2 * len(pairs))
    assert split_pairs(pairs, 0.2, "pair", seed=0) == (t2, v2)  # seeded


def test_atomic_dir_keeps_old_copy_on_failure(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("half-written")
            raise RuntimeError("crash while saving")
    assert (target / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    # a crash between the two renames leaves ckpt.old, which recover_dir restores
    target.rename(tmp_path / "ckpt.old")
    assert (recover_dir(target) / "a.txt").read_text() == "v1"


class _TagModel:
    """A stand-in model whose save() writes its tag (and can be told to crash)."""

    def __init__(self, tag: str, crash_on: str | None = None):
        self.tag, self.crash_on = tag, crash_on

    def save(self, folder: Path) -> None:
        if self.crash_on and self.crash_on in str(Path(folder).name):
            raise KeyboardInterrupt("killed while saving")
        (Path(folder) / "tag").write_text(self.tag)


def test_save_run_writes_the_best_model_before_last(tmp_path):
    """A crash after last/ but before checkpoint/ would leave a stale best model that
    resume never rewrites (last/ already records the new best). checkpoint/ goes first:
    a crash while writing last/ leaves last/ at the previous epoch, which resume redoes."""
    def run(tag, epoch, improved, crash_on=None):
        model = _TagModel(tag, crash_on)

        def last(folder):
            model.save(folder)
            torch.save({"epoch": epoch}, folder / "trainer_state.pt")

        save_run(tmp_path, model.save if improved else None, last)

    run("epoch1", 1, improved=True)
    with pytest.raises(KeyboardInterrupt):
        run("epoch2", 2, improved=True, crash_on=".last.")
    assert (tmp_path / "checkpoint" / "tag").read_text() == "epoch2"
    assert (tmp_path / "last" / "tag").read_text() == "epoch1"
    assert torch.load(tmp_path / "last" / "trainer_state.pt")["epoch"] == 1
    run("epoch3", 3, improved=False)
    assert (tmp_path / "checkpoint" / "tag").read_text() == "epoch2"
    assert (tmp_path / "last" / "tag").read_text() == "epoch3"


def test_epoch_seed_differs_per_rank_and_repeats_per_rank():
    """Each DDP rank holds different rows, so its dropout masks must be its own: torch
    is seeded per (seed, epoch, rank); the order of the epoch is the same on every rank."""
    draws = {}
    for rank in (0, 1):
        order = epoch_order(5, 2, 10, rank=rank)
        draws[rank] = (order, torch.rand(4))
    assert (draws[0][0] == draws[1][0]).all()
    assert not torch.equal(draws[0][1], draws[1][1])
    order = epoch_order(5, 2, 10, rank=1)
    assert torch.equal(torch.rand(4), draws[1][1])
    epoch_order(5, 3, 10, rank=1)
    assert not torch.equal(torch.rand(4), draws[1][1])


def test_set_determinism_flags():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    try:
        set_determinism(True, torch.device("cuda", 0))
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
        set_determinism(False, torch.device("cuda", 0))
        assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
        set_determinism(True, torch.device("cpu"))  # CPU kernels are deterministic already: nothing set
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="unknown config key 'train.batchsize'"):
        load_config(None, ["train.batchsize=3"])
    with pytest.raises(ConfigError, match="model.text.pooling = 'max'; the old names are cls, cls_before_pooler, mean"):
        load_config(None, ["model.text.pooling=max"])
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("no-such-preset")
    assert load_config("paper")["model"]["audio"]["name"] == "cnn14"
    assert load_config(None, ["train.lr_frozen=1e-4"])["train"]["lr_frozen"] == 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["clip", "soft_clip", "cyclip_image", "public_clap", "joint_se", "siglip"])
def test_ddp_two_processes_equal_one_process(tmp_path, tiny_bert_no_dropout, tiny_synthetic, tiny_checkpoint,
                                             tiny_images, loss):
    """Under torchrun with 2 gloo processes, one real step (media and text towers running
    and trainable, backward, clipping, Adam) gives the loss over the global batch, the
    gradients and the updated weights of one process on the same global batch; for the
    CLIP loss and the soft-labelled loss (teacher embeddings from the cache, which both
    processes fill, each its share) of an audio model, CLIP + CyCLIP for an image model, and a public
    transformers ClapModel fine-tuned in place (its logit_scale_t gets no gradient), and CLIP + 0.5 x
    SimCSE on the captions (train.se), its loss over the global batch of captions."""
    from conftest import write_tiny_public_model

    if loss == "public_clap":
        public = write_tiny_public_model("clap", tmp_path / "public", dropout=False)
        overrides = [f"model.init_from={public}", f"data.train=[csv:{tiny_synthetic / 'train.csv'}]",
                     "train.batch_size=16", "runtime.progress=false", "train.frozen_epochs=0"]
    elif loss == "cyclip_image":
        overrides = tiny_image_overrides(tiny_bert_no_dropout) + [
            f"data.train=[csv:{tiny_images / 'train.csv'}]", "model.projector.dropout=0", "train.batch_size=16",
            "train.cyclip.in_modal=0.25", "train.cyclip.cross_modal=0.25", "train.optimizer=adamw",
            "train.weight_decay=0.1"]  # random crops and flips: each rank must draw what one process draws
    else:
        overrides = tiny_overrides(tiny_bert_no_dropout) + [
            f"data.train=[csv:{tiny_synthetic / 'train.csv'}]", "model.projector.dropout=0", "model.audio.dropout=0",
            "train.batch_size=16", f"train.loss={'clip' if loss == 'joint_se' else loss}",
            f"train.soft.teacher={tiny_checkpoint}",
            "audio.segment_seconds=0.25",  # random segments: each rank must draw what one process draws
        ] + (["train.se.weight=0.5"] if loss == "joint_se" else [])  # SimCSE on the captions, over the global batch
    cfg = load_config(None, overrides)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    worker = Path(__file__).with_name("ddp_worker.py")
    for n in (1, 2):
        out = tmp_path / f"n{n}"
        out.mkdir()
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
             str(29500 + n + {"clip": 0, "soft_clip": 10, "cyclip_image": 20, "public_clap": 30, "joint_se": 40,
                                    "siglip": 50}[loss]), str(worker),
             str(out), str(cfg_path)],
            capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    one = torch.load(tmp_path / "n1" / "rank0.pt")
    r0, r1 = (torch.load(tmp_path / "n2" / f"rank{r}.pt") for r in (0, 1))
    assert r0["batch"] + r1["batch"] == one["batch"]  # the two shares make the global batch
    assert r0["loss"] == pytest.approx(one["loss"], abs=1e-6)
    assert r1["loss"] == pytest.approx(one["loss"], abs=1e-6)
    assert set(one["grads"]) == set(r0["grads"]) == set(one["weights"])
    media, text = {"cyclip_image": ("image.", "text."), "public_clap": ("model.audio_model.", "model.text_model.")}.get(
        loss, ("audio.", "text."))
    assert any(k.startswith(media) for k in one["grads"]) and any(k.startswith(text) for k in one["grads"])
    for k, g in one["grads"].items():
        torch.testing.assert_close(r0["grads"][k], g, atol=1e-6, rtol=1e-4, msg=k)
        torch.testing.assert_close(r1["grads"][k], g, atol=1e-6, rtol=1e-4, msg=k)
    # Adam's first step moves a weight by lr * g / (|g| + eps): where |g| is near eps the
    # step follows the gradient's rounding noise (a key bias has a true gradient of 0), so
    # the updated weights are compared where the gradient is clearly above it (or exactly 0).
    compared = total = 0
    for k, w in one["weights"].items():
        g = one["grads"][k]
        clear = (g.abs() > 1e-6) | (g == 0)  # exactly 0: unused embedding rows, not moved
        compared, total = compared + int(clear.sum()), total + clear.numel()
        torch.testing.assert_close(r0["weights"][k][clear], w[clear], atol=1e-6, rtol=1e-5, msg=k)
        torch.testing.assert_close(r1["weights"][k][clear], w[clear], atol=1e-6, rtol=1e-5, msg=k)
    assert compared > 0.9 * total
    if loss == "soft_clip":  # both processes embedded their share of what the cache lacked (rank 0 wrote it)
        assert r0["teacher_cache"]["audio_computed"] > 0 and r0["teacher_cache"]["text_computed"] > 0
        assert r1["teacher_cache"] == r0["teacher_cache"]


def test_early_stopping_stops_after_patience(tmp_path, tiny_bert, tiny_synthetic):
    # lr 0: only BatchNorm statistics move, and the validation loss soon stops improving
    cfg = _cfg(tiny_bert, tiny_synthetic, "train.epochs=10", "train.lr_unfrozen=0", "train.early_stopping_patience=2")
    summary = train_clap(cfg, tmp_path)
    losses = _val_losses(tmp_path)
    assert summary["epochs_run"] < 10
    assert summary["epochs_run"] - summary["best_epoch"] == 2  # stopped exactly `patience` epochs after the best
    assert min(losses) == losses[summary["best_epoch"] - 1] == summary["best_val_loss"]


def test_paper_preset_builds_cnn14_at_44k(tiny_bert):
    from clapkit.models.dual import DualEncoder

    cfg = load_config("paper", [f"model.text.name={tiny_bert}"])
    assert (cfg["audio"]["sample_rate"], cfg["train"]["batch_size"], cfg["train"]["frozen_epochs"]) == (44100, 128, 5)
    model = DualEncoder(cfg).eval()
    with torch.no_grad():
        e_a, e_t, scale = model(media=torch.randn(2, 44100 * 5), tokens=model.text.tokenize(["a dog", "rain"]))
    assert e_a.shape == e_t.shape == (2, 1024)
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert torch.allclose(e_a.norm(dim=1), torch.ones(2), atol=1e-5)


def test_loader_workers_do_not_change_the_run(tmp_path, tiny_bert, tiny_synthetic):
    """Segments are seeded per (seed, epoch, item), so worker processes draw the same ones."""
    # 0.25 s random segments of the 0.5 s clips
    args = ("train.epochs=1", "audio.segment_seconds=0.25")
    train_clap(_cfg(tiny_bert, tiny_synthetic, *args, "runtime.num_workers=0"), tmp_path / "w0")
    train_clap(_cfg(tiny_bert, tiny_synthetic, *args, "runtime.num_workers=2"), tmp_path / "w2")
    a = load_file(tmp_path / "w0" / "last" / "model.safetensors")
    b = load_file(tmp_path / "w2" / "last" / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_loader_workers_and_their_wave_caches_live_across_epochs(tmp_path, tiny_bert, tiny_synthetic, monkeypatch):
    """The training DataLoader keeps its workers (persistent_workers), so each worker's
    decoded-wave cache survives the epoch: over 4 epochs a clip is decoded at most once
    per worker (2 workers), where a loader rebuilt every epoch decodes every clip 4 times.
    The segments drawn stay those of (seed, epoch, item): the weights equal 0 workers'."""
    import clapkit.data.datasets as datasets

    log = tmp_path / "decodes.log"
    real = datasets.load_audio

    def counted(path, *args, **kwargs):
        with open(log, "a") as fh:  # workers are forked: they append to the same file
            fh.write(f"{path}\n")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_audio", counted)
    args = ("train.epochs=4", "audio.segment_seconds=0.25", "data.val_fraction=0")
    train_clap(_cfg(tiny_bert, tiny_synthetic, *args, "runtime.num_workers=2"), tmp_path / "w2")
    decodes = log.read_text().splitlines()
    clips = len(set(decodes))
    assert clips > 10 and len(decodes) <= 2 * clips
    train_clap(_cfg(tiny_bert, tiny_synthetic, *args, "runtime.num_workers=0"), tmp_path / "w0")
    a = load_file(tmp_path / "w0" / "last" / "model.safetensors")
    b = load_file(tmp_path / "w2" / "last" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_yaml_config_can_start_from_a_preset(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: paper\ntrain:\n  batch_size: 32\n")
    cfg = load_config(tmp_path / "mine.yaml")
    assert cfg["train"]["batch_size"] == 32 and cfg["model"]["audio"]["name"] == "cnn14"
    assert load_config("leakage-paper")["train"]["frozen_epochs"] == 5
    (tmp_path / "loop.yaml").write_text(f"base: {tmp_path / 'loop.yaml'}\n")
    with pytest.raises(ConfigError, match="makes a cycle"):
        load_config(tmp_path / "loop.yaml")


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path, tiny_bert, tiny_synthetic):
    """runtime.save_every_steps: a process killed with SIGKILL just after the step
    checkpoint of epoch 2, batch 3 (of 7) resumes mid-epoch to the weights, the
    optimizer state and the per-epoch losses of the run that was never killed (dropout
    on: the RNG state is part of the checkpoint)."""
    cfg = _cfg(tiny_bert, tiny_synthetic, "train.epochs=3", "runtime.save_every_steps=2", "train.frozen_epochs=1",
               "train.lr_frozen=3e-3", "train.schedule=cosine", "train.optimizer=adamw", "train.weight_decay=0.1")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    train_clap(load_config(cfg_path), tmp_path / "straight")
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("kill_worker.py")), str(cfg_path),
                           str(tmp_path / "killed"), "1", "3"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]  # killed, not finished
    state = torch.load(tmp_path / "killed" / "last" / "trainer_state.pt", weights_only=False)["state"]
    assert (state["window"], state["step_in_window"], state["step"]) == (1, 3, 10)  # 7 batches an epoch, saves every 2
    summary = train_clap(load_config(cfg_path), tmp_path / "killed", resume=True)
    assert summary["steps"] == 21 and summary["epochs_run"] == 3
    same_weights(tmp_path / "straight" / "last", tmp_path / "killed" / "last")
    a = torch.load(tmp_path / "straight" / "last" / "trainer_state.pt", weights_only=False)
    b = torch.load(tmp_path / "killed" / "last" / "trainer_state.pt", weights_only=False)
    for sa, sb in zip(a["updates"]["model"]["optimizer"]["state"].values(), b["updates"]["model"]["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    with open(tmp_path / "straight" / "metrics.csv") as fa, open(tmp_path / "killed" / "metrics.csv") as fb:
        ra, rb = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    assert [r["train_loss"] for r in ra] == [r["train_loss"] for r in rb]
    assert [r["val_loss"] for r in ra] == [r["val_loss"] for r in rb]


def test_sigterm_saves_last_and_the_resumed_run_finishes_exactly(tmp_path, tiny_bert, tiny_synthetic, monkeypatch):
    import os
    import signal

    cfg = ("train.epochs=2",)
    train_clap(_cfg(tiny_bert, tiny_synthetic, *cfg), tmp_path / "straight")
    step = ClapTrainer.train_step

    def step_then_term(self, idx, media=None, captions=None):
        loss = step(self, idx, media, captions)
        if self.state["step"] == 9:  # the scheduler's notice arrives during step 10
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(ClapTrainer, "train_step", step_then_term)
    summary = train_clap(_cfg(tiny_bert, tiny_synthetic, *cfg), tmp_path / "run")
    assert summary["stopped"] == "SIGTERM" and summary["steps"] == 10 and summary["epochs_run"] == 1
    monkeypatch.setattr(ClapTrainer, "train_step", step)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is the run's only
    summary = train_clap(_cfg(tiny_bert, tiny_synthetic, *cfg), tmp_path / "run", resume=True)
    assert "stopped" not in summary and summary["steps"] == 14
    same_weights(tmp_path / "straight" / "last", tmp_path / "run" / "last")


def test_a_non_finite_batch_is_skipped_and_counted_and_a_run_of_them_stops(tmp_path, tiny_bert, tiny_synthetic, monkeypatch):
    from clapkit.errors import TrainingError

    inputs = ClapTrainer._inputs
    poisoned: set[int] = set()

    def with_nan(self, split, idx, media=None, captions=None):
        out = inputs(self, split, idx, media, captions)
        if split == "train" and self.state["step"] in poisoned:
            out["media"] = out["media"].clone()
            out["media"][0, 0] = float("nan")
        return out

    monkeypatch.setattr(ClapTrainer, "_inputs", with_nan)
    poisoned.add(3)
    summary = train_clap(_cfg(tiny_bert, tiny_synthetic, "train.epochs=1"), tmp_path / "one")
    assert summary["skipped_steps"] == 1 and summary["steps"] == 7
    weights = load_file(tmp_path / "one" / "last" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
    poisoned.update(range(4, 100))  # from step 4 on every batch is bad: the 2nd in a row stops the run
    with pytest.raises(TrainingError, match=r"2 non-finite steps in a row \(runtime.max_bad_steps = 2\) at step 5"):
        train_clap(_cfg(tiny_bert, tiny_synthetic, "train.epochs=1", "runtime.max_bad_steps=2", "runtime.save_every_steps=1"),
                   tmp_path / "stop")
    state = torch.load(tmp_path / "stop" / "last" / "trainer_state.pt", weights_only=False)["state"]
    assert state["step"] == 4 and state["skipped_steps"] == 1  # the last save is the one after the first bad step
    assert all(torch.isfinite(v).all() for v in load_file(tmp_path / "stop" / "last" / "model.safetensors").values())


def test_bf16_step_stays_close_to_fp32_and_the_frontend_stays_fp32(tmp_path, tiny_bert_no_dropout, tiny_synthetic):
    """One step's loss and gradients in bf16 autocast against fp32 on the same batch,
    weights and (no) dropout: loss within 2% and gradients with cosine similarity
    above 0.99 and norms within 5% (stated tolerance); the log-mel frontend gives the
    same float32 output under autocast as without it."""
    from clapkit.models.frontend import LogMel

    result = {}
    for precision in ("fp32", "bf16"):
        cfg = _cfg(tiny_bert_no_dropout, tiny_synthetic, f"runtime.precision={precision}", "model.projector.dropout=0",
                   "model.audio.dropout=0")
        trainer = ClapTrainer(cfg, tmp_path / precision)
        trainer._start_phase("unfrozen")
        trainer.model.eval()  # BatchNorm with running statistics: the same on both sides
        batch = trainer._batches(0)[0]
        loss = trainer._loss(**trainer._inputs("train", batch), idx=batch)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
        result[precision] = (loss.item(), grads)
    (l32, g32), (l16, g16) = result["fp32"], result["bf16"]
    assert l16 == pytest.approx(l32, rel=0.02)
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.99
    assert g16.norm().item() == pytest.approx(g32.norm().item(), rel=0.05)
    assert l16 != l32  # bf16 really ran
    mel = LogMel(8000, 256, 128, 16, 0, 4000)
    wave = torch.randn(2, 4000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mel(wave)
    assert out.dtype == torch.float32 and torch.equal(out, mel(wave))


def test_an_unwritable_run_folder_and_a_full_disk_are_named(tmp_path, tiny_bert, tiny_synthetic, monkeypatch):
    import errno

    import clapkit.training.loop as clap  # the one loop writes every recipe's checkpoints
    from clapkit.errors import TrainingError

    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"--out .*a-file/run: cannot write the run folder"):
        ClapTrainer(_cfg(tiny_bert, tiny_synthetic), tmp_path / "a-file" / "run")
    real, calls = clap.save_run, []

    def full_disk(out, write_checkpoint, write_last):
        calls.append(out)
        if len(calls) == 2:  # the second save finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(out, write_checkpoint, write_last)

    monkeypatch.setattr(clap, "save_run", full_disk)
    with pytest.raises(TrainingError, match=r"run: saving the checkpoint failed .*No space left.*previous checkpoint"):
        train_clap(_cfg(tiny_bert, tiny_synthetic, "train.epochs=3"), tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last" / "trainer_state.pt", weights_only=False)["state"]
    assert state["window"] == 1  # last/ is the first epoch's, whole
    monkeypatch.setattr(clap, "save_run", real)
    assert train_clap(_cfg(tiny_bert, tiny_synthetic, "train.epochs=3"), tmp_path / "run", resume=True)["epochs_run"] == 3


@pytest.mark.parametrize("cap", [100.0, 0.0])
def test_the_logit_scale_is_capped_after_every_step(tmp_path, tiny_bert, tiny_synthetic, cap):
    """CLIP, open_clip, LAION-CLAP and CyCLIP clamp logit_scale to [0, ln 100] after each
    optimizer step. On an easy batch the CLIP loss falls as the scale grows, so a step
    with a large lr pushes the scale past 100 unless it is capped."""
    import math

    from clapkit.losses import clip_loss

    # matched pairs on top, near-duplicate negatives (cosine 0.99): not yet saturated at scale 100
    easy = torch.nn.functional.normalize(torch.eye(5)[0] + 0.1 * torch.eye(5)[1:], dim=1)
    scale = torch.tensor(100.0, requires_grad=True)
    clip_loss(easy, easy, scale).backward()
    assert scale.grad < 0  # an easy batch wants a larger scale
    cfg = _cfg(tiny_bert, tiny_synthetic, "model.init_temperature=0.01", "train.lr_unfrozen=1.0",
               f"train.max_logit_scale={cap}", "train.grad_clip=0")
    assert cfg["model"]["logit_clamp"] is None  # the references never clamp the logits
    trainer = ClapTrainer(cfg, tmp_path / str(cap))
    trainer._start_phase("unfrozen")
    assert trainer.model.scale().item() == pytest.approx(100.0)
    # the easy batch's loss, with perfectly matched embeddings: only the scale is free to move
    trainer._loss = lambda **_: clip_loss(easy, easy, trainer.model.scale())
    assert trainer.train_step(list(range(16))) is not None
    after = trainer.model.scale().item()
    if cap:
        # capped at ln 100 (exp of its float32 value is 100 to rounding)
        assert trainer.model.logit_scale.item() == torch.tensor(math.log(100.0)).item()
        assert after == pytest.approx(100.0, rel=1e-6)
    else:
        assert after > 100.0


def test_the_paper_preset_keeps_the_seeds_logit_clamp():
    assert load_config("paper")["model"]["logit_clamp"] == 100.0
    assert load_config("clip-paper")["model"]["logit_clamp"] is None


def test_no_batch_holds_two_captions_of_one_clip(tmp_path, tiny_bert, tiny_synthetic):
    """Every caption paired with its clip (the S2 recipe) puts several captions of a clip
    in a batch, each the others' false negative; data.no_duplicate_media (on by default)
    keeps them apart, and data.captions: one takes one caption per clip per epoch."""
    from collections import Counter

    def batches(*extra):
        tr = ClapTrainer(_cfg(tiny_bert, tiny_synthetic, "train.batch_size=32", *extra), tmp_path / str(len(extra)))
        pairs = tr.data.train
        return [[pairs[i].media_id for i in b] for e in range(3) for b in tr._batches(e)], tr

    off, _ = batches("data.no_duplicate_media=false")
    assert any(max(Counter(b).values()) > 1 for b in off)  # what the rule is for
    on, tr = batches()
    assert all(max(Counter(b).values()) == 1 and len(b) == 32 for b in on)
    assert len(on) == 3 * tr._batches_per_epoch()
    assert tr._batches(1) == tr._batches(1)  # seeded by (seed, epoch): resume draws the same batches
    one, tr1 = batches("data.captions=one")
    media = {p.media_id for p in tr1.data.train}
    assert all(max(Counter(b).values()) == 1 for b in one) and tr1._batches_per_epoch() == len(media) // 32
    first = [m for b in tr1._batches(0) for m in b]
    assert len(set(first)) == len(first)  # one caption per clip in the epoch


def test_paper_presets_plateau_schedule_is_torchs_on_the_logged_validation_losses(tmp_path, tiny_bert, tiny_synthetic):
    """The `paper` preset's ReduceLROnPlateau (factor 0.1, patience on the validation loss),
    a fresh one per phase: the learning rate of every epoch in metrics.csv is what torch's
    own scheduler gives when it is stepped with the logged validation losses."""
    cfg = load_config("paper", tiny_overrides(tiny_bert) + [
        f"data.train=[csv:{tiny_synthetic / 'train.csv'}]", "train.epochs=9", "train.frozen_epochs=2",
        "train.lr_frozen=1e-2", "train.lr_unfrozen=2e-2", "train.plateau_patience=1", "train.early_stopping_patience=0",
        "model.text.name=" + tiny_bert])
    assert cfg["train"]["schedule"] != "cosine" and cfg["train"]["plateau_factor"] == 0.1
    train_clap(cfg, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    expected = []
    for phase, lr in (("frozen", 1e-2), ("unfrozen", 2e-2)):
        param = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.Adam([param], lr=lr)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=1)
        for row in (r for r in rows if r["phase"] == phase):
            expected.append(opt.param_groups[0]["lr"])
            plateau.step(float(row["val_loss"]))
    logged = [float(r["lr"]) for r in rows]
    assert logged == pytest.approx(expected, rel=1e-9)
    assert len(set(logged[2:])) > 1  # the schedule did cut the rate in the unfrozen phase
