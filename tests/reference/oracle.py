"""The owners' own code on clapkit's inputs, run in the reference environment
(``.venv-ref``, with ``HF_HOME`` at its tiny hub cache and ``HF_HUB_OFFLINE=1``); the tests
(tests/test_reference.py) write the inputs and read the outputs through files:

    python oracle.py TASK INPUT.npz OUTPUT.json [TASK INPUT.npz OUTPUT.json ...]

(several jobs in one process: the owners' imports are paid once)

Tasks:

- ``laion-retrieval``: laion_clap 1.1.7's ``evaluate_clotho_audiocaps``
  (``training/train.py``) on audio embeddings ``audio`` (N, D) and caption embeddings
  ``text`` (5N, D, clip-major: rows 5i..5i+4 are clip i's captions in caption order),
  through a stand-in model that returns them. Output: its metrics.
- ``laion-zeroshot``: laion_clap's ``evaluate_zeroshot``
  (``evaluate/eval_zeroshot_classification.py``) with ``class_index`` (the JSON text of a
  ``class_labels/*.json`` file), ``dataset`` (its ``val_dataset_names``: GTZAN takes the
  genre prompt), audio embeddings ``audio`` (N, D), each clip's class as a position in the
  file's key order (``labels``) and the class text embeddings ``text`` (C, D, key order).
  Output: the prompts it built (read from its own log line) and its metrics.

- ``laion-embed``: a LAION-CLAP model (``CLAP_Module``, ``amodel`` HTSAT-tiny or PANN-14 audio,
  RoBERTa text from the tiny hub; ``fused``) with every weight and batch-norm statistic drawn at random
  (seeded; the front end's STFT and mel constants and the attention masks kept), saved as the released checkpoints are laid out (``{"epoch", "state_dict"}``, DDP's
  ``module.`` prefix, RoBERTa's ``position_ids``) to ``checkpoint``, read back through its own
  ``load_ckpt``, then ``get_audio_embedding_from_data`` of each clip (``waves`` concatenated,
  ``lengths``) with numpy's global generator seeded by ``seeds[i]`` first (its random crop and
  fusion chunks), and ``get_text_embedding`` of ``texts``. Output: both embeddings.

- ``msclap-embed``: an msclap model of ``version`` 2022 or 2023 (``msclap.models.clap.CLAP``
  with its ``configs/config_{version}.yml``: CNN14 and BERT, or HTS-AT and GPT-2, the text
  models from the tiny hub) with its weights drawn at random as above, saved as
  ``{"model": state_dict}`` (the layout of ``CLAP_weights_{version}.pth``) to ``checkpoint``,
  read back by its own ``CLAPWrapper(version=...)``, then
  ``get_audio_embeddings`` of each clip (read by its own ``load_audio_into_tensor``, the file
  read replaced by the array at 44.1 kHz; Python's ``random`` seeded by ``seeds[i]`` first)
  and ``get_text_embeddings`` of ``texts``, both as msclap returns them (unnormalised).

Nothing here computes a metric: every number comes from the owners' functions.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import logging
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

# what laion_clap/__init__.py does: its modules import each other as top-level packages
sys.path.insert(0, str(Path(importlib.util.find_spec("laion_clap").origin).parent))
sys.modules.setdefault("wandb", types.ModuleType("wandb"))  # imported by its scripts, used only with --wandb


class Features:
    """Stands in for laion_clap's ``CLAP.forward`` (``clap_module/model.py``): (audio, None)
    -> the next batch's audio embeddings, (None, text) -> text embeddings in order, (None,
    None) -> the two logit scales."""

    def __init__(self, audio: np.ndarray, text: np.ndarray, batch_of):
        self.audio, self.text, self.batch_of = torch.from_numpy(audio), torch.from_numpy(text), batch_of
        self.a = self.t = 0

    def eval(self):
        return self

    def __call__(self, audios, texts, device):
        if audios is None and texts is None:
            return torch.tensor(1.0), torch.tensor(1.0)
        if texts is None:
            n = self.batch_of(audios)
            self.a += n
            return self.audio[self.a - n:self.a]
        n = len(texts["input_ids"]) if isinstance(texts, dict) else len(texts)
        self.t += n
        return self.text[self.t - n:self.t]


def laion_retrieval(x: dict) -> dict:
    from training.train import evaluate_clotho_audiocaps

    audio, text = x["audio"], x["text"]
    n = len(audio)
    batches = [{"full_text": [[f"caption {i} {j}" for j in range(5)] for i in range(s, min(n, s + 16))],
                "__url__": [f"/data/Clotho/test/{i}.tar" for i in range(s, min(n, s + 16))]} for s in range(0, n, 16)]
    model = Features(audio, text, lambda b: len(b["__url__"]))
    out = evaluate_clotho_audiocaps(model, {"val": SimpleNamespace(dataloader=batches)}, 0,
                                    SimpleNamespace(tmodel="transformer"), contextlib.nullcontext, torch.device("cpu"))
    return {k.split("/", 1)[1]: float(v) for k, v in out["Clotho-test"].items()}


def laion_zeroshot(x: dict) -> dict:
    from evaluate.eval_zeroshot_classification import evaluate_zeroshot

    classes = json.loads(str(x["class_index"]))
    audio, labels = x["audio"], x["labels"]
    one_hot = np.eye(len(classes))[labels]
    batches = [{"class_label": torch.from_numpy(one_hot[s:s + 16]), "waveform": None} for s in range(0, len(audio), 16)]
    model = Features(audio, x["text"], lambda b: len(b["class_label"]))
    seen: list[str] = []

    class Prompts(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("class label prompts: "):
                seen.append(message)

    handler = Prompts()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    metrics: dict = {}
    args = SimpleNamespace(device="cpu", class_index_dict=classes, val_dataset_names=[str(x["dataset"])],
                           tmodel="transformer", datasetnames=[str(x["dataset"])], wandb=False)
    original = logging.info

    def info(message, *a, **k):  # its metrics reach only the log: read them off its last line
        original(message, *a, **k)
        if str(message).startswith("Eval Epoch"):
            metrics["log"] = str(message)

    logging.info = info
    try:
        evaluate_zeroshot(model, {"val": SimpleNamespace(dataloader=batches)}, 0, args, None)
    finally:
        logging.info = original
        logging.getLogger().removeHandler(handler)
    prompts = ast.literal_eval(seen[-1][len("class label prompts: "):])
    values = dict(part.split(": ") for part in metrics["log"].split("\t")[1:])
    return {"prompts": prompts, "metrics": {k.split("_", 1)[1]: float(v) for k, v in values.items()}}


def laion_embed(x: dict) -> dict:
    import laion_clap

    fused, amodel = bool(x["fused"]), str(x["amodel"]) if "amodel" in x else "HTSAT-tiny"
    torch.manual_seed(int(x["seed"]))
    module = laion_clap.CLAP_Module(enable_fusion=fused, device="cpu", amodel=amodel, tmodel="roberta")
    _perturb(module.model, ("spectrogram_extractor", "logmel_extractor", "attn_mask"))  # constants of every released file
    sd = {f"module.{k}": v for k, v in module.model.state_dict().items()}
    positions = sd["module.text_branch.embeddings.position_embeddings.weight"].shape[0]
    sd["module.text_branch.embeddings.position_ids"] = torch.arange(positions)[None]  # as the released files hold it
    torch.save({"epoch": 1, "state_dict": sd}, str(x["checkpoint"]))
    module = laion_clap.CLAP_Module(enable_fusion=fused, device="cpu", amodel=amodel, tmodel="roberta")
    module.load_ckpt(str(x["checkpoint"]), verbose=False)
    waves = np.split(x["waves"], np.cumsum(x["lengths"])[:-1])
    audio = []
    for wave, seed in zip(waves, x["seeds"], strict=True):
        np.random.seed(int(seed))
        audio.append(module.get_audio_embedding_from_data([wave])[0].tolist())
    text = module.get_text_embedding([str(t) for t in x["texts"]])
    return {"audio": audio, "text": text.tolist()}


def _perturb(model: torch.nn.Module, fixed: tuple[str, ...]) -> None:
    """Every float weight and statistic moved off its initial value (running variances kept
    positive), except the constants whose names contain one of ``fixed``."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and not any(f in name for f in fixed):
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith("running_var") else t + 0.05 * torch.randn_like(t))


def msclap_embed(x: dict) -> dict:
    import random

    import yaml
    from msclap import CLAP as Wrapper
    from msclap.models.clap import CLAP

    version = str(x["version"])
    c = yaml.safe_load((Path(importlib.util.find_spec("msclap").origin).parent / "configs" / f"config_{version}.yml").read_text())
    torch.manual_seed(int(x["seed"]))
    model = CLAP(audioenc_name=c["audioenc_name"], sample_rate=c["sampling_rate"], window_size=c["window_size"],
                 hop_size=c["hop_size"], mel_bins=c["mel_bins"], fmin=c["fmin"], fmax=c["fmax"], classes_num=c["num_classes"],
                 out_emb=c["out_emb"], text_model=c["text_model"], transformer_embed_dim=c["transformer_embed_dim"],
                 d_proj=c["d_proj"])
    _perturb(model, ("spectrogram_extractor", "logmel_extractor", "attn_mask"))
    sd = model.state_dict()
    if version == "2022":  # BERT's position ids, as the released file (older transformers) holds them
        positions = sd["caption_encoder.base.embeddings.position_embeddings.weight"].shape[0]
        sd["caption_encoder.base.embeddings.position_ids"] = torch.arange(positions)[None]
    torch.save({"model": sd}, str(x["checkpoint"]))
    wrapper = Wrapper(model_fp=str(x["checkpoint"]), version=version, use_cuda=False)
    waves = dict(enumerate(np.split(x["waves"], np.cumsum(x["lengths"])[:-1])))
    wrapper.read_audio = lambda key, resample=True: (torch.from_numpy(waves[int(key)])[None], c["sampling_rate"])
    audio = []
    for i, seed in enumerate(x["seeds"]):
        random.seed(int(seed))
        audio.append(wrapper.get_audio_embeddings([str(i)], resample=False)[0].tolist())
    text = wrapper.get_text_embeddings([str(t) for t in x["texts"]])
    return {"audio": audio, "text": text.tolist(), "logit_scale": float(wrapper.clap.logit_scale.exp())}


TASKS = {"laion-retrieval": laion_retrieval, "laion-zeroshot": laion_zeroshot, "laion-embed": laion_embed,
         "msclap-embed": msclap_embed}

if __name__ == "__main__":
    jobs = sys.argv[1:]
    for task, source, target in zip(jobs[0::3], jobs[1::3], jobs[2::3], strict=True):
        with np.load(source, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
        Path(target).write_text(json.dumps(TASKS[task](data), indent=1))
