"""Soft-label CLIP (S3, :func:`clapkit.losses.soft_clip_loss`): targets mixed from a
teacher's intra-batch similarities. The teacher's E of every training and validation
pair come from the curation cache (``train.soft.cache``); the teacher model is loaded
only for what the cache lacks, then dropped."""

from __future__ import annotations

import torch

from ...data.records import clip_index
from ...errors import ConfigError
from ...losses import soft_clip_loss
from . import Objective, register


@register("soft_clip")
class SoftClip(Objective):
    uses_rows = True

    @classmethod
    def check(cls, cfg: dict) -> None:
        if not cfg["train"]["soft"]["teacher"]:
            raise ConfigError("train.loss = soft_clip needs train.soft.teacher (a teacher checkpoint)")
        if cfg["data"]["stream"]:
            raise ConfigError("train.loss = soft_clip needs its teacher's embeddings per indexed pair: set "
                              "data.stream: false")

    def setup(self, trainer) -> None:
        self.model = [trainer.model]
        self.teacher = {"train": self._embeddings(trainer, trainer.data.train)}
        self.cache_stats = dict(self._stats)
        if trainer.data.val and trainer.cfg["train"].get("val_objective", "train") == "train":
            self.teacher["val"] = self._embeddings(trainer, trainer.data.val)

    def _embeddings(self, trainer, pairs) -> tuple[torch.Tensor, torch.Tensor]:
        from ...inference.cache import EmbeddingCache

        soft = self.cfg["train"]["soft"]
        clips, rows = clip_index(pairs)
        captions = [p.caption for p in pairs]

        # under DDP every process embeds its share of what the cache lacks; one writes it
        cache = EmbeddingCache(soft["cache"] or trainer.out / "teacher-cache", soft["teacher"],
                               batch_size=self.cfg["runtime"]["eval_batch_size"], device=trainer.device,
                               num_workers=self.cfg["runtime"]["num_workers"])
        e_a, e_t, self._stats = cache.media(clips)[rows], cache.text(captions), cache.stats
        return torch.from_numpy(e_a).to(trainer.device), torch.from_numpy(e_t).to(trainer.device)

    def forward(self, e_m, e_t, scale, rows):
        soft = self.cfg["train"]["soft"]
        t_m, t_t = (x[torch.tensor(rows.idx, device=x.device)] for x in self.teacher[rows.split])  # the global rows
        return soft_clip_loss(e_m, e_t, scale, t_m, t_t, soft["weight"], soft["temperature"], soft["similarity"],
                              self.model[0].logit_clamp)
