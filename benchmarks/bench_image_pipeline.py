"""Image input pipeline: images per second through decode + random resized crop + flip +
normalise (ImageDataset in a persistent DataLoader) with 0, 1 and 2 workers, against
the image tower's forward pass alone on the same batches (ratio > 1: the input keeps
up with the model). Shared emoji PNGs (64 x 64 RGBA) at the clip-cpu settings, and the
same pictures upscaled to 256 x 256 JPEGs cropped to 224 (the paper-scale input size).
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
from clapkit.data.image_io import ImageDataset, open_image  # noqa: E402
from clapkit.data.image_sets import load_image_pairs  # noqa: E402
from clapkit.models.image import build_image_tower  # noqa: E402


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
    tower.train()
    with torch.no_grad():
        tower(x)
        fwd, _ = timed(lambda: [tower(x) for _ in range(3)])
    model_ips = 3 * batch / fwd
    out = {"model_forward_images_per_s": model_ips}
    for w in (0, 1, 2):
        ips = throughput(ds, w, batch, n_batches)
        out[f"workers_{w}"] = {"images_per_s": ips, "ratio_to_forward": ips / model_ips}
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
    print(json.dumps({"benchmark": "image_pipeline", "batch": batch, "batches": n_batches,
                      "threads": torch.get_num_threads(), "emoji_png_64": small, "jpeg_256_crop_224": large}))


if __name__ == "__main__":
    main()
