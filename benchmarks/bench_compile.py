"""runtime.compile: ClapTrainer.train_step compiled (torch.compile, inductor) against eager,
and the compiled embedding of media and texts against eager, in one process on this
machine's device. Prints one JSON line: the compile time (the first call of each, with
one run) apart from the median step and embedding times after warm-up (ABBA order), and
their ratios (compiled / eager: below 1 is faster).

The tiny CLAP of the tests (a 2-block SmallCNN on 0.5 s clips at 8 kHz + a random
2-layer, 32-wide BERT with MiniLM's tokenizer, 16-dim projections), dropout off so that
the two runs' losses can be compared; batch 32 (the media: 80 clips, the texts: 115
captions, so the last batch is smaller). Usage: ``bench_compile.py [MODE]
[REPEATS] [BATCH]`` (MODE: default or reduce-overhead).
"""

import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import synthetic, timed  # noqa: E402

from clapkit.config import load_config  # noqa: E402
from clapkit.training.clap import ClapTrainer  # noqa: E402


def tiny_bert(folder: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from clapkit.models.text import resolve_text_model

    tok = AutoTokenizer.from_pretrained(resolve_text_model("minilm"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def trainer(mode: str, data: Path, bert: Path, tmp: Path, batch: int) -> ClapTrainer:
    cfg = load_config(None, [
        f"model.text.name={bert}", "model.text.max_length=16", "model.audio.name=small_cnn",
        "model.audio.channels=[4, 8]", "model.audio.n_fft=256", "model.audio.hop_length=128", "model.audio.n_mels=16",
        "model.audio.fmax=4000", "model.audio.dropout=0", "model.projector.dim=16", "model.projector.hidden=32",
        "model.projector.dropout=0", "audio.sample_rate=8000", "audio.segment_seconds=0.5",
        f"train.batch_size={batch}", "train.frozen_epochs=0", "runtime.progress=false",
        f"data.train=[csv:{data / 'train.csv'}]", f"runtime.compile={mode}"])
    t = ClapTrainer(cfg, tmp / f"run-{mode}")
    t._start_phase("unfrozen")
    t.model.train()
    return t


def _abba(a, b, repeats: int) -> tuple[list[float], list[float]]:
    ta, tb = [], []
    for r in range(repeats):
        if r % 2 == 0:
            ta.append(timed(a)[0])
            tb.append(timed(b)[0])
        else:
            tb.append(timed(b)[0])
            ta.append(timed(a)[0])
    return ta, tb


def _summary(eager: list[float], comp: list[float]) -> dict:
    return {"eager_s": statistics.median(eager), "compiled_s": statistics.median(comp),
            "ratio_median": statistics.median([c / e for c, e in zip(comp, eager, strict=True)])}


def main(mode: str = "default", repeats: int = 20, batch: int = 32) -> None:
    from clapkit.data.media import load_labelled_media
    from clapkit.inference.embed import embed_text, media_features
    from clapkit.inference.embed import tower_compile_stats as inference_stats
    from clapkit.training.compile import compile_stats

    tmp = Path(tempfile.mkdtemp())
    data = synthetic(tmp / "syn", seed=1, sr=8000, seconds=0.5, train_clips=3, test_clips=1, unseen_clips=10,
                     captions_per_clip=2)
    bert = tiny_bert(tmp / "bert")
    eager, comp = trainer("none", data, bert, tmp, batch), trainer(mode, data, bert, tmp, batch)
    idx = list(range(batch))
    media = torch.stack([eager.train_ds[i][0] for i in idx])
    first_eager = timed(eager.train_step, idx, media)
    first_comp = timed(comp.train_step, idx, media)  # compiles the forward and the backward
    for _ in range(3):  # warm-up
        eager.train_step(idx, media), comp.train_step(idx, media)
    te, tc = _abba(lambda: eager.train_step(idx, media), lambda: comp.train_step(idx, media), repeats)
    train = {"first_step_s": {"eager": first_eager[0], "compiled": first_comp[0]},
             "first_step_loss": {"eager": first_eager[1], "compiled": first_comp[1]},
             **_summary(te, tc), "compile": compile_stats(comp.net)}

    model = eager.model.eval()
    items = load_labelled_media(f"folder:{data / 'unseen'}", "audio").clips
    texts = [p.caption for p in eager.data.train][: 4 * batch]
    first = {"media_eager_s": timed(media_features, model, items, ("E",), batch)[0],
             "media_compiled_s": timed(media_features, model, items, ("E",), batch, compile=mode)[0],
             "text_eager_s": timed(embed_text, model, texts, batch)[0],
             "text_compiled_s": timed(embed_text, model, texts, batch, compile=mode)[0]}
    for _ in range(2):  # warm-up (every batch shape seen)
        media_features(model, items, ("E",), batch, compile=mode), embed_text(model, texts, batch, compile=mode)
    me, mc = _abba(lambda: media_features(model, items, ("E",), batch),
                   lambda: media_features(model, items, ("E",), batch, compile=mode), 2 * repeats)
    xe, xc = _abba(lambda: embed_text(model, texts, batch), lambda: embed_text(model, texts, batch, compile=mode),
                   2 * repeats)
    embed = {"items": len(items), "texts": len(texts), "first_call_s": first,
             "media": _summary(me, mc), "text": _summary(xe, xc), "compile": inference_stats(model)}
    print(json.dumps({"benchmark": "compile", "mode": mode, "device": str(eager.device), "batch": batch,
                      "repeats": repeats, "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "train_step": train, "embed": embed}))


if __name__ == "__main__":
    main(*(a if i == 0 else int(a) for i, a in enumerate(sys.argv[1:])))
