"""The text encoder's two choices, the pooled token state and the head, and the old
single ``pooling`` name they replace, mapped section by section (no heavy imports: the
config checks them at load)."""

from __future__ import annotations

from .errors import ConfigError

POOLS = ("first", "mean")
HEADS = ("none", "pooler", "mlp")
# the old `pooling` names, per config section: (pool, head)
LEGACY_POOLING = {
    "model.text": {"cls": ("first", "pooler"), "cls_before_pooler": ("first", "none"), "mean": ("mean", "none")},
    "cse.model": {"cls": ("first", "mlp"), "cls_before_pooler": ("first", "none"), "mean": ("mean", "none")},
}
SECTION_DEFAULTS = {"model.text": ("mean", "none", True), "cse.model": ("first", "mlp", False)}


def resolve_text_head(section: str, d: dict) -> tuple[str, str, bool]:
    """(pool, head, head_at_eval) of the text section ``d`` (``model.text`` or
    ``cse.model``): its ``pool`` / ``head`` / ``head_at_eval``, or its old ``pooling``
    (and ``mlp_only_train``) mapped as that section meant them. Unset keys take the
    section's defaults; an old name beside new keys that disagree is refused."""
    pool, head, at_eval = d.get("pool"), d.get("head"), d.get("head_at_eval")
    old, only_train = d.get("pooling"), d.get("mlp_only_train")
    if old == "auto":
        old, pool = None, pool or "auto"
    if old is not None:
        if old not in LEGACY_POOLING[section]:
            raise ConfigError(f"{section}.pooling = {old!r}; the old names are {', '.join(LEGACY_POOLING[section])} "
                              f"(or give {section}.pool: first|mean and {section}.head: none|pooler|mlp)")
        want = LEGACY_POOLING[section][old]
        if pool not in (None, want[0]) or head not in (None, want[1]):
            raise ConfigError(f"{section}.pooling = {old} (the old name) means pool {want[0]}, head {want[1]} in "
                              f"{section}, but {section}.pool / head say {pool} / {head}: ambiguous. Drop "
                              f"{section}.pooling and keep pool and head")
        pool, head = want
    if only_train is not None:
        if at_eval not in (None, not only_train):
            raise ConfigError(f"{section}.mlp_only_train = {only_train} (the old name) and {section}.head_at_eval = "
                              f"{at_eval} disagree; drop mlp_only_train")
        at_eval = not only_train
    dp, dh, de = SECTION_DEFAULTS[section]
    pool, head = pool or dp, head or dh
    at_eval = de if at_eval is None else bool(at_eval)
    check_pair(section, pool, head)
    return pool, head, at_eval


def check_pair(section: str, pool: str, head: str) -> None:
    """Refuse a pool or head the text encoder does not have, naming ``section``."""
    if pool not in (*POOLS, "auto") or head not in HEADS:
        raise ConfigError(f"{section}.pool = {pool!r}, head = {head!r}; choose pool first|mean|auto and head "
                          f"{'|'.join(HEADS)}")
