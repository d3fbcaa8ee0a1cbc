"""SimCSE training speed and quality: clapkit's `train cse` step against sentence-transformers'
own SimCSE recipe, in one process.

Both start from the shipped all-MiniLM-L6-v2 with mean pooling, train on the same STS-B
training sentences in the same order, batch size, max length 32, AdamW at 3e-5 with
linear decay, gradient clip 1.0, temperature 0.05 (MNRL scale 20), for the same number of
steps:

- ours: ``CseTrainer.train_step`` - one forward of the concatenated batch ``[s; s]``;
- sentence-transformers: ``MultipleNegativesRankingLoss`` on ``(s, s)`` pairs (two
  forwards, one per column, so two dropout masks), stepped by the same optimizer loop.

Steps run in ABBA blocks (ours, theirs, theirs, ours, ...) so drift of this noisy
machine hits both alike. Prints one JSON line: sentences per second of each and the
ratio, then the STS-B dev Spearman of each model after training (and of the start).

Usage: python bench_cse_speed.py [--steps 40] [--batch-size 32] [--block 5]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import SHARED  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--block", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from clapkit.config import load_config
    from clapkit.data.text.sts import load_sts
    from clapkit.evaluation.sts import evaluate_set
    from clapkit.models.text import resolve_text_model
    from clapkit.training.cse import CseTrainer

    stsb = SHARED / "sts" / "stsbenchmark"
    dev = load_sts(f"stsb:{stsb}", "dev")[0]
    cfg = load_config("cse-cpu", [f"cse.corpus=stsb:{stsb}", f"cse.steps={args.steps}", f"cse.batch_size={args.batch_size}",
                                  "cse.model.pooling=mean", "runtime.progress=false", "runtime.device=cpu", "seed=0"])
    ours = CseTrainer(cfg, tempfile.mkdtemp(prefix="bench-cse-"))

    st = SentenceTransformer(resolve_text_model("minilm"), device="cpu")
    st.max_seq_length = cfg["cse"]["model"]["max_length"]
    loss_fn = MultipleNegativesRankingLoss(st, scale=1 / cfg["cse"]["temperature"])
    opt = torch.optim.AdamW(st.parameters(), lr=cfg["cse"]["lr"], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / args.steps))

    class StEncoder:  # evaluate_set needs .encode(texts, batch_size) -> L2-normalised rows
        @staticmethod
        def encode(texts, batch_size=64):
            return st.encode(texts, batch_size=batch_size, normalize_embeddings=True)

    start_dev = evaluate_set(StEncoder, dev)["spearman"]

    def st_step(step: int) -> None:
        st.train()
        idx = ours._batch(1, step, ours.data.n_text, args.batch_size)  # the same sentences as ours
        s = [ours.data.sentences[i] for i in idx]
        features = [st.preprocess(s), st.preprocess(s)]
        loss = loss_fn(features, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(st.parameters(), 1.0)
        opt.step()
        sched.step()

    times = {"ours": 0.0, "sentence_transformers": 0.0}
    runners = {"ours": ours.train_step, "sentence_transformers": st_step}
    done = {"ours": 0, "sentence_transformers": 0}
    order = ["ours", "sentence_transformers", "sentence_transformers", "ours"]
    b = 0
    while min(done.values()) < args.steps:
        name = order[b % 4]
        b += 1
        for _ in range(min(args.block, args.steps - done[name])):
            t0 = time.perf_counter()
            runners[name](done[name])
            times[name] += time.perf_counter() - t0
            done[name] += 1
    sentences = args.steps * args.batch_size
    rate = {k: sentences / v for k, v in times.items()}
    result = {
        "benchmark": "cse_speed", "steps": args.steps, "batch_size": args.batch_size, "max_length": 32,
        "sentences_per_second": rate, "ratio_ours_over_st": rate["ours"] / rate["sentence_transformers"],
        "stsb_dev_spearman": {"start": start_dev, "ours": evaluate_set(ours.model, dev)["spearman"],
                              "sentence_transformers": evaluate_set(StEncoder, dev)["spearman"]},
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    assert np.isfinite(list(rate.values())).all()


if __name__ == "__main__":
    main()
