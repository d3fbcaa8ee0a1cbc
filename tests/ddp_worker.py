"""Run under ``torchrun --nproc_per_node N``: one training step of ClapTrainer on a
fixed global batch; writes the loss and the (DDP-averaged) gradients of this rank.

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
    trainer._start_phase("frozen")
    batch = trainer._batches(0)[0]  # this rank's share of the first global batch
    trainer.model.train()
    loss = trainer._loss(**trainer._inputs("train", batch))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    torch.save({"loss": loss.item(), "grads": grads, "batch": batch}, out / f"rank{rank}.pt")
    yaml.safe_dump({"ok": True}, open(out / f"done{rank}.yaml", "w"))


if __name__ == "__main__":
    main()
