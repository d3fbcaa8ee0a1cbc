"""The paired data of a CLAP/CLIP run: reading and splitting the manifests, and the
frozen-phase cache of backbone outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.datasets import clip_seconds, collate_for
from ..data.files import Skipped
from ..data.media import check_media, load_media_pairs, media_dataset, medium_of
from ..data.records import Pair, clip_index
from ..data.stream import stream_shards
from ..errors import ConfigError
from ..inference.embed import embed_text, to_device
from ..models.dual import DualEncoder


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
        return check_media(medium_of(cfg), pairs, cfg["runtime"]["skip_bad"], skipped)

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
    image, x_t per distinct caption; ``None`` for a tower that is not frozen.

    x_m is of the input the dataset gives each clip at epoch 0: in training one seeded
    segment (``audio.crop: fixed``) or the whole clip up to ``audio.max_seconds`` (a seeded
    segment of a longer one; ``variable``: computed in batches of similar lengths, padded
    with a mask, equal to each clip's own in eval mode); in validation the centre segment."""

    def __init__(self, model: DualEncoder, pairs: list[Pair], cfg: dict, train: bool, device: torch.device):
        bs = cfg["runtime"]["eval_batch_size"]
        self.x_m = self.x_t = None
        with torch.no_grad():
            if model.medium in model.frozen:
                items, rows = clip_index(pairs)
                self.media_rows = torch.tensor(rows)
                ds = media_dataset(cfg, items, train=train, seed=cfg["seed"], extract=extractor_of(model))
                order = np.arange(len(items))
                if getattr(ds, "padded", False):  # whole clips: batches of similar lengths
                    order = np.argsort(clip_seconds(items), kind="stable")
                batches = [order[a : a + bs].tolist() for a in range(0, len(order), bs)]
                loader = DataLoader(ds, batch_sampler=batches, collate_fn=collate_for(ds),
                                    num_workers=cfg["runtime"]["num_workers"])
                x_m, idx = [], []
                for w, i in loader:
                    x_m.append(model.media_backbone(to_device(w, device)))
                    idx.append(i)
                self.x_m = torch.cat(x_m)[torch.argsort(torch.cat(idx)).to(device)]
            if "text" in model.frozen:
                texts = list(dict.fromkeys(p.caption for p in pairs))
                row = {t: i for i, t in enumerate(texts)}
                self.text_rows = torch.tensor([row[p.caption] for p in pairs])
                self.x_t = torch.from_numpy(embed_text(model, texts, bs, projected=False, device=device)).to(device)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x_m = self.x_m[self.media_rows[idx]] if self.x_m is not None else None
        x_t = self.x_t[self.text_rows[idx]] if self.x_t is not None else None
        return x_m, x_t


def extractor_of(model):
    """A fused public CLAP's per-clip feature function (whole clips in training), else None."""
    extractor = getattr(model, "extractor", None)
    return extractor() if extractor is not None else None
