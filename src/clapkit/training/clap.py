"""``clapkit train clap`` / ``train clip``: the cross-modal recipe on the one loop.

``model.modality`` picks the medium (``train clip`` only changes the defaults to
images); everything below holds for both. The default recipe is CLAP's, from the
class-separability-pitfalls paper; ``train.schedule: cosine`` with ``optimizer: adamw``
gives open_clip's (linear warmup, cosine decay, weight decay off every 0-d and 1-d
parameter: biases, norms, the temperature), and ``train.cyclip.*`` adds CyCLIP's
regularisers. ``train.loss`` names the objective (:mod:`clapkit.training.objectives`:
``clip``, ``soft_clip``, ``siglip``, or one a user registers).

Phases: for ``train.frozen_epochs`` epochs both backbones are frozen (eval mode) and
only the projectors and temperature learn (``lr_frozen``); then everything is
unfrozen (``lr_unfrozen``). Each phase has its own optimizer and schedule
(ReduceLROnPlateau on the monitor, or warmup + cosine over the phase's steps).
Gradients are clipped to ``grad_clip``; after every step the learnt logit scale is
capped at ``max_logit_scale`` (100, as in CLIP, open_clip, LAION-CLAP and CyCLIP);
``model.logit_clamp`` also clamps the logits (the CLAP-pitfalls recipe, ``paper``
preset only). Training stops after ``epochs`` or when the monitor has not improved for
``early_stopping_patience`` epochs of the unfrozen phase.

The monitor (``train.monitor``, :mod:`clapkit.training.monitors`) selects
``checkpoint/``: by default the validation loss of the training objective
(``train.val_objective: clip`` validates with plain CLIP whatever the objective, as
clapkit did before), or zero-shot accuracy, retrieval R@k or STS-B dev
(``train.eval.*``), logged every ``train.eval_every`` epochs.

While frozen, the backbone outputs of every clip and caption are computed once and
cached (``train.cache_frozen``), so a frozen epoch costs only the projectors. The
cache holds one segment per clip (with ``audio.crop: variable``, the whole clip up to
``audio.max_seconds``), or one crop per image (drawn with the run's seed).
``train.cache_chunk`` computes the cross-modal loss with gradient caching (one
process): a global batch larger than memory, the same loss and gradients as the plain
step where no BatchNorm statistics are in play (BatchNorm sees chunks, as in GradCache).

Output folder::

    config.yaml      the run's config as given (nothing is written into it at run time; the
                     media settings a public model resolves are summary.json's "inputs")
    checkpoint/      best model by the monitor (a clapkit checkpoint; a public CLAP, CLIP
                     or SigLIP fine-tuned from model.init_from stays in transformers format),
                     with README.md, its model card, written when the run ends (clapkit.audit.card)
    last/            last epoch's model + trainer_state.pt (what --resume reads)
    metrics.csv      one row per epoch
    summary.json     counts, best epoch and monitor, skipped inputs

Every random draw is seeded by (seed, epoch), so ``--resume`` continues exactly: one
epoch, resume, one more epoch gives the weights of two uninterrupted epochs.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import yaml

from ..data.datasets import stack_media
from ..data.media import media_dataset
from ..data.records import Pair
from ..errors import ConfigError
from ..inference.embed import to_device
from ..losses import clip_loss, cyclip_regularisers, gather_with_grad
from ..models.dual import DualEncoder
from ..models.public.base import PublicDualEncoder
from ..models.public.loader import load_for_training
from .common import (
    init_distributed,
    is_main,
    recover_dir,
    resume_config,
    runtime_of,
    seed_epoch,
    seed_everything,
    write_run_card,
)
from .joint_se import JointSE
from .loop import Loop, Recipe, Update, mean_of
from .monitors import Evaluators, clap_monitor
from .objectives import Rows, objective_class
from .objectives.caching import cached_objective
from .optim import build_optimizer, warmup_cosine
from .pairs import ClapData, FeatureCache, extractor_of, load_clap_data, split_pairs  # noqa: F401 (API)
from .parallel import gathered, wrap_for_training
from .sources import EpochLoader, Stream, batches_per_epoch, bucket_seconds, epoch_batches


class ClapTrainer(Recipe):
    """The CLAP/CLIP recipe: indexed epochs, the shard stream or the frozen cache as the
    batch source; one update per phase; the objective of ``train.loss`` plus CyCLIP and
    the joint sentence-embedding term."""

    unit = "epoch"
    logs_phase = True

    def __init__(self, cfg: dict, out: str | Path, resume: bool = False, data: ClapData | None = None):
        self.out = Path(out)
        self.rank, self.world = init_distributed()
        if resume:
            cfg = resume_config(self.out, cfg, (("train", "epochs"), ("train", "steps")))
        self.cfg = cfg
        t = cfg["train"]
        self.streaming = cfg["data"]["stream"]
        self.epochs = t["epochs"]
        if self.streaming:
            if t["steps"] < 1 or t["steps_per_epoch"] < 1:
                raise ConfigError("data.stream: true trains by steps: set train.steps (and train.steps_per_epoch, the "
                                  "steps between validations and epoch checkpoints)")
            self.epochs = -(-t["steps"] // t["steps_per_epoch"])
        if t["batch_size"] % self.world:
            raise ConfigError(f"train.batch_size = {t['batch_size']} must be divisible by the {self.world} processes")
        if t.get("cache_chunk") and self.world > 1:
            raise ConfigError("train.cache_chunk (gradient caching) works in one process; under torchrun each "
                              "process holds its share of the batch: set train.cache_chunk: 0")
        objective = objective_class(cfg)
        self.device, self.precision = runtime_of(cfg)
        seed_everything(cfg["seed"])
        self.data = data or load_clap_data(cfg)
        if resume:
            self.model = load_for_training(cfg, recover_dir(self.out / "last"), resume=True).to(self.device)
        elif cfg["model"]["init_from"]:
            self.model = load_for_training(cfg, cfg["model"]["init_from"]).to(self.device)
        else:
            self.model = DualEncoder(cfg).to(self.device)
        # the run's config stays as given (config.yaml); the media settings its pipeline uses are the
        # model's resolved ones (an HF tower's size, mean and std; a public CLAP's rate, window, padding)
        self.given = cfg
        self.cfg = cfg = {**cfg, "audio": self.model.cfg["audio"], "image": self.model.cfg["image"]}
        self.train_ds = media_dataset(cfg, self.data.train, train=True, seed=cfg["seed"], extract=extractor_of(self.model))
        self.val_ds = media_dataset(cfg, self.data.val, train=False, extract=extractor_of(self.model))
        # audio.crop: variable: each training pair's clip length, for batches of similar lengths (None: fixed crop)
        self._seconds = bucket_seconds(cfg, self.model, self.data.train)
        self.objective = objective(cfg).to(self.device)
        self.objective.setup(self)
        self.se = JointSE(cfg, self)
        if self.world > 1 and self.device.type == "cuda" and cfg["runtime"]["sync_batchnorm"]:
            # BatchNorm statistics over the global batch (SyncBatchNorm runs on GPUs only)
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.caches: dict[str, FeatureCache] | None = None
        pin = self.device.type == "cuda"
        self._loader = EpochLoader(self.train_ds, cfg["runtime"]["num_workers"], pin)
        self._stream = Stream(cfg, self.model.medium, self.train_ds, self.rank, self.world, pin, lambda: self.state["step"])
        self.evaluators = Evaluators(cfg, self.model.medium, self.device)
        monitor = clap_monitor(cfg, self.evaluators)
        if is_main():
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                (self.out / "config.yaml").write_text(yaml.safe_dump(self.given, sort_keys=False))
            except OSError as exc:
                raise ConfigError(f"--out {self.out}: cannot write the run folder ({exc}); choose a writable folder "
                                  "with free space") from exc
        self.loop = Loop(self, self.out, monitor, cfg["runtime"], self.precision, self.device, self.rank, self.world, resume,
                         ema=cfg["train"]["ema"])

    @property
    def state(self) -> dict:
        return self.loop.state

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.loop.updates[0].optimizer

    @property
    def scheduler(self):
        return self.loop.updates[0].scheduler

    # --- state of older versions ---------------------------------------------------------
    def upgrade_state(self, saved: dict) -> dict:
        """A ``trainer_state.pt`` written before the one loop (one optimizer, epoch keys)."""
        s = saved["state"]
        state = {"window": s["epoch"], "step": s.get("step", 0), "step_in_window": s.get("batch_in_epoch", 0),
                 "window_results": [{"loss": x} for x in s.get("epoch_losses", [])], "phase": s["phase"],
                 "best": s["best_val"], "best_window": s["best_epoch"], "bad_windows": s["bad_epochs"],
                 "bad_steps": s.get("bad_steps", 0), "skipped_steps": s.get("skipped_steps", 0)}
        return {"state": state, "updates": {"model": {"optimizer": saved["optimizer"], "scheduler": saved["scheduler"]}},
                "scaler": saved.get("scaler"), "rng": saved.get("rng")}

    # --- phases ------------------------------------------------------------------------
    def windows(self) -> int:
        return self.epochs

    def phase(self, epoch: int) -> str:
        return "frozen" if epoch < self.cfg["train"]["frozen_epochs"] else "unfrozen"

    def patience(self, phase: str) -> int:
        return self.cfg["train"]["early_stopping_patience"] if phase == "unfrozen" else 0

    def _phase_steps(self, phase: str) -> int:
        t = self.cfg["train"]
        epochs = min(t["frozen_epochs"], self.epochs) if phase == "frozen" else self.epochs - t["frozen_epochs"]
        return max(1, epochs * self._batches_per_epoch())

    def start_phase(self, phase: str) -> list[Update]:
        t = self.cfg["train"]
        self.model.freeze_backbones(t["frozen_backbones"] if phase == "frozen" else t["keep_frozen"])
        lr = t["lr_frozen"] if phase == "frozen" else t["lr_unfrozen"]
        # DDP, FSDP2 and torch.compile (runtime.parallel, runtime.compile); a public model may hold
        # parameters the loss never reaches (CLAP's logit_scale_t, its fusion branch on a batch
        # without long clips, an unused pooler of a text tower): DDP must not wait for their gradients;
        # before the optimizer, as FSDP2 replaces the parameters with their shards
        self.net = wrap_for_training(self.model, self.cfg, self.device, self.world,
                                     find_unused=isinstance(self.model, PublicDualEncoder))
        optimizer = build_optimizer(_Both(self.model, self.objective), t, lr)
        if t["schedule"] == "cosine":
            update = Update("model", optimizer, warmup_cosine(optimizer, t["warmup_steps"], self._phase_steps(phase)),
                            per_step=True)
        else:
            update = Update("model", optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=self.loop.monitor.mode, factor=t["plateau_factor"], patience=t["plateau_patience"]),
                plateau=True)
        update.grad_clip = t["grad_clip"]
        update.after_step = lambda: self.model.cap_logit_scale(t["max_logit_scale"])  # after every step, as every reference
        self.caches = None
        if self.model.frozen and t["cache_frozen"] and not self.streaming:
            self.model.eval()
            with gathered(self.model):  # a sharded model whole while the towers run outside its forward
                self.caches = {
                    "train": FeatureCache(self.model, self.data.train, self.cfg, True, self.device),
                    "val": FeatureCache(self.model, self.data.val, self.cfg, False, self.device) if self.data.val else None,
                }
        return [update]

    def _start_phase(self, phase: str) -> None:
        """Enter ``phase`` outside a run (tests, benchmarks): the loop's own entry."""
        self.loop._enter(phase)

    # --- batch sources (clapkit.training.sources) ------------------------------------------------
    def _batches_per_epoch(self) -> int:
        """Global batches per epoch (streaming: ``train.steps_per_epoch``)."""
        if self.streaming:
            return self.cfg["train"]["steps_per_epoch"]
        return batches_per_epoch(self.data.train, self.cfg)

    def _batches(self, epoch: int) -> list[list[int]]:
        """This process's share of each global batch of the epoch (:func:`~clapkit.training.sources.epoch_batches`)."""
        return epoch_batches(self.data.train, self.cfg, epoch, self.rank, self.world, self._seconds)

    def window_length(self, epoch: int) -> int:
        t = self.cfg["train"]
        if self.streaming:
            return min(t["steps_per_epoch"], t["steps"] - epoch * t["steps_per_epoch"])
        return len(self._epoch_batches)

    def steps(self, epoch: int, start: int):
        """The epoch's batches ``(idx, media, captions)`` from the ``start``-th: indices
        into the frozen cache, decoded batches from the persistent loader, or the stream.
        A resumed epoch skips the batches that were done; the loop then restores the RNG
        state they left."""
        self.model.train()
        self.train_ds.set_epoch(epoch)
        if self.streaming:  # indexed epochs are seeded by _batches (epoch_order)
            seed_epoch(self.cfg["seed"], epoch, self.rank)
            return ((None, *next(self._stream)) for _ in range(self.window_length(epoch) - start))
        batches = self._epoch_batches = self._batches(epoch)
        if self._media_cached():
            return ((idx, None, None) for idx in batches[start:])
        return self._loader.epoch(epoch, batches[start:])

    # --- the loss ------------------------------------------------------------------------
    def _global_rows(self, split: str, idx: list[int] | None) -> Rows:
        """The rows of the global batch (every process's share, in rank order), for an
        objective that reads them; the gather is skipped for every other objective."""
        if idx is None or not self.objective.uses_rows:
            return Rows(split, None)
        if self.world == 1:
            return Rows(split, idx)
        everyone: list = [None] * self.world
        torch.distributed.all_gather_object(everyone, list(idx))
        return Rows(split, [i for share in everyone for i in share])

    def _cross_modal(self, e_m: torch.Tensor, e_t: torch.Tensor, scale: torch.Tensor, rows: Rows) -> torch.Tensor:
        """The objective plus CyCLIP's regularisers when their weights are set."""
        loss = self.objective(e_m, e_t, scale, rows)
        cy = self.cfg["train"]["cyclip"]
        if cy["in_modal"] or cy["cross_modal"]:
            in_modal, cross_modal = cyclip_regularisers(e_m, e_t)
            loss = loss + cy["in_modal"] * in_modal + cy["cross_modal"] * cross_modal
        return loss

    def _loss(self, media=None, tokens=None, x_m=None, x_t=None, idx: list[int] | None = None,
              se: tuple[list[str], int] | None = None) -> torch.Tensor:
        """The training loss over the global batch: the objective (with CyCLIP's terms),
        plus ``train.se.weight`` times the sentence-embedding loss on the rows ``se``
        (see :meth:`_se_rows`). With ``train.cache_chunk`` the cross-modal part
        back-propagates here, chunk by chunk (the caller must not back-propagate it)."""
        s = self.cfg["train"]["se"]
        rows = self._global_rows("train", idx)
        if self.cfg["train"].get("cache_chunk"):
            loss = self._cached_cross_modal(media, tokens, x_m, x_t, rows)
            return loss if se is None else loss + self._se_term(se, None)
        cached_se = se is not None and s["cache_chunk"]
        se_tokens = self.model.text.tokenize(se[0], self.device) if se is not None and not cached_se else None
        with self.precision.autocast():
            out = self.net(media=media, tokens=tokens, x_m=x_m, x_t=x_t, se_tokens=se_tokens)
        e_m, e_t, scale = out[:3]
        # the towers ran in runtime.precision; E (normalised in fp32) and the loss are fp32
        e_m, e_t, scale = gather_with_grad(e_m.float()), gather_with_grad(e_t.float()), scale.float()
        loss = self._cross_modal(e_m, e_t, scale, rows)
        return loss if se is None else loss + self._se_term(se, out[3] if not cached_se else None)

    def _cached_cross_modal(self, media, tokens, x_m, x_t, rows: Rows) -> torch.Tensor:
        """The objective with gradient caching over both towers, in chunks of ``train.cache_chunk`` rows."""
        return cached_objective(self.model, self.precision, self.cfg["train"]["cache_chunk"], media, tokens, x_m, x_t,
                                lambda e_m, e_t: self._cross_modal(e_m, e_t, self.model.scale().float(), rows))

    def _se_term(self, se: tuple[list[str], int], z: torch.Tensor | None) -> torch.Tensor:
        return self.se.term(se, z, self.state)

    def _se_rows(self, idx: list[int] | None, captions: list[str] | None) -> tuple[list[str], int] | None:
        return self.se.rows(idx, captions, self.state["step"])

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
                media = stack_media([ds[i][0] for i in idx], padded=getattr(ds, "padded", False))
            out["media"] = to_device(media, self.device)
        if x_t is None:
            out["tokens"] = self._tokens(pairs, idx)
        return out

    def _media_cached(self) -> bool:
        return bool(self.caches) and self.caches["train"].x_m is not None

    # --- one step --------------------------------------------------------------------------
    def step(self, batch) -> dict | None:
        loss = self.train_step(*batch)
        if loss is None:
            return None
        out = {"loss": loss}
        if self.cfg["train"]["se"]["weight"]:
            out["se_loss"] = self.state.get("se_loss", math.nan)
        return out

    def train_step(self, idx: list[int] | None, media: torch.Tensor | None = None,
                   captions: list[str] | None = None) -> float | None:
        """One optimisation step on the pairs ``idx`` of the training set; its loss, or
        None when a non-finite loss or gradient made it skip the step (counted; after
        ``runtime.max_bad_steps`` in a row the run stops with a :class:`TrainingError`).
        Under fp16 a gradient overflow is the scaler's business: it skips the update and
        lowers the scale, which is not counted."""
        update = self.loop.updates[0]
        update.zero_grad()
        loss = self._loss(**self._inputs("train", idx, media, captions), idx=idx, se=self._se_rows(idx, captions))
        if not self.cfg["train"].get("cache_chunk"):
            self.precision.scale(loss).backward()
        elif loss.requires_grad:  # the SE term's own graph (the cached part is in place already)
            self.precision.scale(loss).backward()
        return loss.item() if self.loop.apply(update, loss) else None

    # --- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def val_loss(self, objective: bool = True) -> float:
        """Mean validation loss over fixed batches (centre segments, eval mode): the
        training objective with CyCLIP's terms (``objective``), or plain CLIP."""
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
            if objective:
                loss = self._cross_modal(e_m, e_t, scale, Rows("val", idx if self.objective.uses_rows else None)).double()
            else:
                loss = clip_loss(e_m, e_t, scale, self.model.logit_clamp).double()
            total += torch.stack([loss * len(idx), torch.tensor(float(len(idx)), dtype=torch.float64, device=self.device)])
        if self.world > 1:
            torch.distributed.all_reduce(total)
        return float(total[0] / total[1]) if total[1] > 0 else math.nan

    def evaluate(self, epoch: int, results: list[dict]) -> dict:
        t = self.cfg["train"]
        val = self.val_loss(objective=t.get("val_objective", "train") == "train")
        row = {"lr": self.optimizer.param_groups[0]["lr"], "train_loss": mean_of(results, "loss"), "val_loss": val,
               "temperature": 1.0 / self.model.scale().item()}
        if t["se"]["weight"]:  # the sentence-embedding term of the epoch's last step
            row["se_loss"] = next((r["se_loss"] for r in reversed(results) if "se_loss" in r),
                                  self.state.get("se_loss", math.nan))
        row.update(self.evaluators(self.model, epoch + 1, epoch + 1 == self.epochs, self.loop.monitor.name))
        return row

    # --- saving and the summary --------------------------------------------------------------
    def save(self, folder: Path, model: torch.nn.Module | None = None) -> None:
        (model if model is not None else self.model).save(folder)
        own = {k: v.detach().cpu() for k, v in self.objective.named_parameters() if v.requires_grad}
        if own:  # an objective's own trained parameters (SigLIP's bias): beside the model
            from safetensors.torch import save_file

            save_file(own, str(Path(folder) / "objective.safetensors"))

    def extra_state(self) -> dict:
        return {"objective": self.objective.state_dict()}

    def load_extra_state(self, saved: dict) -> None:
        if saved.get("objective"):
            self.objective.load_state_dict(saved["objective"])

    def summary(self, s: dict) -> dict:
        t = self.cfg["train"]
        monitor = self.loop.monitor
        summary = {
            "epochs_run": s["window"],
            "best_epoch": s["best_window"] + 1,
            "best_val_loss": s["best"],
            f"best_{monitor.name}": s["best"],
            "train_pairs": len(self.data.train),
            "val_pairs": len(self.data.val),
            f"train_{'clips' if self.model.medium == 'audio' else 'images'}": len({p.media for p in self.data.train}),
            "modality": self.model.medium,
            "skipped": self.data.skipped.to_dict(),
            "processes": self.world,
            "loss": t["loss"],
            "precision": self.cfg["runtime"]["precision"],
            "inputs": self.cfg[self.model.medium],  # the media settings the run resolved (a public model's own)
        }
        if self.streaming:  # no index of the training pairs: what the steps took instead
            summary.update(train_pairs=None, **{k: None for k in summary if k.startswith("train_") and k != "train_pairs"},
                           streamed_pairs=s["step"] * t["batch_size"], epochs=self.epochs)
        if hasattr(self.objective, "cache_stats"):
            summary["teacher_cache"] = self.objective.cache_stats
        if self.cfg["runtime"]["compile"] != "none":  # compile time apart from the step time
            from .compile import compile_stats

            summary["compile"] = compile_stats(getattr(self, "net", None))  # None: a finished run resumed
        return summary

    def fit(self) -> dict:
        """Train to ``train.epochs``; a SIGTERM ends the current step, saves ``last/`` and
        returns with ``stopped: SIGTERM`` (see :class:`clapkit.training.loop.Loop`). Then
        ``checkpoint/README.md``, the model card (:func:`~clapkit.training.common.write_run_card`)."""
        summary = self.loop.fit()
        write_run_card(self.out, "clap", self.given, summary, self.model.medium, self._card_data)
        return summary

    def _card_data(self):
        """What the model card says the run trained on (:class:`clapkit.audit.card.TrainingData`)."""
        from ..audit.card import TrainingData

        d, specs = self.data, list(self.given["data"]["train"])
        if self.streaming:
            return TrainingData(specs, counts={"streamed_pairs": self.state["step"] * self.cfg["train"]["batch_size"]},
                                note="streamed from shards: no index of the pairs here; `clapkit card` with "
                                     "--train-data scans their captions")
        noun = "clips" if self.model.medium == "audio" else "images"
        return TrainingData(specs, [p.caption for p in d.train], [p.media for p in d.train],
                            {"pairs": len(d.train), noun: len({p.media for p in d.train}), "validation_pairs": len(d.val),
                             "skipped": d.skipped.count})


class _Both(torch.nn.Module):
    """The model's and the objective's parameters, for one optimizer."""

    def __init__(self, model: torch.nn.Module, objective: torch.nn.Module):
        super().__init__()
        self.model, self.objective = model, objective


def train_clap(cfg: dict, out: str | Path, resume: bool = False) -> dict:
    return ClapTrainer(cfg, out, resume).fit()
