"""Reading training media from WebDataset shards (read in place: offset + size) against
reading the same files from a folder, interleaved in one process (ABBA). Prints one JSON
line: seconds to decode every clip (audio: 2 s FLAC at 16 kHz) and every image (64 px
PNG) each way, the ratio shards / folder, and the index time of the shards.
"""

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import timed  # noqa: E402

from clapkit.data.audio import load_audio  # noqa: E402
from clapkit.data.audio.captions import load_pairs  # noqa: E402
from clapkit.data.files import Skipped  # noqa: E402
from clapkit.data.image.io import open_image  # noqa: E402
from clapkit.data.records import Pair  # noqa: E402
from clapkit.data.shards import shard_pattern, write_shards  # noqa: E402


def make(tmp: Path, n: int, medium: str) -> list[Pair]:
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        if medium == "audio":
            path = tmp / medium / f"{i:05d}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, (0.1 * rng.standard_normal(32000)).astype(np.float32), 16000)
        else:
            path = tmp / medium / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        pairs.append(Pair(path, f"item {i}", str(path), f"row {i}"))
    return pairs


def main(n: int = 400, repeats: int = 4) -> None:
    tmp = Path(tempfile.mkdtemp())
    out = {"benchmark": "shards", "items": n, "repeats": repeats}
    for medium in ("audio", "image"):
        pairs = make(tmp, n, medium)
        tars = write_shards(pairs, tmp / f"shards-{medium}", 100, lambda p: (Path(p).read_bytes(), Path(p).suffix[1:]))
        t0 = time.perf_counter()
        if medium == "audio":
            sharded = load_pairs(shard_pattern(tars), skipped=Skipped())
        else:
            from clapkit.data.image.captions import load_image_pairs

            sharded = load_image_pairs(shard_pattern(tars))
        index_s = time.perf_counter() - t0

        def decode(items, medium=medium):
            for p in items:
                load_audio(p.media, 16000) if medium == "audio" else np.asarray(open_image(p.media))

        folder, shards = [], []
        decode(pairs), decode(sharded)  # warm the page cache for both
        for r in range(repeats):
            runs = [(folder, pairs), (shards, sharded)]
            for times, items in (runs if r % 2 == 0 else runs[::-1]):
                times.append(timed(decode, items)[0])
        out[medium] = {"folder_s": statistics.median(folder), "shards_s": statistics.median(shards),
                       "ratio_shards_vs_folder": statistics.median([s / f for s, f in zip(shards, folder, strict=True)]),
                       "index_s": index_s, "shards": len(tars)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
