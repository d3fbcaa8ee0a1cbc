"""clapkit's results as MTEB result files (``clapkit export mteb``), for the tasks MTEB has
and scores as clapkit did, so that MTEB's leaderboard and its audio extension MAEB can
read them.

What MTEB reads (mteb 2.26.24, the release :data:`MTEB_VERSION` names; paths are in the
installed ``mteb`` package):

- one JSON file per task at ``results/{model_name}/{revision}/{TaskName}.json``, the model's
  name with ``/`` written ``__`` (``cache/result_cache.py`` ``get_task_result_path``, lines
  268-330; ``models/model_meta.py`` ``model_name_as_path``, lines 651-658), beside a
  ``model_meta.json`` (``ResultCache.save_to_cache``, lines 383-415). Every other ``*.json``
  in a revision folder is read as a task result (``get_cache_paths``, lines 880-885), so
  this module writes its own report beside ``results/``, never inside it;
- a task file is a ``TaskResult`` (``results/task_result.py`` lines 129-176):
  ``dataset_revision``, ``task_name``, ``mteb_version``, ``scores`` (split -> a list of
  one dict per ``hf_subset``, each with ``main_score``, ``hf_subset``, ``languages`` and the
  task's metric keys: lines 260-273 check the first three), ``evaluation_time``,
  ``kg_co2_emissions``; ``TaskResult.from_disk`` loads it (lines 388-431);
- ``model_meta.json`` is a ``ModelMeta`` (``models/model_meta.py`` lines 200-280, no extra
  keys: ``extra="forbid"``; its ``name`` must read ``organization/model``, lines 424-434);
  ``training_datasets`` names the MTEB tasks whose data the model was trained on, which the
  leaderboard uses to mark a result as not zero-shot.

:data:`MTEB_TASKS` is the one table from clapkit's task type and data kind to MTEB's task:
its name, main score, split, subset, languages, dataset revision, size, the metric keys
clapkit's numbers fill (only those MTEB defines the same way), and what MTEB's protocol
fixes that a clapkit run may not share (the candidate texts of a zero-shot task, the
number of items). A clapkit result whose task MTEB lacks, or whose protocol differs, is
listed in ``not_exported.json`` with the reason (``no_mteb_task``: MTEB has the data but
not the task type; ``protocol_differs``; ``not_mapped``: a task the table has no row for,
such as an image or STS task or the user's own data), not written as MTEB's;
``allow_protocol_differences`` writes the second kind anyway, each marked
(``clapkit_protocol_differences`` in its scores and in the report). Ties: clapkit's
accuracies count a tie against the model where MTEB's argmax takes the first class; the
two agree where the scores do not tie.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..errors import ClapkitError

MTEB_VERSION = "2.26.24"  # the mteb release whose task definitions MTEB_TASKS copies
SITE = "mteb 2.26.24, mteb/"  # where the table's facts are, in the installed package

# ESC-50's categories in target order: MTEB's ESC50_Zeroshot candidate texts are "This is a
# sound of " + each, the "_" kept and no full stop (tasks/zeroshot_classification/zxx/esc50.py
# lines 48-101; the same at GitHub commit a905523d)
ESC50_CLASSES = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow", "rain", "sea_waves",
    "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind", "pouring_water", "toilet_flush",
    "thunderstorm", "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing",
    "brushing_teeth", "snoring", "drinking_sipping", "door_wood_knock", "mouse_click", "keyboard_typing",
    "door_wood_creaks", "can_opening", "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick",
    "glass_breaking", "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane",
    "fireworks", "hand_saw")
# UrbanSound8K's classes in classID order, "_" as a space (tasks/zeroshot_classification/zxx/urban_sound8k.py
# lines 44-57)
US8K_CLASSES = ("air conditioner", "car horn", "children playing", "dog bark", "drilling", "engine idling", "gun shot",
                "jackhammer", "siren", "street music")

HIT_RATE = {"R@1": "hit_rate_at_1", "R@5": "hit_rate_at_5", "R@10": "hit_rate_at_10"}  # clapkit's R@k is the
# best-ranked relevant item's rank <= k (evaluation/metrics.py retrieval_metrics), trec_eval's success_k that
# MTEB reports as hit_rate_at_k (_evaluators/retrieval_metrics.py lines 447-484 and 514)
PROBE_DIFFERS = ("MTEB's AudioClassification tasks train scikit-learn's LogisticRegression(max_iter=100) on 8 "
                 "items per class, 10 experiments (abstasks/classification.py lines 110-121), in a shuffled 5-fold "
                 "cross-validation over the whole set where the task says so; clapkit's probe is another protocol")


@dataclass(frozen=True)
class MtebTask:
    """One row of :data:`MTEB_TASKS`: clapkit's ``type`` of task on data of ``kind`` (a spec's
    kind, ``esc50:``), in one retrieval ``direction``, and the MTEB task it is (``task``
    None: MTEB has no such task, ``reason`` says what it has)."""

    type: str
    kind: str
    task: str | None
    direction: str | None = None  # retrieval: text_to_audio or audio_to_text
    reason: str = ""  # task None: why not
    mteb_type: str = ""
    main_score: str = ""
    split: str = ""
    hf_subset: str = "default"
    languages: tuple[str, ...] = ()
    revision: str = ""
    items: int | None = None  # the clips (zero-shot), the queries (retrieval) MTEB scores
    documents: int | None = None  # retrieval: the items searched
    metrics: dict = field(default_factory=dict)  # clapkit metric -> MTEB key (same definition)
    texts: tuple[str, ...] | None = None  # zero-shot: MTEB's candidate texts
    differs: str = ""  # what MTEB's protocol fixes that no clapkit run of this kind shares
    source: str = ""


MTEB_TASKS: tuple[MtebTask, ...] = (
    MtebTask("zeroshot", "esc50", "ESC50_Zeroshot", mteb_type="AudioZeroshotClassification", main_score="accuracy",
             split="train", languages=("zxx-Zxxx",), revision="31ea534771aaf92c116698355e5cdc2ffda4bb6d", items=2000,
             metrics={"top1": "accuracy", "mean_class_accuracy": "recall"},
             texts=tuple(f"This is a sound of {c}" for c in ESC50_CLASSES),
             source="tasks/zeroshot_classification/zxx/esc50.py lines 5-101; descriptive_stats/"
                    "AudioZeroshotClassification/ESC50_Zeroshot.json (train: 2000 clips)"),
    MtebTask("zeroshot", "us8k", "UrbanSound8kZeroshot", mteb_type="AudioZeroshotClassification", main_score="accuracy",
             split="train", languages=("zxx-Zxxx",), revision="5b3867ddd7583a24871acdf6eb5494696ddd4cbc", items=2048,
             metrics={"top1": "accuracy"}, texts=tuple(f"This is a sound of {c}" for c in US8K_CLASSES),
             differs="MTEB's UrbanSound8kZeroshot scores a 2,048-clip stratified sample of the 8,732 clips "
                     "(dataset_transform, urban_sound8k.py lines 59-62; AbsTask.stratified_subsampling, "
                     "abstasks/abstask.py lines 328-333), not the whole set or its folds",
             source="tasks/zeroshot_classification/zxx/urban_sound8k.py lines 7-62"),
    MtebTask("retrieval", "clotho", "ClothoT2ARetrieval.v2", "text_to_audio", mteb_type="Any2AnyRetrieval",
             main_score="hit_rate_at_5", split="test", languages=("eng-Latn",),
             revision="13cf5105f96e1844ee3b0b84cfba9103a7ebe6a2", items=4680, documents=1045, metrics=HIT_RATE,
             source="tasks/retrieval/eng/clotho.py lines 179-217 (v1 split each clip's text on '.', lines 152-176; v2 "
                    "removes the empty captions, its description); descriptive_stats/Image/Any2AnyRetrieval/"
                    "ClothoT2ARetrieval.v2.json (4,680 captions, 1,045 clips; Clotho's evaluation split has 5,225)"),
    MtebTask("retrieval", "clotho", "ClothoA2TRetrieval.v2", "audio_to_text", mteb_type="Any2AnyRetrieval",
             main_score="hit_rate_at_5", split="test", languages=("eng-Latn",),
             revision="fb4fbd5c1e612be4894a478bd45500eb0bcd689f", items=1045, documents=4680, metrics=HIT_RATE,
             source="tasks/retrieval/eng/clotho.py lines 74-113; descriptive_stats/Image/Any2AnyRetrieval/"
                    "ClothoA2TRetrieval.v2.json"),
    MtebTask("retrieval", "audiocaps", "AudioCapsT2ARetrieval", "text_to_audio", mteb_type="Any2AnyRetrieval",
             main_score="hit_rate_at_5", split="test", languages=("eng-Latn", "zxx-Zxxx"),
             revision="cb63d82bd4b2868f5e6410bf771d1c91bfc50203", items=4411, documents=883, metrics=HIT_RATE,
             source="tasks/retrieval/multilingual/audio_caps.py lines 40-71; descriptive_stats/Image/Any2AnyRetrieval/"
                    "AudioCapsT2ARetrieval.json (4,411 captions of 883 clips)"),
    MtebTask("retrieval", "audiocaps", "AudioCapsA2TRetrieval", "audio_to_text", mteb_type="Any2AnyRetrieval",
             main_score="hit_rate_at_5", split="test", languages=("eng-Latn", "zxx-Zxxx"),
             revision="acfbf827c27f81787800129443780c072dc8ae62", items=883, documents=4411, metrics=HIT_RATE,
             source="tasks/retrieval/multilingual/audio_caps.py lines 5-39"),
    MtebTask("probe", "esc50", "ESC50", mteb_type="AudioClassification", main_score="accuracy", split="train",
             languages=("zxx-Zxxx",), revision="31ea534771aaf92c116698355e5cdc2ffda4bb6d", items=2000,
             metrics={"linear_top1_E": "accuracy"}, differs=PROBE_DIFFERS,
             source="tasks/classification/zxx/esc50.py lines 5-48"),
    MtebTask("probe", "us8k", "UrbanSound8k", mteb_type="AudioClassification", main_score="accuracy", split="train",
             languages=("zxx-Zxxx",), revision="5b3867ddd7583a24871acdf6eb5494696ddd4cbc", items=8732,
             metrics={"linear_top1_E": "accuracy"}, differs=PROBE_DIFFERS,
             source="tasks/classification/zxx/urban_sound8k.py lines 7-49"),
    MtebTask("probe", "gtzan", "GTZANGenre", mteb_type="AudioClassification", main_score="accuracy", split="train",
             languages=("zxx-Zxxx",), revision="53efa094d18619a4e2bf36123192ec7a01a7d1bf", items=1000,
             metrics={"linear_top1_E": "accuracy"}, differs=PROBE_DIFFERS,
             source="tasks/classification/zxx/gtzan_genre.py lines 5-45"),
    MtebTask("probe", "fsdd", "FSDD", mteb_type="AudioClassification", main_score="accuracy", split="test",
             languages=("eng-Latn",), revision="c34455c99604d35cb8d27328c267be1478efc903", items=300,
             metrics={"linear_top1_E": "accuracy"}, differs=PROBE_DIFFERS, source="tasks/classification/eng/fsdd.py"),
    # what MTEB lacks: the data is there, the task type is not
    MtebTask("zeroshot", "fsdd", None, reason="MTEB has the Free Spoken Digit Dataset as a classification probe "
             "(FSDD, tasks/classification/eng/fsdd.py), no zero-shot task"),
    MtebTask("zeroshot", "gtzan", None, reason="MTEB has GTZAN as a classification probe, clustering and reranking "
             "(GTZANGenre, GTZANGenreClustering, GTZANAudioReranking), no zero-shot task"),
    MtebTask("zeroshot", "fsd50k", None, reason="MTEB's FSD50K is a multi-label classification probe on a 2,048-clip "
             "sample (lrap; tasks/multilabel_classification/eng/fsd50_hf.py), no zero-shot task"),
    MtebTask("zeroshot", "audioset", None, reason="MTEB's AudioSetMini is a multi-label classification probe "
             "(tasks/multilabel_classification/eng/audio_set.py), no zero-shot task"),
    MtebTask("zeroshot", "vggsound", None, reason="MTEB's VGGSound zero-shot tasks take the video "
             "(VGGSoundVideoZeroshot, VGGSoundVideoAudioZeroshot: tasks/zeroshot_classification/eng/"
             "vggsound_zeroshot.py), none the audio alone"),
    MtebTask("zeroshot", "tut2017", None, reason="MTEB's TUTAcousticScenes is a classification probe, no zero-shot task"),
)

# how a training set is named (a spec's kind, a model card's dataset name): the kinds MTEB_TASKS knows
KIND_NAMES = {"esc50": ("esc50",), "us8k": ("urbansound8k", "us8k"), "clotho": ("clotho",),
              "audiocaps": ("audiocaps",), "gtzan": ("gtzan",), "fsdd": ("freespokendigit", "fsdd"),
              "fsd50k": ("fsd50k",), "audioset": ("audioset",), "vggsound": ("vggsound",), "tut2017": ("tut2017", "tutacousticscenes")}
EVIDENCE = ("dirty_fraction", "classes_named", "top1_named_classes", "top1_unnamed_classes", "frequency_slope",
            "frequency_r2", "overlap_fraction", "top1_overlapping", "top1_not_overlapping")  # a bench cell's leakage,
# caption-frequency and overlap columns (their values, intervals and n)


@dataclass
class Result:
    """One clapkit result, from a bench cell or an ``eval zeroshot`` / ``eval retrieval`` JSON."""

    source: str
    task: str  # the bench task's name, or the eval file's stem
    type: str  # zeroshot, retrieval, probe, sts
    data: object
    medium: str | None
    model: str  # the bench model's name, or the eval's --model
    model_spec: str
    fingerprint: str
    metrics: dict  # metric -> {value, ci_low, ci_high, n}
    texts: list[str] | None = None  # zero-shot: the texts scored, one list per class
    training_data: object = None
    evidence: dict = field(default_factory=dict)
    graded: bool = False  # retrieval scored with a relevance file
    not_applicable: str | None = None

    @property
    def kind(self) -> str | None:
        if not isinstance(self.data, str) or ":" not in self.data:
            return None
        return self.data.partition(":")[0]


def _rows(rows: list[dict]) -> dict:
    return {r["metric"]: {k: r.get(k) for k in ("value", "ci_low", "ci_high", "n")} for r in rows}


def _texts(templates, names) -> list[list[str]] | None:
    """The texts each class was scored with (a zero-shot record's templates and class names)."""
    if isinstance(templates, dict):
        return [list(v) if isinstance(v, list) else [str(v)] for v in templates.values()]
    if not isinstance(templates, list) or not isinstance(names, list):
        return None
    return [[t.format(label=n) for t in templates] for n in names]


def _from_cell(path: Path, c: dict) -> Result:
    evidence = {k: v for k, v in _rows(c.get("metrics") or []).items() if k in EVIDENCE}
    return Result(str(path), c["task"], c["type"], c.get("data"), c.get("medium"), c.get("model", ""),
                  str(c.get("model_spec", "")), c.get("model_fingerprint") or "", _rows(c.get("metrics") or []),
                  _texts(c.get("templates"), c.get("class_names")) if c["type"] == "zeroshot" else None,
                  c.get("model_training_data"), evidence, bool(c.get("relevance")), c.get("not_applicable"))


def _from_eval(path: Path, m: dict) -> Result | None:
    prov = m.get("model_provenance") or {}
    common = dict(source=str(path), task=path.stem, data=m.get("data"), model=str(m.get("model", "")),
                  model_spec=str(m.get("model", "")), fingerprint=prov.get("fingerprint") or "",
                  training_data=prov.get("training_data"))
    if "class_names_used" in m and ("top1" in m or "mAP" in m):  # eval zeroshot
        ci, n = m.get("ci") or {}, m.get("clips")
        metrics = {k: {"value": m[k], "ci_low": (ci.get(k) or [None])[0], "ci_high": (ci.get(k) or [None, None])[1],
                       "n": n} for k in ("top1", "top5", "mean_class_accuracy", "mAP", "top1_fold_mean") if k in m}
        return Result(type="zeroshot", medium=prov.get("medium"), metrics=metrics,
                      texts=_texts(m.get("templates"), m.get("class_names_used")),
                      evidence=dict(m["leakage"]) if isinstance(m.get("leakage"), dict) else {}, **common)
    for md in ("audio", "image"):
        if f"text_to_{md}" in m and f"{md}_to_text" in m and "captions" in m:  # eval retrieval
            metrics = {}
            for direction in (f"text_to_{md}", f"{md}_to_text"):
                d = m[direction]
                for k, v in d.items():
                    if isinstance(v, int | float) and not isinstance(v, bool) and k != "queries":
                        lo, hi = (d.get("ci") or {}).get(k) or (None, None)
                        metrics[f"{direction}_{k}"] = {"value": v, "ci_low": lo, "ci_high": hi, "n": d.get("queries")}
            return Result(type="retrieval", medium=md, metrics=metrics, graded=bool(m.get("relevance")), **common)
    return None


def read_results(paths: list[Path]) -> tuple[list[Result], list[dict]]:
    """The clapkit results under ``paths`` (a bench ``--out`` folder, its ``cells/``, a folder
    of eval JSONs, or single files), and the JSON files among them that are none."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted((p / "cells" if (p / "cells").is_dir() else p).glob("*.json"))
        elif p.is_file():
            files.append(p)
        else:
            raise ClapkitError(f"{p}: no such file or folder (give a bench --out folder, its cells/, or an eval JSON)")
    results, others = [], []
    for f in files:
        try:
            obj = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            raise ClapkitError(f"{f}: not readable JSON ({exc})") from exc
        r = None
        if isinstance(obj, dict) and {"task", "type", "metrics"} <= set(obj):
            r = _from_cell(f, obj)
        elif isinstance(obj, dict):
            r = _from_eval(f, obj)
        if r is None:
            others.append({"source": str(f), "status": "not_a_result", "reasons": [
                "not a clapkit bench cell, eval zeroshot or eval retrieval result"]})
        else:
            results.append(r)
    return results, others


def _differences(r: Result, e: MtebTask) -> list[str]:
    """What of MTEB's protocol for ``e`` the result ``r`` did not follow."""
    out = [e.differs] if e.differs else []
    if e.type == "zeroshot":
        n = (r.metrics.get("top1") or {}).get("n")
        if e.items is not None and n != e.items:
            out.append(f"clapkit scored {n} clips; MTEB's {e.task} scores {e.items} (its {e.split} split)")
        if e.texts is not None:
            out += _text_differences(r.texts, list(e.texts), e.task)
    elif e.type == "retrieval":
        queries = (r.metrics.get(f"{e.direction}_R@1") or {}).get("n")
        other = "audio_to_text" if e.direction == "text_to_audio" else "text_to_audio"
        documents = (r.metrics.get(f"{other}_R@1") or {}).get("n")
        if e.items is not None and queries != e.items:
            out.append(f"clapkit scored {queries} {e.direction.split('_')[0]} queries; MTEB's {e.task} scores {e.items}")
        if e.documents is not None and documents != e.documents:
            out.append(f"clapkit searched {documents} items; MTEB's {e.task} searches {e.documents}")
        if r.graded and e.direction == "text_to_audio":
            out.append("clapkit scored text-to-audio with a relevance file (several relevant clips per caption); "
                       f"MTEB's {e.task} has one relevant clip per caption")
    return out


def _text_differences(texts: list[list[str]] | None, theirs: list[str], task: str) -> list[str]:
    if texts is None:
        return ["the result records no prompts to compare with MTEB's candidate texts"]
    if any(len(t) != 1 for t in texts):
        return [f"clapkit scored each class with an ensemble of {max(len(t) for t in texts)} texts; MTEB's {task} "
                "scores one text per class"]
    ours = [t[0] for t in texts]
    if sorted(ours) == sorted(theirs):
        return []
    if len(ours) != len(theirs):
        return [f"clapkit scored {len(ours)} classes; MTEB's {task} scores {len(theirs)}"]
    pairs = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b] or [(sorted(set(ours) - set(theirs))[0], "")]
    a, b = pairs[0]
    return [f"the prompts differ from MTEB's candidate texts ({len(set(ours) - set(theirs))} of {len(theirs)}): "
            f"clapkit's {a!r} where MTEB's is {b!r}"]


def default_model_name(label: str, spec: str) -> str:
    """The name a model's results are filed under: a hub name as it is, else ``clapkit/``
    and the bench model's name (or the checkpoint folder's)."""
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec or "") and not Path(spec).exists():
        return spec
    base = label if label and label != spec else Path(spec).name
    if base in ("checkpoint", "best", "last", "final") and spec:
        base = Path(spec).parent.name or base
    return "clapkit/" + (re.sub(r"[^\w.-]+", "-", base).strip("-") or "model")


def _training_entries(training_data) -> list[str]:
    if training_data is None:
        return []
    if isinstance(training_data, str | int | float):
        return [str(training_data)]
    if isinstance(training_data, dict):
        return [str(k) for k in training_data]
    return [str(x) for x in training_data]


def _named_kinds(entry: str) -> set[str]:
    """The kinds of :data:`KIND_NAMES` a training-data entry names: a spec's kind, else any
    kind's name within it (a model card's ``datasets:``, a file called ``clotho_...``)."""
    prefix = entry.partition(":")[0] if ":" in entry else ""
    if prefix in KIND_NAMES:
        return {prefix}
    flat = re.sub(r"[^a-z0-9]", "", entry.lower())
    return {k for k, names in KIND_NAMES.items() if any(n in flat for n in names)}


def export_mteb(paths: list[Path], out: Path, model_name: str | None = None, revision: str | None = None,
                allow_protocol_differences: bool = False) -> dict:
    """Write the MTEB result files of the clapkit results under ``paths`` into
    ``out/results/{model}/{revision}/``, one per MTEB task, with each model's
    ``model_meta.json``; ``out/not_exported.json`` lists the results MTEB has no task for
    or whose protocol differs from MTEB's (``allow_protocol_differences``: those written
    anyway, marked), and ``out/report.json`` all of it with each model's training data and
    overlap evidence. Returns the report."""
    from ..atomic import atomic_write_text

    results, not_exported = read_results(paths)
    if not results and not not_exported:
        raise ClapkitError(f"no clapkit results in {', '.join(map(str, paths))}")
    models = {(r.model, r.fingerprint) for r in results}
    if model_name is not None and len(models) > 1:
        raise ClapkitError(f"--model-name names one model; the results hold {len(models)} "
                           f"({', '.join(sorted(m for m, _ in models))}): export them one model at a time")
    if model_name is not None and "/" not in model_name:
        raise ClapkitError(f"--model-name {model_name!r}: MTEB wants organization/model (ModelMeta's name check)")
    exported, candidates, groups = [], [], {}
    for r in results:
        name = model_name or default_model_name(r.model, r.model_spec)
        rev = revision or r.fingerprint or "no_revision_available"
        group = groups.setdefault((name, rev), {"name": name, "revision": rev, "clapkit_model": r.model,
                                                "model_spec": r.model_spec, "medium": r.medium,
                                                "training_data": None, "evidence": {}, "overlapping": {}})
        if r.training_data is not None and group["training_data"] is None:
            group["training_data"] = r.training_data
        group["medium"] = group["medium"] or r.medium
        if r.evidence:
            group["evidence"][r.task] = r.evidence
        base = {"source": r.source, "model": r.model, "task": r.task, "type": r.type, "data": r.data}
        if r.not_applicable:
            not_exported.append({**base, "mteb_task": None, "status": "not_applicable", "reasons": [r.not_applicable]})
            continue
        entries = [e for e in MTEB_TASKS if e.type == r.type and e.kind == r.kind]
        if not entries:
            not_exported.append({**base, "mteb_task": None, "status": "not_mapped", "reasons": [
                f"clapkit's table of MTEB's tasks (clapkit.experiments.mteb_export.MTEB_TASKS) maps no MTEB task to a "
                f"{r.type} task on {r.kind + ':' if r.kind else 'this'} data"]})
            continue
        overlap = (r.evidence.get("overlap_fraction") or {}).get("value")
        for e in entries:
            if e.task is None:
                not_exported.append({**base, "mteb_task": None, "status": "no_mteb_task", "reasons": [e.reason]})
                continue
            if overlap:  # the model's training data holds items of this evaluation set, exported or not
                group["overlapping"].setdefault(e.task, f"{r.task}: overlap_fraction {overlap:.4g}")
            prefix = f"{e.direction}_" if e.direction else ""
            scores = {}
            for ours, theirs in e.metrics.items():
                value = (r.metrics.get(f"{prefix}{ours}") or {}).get("value")
                if isinstance(value, int | float) and theirs not in scores:
                    scores[theirs] = (ours, r.metrics[f"{prefix}{ours}"])
            if e.main_score not in scores:
                wanted = [k for k, v in e.metrics.items() if v == e.main_score]
                not_exported.append({**base, "mteb_task": e.task, "status": "no_main_score", "reasons": [
                    f"the result has no {prefix}{' or '.join(wanted)} for MTEB's {e.main_score}"]})
                continue
            diffs = _differences(r, e)
            if diffs and not allow_protocol_differences:
                not_exported.append({**base, "mteb_task": e.task, "status": "protocol_differs", "reasons": diffs})
                continue
            candidates.append(_Candidate(name, rev, e, r, base, scores, diffs))
    # one file per model and MTEB task: the result closest to MTEB's protocol (fewest differences) first
    chosen: dict[tuple, _Candidate] = {}
    for c in sorted(candidates, key=lambda c: len(c.diffs)):
        key = (c.name, c.revision, c.entry.task)
        if key in chosen:
            first = chosen[key].result
            not_exported.append({**c.base, "mteb_task": c.entry.task, "status": "duplicate", "reasons": [
                f"{first.source} ({first.task}) is exported as {c.entry.task} for {c.name} {c.revision}"]})
        else:
            chosen[key] = c
    for name, rev, e, _, base, scores, diffs in (c for c in candidates if chosen[(c.name, c.revision, c.entry.task)] is c):
        prefix = f"{e.direction}_" if e.direction else ""
        main_metric, main = scores[e.main_score]
        entry = {"main_score": main["value"], **{k: v[1]["value"] for k, v in scores.items()},
                 "hf_subset": e.hf_subset, "languages": list(e.languages), "mteb_version": MTEB_VERSION}
        if diffs:
            entry["clapkit_protocol_differences"] = diffs
        task_result = {"dataset_revision": e.revision, "task_name": e.task, "mteb_version": MTEB_VERSION,
                       "scores": {e.split: [entry]}, "evaluation_time": None, "kg_co2_emissions": None, "date": None}
        rel = _folder(name, rev) / f"{e.task}.json"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / rel, json.dumps(task_result, indent=2))
        exported.append({**base, "mteb_task": e.task, "file": str(rel), "split": e.split,
                         "main_score": e.main_score, "value": main["value"], "clapkit_metric": prefix + main_metric,
                         "ci": [main.get("ci_low"), main.get("ci_high")], "n": main.get("n"),
                         "metrics": {k: prefix + v[0] for k, v in scores.items()},
                         "protocol_differences": diffs, "mteb_source": SITE + e.source})
    model_records = []
    for (name, rev), g in groups.items():
        named = {e.task: entry for entry in _training_entries(g["training_data"]) for kind in _named_kinds(entry)
                 for e in MTEB_TASKS if e.kind == kind and e.task}
        why = {**{t: f"training data names it: {v}" for t, v in named.items()}, **g["overlapping"]}
        known = g["training_data"] is not None or bool(g["overlapping"])
        meta = _model_meta(name, rev, g["medium"], sorted(why) if known else None)
        rel = None
        if any(key[:2] == (name, rev) for key in chosen):  # a model_meta.json beside its task files
            rel = _folder(name, rev) / "model_meta.json"
            atomic_write_text(out / rel, json.dumps(meta, indent=2))
        model_records.append({"name": name, "revision": rev, "clapkit_model": g["clapkit_model"],
                              "model_spec": g["model_spec"], "model_meta": str(rel) if rel else None,
                              "training_data": g["training_data"], "training_datasets": meta["training_datasets"],
                              "training_datasets_evidence": why, "leakage_and_overlap": g["evidence"]})
    report = {"mteb_version": MTEB_VERSION, "exported": exported, "not_exported": not_exported, "models": model_records,
              "allow_protocol_differences": allow_protocol_differences}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "not_exported.json", json.dumps(not_exported, indent=2))
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    return report


class _Candidate(NamedTuple):
    """A result that may be written as MTEB's ``entry.task``, with the scores it fills."""

    name: str
    revision: str
    entry: MtebTask
    result: Result
    base: dict
    scores: dict
    diffs: list[str]


def _folder(name: str, revision: str) -> Path:
    """A model's folder as MTEB names it (``ModelMeta.model_name_as_path``)."""
    return Path("results") / name.replace("/", "__").replace(" ", "_") / revision


def _model_meta(name: str, revision: str, medium: str | None, training_datasets: list[str] | None) -> dict:
    """MTEB's ModelMeta fields (``ModelMeta.to_dict``'s keys less the deprecated
    ``is_cross_encoder``); what the results do not say is None."""
    unknown = ("release_date", "languages", "n_parameters", "n_active_parameters_override", "n_embedding_parameters",
               "memory_usage_mb", "max_tokens", "embed_dim", "license", "open_weights", "public_training_code",
               "public_training_data", "reference", "use_instructions", "adapted_from", "superseded_by", "citation",
               "contacts", "experiment_kwargs", "output_dtypes", "extra_requirements_groups", "loader")
    return {"name": name, "revision": revision, "loader_kwargs": {}, **dict.fromkeys(unknown),
            "framework": ["PyTorch"], "similarity_fn_name": "cosine", "training_datasets": training_datasets,
            "modalities": [medium or "audio", "text"], "model_type": ["dense"]}
