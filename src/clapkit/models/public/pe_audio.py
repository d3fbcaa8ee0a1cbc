"""Meta's Perception Encoder audio-text model (transformers' ``PeAudioModel``) behind
clapkit's dual-encoder interface: a folder or hub name whose ``config.json`` says
``model_type: pe_audio``, with its processor (``PeAudioFeatureExtractor`` and tokenizer).

==============  ==================================================  ============================
                x (backbone output)                                 E
==============  ==================================================  ============================
audio           ``audio_encoder(...).pooler_output`` (class token)  ``audio_head(x)``, normalised
text            ``text_model(...).last_hidden_state[:, 0]``         ``text_audio_head(x)``, normalised
==============  ==================================================  ============================

So E is the owner's ``get_audio_embeds`` / ``get_text_audio_embeds`` (transformers 5.23,
``modeling_pe_audio.py``) L2-normalised; the owner's methods return them unnormalised.
(``get_text_audio_embeds`` itself fails on transformers 5.23 unless the text model is
asked for hidden states, since it reads ``hidden_states[-1]``; ``last_hidden_state`` is
that same tensor.) Audio goes through the model's own feature extractor (48 kHz, no
amplitude normalisation, each clip reflect-padded to its hop, the batch zero-padded with a
``padding_mask`` that the encoder honours). The model's logits are linear in its
``text_audio_logit_scale`` and ``_bias`` (no ``exp``) on the unnormalised embeddings;
clapkit scores by cosine, so ``scale()``/``bias()`` are those parameters applied to E.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from .base import PublicDualEncoder, Tokens


class PeAudioDualEncoder(PublicDualEncoder):
    kind = "pe-audio"

    def __init__(self, name: str | Path):
        super().__init__()
        from transformers import AutoModel, AutoProcessor

        name = str(name)
        try:
            self.model = AutoModel.from_pretrained(name).eval()
            processor = AutoProcessor.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{name}: cannot read it as a Perception Encoder audio model with its processor ({exc}); "
                              "save the processor beside the model (processor.save_pretrained(folder))") from exc
        self.processor = processor.feature_extractor
        self.text = Tokens(processor.tokenizer, True)
        self.declare("pe_audio", "audio", name, {"audio": "model.audio_encoder.", "text": "model.text_model."},
                     int(self.processor.sampling_rate))

    def preprocess(self, media: list, keys: list | None = None) -> dict[str, torch.Tensor]:
        """Waveforms at :attr:`sample_rate` -> ``input_values`` and ``padding_mask``, one
        call of the model's feature extractor over the batch (it draws nothing at random)."""
        out = self.processor(list(media), sampling_rate=self.sample_rate, return_tensors="pt")
        return {"input_values": out["input_values"], "padding_mask": out["padding_mask"]}

    def media_backbone(self, inputs: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor):  # waveforms from clapkit's pipeline, at the model's rate
            device = inputs.device
            inputs = {k: v.to(device) for k, v in self.preprocess(list(inputs.cpu().numpy())).items()}
        return self.model.audio_encoder(input_values=inputs["input_values"], padding_mask=inputs["padding_mask"]).pooler_output

    def text_backbone(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.text_model(**tokens).last_hidden_state[:, 0]

    def project_media(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.audio_head(x).float(), dim=-1)

    def project_text(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.text_audio_head(x).float(), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.model.text_audio_logit_scale[0]

    def bias(self) -> torch.Tensor:
        return self.model.text_audio_logit_bias[0]

    def logit_scale_parameter(self) -> torch.nn.Parameter:
        return self.model.text_audio_logit_scale
