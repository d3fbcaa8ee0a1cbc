"""``clapkit train audio-backbone``: supervised pre-training of the audio tower.

The audio tower of ``model.audio`` plus a linear classifier learns the classes of a
labelled set (``backbone.data``), optionally restricted by ``backbone.include`` /
``backbone.exclude``. This is how leakage through pre-training is controlled: a
"dirty" backbone sees every class, a "clean" one has the evaluation classes excluded,
and "none" is no pre-training at all. The tower's weights are written to
``OUT/audio_tower.safetensors``, which ``train clap`` loads with
``--set model.audio.checkpoint=OUT/audio_tower.safetensors``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.datasets import ClipDataset, check_audio_files, collate_clips, epoch_loader
from ..data.labelled import load_labelled
from ..errors import ConfigError
from ..models.audio import build_audio_tower
from .common import (
    Precision,
    ScalarLogger,
    epoch_order,
    pick_device,
    save_weights,
    seed_everything,
    set_determinism,
)


def train_audio_backbone(cfg: dict, out: str | Path) -> dict:
    b, a, t = cfg["backbone"], cfg["audio"], cfg["train"]
    if not b["data"]:
        raise ConfigError("backbone.data is empty: e.g. --set backbone.data=folder:DIR or esc50:ROOT")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    seed_everything(cfg["seed"])
    device = pick_device(t["device"])
    precision = Precision(t["precision"], device)
    set_determinism(t.get("deterministic", True), device)

    data = load_labelled(b["data"], skip_bad=cfg["data"]["skip_bad"])
    unknown = [c for c in b["include"] + b["exclude"] if c not in data.class_names]
    if unknown:
        raise ConfigError(f"backbone.include/exclude: {', '.join(unknown)} not among the classes of {b['data']}")
    keep = [c for c in data.class_names if (not b["include"] or c in b["include"]) and c not in b["exclude"]]
    if len(keep) < 2:
        raise ConfigError(f"backbone: {len(keep)} class(es) left after include/exclude; need at least 2")
    remap = {data.class_names.index(c): i for i, c in enumerate(keep)}
    clips = [c for c in check_audio_files(data.clips, cfg["data"]["skip_bad"], data.skipped) if c.label in remap]
    labels = np.array([remap[c.label] for c in clips])

    rng = np.random.default_rng((cfg["seed"], 5))
    perm = rng.permutation(len(clips))
    n_val = int(round(b["val_fraction"] * len(clips)))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    train_ds = ClipDataset([clips[i] for i in train_idx], a["sample_rate"], a["segment_seconds"], a["normalize"], train=True, seed=cfg["seed"])
    val_ds = ClipDataset([clips[i] for i in val_idx], a["sample_rate"], a["segment_seconds"], a["normalize"])
    y_train, y_val = torch.from_numpy(labels[train_idx]), torch.from_numpy(labels[val_idx])

    tower = build_audio_tower(cfg["model"]["audio"], a["sample_rate"]).to(device)
    head = nn.Linear(tower.embed_dim, len(keep)).to(device)
    params = [p for p in list(tower.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=b["lr"])
    logger = ScalarLogger(out, t["logger"])
    best, start = -1.0, time.time()
    loader, sampler = epoch_loader(train_ds, cfg["data"]["num_workers"], device.type == "cuda")
    for epoch in range(b["epochs"]):
        tower.train()
        head.train()
        train_ds.set_epoch(epoch)
        order = epoch_order(cfg["seed"], epoch, len(train_ds))
        batches = [order[i : i + b["batch_size"]].tolist() for i in range(0, len(order), b["batch_size"])]
        losses = []
        sampler.set(epoch, batches)
        for waves, idx in tqdm(loader, desc=f"backbone epoch {epoch + 1}", leave=False, disable=None if t["progress"] else True):
            with precision.autocast():
                logits = head(tower(waves.to(device)))
            loss = F.cross_entropy(logits.float(), y_train[idx].to(device))
            opt.zero_grad(set_to_none=True)
            precision.scale(loss).backward()
            precision.clip(opt, params, b["grad_clip"])
            precision.step(opt)
            losses.append(loss.item())
        acc = _accuracy(tower, head, val_ds, y_val, t["eval_batch_size"], device) if n_val else float("nan")
        logger.log(epoch + 1, {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_accuracy": acc})
        if t["progress"]:
            print(f"backbone epoch {epoch + 1}/{b['epochs']}: loss {np.mean(losses):.4f} val accuracy {acc:.3f}", flush=True)
        if not n_val or acc > best:  # keep the best epoch by validation accuracy
            best = acc
            save_weights(tower.state_dict(), out / "audio_tower.safetensors")
    summary = {"classes": keep, "train_clips": len(train_idx), "val_clips": n_val, "best_val_accuracy": best,
               "chance": 1 / len(keep), "epochs": b["epochs"], "seconds": time.time() - start,
               "skipped": data.skipped.to_dict(), "weights": str(out / "audio_tower.safetensors")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def _accuracy(tower, head, ds, y, batch_size, device) -> float:
    tower.eval()
    head.eval()
    correct = 0
    for waves, idx in DataLoader(ds, batch_size=batch_size, collate_fn=collate_clips):
        correct += int((head(tower(waves.to(device))).argmax(1).cpu() == y[idx]).sum())
    return correct / len(ds)
