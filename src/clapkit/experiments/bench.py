"""``clapkit bench``: every model of a bench file on every task, into one table.

A bench file declares the models (anything ``--model`` takes) and the tasks as data::

    models:
      - {name: ours, model: runs/clap/checkpoint, captions: [clotho_captions_development.csv]}
      - {name: laion, model: laion/clap-htsat-unfused}
    tasks:
      - {name: esc50, data: "esc50:{data}/ESC-50", type: zeroshot, prompts: clip_benchmark:esc50}
      - {name: fsd50k, data: "fsd50k:{data}/FSD50K", split: eval, type: zeroshot}
      - {name: clotho, data: "clotho:{data}/clotho_captions_evaluation.csv", audio_dir: "{data}/evaluation",
         type: retrieval}
    bootstrap: 1000
    seed: 0

``{data}`` in any string is ``--data-root``. A task's keys: ``data`` (a spec), ``type``
(``zeroshot`` | ``retrieval`` | ``probe`` | ``sts``), and optionally ``medium`` (else read off the
spec's kind, or the model's), ``split``, ``folds`` or ``fold_protocol`` (``all-folds``,
``fold-K``, ``per-fold-mean``: :data:`clapkit.evaluation.zeroshot.FOLD_PROTOCOLS`, which
also names the cell's main metric), ``classes``, ``prompts`` and
``classnames`` (:mod:`clapkit.evaluation.prompts`), ``audio_dir`` / ``image_dir``, and
``window`` / ``hop`` / ``pool`` for long clips in sliding windows
(:mod:`clapkit.inference.windows`, recorded in the cell). A ``probe`` task
(:mod:`clapkit.evaluation.probe`, as ``eval probe``) also takes ``features`` (``[x, E]``),
``shots``, ``seeds``, ``protocol``, ``knn_k``, ``train_split``, ``cv``, ``val_proportion``
(0.2; 0 is CLIP_benchmark's CLI default: no validation part, weight decay 0), ``lr``,
``epochs``, ``batch_size`` (the probe's) and ``normalize``; its main metric is the linear
probe's top-1 on its first feature. CLIP_benchmark's own linear-probe run is
``{type: probe, features: [E], val_proportion: 0}`` (it probes ``encode_image``, the E).
An ``sts`` task scores the model as a sentence encoder (``eval sts``: a text model, or a dual
encoder's text tower x_t); its ``data`` is an STS spec or a list of them, and its main
metric the 7-task average when all seven sets are listed, else the first set's Spearman;
it also takes ``pooling`` and ``max_length`` (``eval sts``'s options).
Every zero-shot and STS cell records its ``coverage``: the items the set's metadata lists,
and how many of them were present, missing, unreadable or malformed
(:meth:`clapkit.data.files.Skipped.coverage`; give ``--skip-bad`` to score what is there).

A model's optional ``captions`` (its training captions) add the leakage columns to its
zero-shot tasks, and its ``train_data`` (specs of its training data) the overlap columns:
the evaluation items the training data holds (by source id and content,
:mod:`clapkit.audit.overlap`), and top-1 on them and on the others.

Each model x task is a *cell*, written on its own, atomically, to ``OUT/cells/`` (its
metrics and provenance as JSON, its per-item results as ``.npz``), so a rerun with the same
``--out`` skips the cells already done, and ``--shard K/N`` runs every N-th pending
cell: N jobs of a job array fill one table. A model is loaded once, a task's media
embedded once per model and reused across its metrics; with ``--cache DIR`` the media
embeddings are kept in the embedding cache, so a second bench over the same models and
data embeds no media. The table is rebuilt from every
cell present (:mod:`.bench_report`): ``results.csv`` / ``.jsonl`` / ``.md``,
``pairs.csv`` (each pair of models on a task: the paired difference with its interval and
a test) and ``results.png``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import yaml

from ..errors import ConfigError

TYPES = ("zeroshot", "retrieval", "probe", "sts")
TASK_KEYS = {"name", "data", "type", "medium", "split", "folds", "fold_protocol", "classes", "prompts", "classnames",
             "audio_dir", "image_dir", "window", "hop", "pool", "relevance"}
PROBE_KEYS = {"features", "shots", "seeds", "protocol", "knn_k", "train_split", "cv", "val_proportion", "lr", "epochs",
              "batch_size", "normalize"}  # eval probe's options
STS_KEYS = {"pooling", "max_length"}  # eval sts's options


def _preset(name: str) -> Path | None:
    from importlib import resources

    res = resources.files("clapkit") / "benches" / f"{name}.yaml"
    return Path(str(res)) if res.is_file() else None


def list_benches() -> list[str]:
    from importlib import resources

    return sorted(p.name[:-5] for p in (resources.files("clapkit") / "benches").iterdir() if p.name.endswith(".yaml"))


def _fill(value, root: str | None, where: str):
    if isinstance(value, str) and "{data}" in value:
        if root is None:
            raise ConfigError(f"{where}: {value!r} names {{data}}; give --data-root")
        return value.replace("{data}", root)
    if isinstance(value, list):
        return [_fill(v, root, where) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, root, where) for k, v in value.items()}
    return value


def load_bench(source: str | Path, data_root: str | Path | None = None, models: list[str] | None = None) -> dict:
    """The bench file (or shipped preset) with ``{data}`` filled in and checked;
    ``models`` (``name=path`` or a path) replace the file's model list."""
    path = _preset(str(source)) if not str(source).endswith((".yaml", ".yml")) else Path(source)
    if path is None or not path.is_file():
        raise ConfigError(f"--config {source}: neither a bench preset ({', '.join(list_benches())}) nor a YAML file")
    try:
        bench = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    unknown = set(bench) - {"models", "tasks", "bootstrap", "seed"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; a bench file has models, tasks, "
                          "bootstrap, seed")
    return check_bench(bench, path, data_root, models)


def check_bench(bench: dict, path: str | Path, data_root: str | Path | None = None,
                models: list[str] | None = None) -> dict:
    """A bench (models, tasks, bootstrap, seed) with ``{data}`` filled in and checked, its
    errors naming ``path``; a reproduction card's one task comes through here too."""
    if models:
        bench["models"] = [dict(zip(("name", "model"), m.split("=", 1), strict=True)) if "=" in m
                           else {"name": Path(m).name or m, "model": m} for m in models]
    bench = _fill(bench, None if data_root is None else str(data_root), str(path))
    if not bench.get("models") or not bench.get("tasks"):
        raise ConfigError(f"{path}: needs a list of models (or --model) and a list of tasks")
    for kind, key in (("models", "model"), ("tasks", "data")):
        names = []
        for n, entry in enumerate(bench[kind], 1):
            if not isinstance(entry, dict) or key not in entry or "name" not in entry:
                raise ConfigError(f"{path}: {kind}[{n}] needs name and {key}")
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(entry["name"])):
                raise ConfigError(f"{path}: {kind}[{n}] name {entry['name']!r}: use letters, digits, _ . -")
            names.append(entry["name"])
        if len(set(names)) != len(names):
            raise ConfigError(f"{path}: two {kind} share a name ({', '.join(sorted(n for n in names if names.count(n) > 1))})")
    for task in bench["tasks"]:
        if task.get("type") not in TYPES:
            raise ConfigError(f"{path}: task {task['name']}: type {task.get('type')!r}; choose {' or '.join(TYPES)}")
        extra = set(task) - TASK_KEYS - {"probe": PROBE_KEYS, "sts": STS_KEYS}.get(task["type"], set())
        if extra:
            raise ConfigError(f"{path}: task {task['name']}: unknown key(s) {', '.join(sorted(extra))}")
    bench.setdefault("bootstrap", 1000)
    bench.setdefault("seed", 0)
    bench["source"] = str(path)
    return bench


def shard_of(spec: str | None) -> tuple[int, int]:
    if not spec:
        return 1, 1
    m = re.fullmatch(r"(\d+)/(\d+)", spec)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ConfigError(f"--shard {spec!r}: give K/N with 1 <= K <= N, e.g. 2/8")
    return int(m.group(1)), int(m.group(2))


def run_bench(bench: dict, out: str | Path, shard: str | None = None, device="cpu", batch_size: int = 32,
              num_workers: int = 0, skip_bad: bool = False, progress: bool = True, cache=None,
              precision: str = "fp32", prompt_sweep: bool = False, manifests=(), intersect: bool = False) -> dict:
    """Run the pending cells of this shard, then rebuild the table from every cell in
    ``out`` (see the module docstring). Returns what was run and the table's rows.
    ``prompt_sweep``: each zero-shot cell also scores every registered prompt set on the
    same embeddings (rows ``top1[prompts=NAME]`` with intervals, ``top1_prompt_spread``;
    the paired tests against the task's prompts in the cell's ``prompt_sweep``), for the
    cells this run computes (give a fresh ``--out``). ``manifests`` (other labs' ``clapkit
    manifest`` files): each zero-shot cell records how its items differ from them, and with
    ``intersect`` scores only the items every copy holds with the same content
    (:func:`clapkit.data.manifest.against_copies`)."""
    from tqdm.auto import tqdm

    from ..distributed import barrier, is_main
    from ..inference.embed import compile_mode, inference_precision
    from ..models.provenance import model_fingerprint
    from .bench_cells import cell_name, run_cell
    from .bench_report import write_report

    out = Path(out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    k, n = shard_of(shard)
    cells = [(m, t) for m in bench["models"] for t in bench["tasks"]]
    mine = [c for i, c in enumerate(cells) if i % n == k - 1]
    done = [out / "cells" / f"{cell_name(m['name'], t['name'])}.json" for m, t in mine]
    mode = compile_mode()  # --compile (the CLI's inference_compile around this call)
    for (model, task), path in zip(mine, done, strict=True):  # reused only for the same model, data, precision, compile
        if not path.is_file():
            continue
        cell = json.loads(path.read_text())
        made = cell.get("precision", "fp32")
        if made != precision:
            raise ConfigError(f"{path}: a cell computed in {made}; this run asks for {precision}. Give another --out "
                              f"(or rerun with --precision {made})")
        compiled = cell.get("compile", "none")  # cells before --compile: eager
        if compiled != mode:
            raise ConfigError(f"{path}: a cell computed with --compile {compiled}; this run asks for --compile {mode} "
                              f"(equal within rounding, not bit for bit). Give another --out (or rerun with --compile "
                              f"{compiled})")
        now = model_fingerprint(str(model["model"]))
        fingerprints = {now, model_fingerprint(str(model["model"]), cards=True)}
        stale = [f"{what} {cell.get(key)!r}, not {now!r}" for what, key, now in (
            ("model", "model_spec", model["model"]), ("data", "data", task["data"])) if cell.get(key) != now]
        if cell.get("model_fingerprint") not in fingerprints:  # (cells written before model cards were left aside too)
            stale.append(f"model fingerprint {cell.get('model_fingerprint')!r}, not {now!r}")
        if stale:
            raise ConfigError(f"{path}: this cell was computed from another {'; '.join(stale)}. Give another --out, "
                              "or delete the cell to recompute it")
    pending = [(m, t) for (m, t), path in zip(mine, done, strict=True) if not path.is_file()]
    barrier()  # under torchrun every process runs every pending cell together: all see the same list
    ran, loaded = [], {}
    bar = tqdm(pending, desc="bench cells", disable=None if progress else True)
    for model, task in bar:
        bar.set_postfix_str(cell_name(model["name"], task["name"]))
        # an sts task: a sentence encoder (any text model, or a dual encoder's text tower) with its pooling
        as_text = (task.get("pooling") or "auto", task.get("max_length")) if task["type"] == "sts" else None
        if (model["name"], as_text) not in loaded:
            from ..evaluation.sts import SentenceEncoder
            from ..models.formats import DUAL, kind_or_none
            from ..models.public.loader import load_model

            loaded.clear()  # one model in memory at a time
            if as_text:
                loaded[model["name"], as_text] = SentenceEncoder(model["model"], *as_text, device=device)
            else:  # a text encoder (minilm, a sentence-transformers folder) scores no media: None, a cell that says so
                kind = kind_or_none(str(model["model"]))
                loaded[model["name"], as_text] = None if kind is not None and kind not in DUAL \
                    else load_model(model["model"], device)
        t0 = time.time()
        with inference_precision(precision, device):
            run_cell(loaded[model["name"], as_text], model, task, bench, out / "cells", device, batch_size, num_workers, skip_bad,
                     cache, prompt_sweep, manifests, intersect)
        ran.append({"cell": cell_name(model["name"], task["name"]), "seconds": round(time.time() - t0, 2)})
    rows = write_report(bench, out) if is_main() else []
    return {"ran": ran, "skipped_done": len(mine) - len(pending), "shard": f"{k}/{n}", "rows": len(rows)}
