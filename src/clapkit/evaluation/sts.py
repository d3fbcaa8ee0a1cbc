"""STS evaluation of a sentence encoder (SimCSE protocol) plus alignment and uniformity.

Score = Spearman correlation x 100 between the cosine similarity of the two sentences'
embeddings and the gold scores. For STS12-16 three aggregations are reported: "all"
(every subset's pairs concatenated, SimCSE's choice and the one in the 7-task table),
the mean over subsets and the mean weighted by subset size. The 7-task average
(STS12-16 "all", STS-B test, SICK-R test) is given when all seven are evaluated.

The encoder is a clapkit checkpoint's text tower (``--projected`` for E_t), a
``clapkit train cse`` folder (its evaluation pooling and head), a sentence-transformers
folder (``modules.json``: loaded by sentence-transformers itself, so every module it
lists counts: any pooling mode, Dense, Normalize), a Hugging Face model folder, or
``minilm``. An explicit ``pooling`` on a sentence-transformers folder means "the
Transformer with this pooling"; it is refused when it would drop a listed module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from ..data.text.sts import StsSet
from ..errors import ConfigError
from ..models.text import TextEncoder, resolve_text_model
from ..pooling import LEGACY_POOLING
from .geometry import alignment, uniformity

SEVEN = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSB-test", "SICK-R-test")


# modules an explicit --pooling may replace: the Transformer, its Pooling, and a
# Normalize (cosine similarity normalises anyway)
_REPLACEABLE = ("Transformer", "Pooling", "Normalize")


def _st_modules(folder: Path) -> list[str] | None:
    """The module types a sentence-transformers folder lists, or None if it is not one."""
    path = folder / "modules.json"
    if not path.is_file():
        return None
    try:
        return [m["type"] for m in json.loads(path.read_text())]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a sentence-transformers modules.json ({exc})") from exc


def _describe(st) -> str:
    parts = []
    for module in st:
        name = type(module).__name__
        mode = getattr(module, "pooling_mode", None) or getattr(module, "get_pooling_mode_str", lambda: None)()
        parts.append(f"{name}({mode if isinstance(mode, str) else '+'.join(mode)})" if mode else name)
    return "sentence-transformers: " + " > ".join(parts)


class SentenceEncoder:
    """L2-normalised sentence embeddings from a checkpoint or model folder.

    ``max_length`` None keeps a sentence-transformers folder's own ``max_seq_length``
    (a public dual encoder's tokenizer its own ``model_max_length``) and uses 128
    tokens elsewhere. The text tower of a dual encoder, clapkit's or a public CLAP,
    CLIP or SigLIP, gives its backbone output x_t, or E_t with ``projected``.
    """

    def __init__(self, path: str | Path, pooling: str = "auto", max_length: int | None = None,
                 projected: bool = False, device="cpu"):
        from ..models.formats import DUAL, detect, public_family
        from ..models.public.loader import load_model

        path = str(path)
        folder = Path(resolve_text_model(path))
        self.dual = self.cse = self.st = None
        self.projected, self.device = projected, device
        kind = detect(path)
        if kind == "audio-tower":
            raise ConfigError(f"{path}: an audio tower's weights, not a text encoder")
        if kind == "train-cse":  # `clapkit train cse` output: its own pooling and head
            from ..models.cse import CseModel

            self.cse = CseModel.load(folder).to(device).eval()
            if pooling != "auto":
                self.cse.set_pooling(*LEGACY_POOLING["cse.model"][pooling])
            self.cse.max_length = max_length or self.cse.max_length
            self.pooling = self.cse.pooling
            return
        family = public_family(kind)
        if kind in DUAL:
            self.dual = load_model(path, device).eval()
            if family:
                if pooling != "auto":
                    raise ConfigError(f"--pooling {pooling} on {path}: a public {family} model's text embedding is "
                                      "its own text model's pooled output; leave --pooling auto")
                self.pooling = f"{family} text model's pooled output"
            else:
                if pooling != "auto":
                    self.dual.text.set_pooling(*LEGACY_POOLING["model.text"][pooling])
                self.pooling = self.dual.text.pooling
            self.dual.text.max_length = max_length or self.dual.text.max_length
            return
        if projected:
            raise ConfigError(f"--projected on {path}: only a dual encoder (a clapkit checkpoint or a public CLAP, CLIP "
                              "or SigLIP) has a text projection")
        if (modules := _st_modules(folder)) is not None and pooling == "auto":
            self._load_sentence_transformers(folder, max_length, device)
            return
        extra = [t for t in modules or [] if t.rsplit(".", 1)[-1] not in _REPLACEABLE]
        if extra:
            raise ConfigError(f"--pooling {pooling} on {folder}: its modules.json also lists "
                              f"{', '.join(extra)}, which a pooling of the bare Transformer would drop; "
                              "leave --pooling auto to use every module")
        pool, head = LEGACY_POOLING["model.text"]["cls" if pooling == "auto" else pooling]
        self.tower = TextEncoder(path, pool, head, True, max_length or 128, "--model", legacy=True).to(device).eval()
        self.pooling = self.tower.pooling

    @classmethod
    def of_model(cls, model, projected: bool = False, device="cpu") -> SentenceEncoder:
        """The text tower of a dual encoder already loaded (clapkit's or a public one):
        x_t, or E_t with ``projected``, without loading it again."""
        enc = cls.__new__(cls)
        enc.dual, enc.cse, enc.st = model.eval(), None, None
        enc.projected, enc.device = projected, device
        enc.pooling = getattr(model.text, "pooling", None) or f"{model.family} text model's pooled output"
        return enc

    def _load_sentence_transformers(self, folder: Path, max_length: int | None, device) -> None:
        from sentence_transformers import SentenceTransformer

        try:
            self.st = SentenceTransformer(str(folder), device=str(device), local_files_only=True)
        except Exception as exc:  # sentence-transformers raises many types for a folder it cannot read
            raise ConfigError(f"{folder}: cannot load it as a sentence-transformers model ({type(exc).__name__}: "
                              f"{exc}); check the module types in its modules.json") from exc
        if max_length:
            self.st.max_seq_length = max_length
        self.pooling = _describe(self.st)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64, normalize: bool = True) -> np.ndarray:
        """Sentence embeddings, L2-normalised unless ``normalize`` is off (SentEval's
        transfer tasks take them raw)."""
        if self.cse is not None:
            return self.cse.encode(texts, batch_size, normalize)
        if self.st is not None:
            return self.st.encode(list(texts), batch_size=batch_size, normalize_embeddings=normalize,
                                  convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        out = []
        for i in range(0, len(texts), batch_size):
            chunk = texts[i : i + batch_size]
            if self.dual is None:
                x = self.tower(self.tower.tokenize(chunk, self.device))
            else:
                x = self.dual.text_backbone(self.dual.text.tokenize(chunk, self.device))
                if self.projected:
                    x = self.dual.project_text(x)
            out.append((torch.nn.functional.normalize(x.float(), dim=-1) if normalize else x.float()).cpu())
        return torch.cat(out).numpy()


def _spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(spearmanr(pred, gold).correlation * 100)


def evaluate_set(encoder: SentenceEncoder, data: StsSet, batch_size: int = 64) -> dict:
    return _evaluate_set(encoder, data, batch_size)[0]


def _evaluate_set(encoder: SentenceEncoder, data: StsSet, batch_size: int) -> tuple[dict, np.ndarray]:
    a, b = encoder.encode(data.s1, batch_size), encoder.encode(data.s2, batch_size)
    sims = (a * b).sum(axis=1)
    gold = np.asarray(data.scores)
    out = {"pairs": len(gold), "spearman": _spearman(sims, gold), "pearson": float(pearsonr(sims, gold)[0] * 100)}
    subsets = sorted(set(data.subset))
    if len(subsets) > 1:
        per = {}
        for s in subsets:
            m = np.array([x == s for x in data.subset])
            per[s] = {"pairs": int(m.sum()), "spearman": _spearman(sims[m], gold[m])}
        out["subsets"] = per
        out["all"] = out["spearman"]
        out["mean"] = float(np.mean([v["spearman"] for v in per.values()]))
        out["wmean"] = float(sum(v["spearman"] * v["pairs"] for v in per.values()) / len(gold))
    if data.name.startswith("STSB"):
        positive = gold >= 4.0
        both = np.concatenate([a, b])
        out["alignment"] = alignment(a[positive], b[positive])
        out["uniformity"] = uniformity(both)
        out["alignment_pairs"] = int(positive.sum())
    return out, sims


def sts_eval(encoder: SentenceEncoder, sets: list[StsSet], batch_size: int = 64, bootstrap: int = 0,
             seed: int = 0) -> dict:
    """Every set's Spearman (and the rest, :func:`evaluate_set`), the 7-task table and its
    average; with ``bootstrap`` resamples, a 95% interval of each set's Spearman and of the
    average (:func:`spearman_intervals`)."""
    results, sims = {}, {}
    for s in sets:
        results[s.name], sims[s.name] = _evaluate_set(encoder, s, batch_size)
    table = {name: results[name]["spearman"] for name in SEVEN if name in results}
    out: dict = {"tasks": results, "table": table}
    if len(table) == len(SEVEN):
        out["avg"] = float(np.mean(list(table.values())))
    if bootstrap:
        ci = spearman_intervals({s.name: (sims[s.name], np.asarray(s.scores)) for s in sets}, bootstrap, seed)
        for name, interval in ci.items():
            if name in results:
                results[name]["ci"] = {"spearman": interval}
            else:  # the 7-task average
                out.setdefault("ci", {})[name] = interval
        out["bootstrap"] = {"resamples": bootstrap, "seed": seed, "level": 0.95, "over": "pairs, each set on its own"}
    return out


def spearman_intervals(sets: dict[str, tuple[np.ndarray, np.ndarray]], resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap intervals of Spearman x 100 for each set ``name: (predicted,
    gold)``: each resample draws every set's pairs with replacement (one
    ``numpy.random.default_rng(seed)``, sets in the order given), so the 7-task average
    (``avg``, when all seven are there) gets the interval of the mean of the same draws.
    A resample's Spearman is the Pearson correlation of the drawn pairs' average ranks
    (scipy's ``spearmanr``)."""
    from scipy.stats import rankdata

    rng, drawn = np.random.default_rng(seed), {name: [] for name in sets}
    for start in range(0, resamples, 64):
        size = min(64, resamples - start)
        for name, (pred, gold) in sets.items():
            idx = rng.integers(0, len(gold), size=(size, len(gold)))
            x, y = rankdata(pred[idx], axis=1), rankdata(gold[idx], axis=1)
            x, y = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                r = (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
            drawn[name].append(100 * r)
    stats = {name: np.concatenate(v) for name, v in drawn.items()}
    if all(name in stats for name in SEVEN):
        stats["avg"] = np.mean([stats[name] for name in SEVEN], axis=0)
    lo, hi = (1 - level) / 2, (1 + level) / 2
    return {name: tuple(float(q) for q in np.nanquantile(v, [lo, hi])) for name, v in stats.items()}
