"""Clip-level overlap between training and evaluation data: the same recording in both.

Caption leakage (:mod:`.leakage`) is one half of the question a zero-shot number must
answer; the other is whether the evaluated recordings (or pictures) were trained on.
Many public sets are cut from the same sources (ESC-50, UrbanSound8K, FSD50K and Clotho
from Freesound; AudioSet, VGGSound and AudioCaps from YouTube), so an item is matched by
these rules, in this order:

- ``id``: the same source id, as each format names it (``LabelledClip.source`` /
  ``Pair.source``: ESC-50's ``src_file``, UrbanSound8K's ``fsID``, FSD50K's ``fname``,
  Clotho's ``sound_id`` from its metadata file, the YouTube id of AudioSet, VGGSound and
  AudioCaps). A format without ids takes no part in this rule (recorded).
- ``content``: the same decoded content — audio decoded at its own rate, mono, on the
  16-bit grid (``round(x * 32768)``); images decoded to RGB pixels — hashed (SHA-1), so a
  renamed copy or a lossless re-encode (WAV <-> FLAC, PCM <-> float WAV of the same
  samples) matches; a lossy, resampled or re-cut copy does not (the embedding rule's).
- ``perceptual`` (images): a DCT perceptual hash (64 bits: the 8 x 8 lowest frequencies of
  the 32 x 32 grey image against their median) within ``max_hamming`` bits, for resized or
  re-compressed copies.
- ``embedding``: with a model, cosine of the media embeddings (E, or the backbone's x)
  at or above ``threshold``, searched exactly with FAISS (inner product of normalised
  vectors), for shifted, trimmed or lossy copies.

Each matched (training item, evaluation item) is one entry, with the first rule that
matched it, every rule that did, and the similarity (1 for ``id`` and ``content``,
``1 - bits/64`` for ``perceptual``, the cosine for ``embedding``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError

RULES = ("id", "content", "perceptual", "embedding")


@dataclass
class Side:
    """The items of one side (training or evaluation): ``items`` have ``.media``,
    ``.source``, ``.where``; ``labels``/``class_names`` when it is a labelled set;
    ``pairs``: every caption pair of a training caption set (for ``--write-clean``)."""

    specs: list[str]
    items: list
    spec_of: list[str]
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    pairs: list = field(default_factory=list)


def content_hash(medium: str, ref) -> str:
    """SHA-1 of the decoded content (see the module docstring)."""
    h = hashlib.sha1()
    if medium == "audio":
        from ..data.audio.io import audio_info, load_audio

        sr = audio_info(ref).samplerate
        wave = load_audio(ref, sr)
        h.update(f"{sr}:".encode())
        h.update(np.clip(np.round(wave.astype(np.float64) * 32768), -32768, 32767).astype("<i2").tobytes())
    else:
        from ..data.image.io import open_image

        im = np.asarray(open_image(ref))
        h.update(f"{im.shape}:".encode())
        h.update(np.ascontiguousarray(im).tobytes())
    return h.hexdigest()


def perceptual_hash(ref) -> int:
    """The 64-bit DCT perceptual hash of an image (see the module docstring)."""
    from PIL import Image
    from scipy.fft import dctn

    from ..data.image.io import open_image

    grey = np.asarray(open_image(ref).convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = dctn(grey, norm="ortho")[:8, :8].ravel()
    bits = low > np.median(low)
    return int("".join("1" if b else "0" for b in bits), 2)


_HASHES: dict[tuple, str] = {}  # (medium, file, size:mtime) -> content hash, for the life of the process


def _hashes(medium: str, items: Sequence) -> list[str]:
    """The content hashes of ``items``, each file decoded once per process while unchanged
    (a bench audits every task of a model against the same training data)."""
    from ..inference.cache import media_key, media_stamp

    out = []
    for i in items:
        key = (medium, media_key(i.media), media_stamp(i.media))
        if key not in _HASHES:
            _HASHES[key] = content_hash(medium, i.media)
        out.append(_HASHES[key])
    return out


def _unit(a: np.ndarray) -> np.ndarray:
    """Unit rows in contiguous float32, as FAISS takes them."""
    from ..inference.embed import unit_rows

    return unit_rows(np.ascontiguousarray(a, dtype=np.float32))


def cosine_index(train: np.ndarray):
    """An exact FAISS inner-product index of the normalised training embeddings (it holds
    its own copy, added in chunks so no second full-size temporary exists)."""
    import faiss

    index = faiss.IndexFlatIP(train.shape[1])
    for start in range(0, len(train), 8192):
        index.add(_unit(train[start : start + 8192]))
    return index


def embedding_matches(train, evaluate: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(train row, eval row, cosine) of every pair at or above ``threshold`` (exact, FAISS);
    ``train``: embeddings or a :func:`cosine_index` of them."""
    index = train if hasattr(train, "range_search") else cosine_index(train)
    lims, sims, rows = index.range_search(_unit(evaluate), float(np.nextafter(np.float32(threshold), np.float32(-1))))
    return [(int(rows[k]), q, float(sims[k])) for q in range(len(evaluate)) for k in range(lims[q], lims[q + 1])
            if sims[k] >= threshold]


def nearest_cosines(train, evaluate: np.ndarray) -> np.ndarray:
    """Each evaluation item's highest cosine to a training item: how close the two sets sit
    anyway, so a threshold can be judged against the model's own spread (a poorly trained
    model puts distinct clips of one class above 0.95). ``train`` as for :func:`embedding_matches`."""
    index = train if hasattr(train, "search") else cosine_index(train)
    return index.search(_unit(evaluate), 1)[0][:, 0]


def find_overlap(train: Side, evaluate: Side, medium: str, rules: Sequence[str], features=None,
                 threshold: float = 0.95, max_hamming: int = 4) -> dict:
    """Every matched (train, eval) pair by ``rules`` (see the module docstring);
    ``features``: ``(train E, eval E)`` for the embedding rule."""
    bad = [r for r in rules if r not in RULES]
    if bad or not rules:
        raise ConfigError(f"--rules {','.join(rules)}: choose from {', '.join(RULES)}")
    if "perceptual" in rules and medium != "image":
        raise ConfigError("--rules perceptual: a perceptual hash is for images; use content and embedding for audio")
    found: dict[tuple[int, int], dict] = {}

    def add(t: int, e: int, rule: str, sim: float, **extra) -> None:
        entry = found.setdefault((t, e), {"rule": rule, "rules": [], "similarity": sim, **extra})
        if rule not in entry["rules"]:
            entry["rules"].append(rule)

    notes = {}
    if "id" in rules:
        by_source: dict[str, list[int]] = {}
        for t, item in enumerate(train.items):
            if item.source:
                by_source.setdefault(item.source, []).append(t)
        for e, item in enumerate(evaluate.items):
            for t in by_source.get(item.source or "", []):
                add(t, e, "id", 1.0, source=item.source)
        with_ids = {"train": sum(1 for i in train.items if i.source), "eval": sum(1 for i in evaluate.items if i.source)}
        notes["id"] = with_ids
    if "content" in rules:
        by_hash: dict[str, list[int]] = {}
        for t, h in enumerate(_hashes(medium, train.items)):
            by_hash.setdefault(h, []).append(t)
        for e, h in enumerate(_hashes(medium, evaluate.items)):
            for t in by_hash.get(h, []):
                add(t, e, "content", 1.0)
    if "perceptual" in rules:
        th = np.array([perceptual_hash(i.media) for i in train.items], dtype=np.uint64)
        for e, item in enumerate(evaluate.items):
            x = np.bitwise_xor(th, np.uint64(perceptual_hash(item.media)))
            dist = np.array([bin(int(v)).count("1") for v in x])
            for t in np.flatnonzero(dist <= max_hamming):
                add(int(t), e, "perceptual", 1.0 - dist[t] / 64.0)
    if "embedding" in rules:
        if features is None:
            raise ConfigError("--rules embedding needs --model (the embeddings to compare)")
        index = cosine_index(features[0])
        for t, e, sim in embedding_matches(index, features[1], threshold):
            add(t, e, "embedding", sim)
        nearest = nearest_cosines(index, features[1])
        notes["embedding"] = {"threshold": threshold, "nearest_cosine_percentiles": {
            str(q): float(v) for q, v in zip((50, 90, 99), np.percentile(nearest, [50, 90, 99]), strict=True)}}
    return {"found": found, "notes": notes}


def _rules_of(found: dict) -> dict[int, set[str]]:
    """Each matched evaluation item -> every rule that matched it (to any training item)."""
    rules_of: dict[int, set[str]] = {}
    for (_, e), x in found.items():
        rules_of.setdefault(e, set()).update(x["rules"])
    return rules_of


def _per_rule(found: dict, rules_of: dict[int, set[str]], rules: Sequence[str]) -> dict:
    return {r: {"pairs": sum(1 for x in found.values() if r in x["rules"]),
                "eval_items": sum(1 for rs in rules_of.values() if r in rs)} for r in rules}


def overlap_report(train: Side, evaluate: Side, medium: str, rules: Sequence[str], matched: dict,
                   settings: dict) -> dict:
    """overlap.json's content: counts per rule and per evaluation class, and the pairs."""
    found = matched["found"]
    pairs = [{"train": str(train.items[t].media), "train_spec": train.spec_of[t], "train_where": train.items[t].where,
              "eval": str(evaluate.items[e].media), "eval_where": evaluate.items[e].where, **entry}
             for (t, e), entry in sorted(found.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
    rules_of = _rules_of(found)
    report = {"train": train.specs, "eval": evaluate.specs, "medium": medium, "rules": list(rules), **settings,
              "train_items": len(train.items), "eval_items": len(evaluate.items),
              "eval_items_matched": len(rules_of), "train_items_matched": len({t for t, _ in found}),
              "eval_fraction_matched": len(rules_of) / max(1, len(evaluate.items)),
              "per_rule": _per_rule(found, rules_of, rules),
              "notes": matched["notes"]}
    if evaluate.labels is not None:
        per_class = {}
        for c, name in enumerate(evaluate.class_names):
            members = np.flatnonzero(evaluate.labels == c)
            if len(members):
                hits = [rules_of[e] for e in members if e in rules_of]
                per_class[name] = {"items": int(len(members)), "matched": len(hits),
                                   **{r: sum(1 for rs in hits if r in rs) for r in rules}}
        report["per_class"] = per_class
    report["pairs"] = pairs
    return report


def write_overlap(report: dict, out: Path) -> None:
    from ..atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "overlap.json", json.dumps(report, indent=1))
    lines = [f"# Overlap of {', '.join(report['train'])} with {', '.join(report['eval'])}", "",
             f"{report['eval_items_matched']} of {report['eval_items']} evaluation items "
             f"({report['eval_fraction_matched']:.1%}) match one or more of the {report['train_items']} training items.",
             "", "| rule | pairs | evaluation items |", "| --- | --- | --- |"]
    lines += [f"| {r} | {c['pairs']} | {c['eval_items']} |" for r, c in report["per_rule"].items()]
    if "embedding" in report["notes"]:
        n = report["notes"]["embedding"]
        q = n["nearest_cosine_percentiles"]
        lines += ["", f"Embedding rule: cosine >= {n['threshold']}. Each evaluation item's nearest training item sits at "
                  f"cosine {q['50']:.3f} (median), {q['90']:.3f} (90th percentile), {q['99']:.3f} (99th): a threshold "
                  "below the bulk of these matches similar sounds, not copies."]
    if "id" in report["notes"]:
        n = report["notes"]["id"]
        lines += ["", f"Source ids known for {n['train']} training and {n['eval']} evaluation items."]
    if report.get("per_class"):
        worst = sorted(report["per_class"].items(), key=lambda kv: -kv[1]["matched"] / kv[1]["items"])[:10]
        lines += ["", "| class | items | matched |", "| --- | --- | --- |"]
        lines += [f"| {k} | {v['items']} | {v['matched']} |" for k, v in worst]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")


def load_side(specs_: Sequence[str], medium: str, folds: list[int] | None = None, media_dir=None,
              skip_bad: bool = False) -> Side:
    """The items of ``specs_`` (labelled sets or caption sets; their files checked). A
    caption set's items are its distinct clips; its pairs are kept for ``--write-clean``.
    A labelled set's pairs are its items with the medium's default prompt, as training
    reads a labelled set."""
    from ..data import specs
    from ..data.files import Skipped
    from ..data.media import check_media, is_labelled_set, load_labelled_media
    from ..data.records import Pair, unique_clips
    from ..evaluation.prompts import default_templates

    side = Side(list(specs_), [], [])
    labelled_only = len(specs_) == 1
    for spec in specs_:
        if is_labelled_set(spec, medium):
            data = load_labelled_media(spec, medium, folds, None, skip_bad, checked=True, media_dir=media_dir)
            template = default_templates(medium)[0]
            texts = data.label_texts()
            side.pairs += [Pair(c.media, template.format(label=texts[c.label]), str(c.media), c.where, c.source)
                           for c in data.clips]
            items = data.clips
            if labelled_only:
                side.labels, side.class_names = np.array([c.label for c in items]), list(data.class_names)
        else:
            if folds:
                raise ConfigError(f"{spec}: folds are for labelled sets; this is a caption set")
            skipped = Skipped()
            opts = specs.ReadOptions(medium, Path(media_dir) if media_dir else None, skip_bad=skip_bad)
            pairs = check_media(medium, specs.read_pairs(spec, opts, skipped), skip_bad, skipped)
            side.pairs += pairs
            items = unique_clips(pairs)
        side.items += items
        side.spec_of += [spec] * len(items)
    return side


def write_clean(train: Side, found: dict, path: Path, medium: str) -> dict:
    """The training pairs whose item matched no evaluation item, as a ``{medium},caption``
    CSV of absolute paths (what ``train clap``'s ``data.train`` reads as ``csv:``)."""
    import csv
    import io
    import os

    from ..atomic import atomic_write_text

    if not all(isinstance(i.media, str | Path) for i in train.items):
        raise ConfigError(f"--write-clean: {train.specs[0]} holds images inside an array or shard, which a CSV of "
                          "paths cannot name; filter it with the pairs in overlap.json")
    dropped = {str(train.items[t].media) for t, _ in found}
    kept = [p for p in train.pairs if str(p.media) not in dropped]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([medium, "caption"])
    writer.writerows([os.path.abspath(str(p.media)), p.caption] for p in kept)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), buf.getvalue())
    return {"file": str(path), "pairs_kept": len(kept), "pairs_dropped": len(train.pairs) - len(kept),
            "items_dropped": len(dropped)}


def overlap_split(train_specs: Sequence[str], data, medium: str, correct: np.ndarray | None,
                  rules: Sequence[str] = ("id", "content"), media_dir=None, skip_bad: bool = False) -> dict:
    """The overlap of a labelled evaluation set with a model's training data (``audit
    model --train-data``, a bench model's ``train_data``): how many evaluation items the
    training data holds (by ``rules``), and the top-1 of those items and of the others,
    with their counts, from ``correct`` (each item's 0/1, or None)."""
    train = load_side(list(train_specs), medium, None, media_dir, skip_bad)
    ev = Side(["eval"], list(data.clips), ["eval"] * len(data.clips), np.array([c.label for c in data.clips]),
              list(data.class_names))
    found = find_overlap(train, ev, medium, list(rules))["found"]
    rules_of = _rules_of(found)
    hit = np.zeros(len(ev.items), bool)
    hit[list(rules_of)] = True
    out = {"train_data": list(train_specs), "rules": list(rules), "train_items": len(train.items),
           "eval_items": len(ev.items), "eval_items_matched": int(hit.sum()), "eval_fraction_matched": float(hit.mean())
           if len(hit) else 0.0, "per_rule": _per_rule(found, rules_of, rules)}
    if correct is not None:
        correct = np.asarray(correct, float)
        for key, sel in (("top1_overlapping", hit), ("top1_not_overlapping", ~hit)):
            out[key] = {"value": float(correct[sel].mean()) if sel.any() else None, "n": int(sel.sum())}
    return out
