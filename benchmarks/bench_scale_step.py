"""One training step at paper scale, clapkit against open_clip, in one job (issue 14,
item 7). Runs unchanged on CUDA (the GPU check) and on CPU (smaller batches).

- CLIP: a ViT-B/32 image tower (transformers' CLIPVisionModel layout, random weights) +
  BERT-base text, 512-d projections, bf16, AdamW, CLIP loss, via ClapTrainer.train_step;
  beside it open_clip's own ViT-B-32 CLIP (its 12-layer 512-wide text transformer) with
  its ClipLoss and AdamW on the same images and batch size.
- CLAP: CNN14 + BERT-base, bf16, 5 s clips at 44.1 kHz (the paper's recipe), via
  ClapTrainer.train_step.

Per model: samples per second (median of timed steps after warm-up), FLOPs of one step
(torch's FlopCounterMode: the matmuls and convolutions of forward and backward) and the
achieved FLOP/s; on a GPU whose peak is known, model-FLOP utilisation (MFU = achieved /
peak dense bf16). open_clip is needed only for its half (``pip install open_clip_torch``
in the benchmark environment); without it that half is reported as missing. No weights
are downloaded: every model is built from its configuration.

Usage: python benchmarks/bench_scale_step.py [--clip-batch 256] [--clap-batch 128] [--steps 5]
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import timed  # noqa: E402

from clapkit.config import load_config  # noqa: E402
from clapkit.training.clap import ClapTrainer  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step, device: torch.device, batch: int, steps: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    step()  # warm-up (allocations, autotuning)
    sync(device)
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    sync(device)
    flops = counter.get_total_flops()
    times = []
    for _ in range(steps):
        seconds, _ = timed(lambda: (step(), sync(device)))
        times.append(seconds)
    s = statistics.median(times)
    out = {"batch": batch, "step_s": s, "samples_per_s": batch / s, "flops_per_step": flops, "achieved_flops": flops / s}
    if peak(device):
        out["mfu"] = flops / s / peak(device)
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    return out


def folders(tmp: Path) -> tuple[Path, Path]:
    """Random-weight ViT-B/32 (CLIPVisionModel) and BERT-base folders with a BERT tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel, CLIPVisionConfig, CLIPVisionModel

    from clapkit.models.text import resolve_text_model

    vit, bert = tmp / "vit-b-32", tmp / "bert-base"
    CLIPVisionModel(CLIPVisionConfig(patch_size=32, image_size=224)).save_pretrained(vit)
    BertModel(BertConfig()).save_pretrained(bert)
    AutoTokenizer.from_pretrained(resolve_text_model("minilm")).save_pretrained(bert)  # bert-base-uncased's vocabulary
    return vit, bert


def clapkit_step(medium: str, tmp: Path, batch: int, bert: Path, vit: Path, device: torch.device):
    from clapkit.data.audio.synthetic import write_synthetic
    from clapkit.data.image.synthetic import write_synthetic_images

    per_class = -(-batch // 24)
    common = [f"train.batch_size={batch}", "train.frozen_epochs=0", "runtime.progress=false", "runtime.precision=bf16",
              f"runtime.device={device}", f"model.text.name={bert}", "model.text.max_length=32", "data.val_fraction=0"]
    if medium == "image":
        write_synthetic_images(tmp / "img", train_images=per_class, test_images=1, unseen_images=1)
        cfg = load_config("clip-paper", [f"data.train=[csv:{tmp / 'img' / 'train.csv'}]", f"model.image.name={vit}",
                                         "image.size=224", *common])
        media = torch.randn(batch, 3, 224, 224)
    else:
        write_synthetic(tmp / "aud", train_clips=per_class, test_clips=1, unseen_clips=1, seconds=1.0)
        cfg = load_config("paper", [f"data.train=[csv:{tmp / 'aud' / 'train.csv'}]", *common])
        media = 0.1 * torch.randn(batch, int(cfg["audio"]["sample_rate"] * cfg["audio"]["segment_seconds"]))
    trainer = ClapTrainer(cfg, tmp / f"run-{medium}")
    trainer._start_phase("unfrozen")
    trainer.model.train()
    idx = list(range(batch))
    media = media.to(trainer.device)
    return lambda: trainer.train_step(idx, media)


def open_clip_step(batch: int, device: torch.device):
    import open_clip
    from open_clip.loss import ClipLoss

    model = open_clip.create_model("ViT-B-32", device=device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1)
    loss_fn = ClipLoss()
    images = torch.randn(batch, 3, 224, 224, device=device)
    text = torch.randint(0, 49408, (batch, 77), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            f_i, f_t, scale = model(images, text)
            loss = loss_fn(f_i, f_t, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    cuda = torch.cuda.is_available()
    ap.add_argument("--clip-batch", type=int, default=256 if cuda else 8)
    ap.add_argument("--clap-batch", type=int, default=128 if cuda else 4)
    ap.add_argument("--steps", type=int, default=5 if cuda else 2)
    args = ap.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    tmp = Path(tempfile.mkdtemp())
    vit, bert = folders(tmp)
    out = {"benchmark": "scale_step", "device": torch.cuda.get_device_name(0) if cuda else "cpu",
           "threads": torch.get_num_threads(), "precision": "bf16"}
    out["clapkit_clip_vit_b32_bert_base"] = measure(clapkit_step("image", tmp, args.clip_batch, bert, vit, device),
                                                    device, args.clip_batch, args.steps)
    try:
        out["open_clip_vit_b32"] = measure(open_clip_step(args.clip_batch, device), device, args.clip_batch, args.steps)
        out["clip_samples_ratio_clapkit_vs_open_clip"] = (out["clapkit_clip_vit_b32_bert_base"]["samples_per_s"]
                                                          / out["open_clip_vit_b32"]["samples_per_s"])
    except ImportError as exc:
        out["open_clip_vit_b32"] = f"missing: {exc}"
    out["clapkit_clap_cnn14_bert_base"] = measure(clapkit_step("audio", tmp, args.clap_batch, bert, vit, device),
                                                  device, args.clap_batch, args.steps)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
