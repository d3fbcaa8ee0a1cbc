"""LAION-CLAP's own checkpoints, read as they are: the ``.pt`` files that
``laion_clap.CLAP_Module.load_ckpt`` reads (``630k-best.pt``, ``630k-audioset-fusion-best.pt``,
``music_speech_audioset_epoch_15_esc_89.98.pt``, ...), which AudioLDM2 and the CLAP-score
and FAD tools load.

The weights are mapped onto transformers' ``ClapModel`` as transformers' own conversion
script (``models/clap/convert_clap_original_pytorch_to_hf.py``) maps them, with the
architecture read off the weights (HTSAT's width, depths, heads and window; fusion; the
projection sizes), so every command takes the file and :meth:`HFDualEncoder.save` writes
it back as a transformers folder. What makes the embeddings LAION-CLAP's
(``get_audio_embedding_from_data`` and ``get_text_embedding`` of laion_clap 1.1.7,
``hook.py``), step by step:

- each waveform is quantised to int16 and back as ``get_audio_embedding_from_data`` does
  (``float32_to_int16``: clipped to [-1, 1], times 32767, truncated; then / 32767);
- then transformers' ``ClapFeatureExtractor`` with LAION-CLAP's ``audio_cfg`` (48 kHz,
  10 s, ``repeatpad``, ``rand_trunc`` or ``fusion``, 64 mel bands from 50 to 14000 Hz,
  the window read off the checkpoint's own mel filters), using the checkpoint's own mel
  filter bank (``logmel_extractor.melW``) for the unfused front end;
- texts through the ``roberta-base`` tokenizer padded to 77 tokens (``CLAP_Module.tokenizer``),
  and the text branch built on ``roberta-base``'s config (heads, layer-norm epsilon), which
  LAION-CLAP builds it from too (``RobertaModel.from_pretrained("roberta-base")``): both come
  from the hub or its cache, like laion_clap's, or from ``text_model=`` (a local folder).

The one difference: LAION-CLAP computes the spectrogram inside its model in float32
(torchlibrosa's STFT convolution; torchaudio for fusion), transformers' extractor in
float64 numpy. tests/test_reference.py states the resulting bound against laion_clap's
own calls. A PANN-14 audio tower (unfused) is read as clapkit's CNN14 instead
(:class:`LaionPannDualEncoder`). Not read (an error names them): fused PANN towers and BERT
or BART text branches.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import ConfigError
from ..towers.audio import Cnn14
from .base import Tokens, WeightFileDualEncoder
from .hf import HFDualEncoder, _clip_seed

SAMPLE_RATE = 48000  # every LAION-CLAP audio_cfg
TEXT_MODEL = "roberta-base"  # what LAION-CLAP's text branch and tokenizer are built from
MAX_TOKENS = 77  # CLAP_Module.tokenizer: padding="max_length", max_length=77
# (LAION-CLAP name, transformers name) inside an HTSAT block, in the order they are applied
_BLOCK = ((".attn.proj.", ".attention.output.dense."), (".attn.", ".attention.self."),
          (".mlp.fc1.", ".intermediate.dense."), (".mlp.fc2.", ".output.dense."),
          (".norm1.", ".layernorm_before."), (".norm2.", ".layernorm_after."))
# LAION-CLAP weights with no place in ClapModel, none of which the embeddings use: the
# in-model spectrogram (transformers' extractor computes it), HTSAT's AudioSet classifier,
# the MLPs of LAION-CLAP's training-only losses, and buffers transformers rebuilds
_UNUSED = ("audio_branch.spectrogram_extractor.", "audio_branch.logmel_extractor.", "audio_branch.head.",
           "audio_branch.tscam_conv.", "audio_transform.", "text_transform.", "text_branch.embeddings.position_ids")
_REBUILT = ("relative_position_index", "attn_mask", "position_ids", "token_type_ids")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict as ``load_ckpt`` reads it: ``state_dict`` of the file's dict (or the
    dict itself), with DDP's ``module.`` prefix taken off."""
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: cannot read it as a LAION-CLAP checkpoint ({exc}); clapkit reads checkpoints that "
                          "hold tensors only (torch.load(weights_only=True))") from exc
    sd = ckpt.get("state_dict", ckpt)
    return {k.removeprefix("module."): v for k, v in sd.items()}


def hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LAION-CLAP's names -> ClapModel's (HTSAT's fused ``qkv`` split into query, key and
    value; the projections' ``nn.Sequential`` indices 0 and 2 -> ``linear1``/``linear2``);
    the weights of :data:`_UNUSED` left out."""
    out = {}
    for key, value in sd.items():
        if key.startswith(_UNUSED):
            continue
        if key.startswith("audio_branch."):
            key = "audio_model.audio_encoder." + key[len("audio_branch."):]
            key = key.replace(".bn0.", ".batch_norm.")
            for old, new in _BLOCK:
                key = key.replace(old, new)
        elif key.startswith("text_branch."):
            key = "text_model." + key[len("text_branch."):]
        key = re.sub(r"^(audio|text)_projection\.([02])\.", lambda m: f"{m[1]}_projection.linear{1 + int(m[2]) // 2}.", key)
        if ".qkv." in key:
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[key.replace(".qkv.", f".{name}.")] = part
        else:
            out[key] = value
    return out


def clap_config(sd: dict[str, torch.Tensor], text_model: str):
    """A ``ClapConfig`` for LAION-CLAP weights ``sd``: HTSAT's sizes read off the weights
    (spec size 256, patch 4, stride 4, as laion_clap's ``create_htsat_model`` fixes them for
    every size), the text branch's from ``text_model``'s config and the weights."""
    from transformers import AutoConfig, ClapConfig, ClapTextConfig

    _architecture(sd)
    audio = htsat_config(sd, sd["audio_projection.0.weight"].shape[0])
    try:
        base = AutoConfig.from_pretrained(text_model).to_dict()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the text branch of a LAION-CLAP checkpoint is built on {text_model}'s config, as laion_clap "
                          f"builds it, and this machine cannot read it ({exc}); pass text_model=FOLDER (a local "
                          f"{TEXT_MODEL} folder with its tokenizer)") from exc
    layers = {int(m[1]) for k in sd if (m := re.match(r"text_branch\.encoder\.layer\.(\d+)\.", k))}
    keep = ("hidden_act", "layer_norm_eps", "num_attention_heads", "pad_token_id", "bos_token_id", "eos_token_id",
            "hidden_dropout_prob", "attention_probs_dropout_prob")
    text = ClapTextConfig(
        **{k: base[k] for k in keep if k in base},
        vocab_size=sd["text_branch.embeddings.word_embeddings.weight"].shape[0],
        hidden_size=sd["text_branch.embeddings.word_embeddings.weight"].shape[1],
        max_position_embeddings=sd["text_branch.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=sd["text_branch.embeddings.token_type_embeddings.weight"].shape[0],
        intermediate_size=sd["text_branch.encoder.layer.0.intermediate.dense.weight"].shape[0],
        num_hidden_layers=len(layers), projection_dim=sd["text_projection.0.weight"].shape[0],
    )
    return ClapConfig(audio_config=audio.to_dict(), text_config=text.to_dict(),
                      projection_dim=sd["audio_projection.0.weight"].shape[0])


def htsat_config(sd: dict[str, torch.Tensor], projection_dim: int):
    """A ``ClapAudioConfig`` for the HTSAT weights under ``audio_branch.`` in ``sd``: width,
    depths, heads, window and fusion read off the weights (spec size 256, patch 4, stride 4,
    as HTS-AT fixes them for every size)."""
    from transformers import ClapAudioConfig

    blocks: dict[int, set[int]] = {}
    for k in sd:
        if m := re.match(r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.", k):
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    heads = [sd[f"audio_branch.layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1] for i in sorted(blocks)]
    table = sd["audio_branch.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
    fused = "audio_branch.patch_embed.mel_conv2d.weight" in sd
    return ClapAudioConfig(
        patch_embeds_hidden_size=sd["audio_branch.patch_embed.proj.weight"].shape[0],
        depths=[len(blocks[i]) for i in sorted(blocks)], num_attention_heads=heads, window_size=(round(table ** 0.5) + 1) // 2,
        hidden_size=sd["audio_branch.norm.weight"].shape[0], num_mel_bins=sd["audio_branch.bn0.weight"].shape[0],
        enable_fusion=fused, fusion_type="aff_2d" if fused else None, projection_dim=projection_dim,
    )


def _architecture(sd: dict) -> str:
    """``htsat`` or ``pann`` (CNN14, unfused), or an error naming what clapkit does not read."""
    if "audio_branch.patch_embed.proj.weight" not in sd:
        if "audio_branch.conv_block6.conv1.weight" not in sd or "audio_branch.fc1.weight" not in sd:
            raise ConfigError("a LAION-CLAP checkpoint whose audio tower is neither HTSAT nor CNN14 (PANN-14): clapkit "
                              "reads those two")
        if any(k.startswith(("audio_branch.mel_conv", "audio_branch.fusion_model")) for k in sd):
            raise ConfigError("a fused LAION-CLAP checkpoint with a PANN audio tower: clapkit reads PANN towers unfused "
                              "(fusion: HTSAT checkpoints)")
    if "text_branch.pooler.dense.weight" not in sd or "text_branch.embeddings.word_embeddings.weight" not in sd:
        raise ConfigError("a LAION-CLAP checkpoint whose text branch is no RoBERTa: clapkit reads the RoBERTa text "
                          "branch of LAION-CLAP's released checkpoints; BERT and BART branches are not read yet")
    if sd["text_branch.embeddings.token_type_embeddings.weight"].shape[0] != 1:
        raise ConfigError("a LAION-CLAP checkpoint with a BERT text branch (two token types): clapkit reads "
                          "RoBERTa text branches only")
    return "htsat" if "audio_branch.patch_embed.proj.weight" in sd else "pann"


def feature_extractor(sd: dict[str, torch.Tensor], fused: bool):
    """transformers' CLAP extractor with LAION-CLAP's ``audio_cfg``, the checkpoint's own
    mel filter bank (``logmel_extractor.melW``, librosa's slaney filters) for the unfused
    path, and LAION-CLAP's fusion resize (:class:`_FusionResize`)."""
    mel_w = sd["audio_branch.logmel_extractor.melW"]  # (n_fft // 2 + 1, mel bins)
    fx = _extractor_class()(feature_size=mel_w.shape[1], sampling_rate=48000, hop_length=480, max_length_s=10,
                            fft_window_size=(mel_w.shape[0] - 1) * 2, frequency_min=50, frequency_max=14000,
                            padding="repeatpad", truncation="fusion" if fused else "rand_trunc")
    fx.mel_filters_slaney = mel_w.double().numpy()
    return fx


@functools.cache
def _extractor_class():
    from transformers import ClapFeatureExtractor

    class LaionClapFeatureExtractor(ClapFeatureExtractor):
        """Fusion's global view as LAION-CLAP makes it: the whole mel spectrogram resized to
        one window by torchvision's ``Resize`` (``training/data.py``), which antialiases
        (transformers' extractor interpolates without); the three chunks drawn as both
        draw them. Saved as a plain ``ClapFeatureExtractor``, so transformers reads the folder."""

        def _random_mel_fusion(self, mel, total_frames, chunk_frames):
            ranges = np.array_split(list(range(0, total_frames - chunk_frames + 1)), 3)
            ranges = [r if len(r) else [0] for r in ranges]  # a short clip: the first chunk
            starts = [np.random.choice(r) for r in ranges]  # front, middle, back, in this order
            shrink = torch.nn.functional.interpolate(torch.tensor(mel[None, None]), size=[chunk_frames, mel.shape[1]],
                                                     mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()
            return np.stack([shrink] + [mel[a:a + chunk_frames] for a in starts])

        def to_dict(self):
            return dict(super().to_dict(), feature_extractor_type="ClapFeatureExtractor")

    return LaionClapFeatureExtractor


def quantize(wave: np.ndarray) -> np.ndarray:
    """laion_clap's ``int16_to_float32(float32_to_int16(x))``, step for step."""
    x = (np.clip(wave, a_min=-1.0, a_max=1.0) * 32767.0).astype(np.int16)
    return (x / 32767.0).astype(np.float32)


class LaionClapDualEncoder(HFDualEncoder):
    """A LAION-CLAP ``.pt`` checkpoint as a transformers ``ClapModel`` (see the module
    docstring); ``kind`` is ``laion-clap``."""

    kind = "laion-clap"

    def __init__(self, path: str | Path, text_model: str | None = None, sd: dict | None = None):
        from transformers import AutoTokenizer, ClapModel

        sd = sd if sd is not None else read_state_dict(path)
        _architecture(sd)
        text_model = text_model or TEXT_MODEL
        config = clap_config(sd, text_model)
        model = ClapModel(config)
        mapped = hf_state_dict(sd)
        missing, unexpected = model.load_state_dict(mapped, strict=False)
        missing = [k for k in missing if not k.endswith(_REBUILT)]
        unexpected = [k for k in unexpected if not k.endswith(_REBUILT)]
        if missing or unexpected:
            raise ConfigError(f"{path}: its weights do not fit LAION-CLAP's HTSAT + RoBERTa layout "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        try:
            tokenizer = AutoTokenizer.from_pretrained(text_model)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: LAION-CLAP tokenizes with {text_model}'s tokenizer, which this machine cannot "
                              f"read ({exc}); pass text_model=FOLDER") from exc
        super().__init__(str(path), parts=(model, feature_extractor(sd, config.audio_config.enable_fusion), tokenizer))
        self.text.padding, self.text.max_length = "max_length", MAX_TOKENS

    def preprocess(self, media: list, keys: list | None = None) -> dict[str, torch.Tensor]:
        """Each waveform quantised to int16 and back, then :meth:`HFDualEncoder.preprocess`."""
        return super().preprocess([quantize(np.asarray(w, dtype=np.float32)) for w in media], keys)


def load_laion_clap(path: str | Path, text_model: str | None = None):
    """The wrapper for a LAION-CLAP ``.pt`` by its audio tower: :class:`LaionClapDualEncoder`
    (HTSAT, as a transformers ClapModel) or :class:`LaionPannDualEncoder` (CNN14)."""
    sd = read_state_dict(path)
    if _architecture(sd) == "htsat":
        return LaionClapDualEncoder(path, text_model, sd)
    return LaionPannDualEncoder(path, text_model, sd)


def _mlp(sd: dict, prefix: str) -> nn.Sequential:
    """LAION-CLAP's projection: ``Linear, ReLU, Linear`` (``nn.Sequential`` indices 0 and 2)."""
    w0, w2 = sd[f"{prefix}.0.weight"], sd[f"{prefix}.2.weight"]
    mlp = nn.Sequential(nn.Linear(w0.shape[1], w0.shape[0]), nn.ReLU(), nn.Linear(w2.shape[1], w2.shape[0]))
    mlp.load_state_dict({k[len(prefix) + 1:]: v for k, v in sd.items() if k.startswith(prefix + ".")})
    return mlp


class LaionPannDualEncoder(WeightFileDualEncoder):
    """A LAION-CLAP ``.pt`` with a PANN-14 audio tower (``PANN-14`` in laion_clap's
    ``model_configs``: CNN14 at 48 kHz, window 1024, hop 480, 64 mel bands, 50-14000 Hz) and a
    RoBERTa text branch: clapkit's :class:`~clapkit.models.towers.audio.Cnn14` (PANNs' names,
    as LAION-CLAP's ``pann_model.Cnn14``: its weights load strictly; x is its ``embedding``),
    transformers' RoBERTa (x its pooler output), LAION-CLAP's MLP projections. Each clip is
    quantised to int16 and back, then cut or repeat-padded to 10 s as
    ``get_audio_features`` does (``rand_trunc``, ``repeatpad``), the crop drawn from numpy's
    generator seeded by the clip."""

    kind = "laion-clap"

    def __init__(self, path: str | Path, text_model: str | None = None, sd: dict | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoTokenizer, RobertaModel

        sd = sd if sd is not None else read_state_dict(path)
        text_model = text_model or TEXT_MODEL
        mel_w = sd["audio_branch.logmel_extractor.melW"]
        self.audio = Cnn14(SAMPLE_RATE, (mel_w.shape[0] - 1) * 2, 480, mel_w.shape[1], 50.0, 14000.0,
                           classes_num=sd["audio_branch.fc_audioset.weight"].shape[0])
        self.audio.load_state_dict({k[len("audio_branch."):]: v for k, v in sd.items() if k.startswith("audio_branch.")})
        self.audio_projection, self.text_projection = _mlp(sd, "audio_projection"), _mlp(sd, "text_projection")
        try:
            config = AutoConfig.from_pretrained(text_model)
            tokenizer = AutoTokenizer.from_pretrained(text_model)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: LAION-CLAP builds its text branch and tokenizer on {text_model}, which this "
                              f"machine cannot read ({exc}); pass text_model=FOLDER") from exc
        text = {k[len("text_branch."):]: v for k, v in sd.items()
                if k.startswith("text_branch.") and not k.endswith("position_ids")}
        config.vocab_size = text["embeddings.word_embeddings.weight"].shape[0]
        config.max_position_embeddings = text["embeddings.position_embeddings.weight"].shape[0]
        config.num_hidden_layers = len({k.split(".")[2] for k in text if k.startswith("encoder.layer.")})
        config.intermediate_size = text["encoder.layer.0.intermediate.dense.weight"].shape[0]
        self.text_model = RobertaModel(config)
        self.text_model.load_state_dict(text, strict=False)
        if set(text) != {k for k in self.text_model.state_dict() if not k.endswith(("position_ids", "token_type_ids"))}:
            raise ConfigError(f"{path}: its text branch does not fit RoBERTa's layout")
        self.logit_scale = nn.Parameter(sd["logit_scale_a"].clone())
        self.text = Tokens(tokenizer, "max_length")
        self.text.max_length = MAX_TOKENS
        self.declare("laion-clap-pann", "audio", str(path), {"audio": "audio.", "text": "text_model."}, SAMPLE_RATE)
        self.eval()

    def preprocess(self, media: list, keys: list | None = None) -> dict[str, torch.Tensor]:
        keys = list(keys) if keys is not None else [None] * len(media)
        waves = [_fit(quantize(np.asarray(w, np.float32)), _clip_seed(w, k, False)) for w, k in zip(media, keys, strict=True)]
        return {"wave": torch.from_numpy(np.stack(waves))}

    def media_backbone(self, inputs) -> torch.Tensor:
        return self.audio(self.waves(inputs))

    def text_backbone(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.text_model(**tokens).pooler_output


def _fit(wave: np.ndarray, seed: int) -> np.ndarray:
    """laion_clap's ``get_audio_features`` for ``rand_trunc`` / ``repeatpad`` at 10 s: a random
    crop of a longer clip (numpy's global generator, seeded here, the caller's state restored),
    a shorter one repeated ``int(10 s / len)`` times, then zero-padded."""
    n = 10 * SAMPLE_RATE
    if len(wave) > n:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            start = np.random.randint(0, len(wave) - n + 1)
        finally:
            np.random.set_state(state)
        return wave[start:start + n]
    if len(wave) < n:
        wave = np.tile(wave, int(n / len(wave)))
        wave = np.pad(wave, (0, n - len(wave)))
    return wave
