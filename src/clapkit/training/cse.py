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

    config.yaml      the run's config (nothing is written into it at run time)
    checkpoint/      best model: Hugging Face + sentence-transformers folder (+ clapkit extras),
                     with README.md, its model card, written when the run ends (clapkit.audit.card)
    last/            latest model + trainer_state.pt (what --resume reads)
    metrics.csv      one row per evaluation (step, losses, learning rates, STS-B dev)
    summary.json     counts, best step and score, truncated sentences, skipped inputs, speed

Randomness is seeded per step (batch order by (seed, epoch), dropout and augmentations
by (seed, step)), so ``--resume`` from ``last/`` continues as the uninterrupted run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from ..data.audio.labelled import load_labelled
from ..data.datasets import ClipDataset, batch_loader
from ..data.files import Skipped
from ..data.image_datasets import ImageAugment, ImageSet, load_images
from ..data.records import LabelledSet
from ..data.text import Triplet, load_corpus, load_nli
from ..data.text.sts import StsSet, load_sts
from ..errors import ConfigError
from ..evaluation.sts import evaluate_set
from ..losses import (
    cached_contrastive_backward,
    gather_with_grad,
    nt_xent_loss,
    simcse_loss,
    simcse_sup_loss,
    supcon_loss,
)
from ..models.cse import CseModel
from .common import (
    StepBatches,
    average_gradients,
    init_distributed,
    is_main,
    recover_dir,
    resume_config,
    runtime_of,
    seed_everything,
    write_run_card,
)
from .loop import Loop, Recipe, Update, mean_of
from .monitors import Evaluators, pick_monitor
from .optim import linear_decay
from .parallel import require_whole_model


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
    c, skip = cfg["cse"], cfg["runtime"]["skip_bad"]
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


class CseTrainer(Recipe):
    """The ``train cse`` recipe on the one loop: windows of ``cse.eval_steps`` steps,
    batches by step (:class:`~clapkit.training.common.StepBatches`), two updates (text,
    then image/audio), STS-B dev as the monitor."""

    unit = "step"

    def __init__(self, cfg: dict, out: str | Path, resume: bool = False, data: CseData | None = None):
        self.out = Path(out)
        self.rank, self.world = init_distributed()
        if resume:
            cfg = resume_config(self.out, cfg, (("cse", "steps"), ("cse", "epochs")))
        self.cfg, c = cfg, cfg["cse"]
        self.c = c
        require_whole_model(cfg, "train cse")
        if self.world > 1:
            if c["cache_chunk"]:
                raise ConfigError("cse.cache_chunk (gradient caching) works in one process; under torchrun each "
                                  "process holds its share of the batch: set cse.cache_chunk: 0")
            for key in ("batch_size", "other_batch_size"):
                if c[key] % self.world:
                    raise ConfigError(f"cse.{key} = {c[key]} must be divisible by the {self.world} processes")
        self.device, self.precision = runtime_of(cfg)
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
        self.sched_text = linear_decay(self.opt_text, self.total_steps, c["schedule"])
        self.updates = [Update("text", self.opt_text, self.sched_text, c["grad_clip"], per_step=True)]
        self.opt_other = self.sched_other = None
        if self.other:
            other_params = [p for p in self.model.parameters() if p.requires_grad]
            self.opt_other = torch.optim.AdamW(other_params, lr=c["other_lr"], weight_decay=c["weight_decay"])
            self.sched_other = linear_decay(self.opt_other, self.total_steps, c["schedule"])
            self.updates.append(Update("other", self.opt_other, self.sched_other, c["grad_clip"], per_step=True))
        if self.other == "audio":  # decoded once (cached), a random segment per (seed, epoch, clip)
            a = c["model"]["audio"]
            self.audio_clips = ClipDataset(self.data.audio.clips, a["sample_rate"], a["seconds"], train=True,
                                           seed=cfg["seed"])
        if self.other == "image":
            a = c["augment"]
            self.augment = ImageAugment(c["model"]["image"]["size"], tuple(a["scale"]), flip_p=a["flip_p"],
                                        jitter=a["jitter"], jitter_p=a["jitter_p"], gray_p=a["gray_p"])
        self.counts = {"truncated": 0, "text_rows": 0, "sentences": 0, "train_seconds": 0.0, "initial": None}
        if is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        known = ["text_loss", "stsb_dev"] + (["other_loss"] if self.other else [])
        monitor = pick_monitor(cfg, known, "stsb_dev", None, Evaluators(cfg, None, self.device, allowed=()))
        self.loop = Loop(self, self.out, monitor, cfg["runtime"], self.precision, self.device, self.rank, self.world,
                         resume=resume)
        self._text_batches = StepBatches(cfg["seed"], 1, self.data.n_text, c["batch_size"])
        self._other_batches = StepBatches(cfg["seed"], 2, self.data.n_other, c["other_batch_size"]) if self.other else None
        self._image_iter, self._image_step = None, 0  # decoded image batches (see _start_image_stream)

    @property
    def state(self) -> dict:
        return self.loop.state

    def upgrade_state(self, saved: dict) -> dict:
        """A ``trainer_state.pt`` written before the one loop (``step`` and the losses of
        the open log window in ``window``)."""
        s, e = saved["state"], self.c["eval_steps"]
        state = {"window": s["step"] // e, "step": s["step"], "step_in_window": s["step"] % e,
                 "window_results": [{"text_loss": a, "other_loss": b} for a, b in s.get("window", [])],
                 "phase": "train", "best": s["best"], "best_step": s["best_step"],
                 "best_window": (s["best_step"] - 1) // e if s["best_step"] else -1,
                 "bad_steps": s.get("bad_steps", 0), "skipped_steps": s.get("skipped_steps", 0)}
        updates = {"text": {"optimizer": saved["opt_text"], "scheduler": saved["sched_text"]}}
        if "opt_other" in saved:
            updates["other"] = {"optimizer": saved["opt_other"], "scheduler": saved["sched_other"]}
        counts = {k: s.get(k, 0) for k in ("truncated", "text_rows", "sentences", "train_seconds")}
        counts["initial"] = s.get("initial")
        return {"state": state, "updates": updates, "scaler": saved.get("scaler"), "extra": {"counts": counts}}

    def extra_state(self) -> dict:
        return {"counts": self.counts}

    def load_extra_state(self, saved: dict) -> None:
        self.counts.update(saved.get("counts", {}))

    # --- the loop's parts ------------------------------------------------------------------
    def windows(self) -> int:
        return -(-self.total_steps // self.c["eval_steps"])

    def window_length(self, window: int) -> int:
        e = self.c["eval_steps"]
        return min(e, self.total_steps - window * e)

    def start_phase(self, phase: str) -> list[Update]:
        return self.updates

    def begin(self, loop: Loop) -> None:
        start = loop.state["step"]
        self._start_image_stream(start)
        if start == 0 and self.data.sts_dev is not None and self.counts["initial"] is None:
            # the starting model's dev score (eval mode: no dropout, no random draw), so a user
            # sees at once whether training helped
            self.counts["initial"] = self.dev_score()
            if self.cfg["runtime"]["progress"] and is_main():
                print(f"step 0: STS-B dev {self.counts['initial']:.2f} (the starting model)", flush=True)

    def steps(self, window: int, start: int):
        first = window * self.c["eval_steps"]
        self._t0 = time.time()
        return iter(range(first + start, first + self.window_length(window)))

    def step(self, step: int) -> dict:
        text, other = self.train_step(step)
        return {"text_loss": text, "other_loss": other}

    def evaluate(self, window: int, results: list[dict]) -> dict:
        self.counts["train_seconds"] += time.time() - self._t0
        return {"text_loss": mean_of(results, "text_loss"),
                "other_loss": mean_of(results, "other_loss") if self.other else math.nan,
                "lr": self.opt_text.param_groups[0]["lr"],
                "other_lr": self.opt_other.param_groups[0]["lr"] if self.other else math.nan,
                "stsb_dev": self.dev_score()}

    # --- batches -------------------------------------------------------------------------
    def _encode_rows(self, texts: list[str]) -> torch.Tensor:
        with self.precision.autocast():  # runtime.precision for the encoder; the loss in fp32
            return self.model.encode_text(self.model.tokenize(texts, self.device)).float()

    def _text_rows(self, idx: list[int]) -> tuple[list[str], int]:
        """The rows of one forward pass: ``[s; s]`` (unsup) or ``[a; p; n]`` (sup)."""
        if self.data.sentences is not None:
            s = [self.data.sentences[i] for i in idx]
            return s + s, len(s)
        t = [self.data.triplets[i] for i in idx]
        return [x.anchor for x in t] + [x.positive for x in t] + [x.negative for x in t], len(t)

    def _text_loss_fn(self, n: int):
        """The text loss of ``[s; s]`` or ``[a; p; h]`` rows of ``n`` each, over the global
        batch (each part gathered from every process; one process: as it is)."""
        c = self.c

        def parts(z):
            return [gather_with_grad(z[k * n : (k + 1) * n]) for k in range(len(z) // n)]

        if self.text_kind == "unsup":
            return lambda z: simcse_loss(*parts(z), c["temperature"])
        return lambda z: simcse_sup_loss(*parts(z), c["temperature"], c["hard_negative_weight"])

    def _share(self, rows) -> slice:
        """This process's rows of a global batch (under torchrun; else all of them)."""
        n = len(rows) // self.world
        return slice(self.rank * n, (self.rank + 1) * n)

    def text_step(self, step: int) -> float:
        idx = self._text_batches(step).tolist()
        idx = idx[self._share(idx)]
        rows, n = self._text_rows(idx)
        sentences = rows[:n] if self.text_kind == "unsup" else rows  # [s; s] holds each sentence twice
        self.counts["truncated"] += self.model.count_truncated(sentences)
        self.counts["sentences"] += len(sentences)
        self.counts["text_rows"] += n
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
        average_gradients(self.updates[0].params, self.world)
        self.loop.apply(self.updates[0], loss)
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
        self._image_iter = iter(batch_loader(self.data.images, batches, self.cfg["runtime"]["num_workers"],
                                             self.device.type == "cuda"))

    def _images(self, step: int, idx: list[int]) -> torch.Tensor:
        """The decoded images of batch ``idx``: from the worker stream when it is at ``step``."""
        if self._image_iter is not None and self._image_step == step:
            x, _ = next(self._image_iter)
            self._image_step += 1
            return x
        return self.data.images.batch(idx)

    def other_step(self, step: int) -> float:
        """One image/audio update: the two views of the global batch are drawn (decoded and
        augmented) alike on every process, each process embeds its share, the loss is
        over the gathered global batch."""
        idx = self._other_batches(step).tolist()
        views, labels = self._other_views(step, idx)
        n_all = len(idx)
        if self.world > 1:
            mine = self._share(idx)
            views = torch.cat([views[:n_all][mine], views[n_all:][mine]])
        with self.precision.autocast():
            z = (self.model.encode_image(views) if self.other == "image" else self.model.encode_audio(views)).float()
        n = len(z) // 2
        z1, z2 = gather_with_grad(z[:n]), gather_with_grad(z[n:])
        t = self.c["other_temperature"]
        loss = supcon_loss(z1, z2, labels, t) if self.c["other_loss"] == "supcon" else nt_xent_loss(z1, z2, t)
        self.opt_other.zero_grad(set_to_none=True)
        self.precision.scale(self.c["weight"] * loss).backward()
        average_gradients(self.updates[1].params, self.world)
        self.loop.apply(self.updates[1], loss)
        return loss.item()

    def train_step(self, step: int) -> tuple[float, float]:
        """One text update, then (image/audio modes) one image/audio update."""
        self.model.train()
        # dropout masks of this step (each process's own under torchrun: its rows differ)
        torch.manual_seed(self.cfg["seed"] * 1000003 + step + 7919 * self.rank)
        text = self.text_step(step)
        other = self.other_step(step) if self.other else math.nan
        return text, other

    # --- evaluation and saving -----------------------------------------------------------
    def dev_score(self) -> float:
        if self.data.sts_dev is None:
            return math.nan
        return evaluate_set(self.model, self.data.sts_dev, self.cfg["runtime"]["eval_batch_size"])["spearman"]

    def summary(self, s: dict) -> dict:
        c, n = self.c, dict(self.counts)
        if self.world > 1:  # every process counted its own share of the sentences
            seen = torch.tensor([float(n[k]) for k in ("truncated", "sentences", "text_rows")], dtype=torch.float64)
            torch.distributed.all_reduce(seen)
            n.update(truncated=int(seen[0]), sentences=int(seen[1]), text_rows=int(seen[2]))
        best = s["best"]
        return {
            "mode": c["mode"], "text_loss": self.text_kind,
            "text_examples": self.data.n_text, "other_examples": self.data.n_other,
            "best_step": s["best_step"], "best_stsb_dev": None if best is None or math.isinf(best) or math.isnan(best) else best,
            "initial_stsb_dev": n["initial"],
            "text_rows_seen": n["text_rows"], "sentences_seen": n["sentences"], "truncated": n["truncated"],
            "truncated_fraction": n["truncated"] / max(1, n["sentences"]), "max_length": c["model"]["max_length"],
            "train_seconds": n["train_seconds"],
            "sentences_per_second": n["sentences"] / n["train_seconds"] if n["train_seconds"] else None,
            "skipped": self.data.skipped.to_dict(), "precision": self.cfg["runtime"]["precision"], "processes": self.world,
        }

    def fit(self) -> dict:
        """Train to ``total_steps``; a SIGTERM ends the current step, saves ``last/`` and
        returns with ``stopped: SIGTERM`` (see :class:`clapkit.training.loop.Loop`). Then
        ``checkpoint/README.md``, the model card (:func:`~clapkit.training.common.write_run_card`)."""
        summary = self.loop.fit()
        # a sentence encoder (medium None); its captions are scanned for the suites of its other medium, or all
        write_run_card(self.out, "cse", self.cfg, summary, None, self._card_data, suite_medium=self.other)
        return summary

    def _card_data(self):
        """What the model card says the run trained on (:class:`clapkit.audit.card.TrainingData`)."""
        from ..audit.card import TrainingData

        c, d = self.c, self.data
        specs = [c["corpus"] if d.sentences is not None else c["nli"]]
        texts = d.sentences if d.sentences is not None else [s for t in d.triplets for s in (t.anchor, t.positive,
                                                                                               t.negative)]
        counts = {"sentences" if d.sentences is not None else "triplets": d.n_text}
        media = []
        if self.other:
            specs.append(c["images"] if self.other == "image" else c["audio"])
            counts["images" if self.other == "image" else "audio_clips"] = d.n_other
            media = list(d.images.items) if self.other == "image" and d.images is not None else \
                [x.media for x in d.audio.clips] if d.audio is not None else []
        counts["skipped"] = d.skipped.count
        return TrainingData([str(s) for s in specs], list(texts), media, counts)


def train_cse(cfg: dict, out: str | Path, resume: bool = False) -> dict:
    return CseTrainer(cfg, out, resume).fit()
