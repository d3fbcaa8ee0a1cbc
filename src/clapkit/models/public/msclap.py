"""Microsoft CLAP's weight files (``CLAP_weights_2022.pth`` and ``CLAP_weights_2023.pth``, what
``msclap.CLAP(version=...)`` reads) behind clapkit's dual-encoder interface: a ``.pth`` whose
``model`` state dict holds ``audio_encoder.base`` and ``caption_encoder.base``.

==========  ====================================================  ==============================
version     audio tower (x)                                       text tower (x)
==========  ====================================================  ==============================
2022        clapkit's CNN14 (PANNs' names: loads strictly)        BERT, its first token
2023        HTS-AT as transformers' ``ClapAudioModel`` (LAION-    GPT-2, the hidden state of the
            CLAP's mapping), the file's own STFT and mel filters  last token that is not id 0
==========  ====================================================  ==============================

Each tower has msclap 1.3.4's ``Projection`` (``models/clap.py``: two bias-free linears, GELU,
dropout, a residual and a layer norm). What makes the embeddings msclap's
(``get_audio_embeddings`` / ``get_text_embeddings``, ``CLAPWrapper.py``):

- audio at 44.1 kHz, 5 s (2022) or 7 s (2023): a shorter clip repeated (``ceil``) and cut; a
  longer one cropped at ``random.randrange(len - n)`` (seeded by the clip here, from Python's
  ``random`` module there); msclap resamples files with torchaudio's ``Resample``, clapkit with
  soxr, so files at another rate agree only closely;
- 2022: CNN14's mel front end (window 1024, hop 320, 64 bands, 50-14000 Hz). 2023: HTS-AT's
  front end takes its settings from msclap's ``models/config.py``, not from
  ``config_2023.yml``: mel filters for 32 kHz (50-14000 Hz) on the 44.1 kHz samples, which the
  file's own ``logmel_extractor.melW`` carries and clapkit uses as it is;
- texts: 2022 through ``bert-base-uncased`` padded to 100 tokens; 2023 through ``gpt2`` with
  ``" <|endoftext|>"`` appended, ``!`` (id 0) as padding to 77 tokens, pooled at the last token
  that is not id 0 (msclap's rule); the text model's config from that hub name, as msclap
  builds it;
- msclap returns the projections unnormalised and normalises in ``compute_similarity``; E here
  is normalised, and ``scale()`` is ``logit_scale.exp()`` as there.
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..formats import msclap_version
from ..frontend import PannsLogmel, PannsSpectrogram
from ..towers.audio import Cnn14
from .base import Tokens, WeightFileDualEncoder

SAMPLE_RATE = 44100
# configs/config_{version}.yml: clip seconds, text tokens, text model
VERSIONS = {"2022": (5, 100, "bert-base-uncased"), "2023": (7, 77, "gpt2")}
HTSAT = "audio_encoder.base.htsat."


class Projection(nn.Module):
    """msclap's projection head: ``layer_norm(l1(x) + dropout(l2(gelu(l1(x)))))``."""

    def __init__(self, d_in: int, d_out: int, p: float = 0.5):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)
        self.drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.linear1(x)
        return self.layer_norm(first + self.drop(self.linear2(F.gelu(first))))


def _crop_or_repeat(wave: np.ndarray, seconds: int, seed: int) -> np.ndarray:
    """msclap's ``load_audio_into_tensor`` on a clip at 44.1 kHz (see the module docstring)."""
    n = seconds * SAMPLE_RATE
    if n >= len(wave):
        return np.tile(wave, int(np.ceil(n / len(wave))))[:n]
    start = random.Random(seed).randrange(len(wave) - n)
    return wave[start:start + n]


class _Gpt2Tokens(Tokens):
    """msclap 2023's text input: each text with ``" <|endoftext|>"`` appended."""

    def tokenize(self, texts: list[str], device=None) -> dict[str, torch.Tensor]:
        return super().tokenize([f"{t} <|endoftext|>" for t in texts], device)


class MsclapDualEncoder(WeightFileDualEncoder):
    kind = "msclap"

    def __init__(self, path: str | Path, text_model: str | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoTokenizer

        version = msclap_version(path)
        if version not in VERSIONS:
            raise ConfigError(f"{path}: not msclap weights clapkit knows (a CNN14 or HTS-AT audio encoder with a text "
                              "caption_encoder)")
        sd = torch.load(str(path), map_location="cpu", weights_only=True)["model"]
        self.seconds, text_len, default_text = VERSIONS[version]
        text_model = text_model or default_text
        try:
            config = AutoConfig.from_pretrained(text_model)
            tokenizer = AutoTokenizer.from_pretrained(text_model)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: msclap builds its text encoder on {text_model}'s config and tokenizer, which this "
                              f"machine cannot read ({exc}); pass text_model=FOLDER") from exc
        d_proj = sd["audio_encoder.projection.linear1.weight"].shape[0]
        text_sd = {k[len("caption_encoder.base."):]: v for k, v in sd.items() if k.startswith("caption_encoder.base.")}
        if version == "2022":
            self._cnn14(sd, d_proj)
            self.text_model = _bert(config, text_sd)
            self.text = Tokens(tokenizer, "max_length")
        else:
            self._htsat(sd, d_proj)
            self.text_model = _gpt2(config, text_sd)
            tokenizer.add_special_tokens({"pad_token": "!"})  # as msclap does: "!" is id 0
            self.text = _Gpt2Tokens(tokenizer, "max_length")
        self.text.max_length = text_len
        self.text_projection = Projection(config.hidden_size, d_proj)
        self.text_projection.load_state_dict(_under(sd, "caption_encoder.projection."))
        self.text_model.load_state_dict({k: v for k, v in text_sd.items() if not k.endswith(_BUFFERS)}, strict=False)
        _check(self.text_model, text_sd, path)
        self.logit_scale = nn.Parameter(sd["logit_scale"].clone())
        self.version = version
        self.declare(f"msclap-{version}", "audio", str(path), {"audio": "audio.", "text": "text_model."}, SAMPLE_RATE)
        self.eval()

    def _cnn14(self, sd: dict, d_proj: int) -> None:
        self.audio = Cnn14(SAMPLE_RATE, 1024, 320, 64, 50.0, 14000.0,
                           classes_num=sd["audio_encoder.base.fc_audioset.weight"].shape[0])
        self.audio.load_state_dict(_under(sd, "audio_encoder.base."))
        self.audio_projection = Projection(2048, d_proj)
        self.audio_projection.load_state_dict(_under(sd, "audio_encoder.projection."))

    def _htsat(self, sd: dict, d_proj: int) -> None:
        from transformers import ClapAudioModel

        from .laion_clap import hf_state_dict, htsat_config

        branch = {"audio_branch." + k[len(HTSAT):]: v for k, v in sd.items() if k.startswith(HTSAT)}
        config = htsat_config(branch, d_proj)
        mel_w = branch["audio_branch.logmel_extractor.melW"]
        n_fft = (mel_w.shape[0] - 1) * 2
        self.audio_frontend = nn.Sequential(PannsSpectrogram(n_fft, 320), PannsLogmel(32000, n_fft, mel_w.shape[1], 50, 14000))
        self.audio_frontend[0].load_state_dict(_under(branch, "audio_branch.spectrogram_extractor."))
        self.audio_frontend[1].load_state_dict(_under(branch, "audio_branch.logmel_extractor."))
        self.audio = ClapAudioModel(config)
        mapped = {k[len("audio_model."):]: v for k, v in hf_state_dict(branch).items()
                  if k.startswith("audio_model.") and not k.endswith(("attn_mask", "relative_position_index"))}
        missing, unexpected = self.audio.load_state_dict(mapped, strict=False)
        missing = [k for k in missing if not k.endswith("relative_position_index")]
        if missing or unexpected:
            raise ConfigError(f"msclap 2023 weights do not fit HTS-AT (missing {missing[:5]}, unexpected {unexpected[:5]})")
        self.audio_projection = Projection(config.hidden_size, d_proj)
        self.audio_projection.load_state_dict(_under(sd, "audio_encoder.projection."))

    def preprocess(self, media: list, keys: list | None = None) -> dict[str, torch.Tensor]:
        """Each clip repeated or cropped to the version's length as msclap does, the crop
        seeded by its key."""
        keys = list(keys) if keys is not None else [None] * len(media)
        waves = [_crop_or_repeat(np.asarray(w, np.float32), self.seconds, zlib.crc32(str(k).encode()) if k is not None else 0)
                 for w, k in zip(media, keys, strict=True)]
        return {"wave": torch.from_numpy(np.stack(waves))}

    def media_backbone(self, inputs) -> torch.Tensor:
        wave = self.waves(inputs)
        if self.version == "2022":
            return self.audio(wave)
        return self.audio(input_features=self.audio_frontend(wave)).pooler_output

    def text_backbone(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.text_model(**tokens).last_hidden_state
        if self.version == "2022":
            return hidden[:, 0]
        last = torch.ne(tokens["input_ids"], 0).sum(-1) - 1  # msclap's rule: the last token that is not "!"
        return hidden[torch.arange(len(hidden), device=hidden.device), last]



_BUFFERS = (".position_ids", ".attn.bias", ".attn.masked_bias")  # buffers older transformers saved (not c_attn.bias)


def _under(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _bert(config, text_sd: dict):
    from transformers import BertModel

    config.vocab_size = text_sd["embeddings.word_embeddings.weight"].shape[0]
    config.num_hidden_layers = len({k.split(".")[2] for k in text_sd if k.startswith("encoder.layer.")})
    config.intermediate_size = text_sd["encoder.layer.0.intermediate.dense.weight"].shape[0]
    config.max_position_embeddings = text_sd["embeddings.position_embeddings.weight"].shape[0]
    return BertModel(config, add_pooling_layer="pooler.dense.weight" in text_sd)


def _gpt2(config, text_sd: dict):
    from transformers import GPT2Model

    config.vocab_size = text_sd["wte.weight"].shape[0]
    config.n_positions = text_sd["wpe.weight"].shape[0]
    config.n_layer = len({k.split(".")[1] for k in text_sd if k.startswith("h.")})
    return GPT2Model(config)


def _check(model: nn.Module, text_sd: dict, path) -> None:
    """Every weight of the text model came from the file (an error naming it otherwise)."""
    theirs = {k for k in text_sd if not k.endswith(_BUFFERS)}
    ours = {k for k in model.state_dict() if not k.endswith(_BUFFERS)}
    if theirs != ours:
        raise ConfigError(f"{path}: its text encoder's weights do not fit msclap's layout (missing "
                          f"{sorted(ours - theirs)[:5]}, unexpected {sorted(theirs - ours)[:5]})")
