"""Input pipeline: items per second through the training datasets in a persistent
DataLoader with 0, 1 and 2 workers, against the media tower's training step (forward
and backward) on the same batches (ratio > 1: the input keeps up with the model).

- images: decode + random resized crop + flip + normalise (ImageDataset); the shared
  emoji PNGs (64 x 64 RGBA) at the clip-cpu settings, and the same pictures upscaled
  to 256 x 256 JPEGs cropped to 224 (the paper-scale input size);
- audio: decode + resample + random 5 s segment (ClipDataset) of 10 s FLAC files at
  44.1 kHz, the `paper` preset's input, for the `small` preset's audio CNN; the same
  clips read from WebDataset shards through the streaming reader (data.stream).
Prints one JSON line.
"""

import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED, timed  # noqa: E402

from clapkit.config import load_config  # noqa: E402
from clapkit.data.datasets import EpochBatches, batch_loader, collate_clips  # noqa: E402
from clapkit.data.image.captions import load_image_pairs  # noqa: E402
from clapkit.data.image.io import open_image  # noqa: E402
from clapkit.data.image_datasets import ImageDataset  # noqa: E402
from clapkit.models.towers.image import build_image_tower  # noqa: E402


def throughput(ds: ImageDataset, workers: int, batch: int, n_batches: int) -> float:
    sampler = EpochBatches()
    loader = batch_loader(ds, sampler, workers, collate_fn=collate_clips, persistent=True)
    sampler.set(0, [list(range(b * batch, (b + 1) * batch)) for b in range(2)])
    for _ in loader:  # start the workers
        pass
    sampler.set(1, [list(range(b * batch, (b + 1) * batch)) for b in range(n_batches)])
    seconds, _ = timed(lambda: [x for x, _ in loader])
    return n_batches * batch / seconds


def case(pairs, settings: dict, tower, batch: int, n_batches: int) -> dict:
    ds = ImageDataset(pairs, settings, train=True, seed=0)
    x = torch.stack([ds[i][0] for i in range(batch)])
    model_ips = model_rate(tower, x)
    out = {"model_step_items_per_s": model_ips}
    for w in (0, 1, 2):
        ips = throughput(ds, w, batch, n_batches)
        out[f"workers_{w}"] = {"items_per_s": ips, "ratio_to_model_step": ips / model_ips}
    return out


def model_rate(tower, x: torch.Tensor) -> float:
    """Items per second of the tower's forward + backward on ``x``."""
    tower.train()

    def step():
        tower(x).float().square().mean().backward()

    step()
    seconds, _ = timed(lambda: [step() for _ in range(3)])
    return 3 * len(x) / seconds


def audio_case(tmp: Path, batch: int, n_batches: int) -> dict:
    import numpy as np
    import soundfile as sf

    from clapkit.data.datasets import ClipDataset
    from clapkit.data.records import Pair
    from clapkit.data.shards import write_shards
    from clapkit.data.stream import ShardStream, stream_loader
    from clapkit.models.towers.audio import build_audio_tower

    rng = np.random.default_rng(0)
    pairs = []
    for i in range(batch * n_batches):
        f = tmp / "audio" / f"{i:05d}.flac"
        f.parent.mkdir(parents=True, exist_ok=True)
        sf.write(f, (0.1 * rng.standard_normal(441000)).astype(np.float32), 44100)
        pairs.append(Pair(f, f"clip {i}", str(f), f"row {i}"))
    cfg = load_config("small")
    sr = cfg["audio"]["sample_rate"]
    ds = ClipDataset(pairs, sr, 5.0, train=True, seed=0, cache_mb=0)  # no wave cache: every epoch decodes
    x = torch.stack([ds[i][0] for i in range(batch)])
    out = {"model_step_items_per_s": model_rate(build_audio_tower(cfg["model"]["audio"], sr), x)}
    for w in (0, 1, 2):
        ips = throughput(ds, w, batch, n_batches)
        out[f"workers_{w}"] = {"items_per_s": ips, "ratio_to_model_step": ips / out["model_step_items_per_s"]}
    tars = write_shards(pairs, tmp / "shards", batch // 2, lambda p: (Path(p).read_bytes(), "flac"))
    for w in (0, 1, 2):
        stream = ShardStream(tars, "audio", ds, batch, buffer=batch)
        it = iter(stream_loader(stream, w))
        next(it)  # start the workers
        seconds, _ = timed(lambda it=it: [next(it) for _ in range(n_batches)])
        ips = n_batches * batch / seconds
        out[f"stream_workers_{w}"] = {"items_per_s": ips, "ratio_to_model_step": ips / out["model_step_items_per_s"]}
    return out


def main(batch: int = 64, n_batches: int = 6) -> None:
    emoji = load_image_pairs(f"csv:{SHARED / 'images' / 'emoji' / 'pairs.csv'}")[: batch * n_batches]
    cfg = load_config("clip-cpu")
    small = case(emoji, cfg["image"], build_image_tower(cfg["model"]["image"], 64), batch, n_batches)
    tmp = Path(tempfile.mkdtemp())

    class Item:
        def __init__(self, media):
            self.media, self.where = media, str(media)

    big = []
    for i, p in enumerate(emoji):
        f = tmp / f"{i}.jpg"
        open_image(p.media).resize((256, 256)).save(f, quality=90)
        big.append(Item(f))
    paper = dict(cfg["image"], size=224)
    large = case(big, paper, build_image_tower(cfg["model"]["image"], 224), batch, n_batches)
    print(json.dumps({"benchmark": "input_pipeline", "batch": batch, "batches": n_batches,
                      "threads": torch.get_num_threads(), "emoji_png_64": small, "jpeg_256_crop_224": large,
                      "audio_flac_44k_5s": audio_case(tmp, 16, n_batches)}))


if __name__ == "__main__":
    main()
