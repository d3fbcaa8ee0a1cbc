"""``clapkit train audio-backbone``: supervised pre-training of the audio tower, a recipe on the one loop.

The audio tower of ``model.audio`` plus a linear classifier learns the classes of a
labelled set (``backbone.data``), optionally restricted by ``backbone.include`` /
``backbone.exclude``. This is how leakage through pre-training is controlled: a
"dirty" backbone sees every class, a "clean" one has the evaluation classes excluded,
and "none" is no pre-training at all. The best tower by the monitor (validation
accuracy unless ``train.monitor`` says otherwise) is written to
``OUT/audio_tower.safetensors``, which ``train clap`` loads with
``--set model.audio.checkpoint=OUT/audio_tower.safetensors``.

On the loop it has what every recipe has: ``last/`` and ``--resume`` (exact: epochs are
seeded by (seed, epoch)), SIGTERM, non-finite steps skipped and counted, step
checkpoints, and ``torchrun`` (each process takes its share of every batch).

Output folder: ``config.yaml``, ``audio_tower.safetensors`` (the best tower),
``checkpoint/`` (best tower and classifier), ``last/`` (+ ``trainer_state.pt``),
``metrics.csv``, ``summary.json``.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from ..data.audio.labelled import load_labelled
from ..data.datasets import ClipDataset, check_audio_files, collate_clips, epoch_loader
from ..errors import ConfigError
from ..models.towers.audio import build_audio_tower
from .common import (
    epoch_order,
    init_distributed,
    is_main,
    recover_dir,
    resume_config,
    runtime_of,
    save_weights,
    seed_everything,
)
from .loop import Loop, Recipe, Update, mean_of
from .monitors import Evaluators, pick_monitor
from .parallel import require_whole_model


class BackboneTrainer(Recipe):
    unit = "epoch"

    def __init__(self, cfg: dict, out: str | Path, resume: bool = False):
        self.out = Path(out)
        self.rank, self.world = init_distributed()
        if resume:
            cfg = resume_config(self.out, cfg, (("backbone", "epochs"),))
        self.cfg = cfg
        require_whole_model(cfg, "train audio-backbone")
        b, a = cfg["backbone"], cfg["audio"]
        if a["crop"] != "fixed":
            raise ConfigError("audio.crop = variable applies to train clap (whole clips in batches of similar length); "
                              "train audio-backbone trains on one audio.segment_seconds crop of each clip: set "
                              "audio.crop: fixed")
        if not b["data"]:
            raise ConfigError("backbone.data is empty: e.g. --set backbone.data=folder:DIR or esc50:ROOT")
        if b["batch_size"] < self.world:
            raise ConfigError(f"backbone.batch_size = {b['batch_size']}: give at least one clip per process ({self.world})")
        if is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        seed_everything(cfg["seed"])
        self.device, self.precision = runtime_of(cfg)

        data = load_labelled(b["data"], skip_bad=cfg["runtime"]["skip_bad"])
        unknown = [c for c in b["include"] + b["exclude"] if c not in data.class_names]
        if unknown:
            raise ConfigError(f"backbone.include/exclude: {', '.join(unknown)} not among the classes of {b['data']}")
        keep = [c for c in data.class_names if (not b["include"] or c in b["include"]) and c not in b["exclude"]]
        if len(keep) < 2:
            raise ConfigError(f"backbone: {len(keep)} class(es) left after include/exclude; need at least 2")
        remap = {data.class_names.index(c): i for i, c in enumerate(keep)}
        clips = [c for c in check_audio_files(data.clips, cfg["runtime"]["skip_bad"], data.skipped) if c.label in remap]
        labels = np.array([remap[c.label] for c in clips])
        self.classes, self.skipped = keep, data.skipped

        rng = np.random.default_rng((cfg["seed"], 5))
        perm = rng.permutation(len(clips))
        n_val = int(round(b["val_fraction"] * len(clips)))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        self.train_ds = ClipDataset([clips[i] for i in train_idx], a["sample_rate"], a["segment_seconds"], a["normalize"],
                                    train=True, seed=cfg["seed"])
        self.val_ds = ClipDataset([clips[i] for i in val_idx], a["sample_rate"], a["segment_seconds"], a["normalize"])
        self.y_train, self.y_val = torch.from_numpy(labels[train_idx]), torch.from_numpy(labels[val_idx])

        self.tower = build_audio_tower(cfg["model"]["audio"], a["sample_rate"]).to(self.device)
        self.head = nn.Linear(self.tower.embed_dim, len(keep)).to(self.device)
        self.model = nn.Sequential(self.tower, self.head)
        if resume:
            last = recover_dir(self.out / "last")
            self.tower.load_state_dict(load_file(str(last / "audio_tower.safetensors")))
            self.head.load_state_dict(load_file(str(last / "head.safetensors")))
        self.net = self.model
        if self.world > 1:
            self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self._loader = self._sampler = None
        monitor = pick_monitor(cfg, ["val_accuracy", "val_loss", "train_loss"], "val_accuracy", None,
                               Evaluators(cfg, None, self.device, allowed=()))
        self.loop = Loop(self, self.out, monitor, cfg["runtime"], self.precision, self.device, self.rank, self.world, resume)

    @property
    def state(self) -> dict:
        return self.loop.state

    # --- the loop's parts ------------------------------------------------------------------
    def windows(self) -> int:
        return self.cfg["backbone"]["epochs"]

    def start_phase(self, phase: str) -> list[Update]:
        b = self.cfg["backbone"]
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [Update("model", torch.optim.Adam(params, lr=b["lr"]), grad_clip=b["grad_clip"])]

    def steps(self, epoch: int, start: int):
        """This process's share of each batch of the epoch's seeded order (the last batch
        may be smaller), from the ``start``-th."""
        self.model.train()
        self.train_ds.set_epoch(epoch)
        bs = self.cfg["backbone"]["batch_size"]
        order = epoch_order(self.cfg["seed"], epoch, len(self.train_ds), self.rank)
        batches = []
        for i in range(0, len(order), bs):
            glob = order[i : i + bs]
            share = len(glob) // self.world
            if share:
                batches.append(glob[self.rank * share : (self.rank + 1) * share].tolist())
        self._n = len(batches)
        if self._loader is None:
            self._loader, self._sampler = epoch_loader(self.train_ds, self.cfg["runtime"]["num_workers"],
                                                       self.device.type == "cuda")
        self._sampler.set(epoch, batches[start:])
        return iter(self._loader)

    def window_length(self, epoch: int) -> int:
        return self._n

    def step(self, batch) -> dict | None:
        waves, idx = batch
        update = self.loop.updates[0]
        with self.precision.autocast():
            logits = self.net(waves.to(self.device))
        loss = F.cross_entropy(logits.float(), self.y_train[idx].to(self.device))
        update.zero_grad()
        self.precision.scale(loss).backward()
        return {"loss": loss.item()} if self.loop.apply(update, loss) else None

    @torch.no_grad()
    def evaluate(self, epoch: int, results: list[dict]) -> dict:
        """Validation accuracy and cross-entropy (NaN without validation clips)."""
        acc = val_loss = math.nan
        if len(self.val_ds):
            self.model.eval()
            correct, total = 0, 0.0
            for waves, idx in DataLoader(self.val_ds, batch_size=self.cfg["runtime"]["eval_batch_size"],
                                         collate_fn=collate_clips):
                logits = self.model(waves.to(self.device)).float().cpu()
                correct += int((logits.argmax(1) == self.y_val[idx]).sum())
                total += float(F.cross_entropy(logits, self.y_val[idx], reduction="sum"))
            acc, val_loss = correct / len(self.val_ds), total / len(self.val_ds)
        return {"train_loss": mean_of(results, "loss"), "val_accuracy": acc, "val_loss": val_loss}

    def save(self, folder: Path, model=None) -> None:
        save_weights(self.tower.state_dict(), Path(folder) / "audio_tower.safetensors")
        save_weights(self.head.state_dict(), Path(folder) / "head.safetensors")

    def summary(self, s: dict) -> dict:
        best = s["best"]
        return {"classes": self.classes, "train_clips": len(self.train_ds), "val_clips": len(self.val_ds),
                "best_val_accuracy": best if self.loop.monitor.name == "val_accuracy" and not math.isinf(best) else None,
                f"best_{self.loop.monitor.name}": best, "best_epoch": s["best_window"] + 1,
                "chance": 1 / len(self.classes), "epochs": self.cfg["backbone"]["epochs"],
                "skipped": self.skipped.to_dict(), "weights": str(self.out / "audio_tower.safetensors"),
                "processes": self.world}

    def fit(self) -> dict:
        summary = self.loop.fit()
        best = recover_dir(self.out / "checkpoint") / "audio_tower.safetensors"
        if is_main() and "stopped" not in summary and best.is_file():  # the contract: OUT/audio_tower.safetensors
            tmp = self.out / "audio_tower.safetensors.tmp"
            shutil.copyfile(best, tmp)
            tmp.replace(self.out / "audio_tower.safetensors")
        return summary


def train_audio_backbone(cfg: dict, out: str | Path, resume: bool = False) -> dict:
    return BackboneTrainer(cfg, out, resume).fit()
