"""open_clip models behind clapkit's dual-encoder interface (``pip install 'clapkit[open_clip]'``).

``--model`` (and ``--teacher``) name one as open_clip itself does, behind ``open_clip:``:

- ``open_clip:ViT-B-32@laion2b_s34b_b79k``: a built-in architecture with a pretrained
  tag (downloaded by open_clip on a machine with a network) or ``@/path/to/weights``
  (``open_clip.create_model(name, pretrained=PATH)``);
- ``open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K`` or
  ``open_clip:local-dir:DIR``; a folder holding ``open_clip_config.json`` (and no
  transformers ``config.json`` of a CLIP model) is read as ``local-dir:`` too.

Images go through the model's own validation transform, texts through its own
tokenizer (fixed context length, so ``max_length`` does not apply). x is a tower's
pooled output before its final projection where that projection is a separate matrix
(a ViT's ``visual.proj``, the text transformer's ``text_projection``); for towers whose
projection is built in (ModifiedResNet's attention pool, timm and HF text towers) x is
the unnormalised features. E is ``encode_image`` / ``encode_text`` normalised, and
``scale() * E_i @ E_t.T + bias()`` are the model's own logits (``logit_bias`` for
SigLIP models, else 0).

``model.init_from`` an open_clip image model fine-tunes it in place (:meth:`OpenClipDualEncoder.for_training`);
checkpoints are saved in open_clip's own local-dir layout (:meth:`OpenClipDualEncoder.save`),
so ``open_clip.create_model_and_transforms("local-dir:DIR")`` and clapkit load them alike.
open_clip has no audio models, so nothing here trains a CLAP.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..formats import OPEN_CLIP_PREFIX
from .base import PublicDualEncoder

PREFIX = OPEN_CLIP_PREFIX
WEIGHTS, CONFIG = "open_clip_model.safetensors", "open_clip_config.json"  # open_clip's hf-hub / local-dir names


def is_open_clip(name: str | Path) -> bool:
    """``open_clip:...``, or a folder with ``open_clip_config.json`` that is no transformers
    model (:func:`clapkit.models.formats.detect`'s ``open_clip`` kind)."""
    from ..formats import kind_or_none

    return kind_or_none(name) == "open_clip"


def parse_open_clip(name: str | Path) -> tuple[str, str | None]:
    """(model name, pretrained) as ``open_clip.create_model`` takes them."""
    name = str(name)
    if not name.startswith(PREFIX):
        return f"local-dir:{name}", None
    spec = name[len(PREFIX):]
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, None
    model, _, pretrained = spec.partition("@")
    if not model:
        raise ConfigError(f"--model {name}: give open_clip:NAME[@PRETRAINED], open_clip:hf-hub:ORG/REPO or "
                          "open_clip:local-dir:DIR")
    return model, pretrained or None


@contextmanager
def _without(owner: nn.Module, attr: str):
    """``owner.attr`` set to None for the duration (open_clip skips a projection that is None)."""
    saved = getattr(owner, attr)
    setattr(owner, attr, None)
    try:
        yield
    finally:
        setattr(owner, attr, saved)


def _open_clip_version() -> str:
    import open_clip

    return f"open_clip {getattr(open_clip, '__version__', '?')}"


def _apply(proj, x: torch.Tensor) -> torch.Tensor:
    return proj(x) if isinstance(proj, nn.Module) else x @ proj


class _OpenClipTokens:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.max_length = None  # the model's context length is fixed

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        ids = self.tokenizer(list(texts))
        return {"text": ids.to(device) if device is not None else ids}


class OpenClipDualEncoder(PublicDualEncoder):
    family = "open_clip"
    medium = "image"

    def __init__(self, name: str):
        super().__init__()
        try:
            import open_clip
        except ImportError as exc:
            raise ConfigError(f"--model {name}: open_clip models need the optional extra: "
                              f"pip install 'clapkit[open_clip]' ({exc})") from exc
        model_name, pretrained = parse_open_clip(name)
        try:
            self.model, _, self.transform = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
            tokenizer = open_clip.get_tokenizer(model_name)
            # what save() writes back (open_clip looks a built-in name up with / as -)
            self.model_cfg = (open_clip.get_model_config(model_name)
                              or open_clip.get_model_config(model_name.replace("/", "-")))
        except (RuntimeError, ValueError, OSError, KeyError) as exc:
            raise ConfigError(f"--model {name}: open_clip cannot build {model_name!r}"
                              f"{f' with pretrained {pretrained!r}' if pretrained else ''} ({type(exc).__name__}: {exc}); "
                              "open_clip.list_models() and open_clip.list_pretrained() name what it has") from exc
        self.model.eval()
        self.text = _OpenClipTokens(tokenizer)
        # CustomTextCLIP keeps its text tower in model.text; CLIP spreads it over the model's top level
        top = [n for n, _ in self.model.named_children()] + [n for n, _ in self.model.named_parameters(recurse=False)]
        text = ("model.text.",) if hasattr(self.model, "text") else tuple(
            f"model.{n}" for n in top if n not in ("visual", "logit_scale", "logit_bias"))
        self.declare("open_clip", "image", name, {"image": "model.visual.", "text": text}, trainable=False)
        visual = self.model.visual
        self._image_proj = (visual, "proj") if getattr(visual, "proj", None) is not None else None
        text_owner = getattr(self.model, "text", self.model)
        has_proj = getattr(text_owner, "text_projection", None) is not None
        self._text_proj = (text_owner, "text_projection") if has_proj else None
        # the projections after x: trained in the frozen phase, which caches x
        names = {module: n for n, module in self.named_modules()}
        self.tower_projections = tuple(f"{names[owner]}.{attr}" for owner, attr in
                                       filter(None, (self._image_proj, self._text_proj)))

    def preprocess(self, media: list, keys: list | None = None) -> dict[str, torch.Tensor]:
        """RGB Pillow images -> ``pixel_values`` through the model's validation transform."""
        return {"pixel_values": torch.stack([self.transform(im) for im in media])}

    def media_backbone(self, inputs: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        pixels = inputs["pixel_values"] if isinstance(inputs, dict) else inputs
        if self._image_proj is None:
            return self.model.encode_image(pixels)
        with _without(*self._image_proj):
            return self.model.encode_image(pixels)

    def text_backbone(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._text_proj is None:
            return self.model.encode_text(tokens["text"])
        with _without(*self._text_proj):
            return self.model.encode_text(tokens["text"])

    def project_media(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(_apply(getattr(*self._image_proj), x) if self._image_proj else x, dim=-1)

    def project_text(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(_apply(getattr(*self._text_proj), x) if self._text_proj else x, dim=-1)

    def scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    def bias(self) -> torch.Tensor | float:
        return self.model.logit_bias if getattr(self.model, "logit_bias", None) is not None else 0.0

    def logit_scale_parameter(self) -> nn.Parameter:
        return self.model.logit_scale

    def logit_bias_parameter(self) -> nn.Parameter | None:
        """A SigLIP model's learnt ``logit_bias`` (trained by the ``siglip`` objective), else None."""
        return getattr(self.model, "logit_bias", None)

    # --- fine-tuning ----------------------------------------------------------------------------
    def for_training(self, cfg: dict, option: str = "model.init_from") -> OpenClipDualEncoder:
        """Fit a training run's config to this model, which the run fine-tunes in place.

        The architecture is the model's own (``model.image/text/projector`` do not apply);
        ``image.size/mean/std`` are its preprocessing's (``model.visual.preprocess_cfg``).
        Every parameter trains but ``logit_scale`` when ``model.learn_temperature`` is false
        and ``logit_bias`` (SigLIP models) unless ``train.loss`` is ``siglip``: the loss
        reaches nothing else. The frozen phase freezes the towers but their projections
        (``visual.proj``, ``text_projection``), which come after the cached x.
        """
        cfg = copy.deepcopy(cfg)  # the run's config stays as given; this copy is the model's own
        wanted = cfg["model"].get("modality", "audio")
        if wanted != "image":
            raise ConfigError(f"{option} = {self.source}: an image model (open_clip; open_clip has no audio models); "
                              f"this config trains {wanted} (use `clapkit train clip`)")
        if hasattr(self.model, "text_decoder"):
            raise ConfigError(f"{option} = {self.source}: a CoCa model; clapkit's contrastive objectives never reach "
                              "its captioning decoder: fine-tune it with open_clip's own training")
        if self.model_cfg is None:  # what save() writes back for open_clip to rebuild the model
            raise ConfigError(f"{option} = {self.source}: this open_clip ({_open_clip_version()}) gives no model "
                              "config for it, so a fine-tuned checkpoint could not be loaded back; upgrade open_clip "
                              "(3.x reads hf-hub: and local-dir: configs) or name a built-in architecture")
        from open_clip.model import get_model_preprocess_cfg

        pre = get_model_preprocess_cfg(self.model)
        size = pre.get("size", self.model.visual.image_size)
        sides = set(size) if isinstance(size, (tuple, list)) else {size}
        if len(sides) != 1:
            raise ConfigError(f"{option} = {self.source}: its input is {size[0]} x {size[1]} pixels; clapkit's image "
                              "pipeline feeds square images")
        cfg["image"].update(size=int(sides.pop()), mean=[float(v) for v in pre["mean"]],
                            std=[float(v) for v in pre["std"]])
        unused = set()  # parameters the loss never reaches
        if not cfg["model"]["learn_temperature"]:
            unused.add("model.logit_scale")
        if cfg["train"]["loss"] != "siglip":
            unused.add("model.logit_bias")
        # the text tower's causal mask holds -inf: float's min gives the same softmax, and every
        # buffer finite, as the trainer checks before it saves
        for module in self.model.modules():
            mask = getattr(module, "attn_mask", None)
            if isinstance(mask, torch.Tensor) and mask.is_floating_point():
                mask.clamp_(min=torch.finfo(mask.dtype).min)
        return self._fine_tune(cfg, unused)

    def save(self, folder: str | Path) -> None:
        """The model in open_clip's local-dir layout: ``open_clip_model.safetensors`` (its
        state dict, which ``create_model(NAME, pretrained=FILE)`` also loads),
        ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``) and an HF
        tokenizer's files where the model has one."""
        from open_clip.model import get_model_preprocess_cfg
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, str(folder / WEIGHTS))
        config = {"model_cfg": self.model_cfg, "preprocess_cfg": get_model_preprocess_cfg(self.model)}
        (folder / CONFIG).write_text(json.dumps(config, indent=2))
        if hasattr(self.text.tokenizer, "save_pretrained"):  # local-dir reads an HF tokenizer from the folder
            self.text.tokenizer.save_pretrained(folder)
