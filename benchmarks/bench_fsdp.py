"""``runtime.parallel``: FSDP2 shards against DDP on two gloo processes (CPU), in one torchrun
job: the time of a ``train clap`` step (``ClapTrainer.train_step``: forward, backward,
gradient reduction, Adam) and the bytes each process holds in parameters, gradients and
optimizer state.

The model: a random 4-layer, 256-wide BERT text tower and the ``small_cnn`` audio tower
(channels 32-256) with 512-wide projectors, fp32, 1 s clips at 16 kHz, a global batch of
``--batch`` pairs (half on each process). Both trainers are built in the same processes;
their timed blocks alternate (DDP, FSDP, DDP, FSDP, ...) so that the machine's load falls
on both alike, and each time is the median of its steps after warm-up. Prints one JSON line.

Usage: python benchmarks/bench_fsdp.py [--batch 32] [--steps 6] [--rounds 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import synthetic  # noqa: E402


def bert(folder: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from clapkit.models.text import resolve_text_model

    if not (folder / "config.json").exists():
        BertModel(BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                             max_position_embeddings=64)).save_pretrained(folder)
        AutoTokenizer.from_pretrained(resolve_text_model("minilm")).save_pretrained(folder)
    return folder


def trainer(parallel: str, tmp: Path, batch: int):
    from clapkit.config import load_config
    from clapkit.training.clap import ClapTrainer

    cfg = load_config(None, [f"model.text.name={tmp / 'bert'}", "model.text.max_length=32", "model.audio.name=small_cnn",
                             "model.audio.channels=[32, 64, 128, 256]", "model.projector.dim=512",
                             "model.projector.hidden=512", "audio.sample_rate=16000", "audio.segment_seconds=1.0",
                             f"data.train=[csv:{tmp / 'data' / 'train.csv'}]", "data.val_fraction=0",
                             f"train.batch_size={batch}", "train.frozen_epochs=0", "runtime.progress=false",
                             "runtime.device=cpu", f"runtime.parallel={parallel}"])
    t = ClapTrainer(cfg, tmp / f"run-{parallel}")
    t._start_phase("unfrozen")
    t.model.train()
    return t


def held(t) -> dict:
    """Bytes this process holds: parameters, gradients, optimizer state (its shards under FSDP)."""
    import torch

    from clapkit.training.parallel import local

    def size(x):
        return local(x).numel() * x.element_size()

    params = list(t.model.parameters())
    state = [v for s in t.optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
    out = {"params": sum(size(p) for p in params), "grads": sum(size(p.grad) for p in params if p.grad is not None),
           "optimizer": sum(size(v) for v in state)}
    return {**out, "total": sum(out.values())}


def worker(tmp: Path, batch: int, steps: int, rounds: int) -> None:
    import torch

    from clapkit.distributed import init_distributed

    rank, world = init_distributed()
    trainers = {name: trainer(name, tmp, batch) for name in ("ddp", "fsdp")}
    share = batch // world
    media = 0.1 * torch.randn(share, 16000, generator=torch.Generator().manual_seed(rank))
    idx = list(range(rank * share, (rank + 1) * share))
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for r in range(rounds):
        for name, t in trainers.items():
            if r == 0:
                t.train_step(idx, media)  # warm-up: the optimizer state, FSDP's lazy set-up
            for _ in range(steps):
                torch.distributed.barrier()
                t0 = time.perf_counter()
                t.train_step(idx, media)
                times[name].append(time.perf_counter() - t0)
    memory = {name: held(t) for name, t in trainers.items()}
    everyone: list = [None] * world
    torch.distributed.all_gather_object(everyone, memory)
    if rank == 0:
        step = {name: statistics.median(v) for name, v in times.items()}
        whole = sum(p.numel() for p in trainers["ddp"].model.parameters())
        print(json.dumps({
            "benchmark": "fsdp", "device": "cpu", "processes": world, "cores": os.cpu_count(),
            "threads_per_process": torch.get_num_threads(), "parameters": whole, "global_batch": batch,
            "steps_timed": steps * rounds,
            "step_s": {k: round(v, 4) for k, v in step.items()}, "fsdp_over_ddp_step": round(step["fsdp"] / step["ddp"], 3),
            "bytes_per_process": {name: [m[name] for m in everyone] for name in trainers},
            "fsdp_over_ddp_bytes": [round(m["fsdp"]["total"] / m["ddp"]["total"], 3) for m in everyone]}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worker", metavar="TMP")
    args = ap.parse_args()
    if args.worker:
        worker(Path(args.worker), args.batch, args.steps, args.rounds)
        return
    tmp = Path(tempfile.mkdtemp(prefix="clapkit-bench-"))
    bert(tmp / "bert")
    synthetic(tmp / "data", sr=16000, seconds=1.0, train_clips=2, test_clips=1, unseen_clips=1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29931", __file__,
           "--worker", str(tmp), "--batch", str(args.batch), "--steps", str(args.steps), "--rounds", str(args.rounds)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    print(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
