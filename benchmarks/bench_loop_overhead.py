"""Loop overhead: one step through the one training loop (``Loop._run_step``: the BatchNorm
guard, the recipe's step, ``Loop.apply`` with clipping, the finiteness check, the
logit-scale cap and the schedule) against a bare forward + backward + optimizer step of
the same model on the same batch, interleaved in one process (ABBA order). Prints one
JSON line with the median time ratio per recipe; the target is below 1.05.

- clap_audio: the `small` preset's audio CNN + the shipped MiniLM, both trainable,
  batch 32 of 2 s clips at 16 kHz, Adam, CLIP loss;
- clip_image: the `clip-cpu` preset's image CNN + MiniLM, AdamW + cosine, CyCLIP on;
- cse_unsup: `train cse` unsupervised SimCSE on MiniLM, 64 sentences ([s; s]);
- backbone: the `small` audio CNN + a linear classifier, batch 32, cross-entropy.
"""

import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, synthetic  # noqa: E402

from clapkit.config import load_config  # noqa: E402
from clapkit.losses import clip_loss, cyclip_regularisers, simcse_loss  # noqa: E402


def _ratio(ours, bare, repeats: int) -> dict:
    a, b = interleaved(ours, bare, repeats)
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return {"loop_step_s": statistics.median(a), "bare_step_s": statistics.median(b),
            "ratio_median": statistics.median(ratios)}


def clap(medium: str, tmp: Path, repeats: int, batch: int) -> dict:
    from clapkit.training.clap import ClapTrainer

    common = [f"train.batch_size={batch}", "train.frozen_epochs=0", "runtime.progress=false"]
    if medium == "audio":
        data = synthetic(tmp / "syn", train_clips=4, test_clips=1, unseen_clips=1)
        cfg = load_config("small", [f"data.train=[csv:{data / 'train.csv'}]", "audio.segment_seconds=2.0", *common])
    else:
        from clapkit.data.image.synthetic import write_synthetic_images

        write_synthetic_images(tmp / "img", train_images=2, test_images=1, unseen_images=1)
        cfg = load_config("clip-cpu", [f"data.train=[csv:{tmp / 'img' / 'train.csv'}]", "train.cyclip.in_modal=0.25",
                                       "train.cyclip.cross_modal=0.25", *common])
    tr = ClapTrainer(cfg, tmp / f"run-{medium}")
    tr._start_phase("unfrozen")
    model = tr.model.train()
    idx = list(range(batch))
    media = torch.stack([tr.train_ds[i][0] for i in idx])
    captions = [tr.data.train[i].caption for i in idx]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-5)
    cy = medium == "image"

    def bare():  # tokenizing is part of a step on both sides
        e_m, e_t, s = model(media=media, tokens=model.text.tokenize(captions))
        loss = clip_loss(e_m, e_t, s)
        if cy:
            a, b = cyclip_regularisers(e_m, e_t)
            loss = loss + 0.25 * a + 0.25 * b
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _ratio(lambda: tr.loop._run_step((idx, media, None)), bare, repeats)


def cse(tmp: Path, repeats: int, batch: int) -> dict:
    from clapkit.training.cse import CseTrainer

    corpus = tmp / "corpus.txt"
    corpus.write_text("".join(f"a sentence about the number {i} and a dog barking in the rain.\n" for i in range(256)))
    cfg = load_config(None, [f"cse.corpus=txt:{corpus}", f"cse.batch_size={batch}", "cse.steps=1000",
                             "runtime.progress=false", "runtime.device=cpu"])
    tr = CseTrainer(cfg, tmp / "run-cse")
    tr.loop._enter("train")
    model = tr.model.train()
    rows = [tr.data.sentences[i] for i in range(batch)]
    params = [p for g in tr.opt_text.param_groups for p in g["params"]]
    opt = torch.optim.AdamW(params, lr=3e-5)

    def bare():
        z = model.encode_text(model.tokenize(rows + rows))
        loss = simcse_loss(z[:batch], z[batch:], 0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _ratio(lambda: tr.loop._run_step(0), bare, repeats)


def backbone(tmp: Path, repeats: int, batch: int) -> dict:
    from clapkit.training.backbone import BackboneTrainer

    data = synthetic(tmp / "syn-bb", train_clips=24, test_clips=1, unseen_clips=8)
    cfg = load_config("small", [f"backbone.data=folder:{data / 'unseen'}", f"backbone.batch_size={batch}",
                                "audio.segment_seconds=2.0", "runtime.progress=false", "backbone.val_fraction=0"])
    tr = BackboneTrainer(cfg, tmp / "run-bb")
    tr.loop._enter("train")
    n = min(batch, len(tr.train_ds))
    idx = torch.arange(n)
    waves = torch.stack([tr.train_ds[i][0] for i in range(n)])
    y = tr.y_train[idx]
    opt = torch.optim.Adam([p for p in tr.model.parameters() if p.requires_grad], lr=1e-3)
    tr.model.train()

    def bare():
        loss = F.cross_entropy(tr.model(waves), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return {**_ratio(lambda: tr.loop._run_step((waves, idx)), bare, repeats), "batch": n}


def main(repeats: int = 32, batch: int = 32) -> None:
    tmp = Path(tempfile.mkdtemp())
    print(json.dumps({
        "benchmark": "loop_overhead", "batch": batch, "repeats": repeats, "target": "< 1.05",
        "clap_audio": clap("audio", tmp, repeats, batch), "clip_image": clap("image", tmp, repeats, batch),
        "cse_unsup": cse(tmp, repeats, batch), "backbone": backbone(tmp, repeats, batch),
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
