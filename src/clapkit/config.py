"""Configs: nested dicts read from a preset or YAML file, with ``key=value`` overrides.

A config is a plain nested ``dict``. :data:`DEFAULTS` (:mod:`clapkit.defaults`) lists every key; a preset (a YAML
file in ``clapkit/configs/``) or a user's YAML file overrides some of them (a file may
start from a preset with ``base: NAME``), and
``--set a.b=value`` overrides one more (the value is parsed as YAML, so ``1e-4``,
``true``, ``[1, 2]`` and ``null`` work). Unknown keys are errors, so a typo never passes
silently. The resolved config is saved beside every checkpoint.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .defaults import DEFAULTS
from .errors import ConfigError

_CROSS = ("data", "audio", "image", "model", "train")
# the sections each recipe reads, beside seed and the runtime section every recipe shares
# (device, precision, determinism, workers, skip-bad, step checkpoints, logging)
RECIPE_SECTIONS = {
    "clap": _CROSS, "clip": _CROSS,
    "cse": ("data", "cse", "train"),
    "backbone": ("data", "audio", "model", "backbone", "train"),
    "leakage": (*_CROSS, "backbone", "experiment"),
    "improvement": (*_CROSS, "improvement"),
    "language": (*_CROSS, "cse", "language"),
}


def recipe_view(cfg: dict) -> dict:
    """The sections of ``cfg`` its recipe reads (all of them when it names none)."""
    sections = RECIPE_SECTIONS.get(cfg.get("recipe") or "")
    if sections is None:
        return cfg
    keep = {"config_version", "recipe", "seed", "runtime", *sections}
    return {k: v for k, v in cfg.items() if k in keep}


def _preset_path(name: str) -> Path | None:
    res = resources.files("clapkit") / "configs" / f"{name}.yaml"
    return Path(str(res)) if res.is_file() else None


def list_presets() -> list[str]:
    folder = resources.files("clapkit") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


# mappings whose keys are names registered elsewhere, not config keys: a tower's own options
# (clapkit.models.towers), the evaluators of a run (clapkit.training.evaluators) and the towers a
# leakage experiment compares (names of the user's choosing; each one's settings are checked when built)
FREE_FORM = {"model.audio.options", "model.image.options", "train.eval", "experiment.towers"}


def merge(base: dict, override: dict, where: str, prefix: str = "") -> dict:
    """Recursively merge ``override`` into a copy of ``base``; unknown keys are errors."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in out:
            raise ConfigError(
                f"{where}: unknown config key '{dotted}'. Known keys at this level: "
                f"{', '.join(sorted(out))}"
            )
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{dotted}' must be a mapping, got {value!r}")
            if dotted in FREE_FORM:  # any keys: a registered part's own names (checked where it is built)
                out[key] = {**out[key], **copy.deepcopy(value)}
            else:
                out[key] = merge(out[key], value, where, dotted + ".")
        else:
            out[key] = value
    return out


def parse_override(item: str) -> dict:
    """``"a.b.c=1e-4"`` -> ``{"a": {"b": {"c": 0.0001}}}``."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.batch_size=32")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from exc
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)  # YAML 1.1 reads "1e-4" as a string
    node: dict = {}
    cur = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cur[part] = {}
        cur = cur[part]
    cur[parts[-1]] = value
    return node


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_source(source: str | Path, seen: tuple[str, ...] = ()) -> tuple[dict, list[tuple[dict, str]]]:
    """The layers of a preset or YAML file, base first. A file may start from another
    preset with ``base: NAME``."""
    path = _preset_path(str(source)) if not str(source).endswith((".yaml", ".yml")) else None
    if path is None:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(
                f"--config {source}: neither a preset ({', '.join(list_presets())}) nor an existing YAML file"
            )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    data = upgrade(data, str(path))
    layers: list[tuple[dict, str]] = []
    base = data.pop("base", None)
    if base:
        if str(base) in seen:
            raise ConfigError(f"{path}: 'base: {base}' makes a cycle")
        layers += _read_source(base, (*seen, str(source)))[1]
    layers.append((data, str(path)))
    return data, layers


# keys that moved, old place -> new; an old name (a file, a --set line, a saved config or a
# checkpoint's config.json) is read at its new place
MOVED: dict[tuple[str, ...], tuple[str, ...]] = {
    **{("train", k): ("runtime", k) for k in ("device", "precision", "deterministic", "sync_batchnorm",
                                              "max_bad_steps", "save_every_steps", "logger", "progress",
                                              "eval_batch_size")},
    ("data", "num_workers"): ("runtime", "num_workers"),
    ("data", "skip_bad"): ("runtime", "skip_bad"),
}


def relocate(data: dict, where: str) -> dict:
    """``data`` (one layer of a config) with every key of :data:`MOVED` at its new place;
    an old and a new name with different values in one layer are refused."""
    if not any(isinstance(data.get(old[0]), dict) and old[-1] in data[old[0]] for old in MOVED):
        return data
    data = copy.deepcopy(data)
    for old, new in MOVED.items():
        node = data.get(old[0])
        if not isinstance(node, dict) or old[-1] not in node:
            continue
        value = node.pop(old[-1])
        target = data.setdefault(new[0], {})
        if not isinstance(target, dict):
            raise ConfigError(f"{where}: '{new[0]}' must be a mapping of config keys")
        if new[-1] in target and target[new[-1]] != value:
            raise ConfigError(f"{where}: '{'.'.join(old)}' (the old name of '{'.'.join(new)}') = {value!r} "
                              f"contradicts '{'.'.join(new)}' = {target[new[-1]]!r}; keep only '{'.'.join(new)}'")
        target[new[-1]] = value
    return data


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """Resolve a config from a preset name or YAML path plus ``key=value`` overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if source:
        for data, where in _read_source(source)[1]:
            cfg = merge(cfg, data, where)
    for item in overrides or []:
        cfg = merge(cfg, relocate(parse_override(item), f"--set {item}"), f"--set {item}")
    validate(cfg)
    return cfg


# keys added with config_version 2 whose default changed what a run computes: a config saved
# before (a full dump without config_version) keeps the behaviour it was written with
BEFORE_V2 = {("train", "val_objective"): "clip"}


def upgrade(data: dict, where: str) -> dict:
    """A saved config in today's layout. A dump written before ``config_version`` 2 (every
    section present, no version) gets the keys of :data:`BEFORE_V2` set to what that
    version did, with a warning; a key of an older layout is read at its new place
    (:data:`MOVED`, in a dump or a user's partial file alike)."""
    if "config_version" not in data and _is_v1_dump(data):
        import warnings

        data = copy.deepcopy(data)
        set_keys = []
        for keys, value in BEFORE_V2.items():
            node = data
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            if keys[-1] not in node:
                node[keys[-1]] = value
                set_keys.append(f"{'.'.join(keys)} = {value}")
        data["config_version"] = 2
        warnings.warn(f"{where}: a config saved by clapkit before config_version 2; upgraded "
                      f"({', '.join(set_keys) or 'no key changes'}, as that version ran)", stacklevel=3)
    data = relocate(data, where)
    if isinstance(data.get("config_version"), int) and data["config_version"] < DEFAULTS["config_version"]:
        data = {**data, "config_version": DEFAULTS["config_version"]}
    return data


def _is_v1_dump(data: dict) -> bool:
    if not all(isinstance(data.get(k), dict) for k in ("data", "model", "train")):
        return False
    return not set(DEFAULTS) - {"config_version", "recipe", "runtime"} - set(data)  # else a partial file


def complete(cfg: dict) -> dict:
    """A saved config with the keys added since it was written taken from :data:`DEFAULTS`
    (an older checkpoint's ``config.json``); its own values always win."""

    def fill(base, own):
        if not isinstance(base, dict) or not isinstance(own, dict):
            return own
        out = copy.deepcopy(base)
        for key, value in own.items():
            out[key] = fill(base.get(key), value)
        return out

    return fill(DEFAULTS, relocate(cfg, "a saved config"))


def validate(cfg: dict) -> None:
    """Check values whose mistakes would otherwise surface deep inside training."""
    if cfg.get("recipe") not in (None, *RECIPE_SECTIONS):
        raise ConfigError(f"'recipe' = {cfg['recipe']!r}; choose one of {sorted(RECIPE_SECTIONS)} (or leave it out)")
    choices = {
        ("data", "val_split_by"): {"pair", "media", "audio"},
        ("data", "captions"): {"all", "one"},
        ("model", "modality"): {"audio", "image"},
        ("audio", "pad"): {"zero", "repeatpad", "repeat"},
        ("model", "image", "pooling"): {"pooled", "cls"},
        ("train", "optimizer"): {"adam", "adamw"},
        ("train", "schedule"): {"plateau", "cosine"},
        ("runtime", "precision"): {"fp32", "bf16", "fp16"},
        ("runtime", "logger"): {"csv", "tensorboard"},
        ("runtime", "compile"): {"none", "default", "reduce-overhead"},
        ("runtime", "parallel"): {"ddp", "fsdp"},
        ("audio", "crop"): {"fixed", "variable"},
        ("train", "val_objective"): {"train", "clip"},
        ("train", "soft", "similarity"): {"aa", "tt", "at", "mean"},
        ("train", "se", "loss"): {"captions", "corpus", "nli"},
        ("cse", "mode"): {"unsup", "sup", "image", "audio"},
        ("cse", "text_loss"): {"unsup", "sup"},
        ("cse", "other_loss"): {"supcon", "simclr"},
        ("cse", "schedule"): {"linear", "constant"},
        ("cse", "audio_label"): {"digit", "speaker"},
    }
    for keys, allowed in choices.items():
        value = get(cfg, keys)
        if value not in allowed:
            raise ConfigError(f"'{'.'.join(keys)}' = {value!r}; choose one of {sorted(allowed)}")
    if not 0.0 <= cfg["data"]["val_fraction"] < 1.0:
        raise ConfigError("'data.val_fraction' must be in [0, 1)")
    if not 0.0 < cfg["data"]["fraction"] <= 1.0:
        raise ConfigError("'data.fraction' must be in (0, 1]")
    if min(cfg["train"]["cyclip"].values()) < 0:
        raise ConfigError("train.cyclip.in_modal and cross_modal are weights: give values >= 0")
    if cfg["image"]["size"] is not None and int(cfg["image"]["size"]) < 8:
        raise ConfigError(f"'image.size' = {cfg['image']['size']}: give at least 8 pixels")
    if not 0 < cfg["image"]["crop_scale"][0] <= cfg["image"]["crop_scale"][1] <= 1:
        raise ConfigError(f"'image.crop_scale' = {cfg['image']['crop_scale']}: need 0 < low <= high <= 1")
    se = cfg["train"]["se"]
    if se["weight"] < 0:
        raise ConfigError(f"'train.se.weight' = {se['weight']}: a weight, give 0 or more")
    if se["weight"] and se["loss"] in ("corpus", "nli") and not se[se["loss"]]:
        raise ConfigError(f"train.se.loss = {se['loss']} needs train.se.{se['loss']} ("
                          + ("txt:FILE, one sentence a line, or stsb:DIR" if se["loss"] == "corpus"
                             else "a sent0,sent1,hard_neg CSV or an SNLI/MultiNLI .jsonl") + ")")
    from .pooling import resolve_text_head

    resolve_text_head("model.text", cfg["model"]["text"])  # old pooling names map, or are refused, here
    resolve_text_head("cse.model", cfg["cse"]["model"])
    for key in ("save_every_steps", "max_bad_steps", "num_workers"):
        if int(cfg["runtime"][key]) < 0:
            raise ConfigError(f"'runtime.{key}' = {cfg['runtime'][key]}: give 0 or more")
    if cfg["audio"].get("crop") == "variable" and not float(cfg["audio"]["max_seconds"]) > 0:
        raise ConfigError(f"'audio.max_seconds' = {cfg['audio']['max_seconds']}: give the longest training input in "
                          "seconds, > 0 (e.g. 30)")
    if int(cfg["data"].get("bucket_batches", 1)) < 1:
        raise ConfigError(f"'data.bucket_batches' = {cfg['data']['bucket_batches']}: give 1 or more batches a chunk")
    ema = cfg["train"]["ema"]
    if not 0.0 <= float(ema["decay"]) < 1.0 or int(ema["start_step"]) < 0:
        raise ConfigError(f"train.ema = {ema}: decay is in [0, 1) (0: off; 0.999 a common value) and start_step >= 0")
    if cfg["train"]["batch_size"] < 2:
        raise ConfigError("'train.batch_size' must be at least 2 for a contrastive loss")
    for key in ("batch_size", "other_batch_size"):
        if cfg["cse"][key] < 2:
            raise ConfigError(f"'cse.{key}' must be at least 2 for a contrastive loss")
    for section, key in (("data", "train"), ("data", "val"), ("language", "train"), ("language", "sts"),
                         ("language", "transfer")):  # one spec given where a list is expected (--set k=spec)
        if isinstance(cfg[section][key], str | dict):
            cfg[section][key] = [cfg[section][key]]


def get(cfg: dict, keys: tuple[str, ...]) -> Any:
    node: Any = cfg
    for key in keys:
        node = node[key]
    return node
