"""``clapkit train clap`` / ``train clip``: one trainer for audio-text and image-text models.

``model.modality`` picks the medium (``train clip`` only changes the defaults to
images); everything below holds for both. The default recipe is CLAP's, from the
class-separability-pitfalls paper; ``train.schedule: cosine`` with ``optimizer: adamw``
gives open_clip's (linear warmup, cosine decay, weight decay off every 0-d and 1-d
parameter: biases, norms, the temperature), and ``train.cyclip.*`` adds CyCLIP's
regularisers.

Phases: for ``train.frozen_epochs`` epochs both backbones are frozen (eval mode) and
only the projectors and temperature learn (``lr_frozen``); then everything is
unfrozen (``lr_unfrozen``). Each phase has its own optimizer and schedule
(ReduceLROnPlateau on the validation loss, or warmup + cosine over the phase's steps). Gradients are clipped to ``grad_clip``;
after every step the learnt logit scale is capped at ``max_logit_scale`` (100, as in CLIP,
open_clip, LAION-CLAP and CyCLIP); ``model.logit_clamp`` also clamps the logits (the
CLAP-pitfalls recipe, ``paper`` preset only). Training stops after ``epochs`` or when the
validation loss has not improved for ``early_stopping_patience`` epochs.

While frozen, the backbone outputs of every clip and caption are computed once and
cached (``train.cache_frozen``), so a frozen epoch costs only the projectors. The
cache holds one segment per clip, or one crop per image (drawn with the run's seed);
clips no longer than ``audio.segment_seconds`` see no difference.

Output folder::

    config.yaml      the resolved config
    checkpoint/      best model by validation loss (a clapkit checkpoint; a public CLAP
                     or CLIP fine-tuned from model.init_from stays in transformers format)
    last/            last epoch's model + trainer_state.pt (what --resume reads)
    metrics.csv      one row per epoch
    summary.json     counts, best epoch and losses, skipped inputs

Every random draw is seeded by (seed, epoch), so ``--resume`` continues exactly: one
epoch, resume, one more epoch gives the weights of two uninterrupted epochs.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.datasets import collate_clips, epoch_loader, no_duplicate_batches, stack_media
from ..data.files import Skipped
from ..data.manifests import Pair, clip_index
from ..data.media import check_media, load_media_pairs, media_dataset, medium_of
from ..data.stream import ShardStream, stream_loader, stream_shards
from ..data.text import load_corpus, load_nli
from ..errors import ConfigError, TrainingError
from ..inference.embed import embed_text, to_device
from ..losses import (
    cached_contrastive_backward,
    clip_loss,
    cyclip_regularisers,
    gather_with_grad,
    simcse_loss,
    simcse_sup_loss,
    soft_clip_loss,
)
from ..models.dual import DualEncoder, Trainable
from ..models.formats import KINDS, detect
from ..models.public.hf import HFDualEncoder, load_model
from .common import (
    Precision,
    ScalarLogger,
    StepBatches,
    epoch_order,
    init_distributed,
    is_main,
    load_trainer_state,
    on_sigterm,
    pick_device,
    recover_dir,
    resume_config,
    save_run,
    seed_epoch,
    seed_everything,
    set_determinism,
)


@dataclass
class ClapData:
    train: list[Pair]
    val: list[Pair]
    skipped: Skipped


def load_clap_data(cfg: dict) -> ClapData:
    """Read the training (and validation) manifests, check the media files, split, subsample."""
    d = cfg["data"]
    skipped = Skipped()

    def read(specs: list[str]) -> list[Pair]:
        pairs: list[Pair] = []
        for spec in specs:
            pairs += load_media_pairs(cfg, spec, skipped)
        return check_media(medium_of(cfg), pairs, d["skip_bad"], skipped)

    if not d["train"]:
        raise ConfigError("data.train is empty: e.g. --set 'data.train=[clotho:captions.csv]' --set data.audio_dir=DIR")
    if d["stream"]:  # the training pairs stream from their shards (clapkit.data.stream)
        stream_shards(d["train"])
        return ClapData([], read(d["val"]) if d["val"] else [], skipped)
    pairs = read(d["train"])
    if d["val"]:
        train, val = pairs, read(d["val"])
    else:
        train, val = split_pairs(pairs, d["val_fraction"], d["val_split_by"], cfg["seed"])
    if d["fraction"] < 1.0:
        rng = np.random.default_rng((cfg["seed"], 7))
        keep = np.sort(rng.permutation(len(train))[: max(2, int(round(d["fraction"] * len(train))))])
        train = [train[i] for i in keep]
    if len(train) < 2:
        raise ConfigError(f"only {len(train)} training pair(s) after the split; need at least 2")
    return ClapData(train, val, skipped)


def split_pairs(pairs: list[Pair], fraction: float, by: str, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Seeded random split; ``by="media"`` (or ``"audio"``) keeps all captions of a clip
    or image on one side."""
    if fraction <= 0:
        return pairs, []
    rng = np.random.default_rng((seed, 3))
    n_val = int(round(fraction * len(pairs)))
    if by == "pair":
        perm = rng.permutation(len(pairs))
        val_idx = set(perm[:n_val].tolist())
    else:
        ids = sorted({p.media_id for p in pairs})
        chosen, count = set(), 0
        by_id: dict[str, int] = {}
        for p in pairs:
            by_id[p.media_id] = by_id.get(p.media_id, 0) + 1
        for j in rng.permutation(len(ids)):
            if count >= n_val:
                break
            chosen.add(ids[j])
            count += by_id[ids[j]]
        val_idx = {i for i, p in enumerate(pairs) if p.media_id in chosen}
    train = [p for i, p in enumerate(pairs) if i not in val_idx]
    val = [p for i, p in enumerate(pairs) if i in val_idx]
    return train, val


class FeatureCache:
    """Backbone outputs of the frozen towers for a pair list: x_m per distinct clip or
    image, x_t per distinct caption; ``None`` for a tower that is not frozen."""

    def __init__(self, model: DualEncoder, pairs: list[Pair], cfg: dict, train: bool, device: torch.device):
        bs = cfg["train"]["eval_batch_size"]
        self.x_m = self.x_t = None
        with torch.no_grad():
            if model.medium in model.frozen:
                items, rows = clip_index(pairs)
                self.media_rows = torch.tensor(rows)
                ds = media_dataset(cfg, items, train=train, seed=cfg["seed"], extract=_extractor(model))
                loader = DataLoader(ds, batch_size=bs, collate_fn=collate_clips, num_workers=cfg["data"]["num_workers"])
                self.x_m = torch.cat([model.media_backbone(to_device(w, device)) for w, _ in loader])
            if "text" in model.frozen:
                texts = list(dict.fromkeys(p.caption for p in pairs))
                row = {t: i for i, t in enumerate(texts)}
                self.text_rows = torch.tensor([row[p.caption] for p in pairs])
                self.x_t = torch.from_numpy(embed_text(model, texts, bs, projected=False, device=device)).to(device)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x_m = self.x_m[self.media_rows[idx]] if self.x_m is not None else None
        x_t = self.x_t[self.text_rows[idx]] if self.x_t is not None else None
        return x_m, x_t


class ClapTrainer:
    def __init__(self, cfg: dict, out: str | Path, resume: bool = False, data: ClapData | None = None):
        self.out = Path(out)
        self.rank, self.world = init_distributed()
        if resume:
            cfg = resume_config(self.out, cfg, (("train", "epochs"), ("train", "steps")))
        self.cfg = cfg
        t = cfg["train"]
        self.streaming = cfg["data"]["stream"]
        if self.streaming:
            if t["steps"] < 1 or t["steps_per_epoch"] < 1:
                raise ConfigError("data.stream: true trains by steps: set train.steps (and train.steps_per_epoch, the "
                                  "steps between validations and epoch checkpoints)")
            if t["loss"] == "soft_clip":
                raise ConfigError("train.loss = soft_clip needs its teacher's embeddings per indexed pair: set "
                                  "data.stream: false")
            t["epochs"] = -(-t["steps"] // t["steps_per_epoch"])
        if t["batch_size"] % self.world:
            raise ConfigError(f"train.batch_size = {t['batch_size']} must be divisible by the {self.world} processes")
        self.device = pick_device(t["device"])
        set_determinism(t.get("deterministic", True), self.device)
        seed_everything(cfg["seed"])
        self.data = data or load_clap_data(cfg)
        self.state = dict(FRESH_STATE)
        self.precision = Precision(t["precision"], self.device)
        self._rng = None  # a mid-epoch resume: this process's RNG state after the saved step
        self._sigterm = {"stop": False}
        if resume:
            self.model = initial_model(cfg, recover_dir(self.out / "last"), resume=True).to(self.device)
        elif cfg["model"]["init_from"]:
            self.model = initial_model(cfg, cfg["model"]["init_from"]).to(self.device)
        else:
            self.model = DualEncoder(cfg).to(self.device)
        cfg["image"] = self.model.cfg["image"]  # an HF image tower's own size, mean and std
        self.train_ds = media_dataset(cfg, self.data.train, train=True, seed=cfg["seed"], extract=_extractor(self.model))
        self.val_ds = media_dataset(cfg, self.data.val, train=False, extract=_extractor(self.model))
        self.teacher = self._teacher_embeddings() if t["loss"] == "soft_clip" else None
        self.se_data = self._se_data()
        if self.world > 1 and self.device.type == "cuda" and t["sync_batchnorm"]:
            # BatchNorm statistics over the global batch (SyncBatchNorm runs on GPUs only)
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self._norm_stats = [b for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                            for b in m.buffers()]
        self.caches: dict[str, FeatureCache] | None = None
        self._loader = self._sampler = None
        self._opt_state = None
        if resume:
            saved = load_trainer_state(self.out)
            self.state = {**FRESH_STATE, **saved["state"]}
            self._opt_state = saved
            if "scaler" in saved:
                self.precision.scaler.load_state_dict(saved["scaler"])
            if self.state["batch_in_epoch"]:
                self._rng = saved["rng"][self.rank]
        if is_main():
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                (self.out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            except OSError as exc:
                raise ConfigError(f"--out {self.out}: cannot write the run folder ({exc}); choose a writable folder "
                                  "with free space") from exc
        self.logger = ScalarLogger(self.out, t["logger"], append=resume) if is_main() else None
        if resume and self.logger:
            self.logger.truncate(self.state["epoch"])

    def _teacher_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's E_a and E_t of every training pair, from the curation cache
        (the teacher model is loaded only for what the cache lacks, then dropped)."""
        from ..inference.cache import EmbeddingCache

        soft = self.cfg["train"]["soft"]
        clips, rows = clip_index(self.data.train)
        captions = [p.caption for p in self.data.train]

        def embeddings() -> tuple[np.ndarray, np.ndarray, dict]:
            cache = EmbeddingCache(soft["cache"] or self.out / "teacher-cache", soft["teacher"],
                                   batch_size=self.cfg["train"]["eval_batch_size"], device=self.device,
                                   num_workers=self.cfg["data"]["num_workers"])
            return cache.media(clips)[rows], cache.text(captions), cache.stats

        if self.rank == 0:  # under DDP rank 0 fills the cache alone, then the others read it
            e_a, e_t, self.teacher_cache_stats = embeddings()
        if self.world > 1:
            torch.distributed.barrier()
        if self.rank != 0:
            e_a, e_t, self.teacher_cache_stats = embeddings()
        return torch.from_numpy(e_a).to(self.device), torch.from_numpy(e_t).to(self.device)

    # --- phases ------------------------------------------------------------------------
    def _phase(self, epoch: int) -> str:
        return "frozen" if epoch < self.cfg["train"]["frozen_epochs"] else "unfrozen"

    def _phase_steps(self, phase: str) -> int:
        t = self.cfg["train"]
        epochs = min(t["frozen_epochs"], t["epochs"]) if phase == "frozen" else t["epochs"] - t["frozen_epochs"]
        return max(1, epochs * self._batches_per_epoch())

    def _start_phase(self, phase: str) -> None:
        t = self.cfg["train"]
        self.model.freeze_backbones(t["frozen_backbones"] if phase == "frozen" else t["keep_frozen"])
        lr = t["lr_frozen"] if phase == "frozen" else t["lr_unfrozen"]
        self.optimizer = build_optimizer(self.model, t, lr)
        if t["schedule"] == "cosine":
            self.scheduler = warmup_cosine(self.optimizer, t["warmup_steps"], self._phase_steps(phase))
        else:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=t["plateau_factor"], patience=t["plateau_patience"]
            )
        if self._opt_state is not None and self._opt_state["state"]["phase"] == phase:
            self.optimizer.load_state_dict(self._opt_state["optimizer"])
            self.scheduler.load_state_dict(self._opt_state["scheduler"])
        self._opt_state = None
        self.net = self.model
        if self.world > 1:
            # a public model may hold parameters the loss never reaches (CLAP's logit_scale_t, its
            # fusion branch on a batch without long clips)
            self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                           find_unused_parameters=isinstance(self.model, HFDualEncoder))
        self.caches = None
        if self.model.frozen and t["cache_frozen"] and not self.streaming:
            self.model.eval()
            self.caches = {
                "train": FeatureCache(self.model, self.data.train, self.cfg, True, self.device),
                "val": FeatureCache(self.model, self.data.val, self.cfg, False, self.device) if self.data.val else None,
            }
        if self.state["phase"] != phase:  # a new phase restarts the patience count
            self.state["bad_epochs"] = 0
        self.state["phase"] = phase

    # --- one epoch -----------------------------------------------------------------------
    def _epoch_size(self) -> int:
        """Pairs an epoch draws from: all of them, or one per clip or image (``data.captions: one``)."""
        if self.cfg["data"]["captions"] == "one":
            return len({p.media_id for p in self.data.train})
        return len(self.data.train)

    def _batches_per_epoch(self) -> int:
        """Full global batches per epoch (at least one, smaller, when the data is smaller);
        streaming: ``train.steps_per_epoch``. With ``data.no_duplicate_media`` an epoch may
        hold fewer (the rows left over are those that would repeat a clip in a batch)."""
        if self.streaming:
            return self.cfg["train"]["steps_per_epoch"]
        return max(1, self._epoch_size() // self.cfg["train"]["batch_size"])

    def _batches(self, epoch: int) -> list[list[int]]:
        """This process's share of each global batch of the epoch's seeded permutation
        (drawing it seeds torch for the epoch: see :func:`epoch_order`). With ``data.captions:
        one`` the epoch holds one caption per clip or image, drawn by (seed, epoch); with
        ``data.no_duplicate_media`` no batch holds two captions of one clip or image. Both
        depend on (seed, epoch) only, so resume stays exact."""
        d, bs = self.cfg["data"], self.cfg["train"]["batch_size"]
        rows = np.arange(len(self.data.train))
        groups = [p.media_id for p in self.data.train]
        if d["captions"] == "one":
            rng = np.random.default_rng((self.cfg["seed"], epoch, 13))
            by_media: dict[str, list[int]] = {}
            for i, g in enumerate(groups):
                by_media.setdefault(g, []).append(i)
            rows = np.array([r[int(rng.integers(len(r)))] for r in by_media.values()])
        order = rows[epoch_order(self.cfg["seed"], epoch, len(rows), self.rank)]
        n = len(order)
        if d["no_duplicate_media"] and d["captions"] == "all":
            size = min(bs, n)
            found = list(itertools.islice(no_duplicate_batches(order.tolist(), groups.__getitem__, size),
                                          self._batches_per_epoch()))
            glob_batches = [b for b in found if len(b) == size] or found[:1]  # a tiny set still gives a step
        else:
            glob_batches = [order[b * bs : b * bs + min(bs, n)].tolist() for b in range(self._batches_per_epoch())]
        out = []
        for glob in glob_batches:
            per_rank = len(glob) // self.world
            out.append(list(glob[self.rank * per_rank : (self.rank + 1) * per_rank]))
        return out

    def _loss(self, media=None, tokens=None, x_m=None, x_t=None, idx: list[int] | None = None,
              se: tuple[list[str], int] | None = None) -> torch.Tensor:
        """The training loss over the global batch: CLIP (or soft-label CLIP) plus the
        CyCLIP regularisers when their weights are set, plus ``train.se.weight`` times the
        sentence-embedding loss on the rows ``se`` (see :meth:`_se_rows`)."""
        s = self.cfg["train"]["se"]
        cached = se is not None and s["cache_chunk"]
        se_tokens = self.model.text.tokenize(se[0], self.device) if se is not None and not cached else None
        with self.precision.autocast():
            out = self.net(media=media, tokens=tokens, x_m=x_m, x_t=x_t, se_tokens=se_tokens)
        e_m, e_t, scale = out[:3]
        # the towers ran in train.precision; E (normalised in fp32) and the loss are fp32
        e_m, e_t, scale = gather_with_grad(e_m.float()), gather_with_grad(e_t.float()), scale.float()
        if self.teacher is None or idx is None:
            loss = clip_loss(e_m, e_t, scale, self.model.logit_clamp)
        else:
            soft = self.cfg["train"]["soft"]
            t_m, t_t = (gather_with_grad(x[torch.tensor(idx, device=x.device)]) for x in self.teacher)
            loss = soft_clip_loss(e_m, e_t, scale, t_m, t_t, soft["weight"], soft["temperature"],
                                  soft["similarity"], self.model.logit_clamp)
        cy = self.cfg["train"]["cyclip"]
        if cy["in_modal"] or cy["cross_modal"]:
            in_modal, cross_modal = cyclip_regularisers(e_m, e_t)
            loss = loss + cy["in_modal"] * in_modal + cy["cross_modal"] * cross_modal
        if se is None:
            return loss
        rows, n = se
        if cached:  # gradient caching: the SE term back-propagates here, chunk by chunk
            chunks = [rows[i : i + s["cache_chunk"]] for i in range(0, len(rows), s["cache_chunk"])]

            def encode(chunk):
                with self.precision.autocast():
                    return self.model.text_backbone(self.model.text.tokenize(chunk, self.device)).float()

            se_loss = cached_contrastive_backward(
                encode, chunks, lambda z: self.precision.scale(s["weight"] * self._se_loss(z, n))) / s["weight"]
            if self.precision.scaler.is_enabled():
                se_loss = se_loss / self.precision.scaler.get_scale()
            self.state["se_loss"] = float(se_loss.detach())
            return loss + s["weight"] * se_loss.detach()  # its gradient is already in place
        se_loss = self._se_loss(out[3].float(), n, gather=True)
        self.state["se_loss"] = float(se_loss.detach())
        return loss + s["weight"] * se_loss

    def _se_loss(self, z: torch.Tensor, n: int, gather: bool = False) -> torch.Tensor:
        """Unsupervised SimCSE on ``[s; s]`` or supervised SimCSE on ``[a; p; h]`` rows of
        ``n`` each (gathered over the processes: the global SE batch)."""
        s = self.cfg["train"]["se"]
        parts = [z[k * n : (k + 1) * n] for k in range(len(z) // n)]
        if gather:
            parts = [gather_with_grad(p) for p in parts]
        if len(parts) == 2:
            return simcse_loss(parts[0], parts[1], s["temperature"])
        return simcse_sup_loss(*parts, s["temperature"], s["hard_negative_weight"])

    def _se_data(self) -> list | None:
        """The sentence corpus or NLI triplets of ``train.se`` (read with ``train cse``'s loaders)."""
        s = self.cfg["train"]["se"]
        if not s["weight"]:
            return None
        if s["cache_chunk"] and self.world > 1:
            raise ConfigError("train.se.cache_chunk works in one process; under torchrun lower train.se.batch_size "
                              "(each process holds its share) and set cache_chunk: 0")
        if s["loss"] == "captions":
            return None
        if s["batch_size"] < 2 or s["batch_size"] % self.world:
            raise ConfigError(f"train.se.batch_size = {s['batch_size']}: give at least 2, divisible by the "
                              f"{self.world} processes")
        skip = self.cfg["data"]["skip_bad"]
        data = load_corpus(s["corpus"], skip, self.data.skipped) if s["loss"] == "corpus" else \
            load_nli(s["nli"], skip, self.data.skipped)
        if len(data) < s["batch_size"]:
            raise ConfigError(f"train.se.{s['loss']}: {len(data)} examples for train.se.batch_size = {s['batch_size']}")
        self._se_batches = StepBatches(self.cfg["seed"], 21, len(data), s["batch_size"])
        return data

    def _se_rows(self, idx: list[int] | None, captions: list[str] | None) -> tuple[list[str], int] | None:
        """This process's rows of the step's SE loss, or None (weight 0, or the text tower
        frozen): the captions of the batch twice, or the step's share of a seeded
        permutation of the corpus (``[s; s]``) or of the triplets (``[a; p; h]``)."""
        s = self.cfg["train"]["se"]
        if not s["weight"] or "text" in self.model.frozen:
            return None
        if s["loss"] == "captions":
            caps = captions if captions is not None else [self.data.train[i].caption for i in idx]
            return caps + caps, len(caps)
        share = s["batch_size"] // self.world
        mine = self._se_batches(self.state["step"])[self.rank * share : (self.rank + 1) * share]
        if s["loss"] == "corpus":
            sentences = [self.se_data[i] for i in mine]
            return sentences + sentences, len(sentences)
        t = [self.se_data[i] for i in mine]
        return [x.anchor for x in t] + [x.positive for x in t] + [x.negative for x in t], len(t)

    def _tokens(self, pairs: list[Pair], idx) -> dict[str, torch.Tensor]:
        return self.model.text.tokenize([pairs[i].caption for i in idx], self.device)

    def _inputs(self, split: str, idx: list[int] | None, media: torch.Tensor | None = None,
                captions: list[str] | None = None) -> dict:
        """Model inputs for pairs ``idx`` (or a streamed batch: ``media`` and ``captions``):
        cached backbone outputs where a tower is cached."""
        if captions is not None:
            return {"x_m": None, "x_t": None, "media": to_device(media, self.device),
                    "tokens": self.model.text.tokenize(captions, self.device)}
        pairs, ds = (self.data.train, self.train_ds) if split == "train" else (self.data.val, self.val_ds)
        cache = self.caches.get(split) if self.caches else None
        x_m, x_t = cache.batch(torch.tensor(idx)) if cache is not None else (None, None)
        out = {"x_m": x_m, "x_t": x_t, "media": None, "tokens": None}
        if x_m is None:
            if media is None:
                media = stack_media([ds[i][0] for i in idx])
            out["media"] = to_device(media, self.device)
        if x_t is None:
            out["tokens"] = self._tokens(pairs, idx)
        return out

    def _media_cached(self) -> bool:
        return bool(self.caches) and self.caches["train"].x_m is not None

    def train_step(self, idx: list[int] | None, media: torch.Tensor | None = None,
                   captions: list[str] | None = None) -> float | None:
        """One optimisation step on the pairs ``idx`` of the training set; its loss, or
        None when a non-finite loss or gradient made it skip the step (counted; after
        ``train.max_bad_steps`` in a row the run stops with a :class:`TrainingError`).
        Under fp16 a gradient overflow is the scaler's business: it skips the update and
        lowers the scale, which is not counted."""
        t = self.cfg["train"]
        stats = [(b, b.clone()) for b in self._norm_stats]  # a skipped step must not leave NaN running statistics
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(**self._inputs("train", idx, media, captions), idx=idx, se=self._se_rows(idx, captions))
        self.precision.scale(loss).backward()
        norm = self.precision.clip(self.optimizer, [p for p in self.model.parameters() if p.requires_grad], t["grad_clip"])
        ok = self.precision.finite(loss, norm, self.state, self.state["step"] + 1, t["max_bad_steps"], self.out / "last")
        self.precision.step(self.optimizer, skip=not ok)
        if not ok:
            self.optimizer.zero_grad(set_to_none=True)
            for buf, before in stats:
                buf.copy_(before)
            return None
        self.model.cap_logit_scale(t["max_logit_scale"])  # after every step, as every reference
        if t["schedule"] == "cosine":
            self.scheduler.step()
        return loss.item()

    def train_epoch(self, epoch: int) -> float | None:
        """The epoch's mean training loss; None when a SIGTERM stopped it (``last/`` saved).

        A run resumed from a mid-epoch ``last/`` skips the batches that were done and
        continues with the RNG state they left, so it draws what the interrupted run
        would have drawn."""
        self.model.train()
        self.train_ds.set_epoch(epoch)
        t = self.cfg["train"]
        if self.streaming:  # indexed epochs are seeded by _batches (epoch_order)
            seed_epoch(self.cfg["seed"], epoch, self.rank)
        batches = self._batches(epoch) if not self.streaming else \
            range(min(t["steps_per_epoch"], t["steps"] - epoch * t["steps_per_epoch"]))
        start, losses = self.state["batch_in_epoch"], list(self.state["epoch_losses"])
        bar = tqdm(total=len(batches), initial=start, desc=f"epoch {epoch + 1} ({self.state['phase']})", leave=False,
                   disable=None if t["progress"] and is_main() else True)
        if self.streaming:
            steps = ((None, *next(self._stream())) for _ in batches[start:])
        elif self._media_cached():
            steps = ((idx, None, None) for idx in batches[start:])
        else:
            if self._loader is None:  # built once: its workers and their wave caches live across epochs
                self._loader, self._sampler = epoch_loader(self.train_ds, self.cfg["data"]["num_workers"],
                                                           self.device.type == "cuda")
            self._sampler.set(epoch, batches[start:])
            steps = ((idx.tolist(), media, None) for media, idx in self._loader)
        if self._rng is not None:  # after the loader has drawn its worker seeds, as the first run's had
            set_rng(self._rng, self.device)
            self._rng = None
        every = self.cfg["train"]["save_every_steps"]
        for idx, media, captions in steps:
            loss = self.train_step(idx, media, captions)
            if loss is not None:
                losses.append(loss)
            self.state.update(batch_in_epoch=self.state["batch_in_epoch"] + 1, step=self.state["step"] + 1,
                              epoch_losses=losses)
            bar.update()
            if loss is not None:
                bar.set_postfix(loss=f"{loss:.3f}")
            if self._stop_requested():
                self._save(improved=False)
                bar.close()
                return None
            if every and self.state["step"] % every == 0 and self.state["batch_in_epoch"] < len(batches):
                self._save(improved=False)
        bar.close()
        self.state.update(batch_in_epoch=0, epoch_losses=[])
        return float(np.mean(losses)) if losses else math.nan

    def _stream(self):
        """The iterator of streamed batches (media, captions), built once; a resumed run
        skips the batches its steps already took."""
        if self._loader is None:
            d = self.cfg["data"]
            stream = ShardStream(stream_shards(d["train"]), self.model.medium, self.train_ds,
                                 self.cfg["train"]["batch_size"] // self.world, self.cfg["seed"], self.rank, self.world,
                                 d["shuffle_buffer"], skip_batches=self.state["step"], skip_bad=d["skip_bad"],
                                 no_duplicates=d["no_duplicate_media"], one_caption=d["captions"] == "one")
            self._loader = iter(stream_loader(stream, d["num_workers"], self.device.type == "cuda"))
        return self._loader

    def _stop_requested(self) -> bool:
        """A SIGTERM reached this process (any process, under DDP: all stop at the same step)."""
        stop = self._sigterm["stop"]
        if self.world == 1:
            return stop
        flag = torch.tensor([float(stop)], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    @torch.no_grad()
    def val_loss(self) -> float:
        """Mean CLIP loss over fixed validation batches (centre segments, eval mode)."""
        if not self.data.val:
            return math.nan
        self.model.eval()
        bs, n = self.cfg["train"]["batch_size"], len(self.data.val)
        total = torch.zeros(2, dtype=torch.float64, device=self.device)  # NCCL reduces device tensors
        for b, start in enumerate(range(0, n, bs)):
            if b % self.world != self.rank:
                continue
            idx = list(range(start, min(start + bs, n)))
            if len(idx) < 2:
                continue
            e_m, e_t, scale = self.model(**self._inputs("val", idx))
            loss = clip_loss(e_m, e_t, scale, self.model.logit_clamp).double()
            total += torch.stack([loss * len(idx), torch.tensor(float(len(idx)), dtype=torch.float64, device=self.device)])
        if self.world > 1:
            torch.distributed.all_reduce(total)
        return float(total[0] / total[1]) if total[1] > 0 else math.nan

    # --- the run -------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to ``train.epochs``; a SIGTERM (a scheduler's notice before pre-emption)
        ends the current step, saves ``last/`` and returns with ``stopped: SIGTERM``."""
        with on_sigterm() as self._sigterm:
            return self._fit()

    def _fit(self) -> dict:
        t = self.cfg["train"]
        start_time = time.time()
        epoch = self.state["epoch"]
        current = None
        stopped = None
        while epoch < t["epochs"]:
            phase = self._phase(epoch)
            if phase != current:
                self._start_phase(phase)
                current = phase
            t0 = time.time()
            train_loss = self.train_epoch(epoch)
            if train_loss is None:
                stopped = "SIGTERM"
                if is_main():
                    print(f"SIGTERM: stopped at epoch {epoch + 1}, step {self.state['step']}; {self.out / 'last'} "
                          "saved, continue with --resume", flush=True)
                break
            val = self.val_loss()
            monitor = val if not math.isnan(val) else train_loss
            if t["schedule"] == "plateau":
                self.scheduler.step(monitor)
            improved = monitor < self.state["best_val"]
            if improved:
                self.state.update(best_val=monitor, best_epoch=epoch, bad_epochs=0)
            else:
                self.state["bad_epochs"] += 1
            epoch += 1
            self.state["epoch"] = epoch
            row = {
                "epoch": epoch, "phase": phase, "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": train_loss, "val_loss": val, "temperature": 1.0 / self.model.scale().item(),
                "seconds": time.time() - t0,
            }
            if t["se"]["weight"]:  # the sentence-embedding term of the epoch's last step
                row["se_loss"] = self.state.get("se_loss", math.nan)
            if is_main():
                self.logger.log(epoch, row)
            self._save(improved)  # after the log row: a resume truncates the log to last/'s epoch
            if is_main() and t["progress"]:
                print(f"epoch {epoch}/{t['epochs']} {phase}: train {train_loss:.4f} val {val:.4f}"
                      f"{' *' if improved else ''}", flush=True)
            patience = t["early_stopping_patience"]
            if patience and phase == "unfrozen" and self.state["bad_epochs"] >= patience:
                break
        summary = {
            "epochs_run": self.state["epoch"],
            "best_epoch": self.state["best_epoch"] + 1,
            "best_val_loss": self.state["best_val"],
            "train_pairs": len(self.data.train),
            "val_pairs": len(self.data.val),
            f"train_{'clips' if self.model.medium == 'audio' else 'images'}": len({p.media for p in self.data.train}),
            "modality": self.model.medium,
            "skipped": self.data.skipped.to_dict(),
            "seconds": time.time() - start_time,
            "processes": self.world,
            "loss": t["loss"],
            "precision": t["precision"],
            "steps": self.state["step"],
            "skipped_steps": self.state["skipped_steps"],
        }
        if self.streaming:  # no index of the training pairs: what the steps took instead
            summary.update(train_pairs=None, **{summary_key: None for summary_key in summary if summary_key.startswith("train_")
                                                 and summary_key != "train_pairs"},
                           streamed_pairs=self.state["step"] * t["batch_size"])
        if stopped:
            summary["stopped"] = stopped
        if self.teacher is not None:
            summary["teacher_cache"] = self.teacher_cache_stats
        if is_main():
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _save(self, improved: bool) -> None:
        """``checkpoint/`` (when ``improved``) and ``last/`` with everything ``--resume``
        needs, atomically; collective under DDP (every process's RNG state is kept)."""
        rng = get_rng(self.device)
        if self.world > 1:
            everyone: list = [None] * self.world
            torch.distributed.all_gather_object(everyone, rng)
        else:
            everyone = [rng]
        if not is_main():
            return
        tensors = [*self.model.named_parameters(), *self.model.named_buffers()]
        bad = [n for n, p in tensors if p.is_floating_point() and not torch.isfinite(p).all()]
        if bad:
            raise TrainingError(f"non-finite weights ({', '.join(bad[:3])}) at step {self.state['step']}: not saved; "
                                f"{self.out / 'last'} keeps the previous state")
        state = {"state": self.state, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.precision.scaler.state_dict(), "rng": everyone}
        try:
            save_run(self.out, self.model, state, improved)
        except OSError as exc:
            raise TrainingError(f"{self.out}: saving the checkpoint failed ({exc}); the previous checkpoint and "
                                "last/ are intact. Free space or fix the folder, then --resume") from exc


FRESH_STATE = {"epoch": 0, "best_val": math.inf, "best_epoch": -1, "bad_epochs": 0, "phase": None,
               "step": 0, "batch_in_epoch": 0, "epoch_losses": [], "bad_steps": 0, "skipped_steps": 0}


def _extractor(model):
    """A fused public CLAP's per-clip feature function (whole clips in training), else None."""
    extractor = getattr(model, "extractor", None)
    return extractor() if extractor is not None else None


def get_rng(device: torch.device) -> dict:
    """This process's torch RNG state (CPU and its CUDA device)."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng(rng: dict, device: torch.device) -> None:
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)


def initial_model(cfg: dict, folder: str | Path, resume: bool = False) -> Trainable:
    """The model a run starts from: a clapkit checkpoint (``--resume``: as saved;
    ``model.init_from``: its weights under this run's config), or a public CLAP or CLIP
    in ``transformers`` format, fine-tuned in place and saved back in that format (what
    ``folder`` is comes from :func:`clapkit.models.formats.detect`)."""
    kind = detect(folder)
    if kind in ("hf-clap", "hf-clip", "hf-siglip", "open_clip"):
        return load_model(folder).for_training(cfg)
    if kind != "clapkit":
        raise ConfigError(f"model.init_from = {folder}: {KINDS[kind]}; a run starts from a clapkit checkpoint or "
                          "a public CLAP or CLIP (a text encoder goes in model.text.name)")
    return DualEncoder.load(folder) if resume else DualEncoder.load_as(folder, cfg)


def build_optimizer(model: torch.nn.Module, t: dict, lr: float) -> torch.optim.Optimizer:
    """Adam or AdamW over the trainable parameters, weight decay on the matrices and
    kernels only: biases, norm scales and the temperature (every 0-d and 1-d tensor)
    are never decayed, as in open_clip."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    plain = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": plain, "weight_decay": 0.0}]
    opt = torch.optim.AdamW if t["optimizer"] == "adamw" else torch.optim.Adam
    return opt([g for g in groups if g["params"]], lr=lr, betas=tuple(t["betas"]), eps=t["eps"])


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """open_clip's schedule, stepped once per optimisation step: lr * (s + 1) / warmup
    for the first ``warmup`` steps, then lr * 0.5 * (1 + cos(pi * e / (total - warmup)))
    with e the steps since the warmup ended."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        e, span = step - warmup, max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(e, span) / span))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_clap(cfg: dict, out: str | Path, resume: bool = False) -> dict:
    return ClapTrainer(cfg, out, resume).fit()
