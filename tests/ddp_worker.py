"""Run under ``torchrun --nproc_per_node N``: one real training step of ClapTrainer
(both towers running and trainable, the loss of the config, backward, gradient clipping,
the optimizer step) on a fixed global batch; writes the loss, this rank's DDP-averaged
gradients and the updated weights.

BatchNorm is put in eval mode: on CPU each process normalises with its own batch
statistics (SyncBatchNorm is GPU-only), the one thing that may differ by design.

Usage: ddp_worker.py OUT_DIR CONFIG_YAML
"""

import sys
from pathlib import Path

import torch
import yaml

from clapkit.config import load_config
from clapkit.training.clap import ClapTrainer


def main() -> None:
    out, cfg_path = Path(sys.argv[1]), sys.argv[2]
    cfg = load_config(cfg_path)
    trainer = ClapTrainer(cfg, out / "run")
    trainer._start_phase("unfrozen")
    assert not trainer.model.frozen and trainer.caches is None  # the audio tower runs and trains
    batch = trainer._batches(0)[0]  # this rank's share of the first global batch
    trainer.model.train()
    for m in trainer.model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    grads = {}
    step = trainer.optimizer.step

    def keep_grads(*args, **kwargs):  # the gradients the optimizer steps with (DDP-averaged, clipped)
        grads.update({n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
        return step(*args, **kwargs)

    trainer.optimizer.step = keep_grads
    loss = trainer.train_step(batch)
    weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    torch.save({"loss": loss, "grads": grads, "weights": weights, "batch": batch,
                "teacher_cache": getattr(trainer.objective, "cache_stats", None)}, out / f"rank{rank}.pt")
    yaml.safe_dump({"ok": True}, open(out / f"done{rank}.yaml", "w"))


if __name__ == "__main__":
    main()
