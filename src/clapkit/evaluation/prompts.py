"""Zero-shot prompts and class names, as published, never retyped.

``--prompts`` takes:

- nothing (or ``clapkit:default``): clapkit's default for the medium (``This is a sound of
  {label}.``; ``a photo of a {label}.``); ``clapkit:ensemble``: its ensemble of templates;
- ``clip_benchmark:DATASET``: CLIP_benchmark's templates for DATASET, read from the
  installed package's ``datasets/en_zeroshot_classification_templates.json`` (its
  ``{c}`` placeholder read as ``{label}``);
- ``open_clip:imagenet`` (OpenAI's 80 ImageNet templates) or ``open_clip:imagenet_simple``,
  from ``open_clip.zero_shot_metadata`` (open_clip has no audio templates);
- a registered audio set, ``OWNER:SET``, shipped in ``prompt_sets.yaml`` beside this module,
  each as its owner published it with the repository, commit, file and lines it was read
  from: ``laion_clap:esc50``, ``laion_clap:esc50_readme``, ``laion_clap:gtzan_readme``,
  ``laion_clap:gtzan_eval_script``, ``msclap:default``, ``evar:default``, ``glap:sound``,
  ``maeb:esc50`` and more (:func:`registered_prompt_sets` lists them with clapkit's own,
  as does ``python -m clapkit.evaluation.prompts``; an unknown name is an error that lists
  them). A set may carry how its owner spells the classes: ``keep_underscore`` (MTEB's
  ESC-50 task writes ``door_wood_knock`` as it is) or its own phrase per class
  (``classnames``: EVAR's CREMA-D captions), which :func:`zeroshot_texts` honours unless
  ``--classnames`` is given;
- a ``.json`` / ``.yaml`` file: a list of templates with ``{label}``, ``{"templates":
  [...]}``, or a mapping from each class name to its own prompts (CuPL style, no
  placeholder); a ``.txt`` file: one template a line.

``--classnames`` renames the classes (prompts are built from the new names; results keep
both): ``clip_benchmark:DATASET`` (the package's cleaned ``en_classnames.json`` list, in
the dataset's class order; for a dataset it has no entry for, such as CIFAR, STL-10,
Food-101 or VOC 2007, the data's own names as CLIP_benchmark's dataset builder keeps them:
as they are, Food-101's and SUN397's with "_" (and "/") as spaces), ``open_clip:imagenet`` (OpenAI's cleaned ImageNet names, in
sorted-synset order, as ``imagenet:`` orders its classes), ``audioset:FILE`` (AudioSet's
``class_labels_indices.csv`` or ``ontology.json``: a set whose classes carry AudioSet mids,
FSD50K's, is spelled with their display names, "Gunshot, gunfire"; a mid the csv lacks, one
of FSD50K's eight classes outside AudioSet's 527, is spelled back from the class's own name),
a ``.json`` / ``.yaml`` mapping
from the data's class name to the new one (every class must be in it) or list, a ``.txt``
list, one a line, or LAION-CLAP's ``class_labels/*.json`` (``{"dog": 0, ...}``: name ->
LAION-CLAP's own tag index).

**A name -> index map is applied by name, never by position.** LAION-CLAP's indices are
its own tag order, which is the dataset's for ESC-50, UrbanSound8K, GTZAN and AudioSet but
not for VGGSound ("people crowd" is 0) or FSD50K (AudioSet display names, "Whispering" is
0). So each of the data's classes takes the key whose name equals its own once ``_``,
spaces and case are set aside (:func:`name_key`), and the prompts use the key's spelling;
for a set with AudioSet mids (FSD50K) a key may also match through the mid's display name
in AudioSet's ``class_labels_indices.csv`` or ``ontology.json`` beside the map, or through
the display name FSD50K's label was written from. A class with no key, two keys matching one
class, or one key matching two classes is an error naming the file and the class. A plain list
keeps its meaning: one name per class, in the data's class order.

The data's own names are read with ``_`` as a space (``door_wood_knock`` -> "door wood
knock", as LAION-CLAP's ``ESC50_class_labels_indices_space.json`` and msclap's ESC-50
loader spell them), unless the registered prompt set keeps ``_`` (``maeb:esc50``) or
names the classes itself; names given by ``--classnames`` are used as given.
:func:`zeroshot_texts` builds a task's prompts from all of this, for ``eval zeroshot``,
``bench`` and the Python API alike.

A named set whose package is not installed is an error that says what to install
(``pip install clip_benchmark``, ``open_clip_torch``); the packages are an optional extra.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import ConfigError, DataError

DEFAULT_TEMPLATE = "This is a sound of {label}."
ENSEMBLE_TEMPLATES = (
    "This is a sound of {label}.",
    "a sound of {label}.",
    "the sound of {label}.",
    "{label}.",
    "a recording of {label}.",
    "a {label} can be heard.",
)
DEFAULT_IMAGE_TEMPLATE = "a photo of a {label}."
IMAGE_ENSEMBLE_TEMPLATES = (
    "a photo of a {label}.",
    "a picture of a {label}.",
    "an image showing a {label}.",
    "a drawing of a {label}.",
    "a close-up photo of the {label}.",
    "a small {label}.",
    "a large {label}.",
    "{label}.",
)


def default_templates(medium: str, ensemble: bool = False) -> list[str]:
    """The prompt (or the ensemble of prompts) for a medium's zero-shot evaluation."""
    if medium == "image":
        return list(IMAGE_ENSEMBLE_TEMPLATES) if ensemble else [DEFAULT_IMAGE_TEMPLATE]
    return list(ENSEMBLE_TEMPLATES) if ensemble else [DEFAULT_TEMPLATE]


def _package_file(package: str, relative: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)  # located, not imported: its own imports need not load
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{package}: not installed; named prompt and class-name sets of it need `pip install {install}`")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ConfigError(f"{path}: not found in the installed {package} (a version without it?)")
    return path


def _clip_benchmark_table(kind: str) -> tuple[dict, Path]:
    name = "en_zeroshot_classification_templates.json" if kind == "templates" else "en_classnames.json"
    path = _package_file("clip_benchmark", f"datasets/{name}", "clip_benchmark")
    return json.loads(path.read_text()), path


def _clip_benchmark(kind: str, dataset: str) -> list[str]:
    table, path = _clip_benchmark_table(kind)
    if dataset not in table:
        fallback = " (CLIP_benchmark itself falls back to imagenet1k's: give clip_benchmark:imagenet1k)" \
            if kind == "templates" else ""
        raise ConfigError(f"clip_benchmark:{dataset}: {path.name} has no entry for it; it has "
                          f"{', '.join(sorted(table))}{fallback}")
    items = table[dataset]
    return [t.replace("{c}", "{label}") for t in items] if kind == "templates" else list(items)


# what CLIP_benchmark's dataset builder does to a dataset's own class names (those without
# an en_classnames.json entry): these two lose "_" (and "/"); the rest are kept as they are
_CLIP_BENCHMARK_RENAMES = {"food101": ("_",), "sun397": ("_", "/")}


def _clip_benchmark_classnames(dataset: str, class_names: list[str]) -> list[str]:
    table, path = _clip_benchmark_table("classnames")
    if dataset in table:
        return list(table[dataset])
    templates, tpath = _clip_benchmark_table("templates")
    if dataset not in templates:
        raise ConfigError(f"clip_benchmark:{dataset}: neither {path.name} nor {tpath.name} has an entry for it; "
                          f"CLIP_benchmark's datasets are {', '.join(sorted(templates))}")
    names = []
    for name in class_names:
        for sep in _CLIP_BENCHMARK_RENAMES.get(dataset, ()):
            name = name.replace(sep, " ")
        names.append(name)
    return names


def _open_clip(name: str) -> list[str]:
    sets = {"imagenet": "OPENAI_IMAGENET_TEMPLATES", "imagenet_simple": "SIMPLE_IMAGENET_TEMPLATES"}
    if name not in sets:
        raise ConfigError(f"open_clip:{name}: choose one of {', '.join('open_clip:' + k for k in sets)}")
    if importlib.util.find_spec("open_clip") is None:
        raise ConfigError("open_clip: not installed; its named prompt sets need `pip install open_clip_torch`")
    from open_clip import zero_shot_metadata

    return [t("{label}") for t in getattr(zero_shot_metadata, sets[name])]


REGISTRY_FILE = Path(__file__).with_name("prompt_sets.yaml")


def _permalink(source: dict) -> str:
    """The GitHub permalink of a registered set's lines (``"49-52"``, ``"52-53,61"``: the
    span from the first line to the last)."""
    numbers = [int(n) for part in str(source["lines"]).split(",") for n in part.split("-")]
    first, last = min(numbers), max(numbers)
    span = f"L{first}" if first == last else f"L{first}-L{last}"
    return f"{source['repo']}/blob/{source['commit']}/{source['path']}#{span}"


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, dict]:
    """The published sets of ``prompt_sets.yaml``, by name (read once)."""
    data = yaml.safe_load(REGISTRY_FILE.read_text(encoding="utf-8"))
    sets: dict[str, dict] = {}
    for entry in data["sets"]:
        name = entry["name"]
        if name in sets:
            raise ConfigError(f"{REGISTRY_FILE}: prompt set {name} is listed twice")
        source = dict(entry["source"])
        source["url"] = _permalink(source)
        sets[name] = {
            "name": name,
            "medium": entry.get("medium", "audio"),
            "templates": _templates(list(entry["templates"]), f"{REGISTRY_FILE} ({name})"),
            "datasets": list(entry.get("datasets") or []),
            "flags": {"keep_underscore": bool(entry.get("keep_underscore", False)),
                      "classnames": dict(entry["classnames"]) if entry.get("classnames") else None},
            "source": source,
            "default": False,
        }
    return sets


def _clapkit_sets(medium: str) -> list[dict]:
    constants = ("DEFAULT_IMAGE_TEMPLATE", "IMAGE_ENSEMBLE_TEMPLATES") if medium == "image" else \
        ("DEFAULT_TEMPLATE", "ENSEMBLE_TEMPLATES")
    return [{"name": f"clapkit:{kind}", "medium": medium, "templates": default_templates(medium, kind == "ensemble"),
             "datasets": [], "flags": {"keep_underscore": False, "classnames": None},
             "source": {"path": "src/clapkit/evaluation/prompts.py", "constant": constant,
                        "note": f"clapkit's own {'ensemble' if kind == 'ensemble' else 'default prompt'} "
                                f"for the {medium} medium"},
             "default": kind == "default"}
            for kind, constant in zip(("default", "ensemble"), constants, strict=True)]


def registered_prompt_sets(medium: str = "audio") -> list[dict]:
    """Every named prompt set of ``medium``: clapkit's ``clapkit:default`` (the default) and
    ``clapkit:ensemble``, then the published sets of ``prompt_sets.yaml`` in file order. Each
    a dict: ``name`` (the ``--prompts`` spec), ``medium``, ``templates``, ``datasets`` (those
    its owner used it for), ``flags`` (``keep_underscore``; ``classnames``, a class -> phrase
    mapping or None), ``source`` (``repo``, ``commit``, ``path``, ``lines``, ``url``, ``note``;
    clapkit's own: ``path``, ``constant``, ``note``) and ``default``."""
    published = [copy.deepcopy(e) for e in _registry().values() if e["medium"] == medium]
    return _clapkit_sets(medium) + published


def prompt_set(name, medium: str = "audio") -> dict | None:
    """The registered set called ``name`` (see :func:`registered_prompt_sets`), or None
    where ``name`` is not one (a file, a ``clip_benchmark:`` set, a list...)."""
    if not isinstance(name, str):
        return None
    if name in ("clapkit:default", "clapkit:ensemble"):
        return next(e for e in _clapkit_sets(medium) if e["name"] == name)
    entry = _registry().get(name)
    return copy.deepcopy(entry) if entry is not None else None


def _known_sets(medium: str) -> str:
    return ", ".join(e["name"] for e in _clapkit_sets(medium)) + ", " + ", ".join(_registry())


def _read_file(path: Path):
    if not path.is_file():
        raise DataError("file not found", str(path))
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({exc})", str(path)) from exc


def load_prompts(spec, medium: str) -> tuple[list[str] | dict[str, list[str]], str]:
    """The templates (or per-class prompts) of ``spec`` and a name for them (see the
    module docstring)."""
    if spec is None or spec == []:
        return default_templates(medium), "clapkit"
    if isinstance(spec, list | tuple):
        return _templates(list(spec), "the given templates"), "inline"
    spec = str(spec)
    source, sep, name = spec.partition(":")
    if sep and source == "clip_benchmark":
        return _templates(_clip_benchmark("templates", name), spec), spec
    if sep and source == "clapkit":
        if name not in ("default", "ensemble"):
            raise ConfigError(f"--prompts {spec}: clapkit has clapkit:default and clapkit:ensemble")
        return default_templates(medium, name == "ensemble"), spec
    if sep and source == "open_clip":
        return _open_clip(name), spec
    if spec in _registry():
        return list(_registry()[spec]["templates"]), spec
    if sep and source in {n.partition(":")[0] for n in _registry()}:
        raise ConfigError(f"--prompts {spec}: no such prompt set; the named sets are {_known_sets(medium)} "
                          "(python -m clapkit.evaluation.prompts lists them with their sources)")
    path = Path(spec)
    if path.suffix.lower() not in (".json", ".yaml", ".yml", ".txt"):
        raise ConfigError(f"--prompts {spec}: give clip_benchmark:DATASET, open_clip:imagenet, a named set "
                          f"({_known_sets(medium)}) or a .json/.yaml/.txt file")
    data = _read_file(path)
    if isinstance(data, dict) and set(data) == {"templates"}:
        data = data["templates"]
    if isinstance(data, dict):
        bad = [k for k, v in data.items() if not isinstance(v, list) or not v or not all(isinstance(p, str) for p in v)]
        if bad:
            raise DataError(f"class {bad[0]!r}: expected a non-empty list of prompts", str(path))
        return {str(k): list(v) for k, v in data.items()}, str(path)
    if not isinstance(data, list):
        raise DataError("expected a list of templates, {templates: [...]} or a class -> prompts mapping", str(path))
    return _templates(data, str(path)), str(path)


def _templates(items: list, where: str) -> list[str]:
    bad = [t for t in items if not isinstance(t, str) or "{label}" not in t]
    if bad or not items:
        raise DataError(f"every template needs a {{label}} placeholder; {bad[0]!r} has none" if bad else "no templates",
                        where)
    return items


def name_key(name: str) -> str:
    """A class name with ``_``, runs of spaces and case set aside: the key by which a
    class-name file's entries are matched to the data's classes."""
    return " ".join(name.replace("_", " ").split()).casefold()


def _by_name(keys: list[str], class_names: list[str], class_ids: list[str] | None, where: str,
             beside: Path | None) -> list[str]:
    """The key of ``keys`` that names each of the data's classes (see the module docstring)."""
    from ..data.audio.audioset import display_names
    from ..data.audio.fsd50k import as_audioset_name

    found: dict[str, list[str]] = {}
    for key in keys:
        found.setdefault(name_key(key), []).append(key)
    tables = [beside / n for n in ("class_labels_indices.csv", "ontology.json")] if beside is not None and class_ids else []
    display = {k: v for t in tables if t.is_file() for k, v in display_names(t).items()}
    out, taken = [], {}
    for i, name in enumerate(class_names):
        mid = class_ids[i] if class_ids else None
        spellings = [name] + ([display[mid]] if mid in display else []) + ([as_audioset_name(name)] if mid else [])
        hits = list(dict.fromkeys(k for spelling in spellings for k in found.get(name_key(spelling), [])))
        if len(hits) > 1:
            raise DataError(f"entries {', '.join(repr(h) for h in hits)} both match the data's class {name!r}; "
                            "keep one", where)
        if not hits:
            via = f" (AudioSet mid {mid}: {display[mid]!r})" if mid in display else ""
            hint = (f"; for a set spelled by AudioSet mids put AudioSet's class_labels_indices.csv or ontology.json "
                    f"beside {where}" if class_ids and not display else "")
            raise DataError(f"the data's class {name!r}{via} has no entry (matched by name, '_', spaces and case "
                            f"aside){hint}", where)
        if hits[0] in taken:
            raise DataError(f"entry {hits[0]!r} matches two of the data's classes, {taken[hits[0]]!r} and {name!r}",
                            where)
        taken[hits[0]] = name
        out.append(hits[0])
    return out


def load_classnames(spec, class_names: list[str], class_ids: list[str] | None = None) -> list[str]:
    """The class names ``spec`` gives the data's ``class_names`` (see the module
    docstring); ``class_ids``: the classes' AudioSet mids, where the data has them. A list
    is taken as given, one name per class."""
    if spec is None or (isinstance(spec, str | list | tuple | dict) and not spec):
        return list(class_names)
    where = str(spec)
    beside = None
    if isinstance(spec, list | tuple | dict):
        data = list(spec) if not isinstance(spec, dict) else dict(spec)
        where = "the given class names"
    else:
        source, sep, name = str(spec).partition(":")
        if sep and source == "clip_benchmark":
            data = _clip_benchmark_classnames(name, list(class_names))
        elif sep and source == "open_clip":
            if name != "imagenet" or importlib.util.find_spec("open_clip") is None:
                raise ConfigError(f"--classnames {spec}: open_clip:imagenet (OpenAI's cleaned ImageNet names) needs "
                                  "`pip install open_clip_torch`" if name == "imagenet" else
                                  f"--classnames {spec}: open_clip has open_clip:imagenet")
            from open_clip import zero_shot_metadata

            data = list(zero_shot_metadata.IMAGENET_CLASSNAMES)
        elif sep and source == "audioset":
            return _audioset_spelling(Path(name), class_names, class_ids, where)
        else:
            data = _read_file(Path(spec))
            beside = Path(spec).parent
    if isinstance(data, dict) and data and all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
        return _by_name(list(data), class_names, class_ids, where, beside)  # LAION-CLAP's name -> its own index
    if isinstance(data, dict):
        missing = [c for c in class_names if c not in data]
        if missing:
            raise DataError(f"class {missing[0]!r} of the data has no entry ({len(missing)} missing)", where)
        return [str(data[c]) for c in class_names]
    if not isinstance(data, list) or len(data) != len(class_names):
        n = len(data) if isinstance(data, list) else 0
        raise DataError(f"{n} names for the data's {len(class_names)} classes (a list is taken in the data's class "
                        "order)", where)
    return [str(x) for x in data]


def _audioset_spelling(path: Path, class_names: list[str], class_ids: list[str] | None, where: str) -> list[str]:
    """Each class's AudioSet display name, through its mid (``class_labels_indices.csv`` or
    ``ontology.json``); a mid the file lacks (FSD50K's eight classes outside AudioSet's 527
    when the file is the csv) is spelled back from FSD50K's own name, with a warning."""
    import warnings

    from ..data.audio.audioset import display_names
    from ..data.audio.fsd50k import as_audioset_name

    if not class_ids:
        raise ConfigError(f"--classnames {where}: AudioSet's names are matched through the classes' AudioSet mids, "
                          "which this data does not carry (fsd50k: and audioset: do)")
    display = display_names(path)
    missing = [n for n, m in zip(class_names, class_ids, strict=True) if m not in display]
    if missing:
        warnings.warn(f"{path}: {len(missing)} class(es) have a mid it lacks ({', '.join(missing[:8])}); spelled from "
                      "their own names (FSD50K writes ', ' as '_and_'); AudioSet's ontology.json has every class",
                      stacklevel=2)
    return [display[m] if m in display else as_audioset_name(n) for n, m in zip(class_names, class_ids, strict=True)]


@dataclass(frozen=True)
class ZeroshotTexts:
    """What a zero-shot task says to the text tower, built in one place for ``eval
    zeroshot``, ``bench`` and the Python API (:func:`zeroshot_texts`)."""

    templates: list[str] | dict[str, list[str]]  # the templates, or each class's own prompts
    source: str  # where the templates come from: "clapkit", "inline", clip_benchmark:X, a file
    names: list[str]  # each class's name as written into its prompts, in class order
    classnames: str | None  # the --classnames spec (or the prompt set naming its classes) that gave ``names``;
    # None: the data's own ("_" as a space, or kept where the registered prompt set keeps it)
    texts: list[list[str]]  # each class's prompts, in class order


def zeroshot_texts(class_names: list[str], medium: str, prompts=None, classnames=None,
                   class_ids: list[str] | None = None) -> ZeroshotTexts:
    """The prompts of a zero-shot task on classes ``class_names`` (the data's, index order).
    ``prompts``: None (the medium's default), a spec for :func:`load_prompts`, a list of
    templates or a class -> prompts mapping; ``classnames``: a spec for
    :func:`load_classnames` or a list of names used as given, else the registered prompt
    set's own class phrases where it has them, else the data's own names with ``_`` read as
    a space (kept where the set keeps it, ``maeb:esc50``); ``class_ids``: the classes'
    AudioSet mids, where known."""
    if isinstance(prompts, dict):
        templates, source = prompts, "inline"
    else:
        templates, source = load_prompts(prompts, medium)
    flags = (prompt_set(prompts, medium) or {}).get("flags", {})
    if isinstance(classnames, os.PathLike):
        classnames = str(classnames)
    if classnames:
        names = load_classnames(classnames, class_names, class_ids)
        given = classnames if isinstance(classnames, str) else "inline"
    elif flags.get("classnames"):
        phrases = flags["classnames"]
        missing = [c for c in class_names if c not in phrases]
        if missing:
            raise ConfigError(f"--prompts {prompts}: its class phrases are for the classes {', '.join(phrases)}; the "
                              f"data's class {missing[0]!r} has none (give --classnames)")
        names, given = [phrases[c] for c in class_names], str(prompts)
    elif flags.get("keep_underscore"):
        names, given = list(class_names), None
    else:
        names, given = [n.replace("_", " ") for n in class_names], None
    return ZeroshotTexts(templates, source, names, given, class_prompts(templates, names, class_names))


def class_prompts(prompts: list[str] | dict[str, list[str]], labels: list[str], keys: list[str]) -> list[list[str]]:
    """Each class's prompts: the templates filled with its label text, or its own
    (per-class prompts are looked up by ``keys``, the data's class names)."""
    if isinstance(prompts, dict):
        missing = [k for k in keys if k not in prompts]
        if missing:
            raise DataError(f"the per-class prompts have no entry for class {missing[0]!r} ({len(missing)} missing)")
        return [prompts[k] for k in keys]
    return [[t.format(label=label) for t in prompts] for label in labels]


if __name__ == "__main__":  # python -m clapkit.evaluation.prompts [audio|image]: the named prompt sets
    import sys

    for entry in registered_prompt_sets(sys.argv[1] if len(sys.argv) > 1 else "audio"):
        src = entry["source"]
        flags = [k for k, v in entry["flags"].items() if v]
        print(f"{entry['name']}{' (default)' if entry['default'] else ''}: {' | '.join(entry['templates'])}")
        print(f"    datasets: {', '.join(entry['datasets']) or '-'}{'; ' + ', '.join(flags) if flags else ''}")
        print(f"    {src.get('url') or src['path'] + ' ' + src['constant']}: {src['note']}")
