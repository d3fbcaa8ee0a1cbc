"""Concept frequency: how often the training captions name each evaluation class, and how
zero-shot accuracy follows it.

Udandarao et al. 2024 ("No 'zero-shot' without exponential data") find that a model's
zero-shot accuracy on a concept grows linearly with the *logarithm* of how often the
concept occurs in its pre-training data. This module measures that for a CLAP or CLIP
and its training captions, with the leakage rules of :mod:`clapkit.audit.leakage`:

- :func:`concept_frequencies` counts, in one pass over any iterable of caption strings,
  the captions that name each class, by the paper's rule (:data:`~clapkit.audit.leakage.PAPER_RULES`:
  stem, lemma; the headline) and by all four rules (stem, lemma, derivation, compound),
  with the word lists of ``leakage`` (synonyms as extra words of a class, ``!word``
  exclusions). Tokens repeat, so each token's classes are computed once and cached.
  :func:`stream_captions` reads a caption spec as a stream (``csv:``, ``clotho:``,
  ``audiocaps:`` and ``jsonl:`` row by row, ``wds:`` shard by shard), so millions of
  captions never sit in memory: what is held is the token cache (bounded by
  ``cache_size``) and one count per class.
- :func:`frequency_curve` fits each class's zero-shot accuracy (a multi-label set: its
  AP) against ``x = log10(captions naming the class + 1)`` by least squares
  (``scipy.stats.linregress``). The offset :data:`OFFSET` = 1 puts a class no caption
  names at x = 0, in the fit, rather than at minus infinity. It reports the slope (the
  accuracy gained per tenfold more captions), its 95% interval
  ``slope +- t(0.975, n - 2) * stderr`` (stderr from linregress), the intercept and its
  interval, r^2 with an interval (Fisher's z of r), the class count, and per class the
  fitted value, the residual and the standardised residual ``residual / s`` with
  ``s = sqrt(sum(residual^2) / (n - 2))``, the residual standard error; a class with
  ``|standardised residual| > 2`` is an outlier, named in the figure.
- :func:`plot_frequency_curve` draws one PNG: the classes with their bootstrap intervals
  (:func:`accuracy_intervals`, :func:`ap_intervals`: items resampled, as
  :mod:`clapkit.evaluation.uncertainty`), the fitted line and the outliers labelled.

``audit model --captions``, ``audit leakage --eval`` and a bench model with
``captions:`` use these (the JSON's ``frequency`` section, ``frequency.png``,
``frequency.json``, the ``frequency_slope`` and ``frequency_r2`` rows).
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .leakage import PAPER_RULES, WordMatcher, default_word_list, read_word_list, tokenize

RULES = ("stem", "lemma", "derivation", "compound")  # every rule of leakage.WordMatcher, in its order
OFFSET = 1.0  # x = log10(captions + OFFSET): a class never named sits at 0
LEVEL = 0.95
OUTLIER_Z = 2.0  # |standardised residual| above which a class is an outlier
LABEL_ALL = 12  # a figure of this many classes or fewer names every point
CACHE_SIZE = 1_000_000  # tokens whose classes are kept (a larger vocabulary is matched afresh)


@dataclass
class ConceptCounts:
    """Per class, the captions that name it: ``paper`` by ``rules`` (the paper's: stem,
    lemma), ``all_rules`` by any of the four; ``captions``: how many were read;
    ``files``: how many of them each caption spec gave."""

    captions: int
    paper: dict[str, int]
    all_rules: dict[str, int]
    rules: tuple[str, ...] = PAPER_RULES
    files: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"captions": self.captions, "files": dict(self.files), "rules": list(self.rules),
                "per_class": {c: {"paper": self.paper[c], "all_rules": self.all_rules[c]} for c in self.paper}}


class FrequencyCounter:
    """The counts of :func:`concept_frequencies`, fed caption by caption (``update``) so
    that several files add up in one counter. Tokens repeat: each distinct token's classes
    are computed once (:class:`~clapkit.audit.leakage.WordMatcher`) and kept, up to
    ``cache_size`` tokens (beyond, a token is matched afresh each time it comes)."""

    def __init__(self, words: dict[str, list[str]], rules: tuple[str, ...] = PAPER_RULES,
                 cache_size: int = CACHE_SIZE):
        unknown = [r for r in rules if r not in RULES]
        if unknown:
            raise ConfigError(f"rules {', '.join(unknown)}: choose among {', '.join(RULES)}")
        self.matcher, self.rules, self.cache_size = WordMatcher(words), tuple(rules), cache_size
        self.labels = list(words)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.named, self.named_paper = [0] * len(self.labels), [0] * len(self.labels)
        # token -> () when it names no class, else (its classes by any rule, by ``rules``) as indices
        self.cache: dict[str, tuple] = {}
        self.captions = 0

    def _classes(self, token: str) -> tuple:
        found = self.matcher.match(token)
        self.matcher._cache.pop(token, None)  # kept here in a compact form; not twice
        entry = (tuple(self.index[c] for c in found),
                 tuple(self.index[c] for c, r in found.items() if r in self.rules)) if found else ()
        if len(self.cache) < self.cache_size:
            self.cache[token] = entry
        return entry

    def update(self, captions: Iterable[str]) -> int:
        """Count ``captions`` (one pass); returns how many there were."""
        get, classes, named, named_paper = self.cache.get, self._classes, self.named, self.named_paper
        n = 0
        for text in captions:
            n += 1
            hits = None
            for token in tokenize(text):
                entry = get(token)
                if entry is None:
                    entry = classes(token)
                if entry:
                    if hits is None:
                        hits = [entry]
                    else:
                        hits.append(entry)
            if hits is None:
                continue
            if len(hits) == 1:
                any_rule, paper = hits[0]
            else:  # a caption counts once per class
                any_rule, paper = {i for h in hits for i in h[0]}, {i for h in hits for i in h[1]}
            for i in any_rule:
                named[i] += 1
            for i in paper:
                named_paper[i] += 1
        self.captions += n
        return n

    def result(self, files: dict[str, int] | None = None) -> ConceptCounts:
        return ConceptCounts(self.captions, dict(zip(self.labels, self.named_paper, strict=True)),
                             dict(zip(self.labels, self.named, strict=True)), self.rules, dict(files or {}))


def concept_frequencies(captions: Iterable[str], words: dict[str, list[str]], rules: tuple[str, ...] = PAPER_RULES,
                        cache_size: int = CACHE_SIZE) -> ConceptCounts:
    """Count, in one pass over ``captions``, the captions naming each class of ``words``
    (class -> its words, ``!word`` exclusions; :func:`~clapkit.audit.leakage.default_word_list`
    or an edited ``words.txt``): by ``rules`` and by any rule. A caption counts once per
    class however many of its words name it; the rule is the token's, as in
    :func:`~clapkit.audit.leakage.scan`, so the counts equal its ``paper_captions`` and
    ``captions``."""
    counter = FrequencyCounter(words, rules, cache_size)
    counter.update(captions)
    return counter.result()


def stream_captions(spec: str) -> Iterator[str]:
    """The captions of one caption spec (a bare file's kind read off its header, as
    ``audit leakage``), one at a time: ``csv:`` / ``audiocaps:`` (column ``caption``),
    ``clotho:`` (``caption_1..``) and ``jsonl:`` (key ``caption``, a string or a list)
    row by row, ``wds:`` shard by shard; any other pair kind is read whole by its reader.
    An empty caption is an error naming its file, line and column."""
    from ..data.audio.captions import detect_spec

    spec = detect_spec(str(spec))
    kind, _, rest = spec.partition(":")
    path = Path(rest).expanduser()
    if kind in ("csv", "clotho", "audiocaps"):
        yield from _csv_captions(path, kind)
    elif kind == "jsonl":
        yield from _jsonl_captions(path)
    elif kind == "wds":
        yield from _wds_captions(rest, spec)
    else:
        yield from _read_captions(spec)


def _csv_captions(path: Path, kind: str) -> Iterator[str]:
    if not path.is_file():
        raise DataError("file not found", str(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            cols = [i for i, c in enumerate(header)
                    if (c.startswith("caption_") if kind == "clotho" else c == "caption")]
            if not cols:
                wanted = "caption_1.." if kind == "clotho" else "caption"
                raise DataError(f"no {wanted} column; the header has {', '.join(header) or 'nothing'}",
                                f"{path} line 1")
            for row in reader:
                if not row:
                    continue  # a blank line, as csv.DictReader skips it
                for i in cols:
                    text = row[i] if i < len(row) else ""
                    if not text.strip():
                        raise DataError("empty caption", f"{path} line {reader.line_num} column {header[i]}")
                    yield text
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", str(path)) from exc
    except csv.Error as exc:
        raise DataError(f"malformed CSV ({exc})", str(path)) from exc


def _jsonl_captions(path: Path) -> Iterator[str]:
    if not path.is_file():
        raise DataError("file not found", str(path))
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path} line {n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"not valid JSON ({exc.msg})", where) from exc
            if not isinstance(obj, dict) or "caption" not in obj:
                raise DataError("needs the key 'caption'", where)
            caps = obj["caption"] if isinstance(obj["caption"], list) else [obj["caption"]]
            for text in caps:
                if not isinstance(text, str) or not text.strip():
                    raise DataError("empty caption", where)
                yield text


def _wds_captions(pattern: str, spec: str) -> Iterator[str]:
    from ..data.files import Collector, Skipped
    from ..data.shards.wds import expand_shards, wds_pairs

    shards = expand_shards(pattern)
    if not shards:
        raise DataError("no shard file matches", spec)
    for shard in shards:
        c = Collector(False, Skipped())
        wds_pairs(str(shard), "image" if _image_shard(shard) else "audio", c)
        for pair in c.items:
            yield pair.caption


def _image_shard(shard: Path) -> bool:
    """Whether a shard holds pictures (its first media member's extension)."""
    import tarfile

    from ..data.shards.wds import MEDIA_EXTENSIONS

    with tarfile.open(shard) as tar:
        for member in tar:
            ext = member.name.rsplit(".", 1)[-1].lower()
            if ext in MEDIA_EXTENSIONS["image"]:
                return True
            if ext in MEDIA_EXTENSIONS["audio"]:
                return False
    return False


def _read_captions(spec: str) -> Iterator[str]:
    from ..data import specs
    from ..data.files import Skipped

    media = [m for m in ("audio", "image")
             if specs.is_kind(spec, specs.PAIRS, m) or specs.is_kind(spec, specs.LABELLED, m)]
    if not media:
        raise DataError(f"caption spec {spec!r}: not a caption kind (csv:, jsonl:, clotho:, audiocaps:, wds:, coco:, "
                        "...)")
    for pair in specs.read_pairs(spec, specs.ReadOptions(media[0], require_media=False), Skipped()):
        yield pair.caption


def count_files(specs: Iterable[str], words: dict[str, list[str]], rules: tuple[str, ...] = PAPER_RULES,
                cache_size: int = CACHE_SIZE) -> ConceptCounts:
    """:func:`concept_frequencies` over the captions of caption specs, streamed one after
    the other (``files``: each spec's caption count)."""
    from ..data.audio.captions import detect_spec

    counter, files = FrequencyCounter(words, rules, cache_size), {}
    for spec in specs:
        name = detect_spec(str(spec))
        files[name] = files.get(name, 0) + counter.update(stream_captions(name))
    return counter.result(files)


def eval_class_names(spec: str) -> list[str]:
    """The class names of an evaluation set: a names spec (``esc50:ROOT``, ``folder:DIR``,
    ``txt:FILE``) or any labelled set (read by its own reader)."""
    from ..data import specs
    from ..data.text import load_label_names

    if specs.is_kind(spec, specs.NAMES, "text"):
        return load_label_names(spec)
    media = [m for m in ("audio", "image") if specs.is_kind(spec, specs.LABELLED, m)]
    if not media:
        raise ConfigError(f"--eval {spec!r}: give a labelled set or class names "
                          f"({specs.help_for(specs.NAMES, 'text')})")
    return specs.read_labelled(spec, specs.ReadOptions(media[0])).class_names


def _x(counts: dict[str, int], classes: list[str], offset: float) -> np.ndarray:
    return np.log10(np.array([counts[c] for c in classes], dtype=np.float64) + offset)


def frequency_curve(counts: dict[str, int], values: dict[str, float | None],
                    intervals: dict[str, tuple[float, float]] | None = None, items: dict[str, int] | None = None,
                    metric: str = "accuracy", offset: float = OFFSET, level: float = LEVEL,
                    outlier_z: float = OUTLIER_Z) -> dict:
    """Fit ``values`` (per class: zero-shot accuracy, or AP) against
    ``log10(counts + offset)`` by least squares (see the module docstring). Classes without
    a value (None, NaN) or a count are left out. With fewer than 3 classes, or all at one
    frequency, the fit is undefined: its numbers are None and ``undefined`` says why; with
    every class at one value the line is flat and r^2 (its interval, p) None."""
    from scipy import stats

    classes = [c for c, v in values.items() if c in counts and v is not None and not math.isnan(v)]
    x = _x(counts, classes, offset)
    y = np.array([values[c] for c in classes], dtype=np.float64)
    n = len(classes)
    out = {"metric": metric, "x": f"log10(captions + {offset:g})", "offset": offset, "level": level, "n": n,
           "slope": None, "slope_ci": None, "intercept": None, "intercept_ci": None, "r2": None, "r2_ci": None,
           "p_value": None, "residual_se": None, "outlier_z": outlier_z, "outliers": []}
    fitted = resid = z = [None] * n
    if n < 3:
        out["undefined"] = f"{n} class(es) with a value: a line and its interval need 3"
    elif np.ptp(x) == 0:
        out["undefined"] = "every class is named by as many captions: no frequency to fit against"
    else:
        fit = stats.linregress(x, y)
        t = float(stats.t.ppf((1 + level) / 2, n - 2))
        fitted = fit.intercept + fit.slope * x
        resid = y - fitted
        s = float(np.sqrt((resid ** 2).sum() / (n - 2)))
        z = resid / s if s > 0 else np.zeros(n)
        finite = math.isfinite(fit.stderr) and math.isfinite(fit.intercept_stderr)  # NaN on a flat line
        out.update(slope=float(fit.slope),
                   slope_ci=[float(fit.slope - t * fit.stderr), float(fit.slope + t * fit.stderr)] if finite else None,
                   intercept=float(fit.intercept),
                   intercept_ci=[float(fit.intercept - t * fit.intercept_stderr),
                                 float(fit.intercept + t * fit.intercept_stderr)] if finite else None,
                   residual_se=s)
        if not math.isnan(fit.rvalue):  # every class at one value: the line is flat, r undefined
            out.update(r2=float(fit.rvalue ** 2), r2_ci=r2_interval(float(fit.rvalue), n, level),
                       p_value=float(fit.pvalue))
        fitted, resid, z = fitted.tolist(), resid.tolist(), z.tolist()
    rows = []
    for i, c in enumerate(classes):
        lo, hi = (intervals or {}).get(c) or (None, None)
        rows.append({"class": c, "captions": int(counts[c]), "x": float(x[i]), "value": float(y[i]), "ci_low": lo,
                     "ci_high": hi, "items": (items or {}).get(c), "fitted": fitted[i], "residual": resid[i],
                     "standardised_residual": z[i], "outlier": z[i] is not None and abs(z[i]) > outlier_z})
    out["classes"] = rows
    out["outliers"] = [r["class"] for r in rows if r["outlier"]]
    return out


def r2_interval(r: float, n: int, level: float = LEVEL) -> list[float] | None:
    """An interval of r^2 from Fisher's z of r: ``tanh(atanh(r) -+ z_q / sqrt(n - 3))``
    squared (from 0 when the interval of r holds 0); None below 4 classes or at |r| = 1."""
    from scipy.stats import norm

    if n < 4 or abs(r) >= 1:
        return None
    q = float(norm.ppf((1 + level) / 2)) / math.sqrt(n - 3)
    lo, hi = math.tanh(math.atanh(r) - q), math.tanh(math.atanh(r) + q)
    return [0.0 if lo <= 0 <= hi else min(lo * lo, hi * hi), max(lo * lo, hi * hi)]


def accuracy_intervals(correct: np.ndarray, labels: np.ndarray, class_names: list[str], resamples: int = 1000,
                       seed: int = 0, level: float = LEVEL) -> dict[str, tuple[float, float]]:
    """Each class's accuracy interval: its items' 0/1 correctness resampled
    (:func:`clapkit.evaluation.uncertainty.mean_interval`)."""
    from ..evaluation.uncertainty import mean_interval

    correct, labels = np.asarray(correct, dtype=np.float64), np.asarray(labels)
    return {name: mean_interval(correct[labels == c], resamples, seed, level)
            for c, name in enumerate(class_names) if (labels == c).any()}


def ap_intervals(scores: np.ndarray, targets: np.ndarray, class_names: list[str], resamples: int = 1000,
                 seed: int = 0, level: float = LEVEL) -> dict[str, tuple[float, float]]:
    """Each class's AP interval, the items resampled (the same resamples for every class;
    :func:`clapkit.evaluation.uncertainty.weighted_intervals`)."""
    import warnings

    from ..evaluation.metrics import weighted_average_precision
    from ..evaluation.uncertainty import weighted_intervals

    has = np.asarray(targets, dtype=bool).any(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without a class's positives: NaN, left out
        ci = weighted_intervals(lambda w: dict(zip(class_names, weighted_average_precision(scores, targets, w).tolist(),
                                                   strict=True)), len(scores), resamples, seed, level)
    return {name: ci[name] for c, name in enumerate(class_names) if has[c]}


def frequency_section(counts: ConceptCounts, values: dict[str, float | None],
                      intervals: dict[str, tuple[float, float]] | None = None, items: dict[str, int] | None = None,
                      metric: str = "accuracy") -> dict:
    """The ``frequency`` section of a report: the curve by the paper's rule (the
    headline) and by all four rules."""
    return {"x": f"log10(captions naming the class + {OFFSET:g})", "offset": OFFSET, "metric": metric,
            "headline": "paper", "rules": {"paper": list(counts.rules), "all_rules": list(RULES)},
            "captions": counts.captions,
            "paper": frequency_curve(counts.paper, values, intervals, items, metric),
            "all_rules": frequency_curve(counts.all_rules, values, intervals, items, metric)}


def interval_text(ci, digits: int = 3) -> str:
    """`` [lo, hi]`` of an interval, or nothing where it is undefined (a flat line's slope)."""
    return f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else ""


def plot_frequency_curve(curve: dict, path: str | Path, title: str = "") -> Path:
    """One PNG: each class at (log10(captions + 1), its accuracy) with its interval, the
    fitted line, the outliers named; the x ticks read as caption counts."""
    from ..plotting import pyplot

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = curve["classes"]
    x = np.array([r["x"] for r in rows])
    y = np.array([r["value"] for r in rows])
    err = np.array([[r["value"] - r["ci_low"], r["ci_high"] - r["value"]] if r["ci_low"] is not None else [0.0, 0.0]
                    for r in rows]).reshape(-1, 2).T
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.errorbar(x, y, yerr=err, fmt="o", ms=4, capsize=2, color="tab:blue", ecolor="0.6", label="classes (95% CI)")
    if curve["slope"] is not None:
        grid = np.linspace(0, max(float(x.max()), 1.0), 50)
        ax.plot(grid, curve["intercept"] + curve["slope"] * grid, color="tab:red",
                label=f"slope {curve['slope']:.3f}{interval_text(curve['slope_ci'])} per 10x, r² "
                      f"{'n/a' if curve['r2'] is None else format(curve['r2'], '.2f')}, n {curve['n']}")
    for r in rows:  # the outliers in red; every class, in grey, when there are few
        if r["outlier"] or len(rows) <= LABEL_ALL:
            ax.annotate(r["class"], (r["x"], r["value"]), xytext=(4, 4), textcoords="offset points", fontsize=7,
                        color="tab:red" if r["outlier"] else "0.4")
    right = max(float(x.max()) if len(x) else 0.0, 1.0) + 0.2
    ticks = [0] + [10 ** k for k in range(0, 12) if math.log10(10 ** k + curve["offset"]) <= right]
    ax.set_xticks([math.log10(t + curve["offset"]) for t in ticks], [f"{t:,}" for t in ticks])
    ax.set_xlabel(f"captions naming the class ({curve['x']} scale)")
    ax.set_ylabel(curve["metric"])  # zero-shot only where the items are outside the training data (audit overlap)
    ax.set_title(textwrap.fill(title, 80), fontsize=8)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def audit_frequency(captions: list[str], eval_spec: str, out: str | Path, words_file: str | Path | None = None) -> dict:
    """``audit leakage --eval``: each evaluation class's caption count by the paper's rule
    and by all rules, streamed; writes ``frequency.json`` and ``frequency.md`` to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = eval_class_names(eval_spec)
    words = read_word_list(words_file) if words_file else default_word_list(names)
    counts = count_files(captions, words)
    report = {"eval": eval_spec, "classes": len(words), "x": f"log10(captions + {OFFSET:g})", **counts.to_dict(),
              "word_list": str(words_file) if words_file else "default (audit leakage's words.txt)"}
    for e in report["per_class"].values():
        e["x_paper"] = float(math.log10(e["paper"] + OFFSET))
        e["x_all_rules"] = float(math.log10(e["all_rules"] + OFFSET))
    report["classes_named"] = {"paper": sum(1 for n in counts.paper.values() if n),
                               "all_rules": sum(1 for n in counts.all_rules.values() if n)}
    (out / "frequency.json").write_text(json.dumps(report, indent=2))
    lines = [f"# Concept frequency of `{eval_spec}` ({len(words)} classes) in {counts.captions} captions", "",
             "| class | captions (paper: stem, lemma) | captions (all rules) | log10(paper + 1) |",
             "| --- | ---: | ---: | ---: |"]
    for c, e in sorted(report["per_class"].items(), key=lambda kv: -kv[1]["paper"]):
        lines.append(f"| {c} | {e['paper']} | {e['all_rules']} | {e['x_paper']:.2f} |")
    (out / "frequency.md").write_text("\n".join(lines) + "\n")
    return report
