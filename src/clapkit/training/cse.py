"""``clapkit train cse``: the language tower as a sentence encoder (SimCSE, VisualCSE, AudioCSE).

Modes (``cse.mode``):

- ``unsup`` - SimCSE: each sentence of ``cse.corpus`` twice in one forward pass of the
  concatenated batch ``[s; s]`` (dropout masks are drawn per row, so the two copies are
  two views), :func:`~clapkit.losses.simcse_loss` at tau 0.05;
- ``sup`` - supervised SimCSE on NLI triplets ``[anchor; positive; hard negative]`` in
  one forward pass, :func:`~clapkit.losses.simcse_sup_loss`;
- ``image`` / ``audio`` - the text loss of ``cse.text_loss`` plus ``w * L_other``: two
  views of unpaired labelled images (random augmentations) or audio (the same clip
  twice: dropout is the augmentation, optionally with time/frequency masks) through
  their patch embedding and the *same* Transformer layers, SupCon (tau 0.07, same-class
  samples as extra positives) or SimCLR.

As in the paper's Algorithm 1 there are two AdamW optimizers with their own learning
rates and schedules: every step is one text update (``lr``), then one image/audio update
(``other_lr``), each with its own backward and gradient clipping. ``cse.cache_chunk``
> 0 computes the text loss with gradient caching (:func:`~clapkit.losses.cached_contrastive_backward`):
the same loss and gradients as the plain loss in the memory of one chunk.

Every ``eval_steps`` (and at the end) the model is scored on the STS-B dev set
(``cse.sts_dev``): Spearman x 100 of cosine similarities with evaluation pooling; the
best model is kept in ``checkpoint/``, and the starting model's score is reported beside
it (``initial_stsb_dev``). Without a dev set ``checkpoint/`` is the last model.

Output folder::

    config.yaml      the resolved config
    checkpoint/      best model: Hugging Face + sentence-transformers folder (+ clapkit extras)
    last/            latest model + trainer_state.pt (what --resume reads)
    metrics.csv      one row per evaluation (step, losses, learning rates, STS-B dev)
    summary.json     counts, best step and score, truncated sentences, skipped inputs, speed

Randomness is seeded per step (batch order by (seed, epoch), dropout and augmentations
by (seed, step)), so ``--resume`` from ``last/`` continues as the uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from ..data.augment import ImageAugment
from ..data.datasets import ClipDataset, batch_loader
from ..data.files import Skipped
from ..data.images import ImageSet, load_images
from ..data.labelled import LabelledSet, load_labelled
from ..data.sts import StsSet, load_sts
from ..data.text import Triplet, load_corpus, load_nli
from ..errors import ConfigError
from ..evaluation.sts import evaluate_set
from ..losses import (
    cached_contrastive_backward,
    nt_xent_loss,
    simcse_loss,
    simcse_sup_loss,
    supcon_loss,
)
from ..models.cse import CseModel
from .common import (
    Precision,
    ScalarLogger,
    StepBatches,
    load_trainer_state,
    on_sigterm,
    pick_device,
    recover_dir,
    resume_config,
    save_run,
    seed_everything,
    set_determinism,
)


@dataclass
class CseData:
    sentences: list[str] | None = None  # unsup text
    triplets: list[Triplet] | None = None  # sup text
    images: ImageSet | None = None
    audio: LabelledSet | None = None
    sts_dev: StsSet | None = None
    skipped: Skipped = field(default_factory=Skipped)

    @property
    def n_text(self) -> int:
        return len(self.sentences if self.sentences is not None else self.triplets)

    @property
    def n_other(self) -> int:
        if self.images is not None:
            return len(self.images.labels)
        return len(self.audio.clips) if self.audio is not None else 0


def text_loss_kind(c: dict) -> str:
    return c["mode"] if c["mode"] in ("unsup", "sup") else c["text_loss"]


def load_cse_data(cfg: dict) -> CseData:
    c, skip = cfg["cse"], cfg["data"]["skip_bad"]
    required = {"corpus": "cse.corpus is empty: e.g. --set cse.corpus=txt:wiki1m_for_simcse.txt "
                          "or --set cse.corpus=stsb:DIR (the STS-B training sentences)",
                "nli": "cse.nli is empty: supervised SimCSE needs --set cse.nli=FILE.csv (sent0,sent1,hard_neg)",
                "images": "cse.images is empty: image mode needs e.g. --set cse.images=folder:DIR, mnist:DIR or digits",
                "audio": "cse.audio is empty: audio mode needs e.g. --set cse.audio=fsdd:DIR or folder:DIR"}
    needed = ["corpus" if text_loss_kind(c) == "unsup" else "nli"]
    needed += {"image": ["images"], "audio": ["audio"]}.get(c["mode"], [])
    missing = [required[key] for key in needed if not c[key]]
    if missing:  # every missing option is reported, before anything is read
        raise ConfigError("; ".join(missing))
    data = CseData()
    if "corpus" in needed:
        data.sentences = load_corpus(c["corpus"], skip, data.skipped)
    else:
        data.triplets = load_nli(c["nli"], skip, data.skipped)
    if c["mode"] == "image":
        i = c["model"]["image"]
        data.images = load_images(c["images"], i["size"], i["channels"], skip)
        data.skipped.reasons.update(data.images.skipped.reasons)
    elif c["mode"] == "audio":
        data.audio = load_labelled(c["audio"], skip_bad=skip, label=c["audio_label"])
        data.skipped.reasons.update(data.audio.skipped.reasons)
    if c["sts_dev"]:
        data.sts_dev = load_sts(c["sts_dev"], "dev")[0]
    for name, n, bs in (("text", data.n_text, c["batch_size"]), ("image/audio", data.n_other, c["other_batch_size"])):
        if n and n < bs:
            raise ConfigError(f"{n} {name} examples but cse.{'batch_size' if name == 'text' else 'other_batch_size'} "
                              f"= {bs}; lower the batch size or give more data")
    return data


def _schedule(kind: str, total: int):
    return (lambda s: max(0.0, 1.0 - s / total)) if kind == "linear" else (lambda s: 1.0)


class CseTrainer:
    def __init__(self, cfg: dict, out: str | Path, resume: bool = False, data: CseData | None = None):
        self.out = Path(out)
        if resume:
            cfg = resume_config(self.out, cfg, (("cse", "steps"), ("cse", "epochs")))
        self.cfg, c = cfg, cfg["cse"]
        self.c = c
        self.device = pick_device(cfg["train"]["device"])
        self.precision = Precision(cfg["train"]["precision"], self.device)
        set_determinism(cfg["train"].get("deterministic", True), self.device)
        seed_everything(cfg["seed"])
        self.data = data or load_cse_data(cfg)
        self.text_kind = text_loss_kind(c)
        self.other = c["mode"] if c["mode"] in ("image", "audio") else None
        self.text_per_epoch = self.data.n_text // c["batch_size"]
        self.total_steps = int(c["steps"]) if c["steps"] else c["epochs"] * self.text_per_epoch
        if self.total_steps < 1:
            raise ConfigError("cse.steps / cse.epochs give no training step")
        if resume:
            self.model = CseModel.load(recover_dir(self.out / "last"))
        else:
            self.model = CseModel(c["model"], (self.other,) if self.other else ())
        self.model.to(self.device)
        text_params = [p for n, p in self.model.named_parameters()
                       if p.requires_grad and n.startswith(("backbone.", "head."))]
        self.opt_text = torch.optim.AdamW(text_params, lr=c["lr"], weight_decay=c["weight_decay"])
        self.sched_text = torch.optim.lr_scheduler.LambdaLR(self.opt_text, _schedule(c["schedule"], self.total_steps))
        self.opt_other = self.sched_other = None
        if self.other:
            other_params = [p for p in self.model.parameters() if p.requires_grad]
            self.opt_other = torch.optim.AdamW(other_params, lr=c["other_lr"], weight_decay=c["weight_decay"])
            self.sched_other = torch.optim.lr_scheduler.LambdaLR(self.opt_other, _schedule(c["schedule"], self.total_steps))
        if self.other == "audio":  # decoded once (cached), a random segment per (seed, epoch, clip)
            a = c["model"]["audio"]
            self.audio_clips = ClipDataset(self.data.audio.clips, a["sample_rate"], a["seconds"], train=True,
                                           seed=cfg["seed"])
        if self.other == "image":
            a = c["augment"]
            self.augment = ImageAugment(c["model"]["image"]["size"], tuple(a["scale"]), flip_p=a["flip_p"],
                                        jitter=a["jitter"], jitter_p=a["jitter_p"], gray_p=a["gray_p"])
        self.state = {"step": 0, "best": -math.inf, "best_step": None, "truncated": 0, "text_rows": 0,
                      "sentences": 0, "train_seconds": 0.0}
        if resume:
            saved = load_trainer_state(self.out)
            self.state = saved["state"]
            self.state.setdefault("sentences", 0)  # runs saved before the count existed
            self.opt_text.load_state_dict(saved["opt_text"])
            self.sched_text.load_state_dict(saved["sched_text"])
            if self.opt_other is not None:
                self.opt_other.load_state_dict(saved["opt_other"])
                self.sched_other.load_state_dict(saved["sched_other"])
            if "scaler" in saved:
                self.precision.scaler.load_state_dict(saved["scaler"])
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.logger = ScalarLogger(self.out, cfg["train"]["logger"], append=resume)
        if resume:
            self.logger.truncate(self.state["step"])
        self._text_batches = StepBatches(cfg["seed"], 1, self.data.n_text, c["batch_size"])
        self._other_batches = StepBatches(cfg["seed"], 2, self.data.n_other, c["other_batch_size"]) if self.other else None
        self._image_iter, self._image_step = None, 0  # decoded image batches (see _start_image_stream)

    # --- batches -------------------------------------------------------------------------
    def _encode_rows(self, texts: list[str]) -> torch.Tensor:
        with self.precision.autocast():  # train.precision for the encoder; the loss in fp32
            return self.model.encode_text(self.model.tokenize(texts, self.device)).float()

    def _text_rows(self, idx: list[int]) -> tuple[list[str], int]:
        """The rows of one forward pass: ``[s; s]`` (unsup) or ``[a; p; n]`` (sup)."""
        if self.data.sentences is not None:
            s = [self.data.sentences[i] for i in idx]
            return s + s, len(s)
        t = [self.data.triplets[i] for i in idx]
        return [x.anchor for x in t] + [x.positive for x in t] + [x.negative for x in t], len(t)

    def _text_loss_fn(self, n: int):
        c = self.c
        if self.text_kind == "unsup":
            return lambda z: simcse_loss(z[:n], z[n:], c["temperature"])
        return lambda z: simcse_sup_loss(z[:n], z[n : 2 * n], z[2 * n :], c["temperature"], c["hard_negative_weight"])

    def _step(self, opt: torch.optim.Optimizer, sched, loss: torch.Tensor, step: int) -> None:
        """Unscale (fp16), clip to ``cse.grad_clip`` and step, unless the loss or gradient
        is non-finite (the step is skipped and counted; see :meth:`Precision.finite`)."""
        norm = self.precision.clip(opt, [p for g in opt.param_groups for p in g["params"]], self.c["grad_clip"])
        ok = self.precision.finite(loss, norm, self.state, step + 1, self.cfg["train"]["max_bad_steps"],
                                   self.out / "last")
        self.precision.step(opt, skip=not ok)
        if ok:
            sched.step()
        else:
            opt.zero_grad(set_to_none=True)

    def text_step(self, step: int) -> float:
        idx = self._text_batches(step).tolist()
        rows, n = self._text_rows(idx)
        sentences = rows[:n] if self.text_kind == "unsup" else rows  # [s; s] holds each sentence twice
        self.state["truncated"] += self.model.count_truncated(sentences)
        self.state["sentences"] += len(sentences)
        self.state["text_rows"] += n
        loss_fn = self._text_loss_fn(n)
        self.opt_text.zero_grad(set_to_none=True)
        chunk = self.c["cache_chunk"]
        scale = self.precision.scaler.get_scale() if self.precision.scaler.is_enabled() else 1.0
        if chunk:
            loss = cached_contrastive_backward(self._encode_rows, [rows[i : i + chunk] for i in range(0, len(rows), chunk)],
                                               lambda z: self.precision.scale(loss_fn(z))) / scale
        else:
            loss = loss_fn(self._encode_rows(rows))
            self.precision.scale(loss).backward()
        self._step(self.opt_text, self.sched_text, loss, step)
        return loss.item()

    def _other_views(self, step: int, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views of batch ``idx`` stacked (2N rows), with their labels (N)."""
        if self.data.images is not None:
            x = self._images(step, idx)
            g = torch.Generator().manual_seed(self.cfg["seed"] * 1000003 + step)
            views = torch.cat([self.augment(x, g), self.augment(x, g)])
            return views.to(self.device), self.data.images.labels[idx].to(self.device)
        self.audio_clips.set_epoch(step // (self.data.n_other // self.c["other_batch_size"]))
        waves = torch.stack([self.audio_clips[i][0] for i in idx])
        labels = torch.tensor([self.data.audio.clips[i].label for i in idx], device=self.device)
        return torch.cat([waves, waves]).to(self.device), labels  # dropout makes the two copies two views

    def _start_image_stream(self, start: int) -> None:
        """Decode the image batches of steps ``start``.. in DataLoader workers, in step order
        (decoding holds no randomness; the seeded augmentation runs here)."""
        self._image_step, self._image_iter = start, None
        if self.data.images is None:
            return
        batches = [self._other_batches(s).tolist() for s in range(start, self.total_steps)]
        self._image_iter = iter(batch_loader(self.data.images, batches, self.cfg["data"]["num_workers"],
                                             self.device.type == "cuda"))

    def _images(self, step: int, idx: list[int]) -> torch.Tensor:
        """The decoded images of batch ``idx``: from the worker stream when it is at ``step``."""
        if self._image_iter is not None and self._image_step == step:
            x, _ = next(self._image_iter)
            self._image_step += 1
            return x
        return self.data.images.batch(idx)

    def other_step(self, step: int) -> float:
        idx = self._other_batches(step).tolist()
        views, labels = self._other_views(step, idx)
        with self.precision.autocast():
            z = (self.model.encode_image(views) if self.other == "image" else self.model.encode_audio(views)).float()
        n = len(idx)
        t = self.c["other_temperature"]
        loss = supcon_loss(z[:n], z[n:], labels, t) if self.c["other_loss"] == "supcon" else nt_xent_loss(z[:n], z[n:], t)
        self.opt_other.zero_grad(set_to_none=True)
        self.precision.scale(self.c["weight"] * loss).backward()
        self._step(self.opt_other, self.sched_other, loss, step)
        return loss.item()

    def train_step(self, step: int) -> tuple[float, float]:
        """One text update, then (image/audio modes) one image/audio update."""
        self.model.train()
        torch.manual_seed(self.cfg["seed"] * 1000003 + step)  # dropout masks of this step
        text = self.text_step(step)
        other = self.other_step(step) if self.other else math.nan
        return text, other

    # --- evaluation and saving -----------------------------------------------------------
    def dev_score(self) -> float:
        if self.data.sts_dev is None:
            return math.nan
        return evaluate_set(self.model, self.data.sts_dev, self.cfg["train"]["eval_batch_size"])["spearman"]

    def _save(self, improved: bool) -> None:
        state = {"state": self.state, "opt_text": self.opt_text.state_dict(), "sched_text": self.sched_text.state_dict(),
                 "scaler": self.precision.scaler.state_dict()}
        if self.opt_other is not None:
            state.update(opt_other=self.opt_other.state_dict(), sched_other=self.sched_other.state_dict())
        save_run(self.out, self.model, state, improved)

    def fit(self) -> dict:
        """Train to ``total_steps``; a SIGTERM ends the current step, saves ``last/`` (with
        the losses of the unfinished log window) and returns with ``stopped: SIGTERM``."""
        with on_sigterm() as sigterm:
            return self._fit(sigterm)

    def _fit(self, sigterm: dict) -> dict:
        c, t = self.c, self.cfg["train"]
        start = self.state["step"]
        bar = tqdm(total=self.total_steps, initial=start, desc=f"cse {c['mode']}", disable=None if t["progress"] else True)
        losses: list[tuple[float, float]] = [tuple(x) for x in self.state.get("window", [])]
        t0 = time.time()
        self._start_image_stream(start)
        if start == 0 and self.data.sts_dev is not None and "initial" not in self.state:
            # the starting model's dev score (eval mode: no dropout, no random draw), so a user
            # sees at once whether training helped
            self.state["initial"] = self.dev_score()
            if t["progress"]:
                bar.write(f"step 0: STS-B dev {self.state['initial']:.2f} (the starting model)")
        stopped = None
        for step in range(start, self.total_steps):
            losses.append(self.train_step(step))
            bar.update()
            bar.set_postfix(text=f"{losses[-1][0]:.3f}")
            done = step + 1
            if done % c["eval_steps"] == 0 or done == self.total_steps:
                self.state["train_seconds"] += time.time() - t0
                dev = self.dev_score()
                improved = self.data.sts_dev is None or dev > self.state["best"]
                self.state["step"] = done
                if improved:
                    self.state.update(best=dev, best_step=done)
                row = {"step": done, "text_loss": float(np.mean([x[0] for x in losses])),
                       "other_loss": float(np.mean([x[1] for x in losses])) if self.other else math.nan,
                       "lr": self.opt_text.param_groups[0]["lr"],
                       "other_lr": self.opt_other.param_groups[0]["lr"] if self.other else math.nan,
                       "stsb_dev": dev}
                self.logger.log(done, row)
                self.state["window"] = []
                self._save(improved)
                if t["progress"]:
                    bar.write(f"step {done}/{self.total_steps}: text {row['text_loss']:.4f}"
                              + (f" {self.other} {row['other_loss']:.4f}" if self.other else "")
                              + (f" STS-B dev {dev:.2f}{' *' if improved else ''}" if not math.isnan(dev) else ""))
                losses = []
                t0 = time.time()
            if sigterm["stop"] and done < self.total_steps:
                if losses:  # inside a log window: save it with the losses it has so far
                    self.state.update(step=done, window=losses, train_seconds=self.state["train_seconds"] + time.time() - t0)
                    self._save(improved=False)
                stopped = "SIGTERM"
                print(f"SIGTERM: stopped at step {done}; {self.out / 'last'} saved, continue with --resume", flush=True)
                break
        bar.close()
        s = self.state
        summary = {
            "mode": c["mode"], "text_loss": self.text_kind, "steps": s["step"],
            "text_examples": self.data.n_text, "other_examples": self.data.n_other,
            "best_step": s["best_step"], "best_stsb_dev": None if math.isinf(s["best"]) or math.isnan(s["best"]) else s["best"],
            "initial_stsb_dev": s.get("initial"),
            "text_rows_seen": s["text_rows"], "sentences_seen": s["sentences"], "truncated": s["truncated"],
            "truncated_fraction": s["truncated"] / max(1, s["sentences"]), "max_length": c["model"]["max_length"],
            "train_seconds": s["train_seconds"],
            "sentences_per_second": s["sentences"] / s["train_seconds"] if s["train_seconds"] else None,
            "skipped": self.data.skipped.to_dict(),
            "precision": t["precision"], "skipped_steps": s.get("skipped_steps", 0),
        }
        if stopped:
            summary["stopped"] = stopped
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def train_cse(cfg: dict, out: str | Path, resume: bool = False) -> dict:
    return CseTrainer(cfg, out, resume).fit()
