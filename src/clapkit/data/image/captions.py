"""Image-caption manifests in their owners' formats (every image is paired with each of
its captions), registered in :mod:`clapkit.data.specs`:

- ``coco:JSON`` - COCO captions (``annotations/captions_{train,val}2017.json``:
  ``images[].{id,file_name}``, ``annotations[].{image_id,caption}``); images in
  ``image_dir`` (default: ``ROOT/val2017`` for ``ROOT/annotations/captions_val2017.json``
  when that folder exists, else the JSON's folder);
- ``karpathy:JSON`` - the Karpathy split files (``dataset_flickr30k.json``,
  ``dataset_flickr8k.json``, ``dataset_coco.json``): ``images[].{filename, filepath?,
  split, sentences[].raw}``; ``split`` keeps one split (``restval`` counts as ``train``);
  images in ``image_dir`` (default: a ``flickr30k-images``, ``Flicker8k_Dataset``,
  ``Flickr8k_Dataset`` or ``images`` folder beside the JSON, else its folder), under
  ``filepath`` when given (COCO's ``val2014``);
- ``flickr:TOKENFILE`` - Flickr30k's ``results_20130124.token`` / Flickr8k's
  ``Flickr8k.token.txt``: ``IMAGE#N<TAB>caption`` lines; images as for karpathy:;
- ``csv:FILE`` / ``jsonl:FILE`` - an ``image`` column / key (name selectable) and
  ``caption`` (:mod:`clapkit.data.tables`, as for audio), and an optional ``language``;
- ``xtd10:ROOT`` - XTD10 as its owners publish it (adobe-research/Cross-lingual-Test-Dataset-XTD10):
  ``XTD10/test_image_names.txt`` (one COCO image name a line) and, aligned with it line by
  line, ``test_1kcaptions_{lang}.txt`` in ``XTD10/`` (en, es, it, ko, pl, ru, tr, zh),
  ``MIC/`` (de, fr) and ``STAIR/`` (jp); each caption carries its file's language code
  (XTD10's own: ``jp`` for Japanese); images in ``image_dir`` (default ``ROOT/images``);
- ``crossmodal3600:JSONL`` - Crossmodal-3600's ``captions.jsonl`` (google.github.io/crossmodal-3600,
  ``web-data/captions.zip``): a line per image with ``image/key``, ``image/locale`` and, per
  language code, ``{"caption": [...], "caption/tokenized": [...], ...}``; every caption of
  every language is read (CLIP_benchmark keeps each language's first); images
  ``{image/key}.jpg`` in ``image_dir`` (default an ``images`` folder beside the file);
- ``wds:PATTERN`` - WebDataset tar shards (``{key}.jpg|jpeg|png|webp`` + ``{key}.txt``
  or ``.json``, as open_clip and LAION write them), read in place: see
  :mod:`clapkit.data.shards.wds`.

A labelled image set where pairs are expected gives one pair per image and label
template. A bad row, record or file raises a DataError naming the file and row (JSON:
the record index and id), or with ``skip_bad`` is counted in the :class:`Skipped` record.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..files import Collector, Skipped, read_text
from ..records import Pair, clean_caption
from ..specs import PAIRS, ReadOptions, read_pairs, spec_kind
from ..tables import csv_pairs, jsonl_pairs

_IMAGE_FOLDERS = ("flickr30k-images", "flickr30k_images", "Flicker8k_Dataset", "Flickr8k_Dataset", "images")


def image_file(path: Path, where: str) -> Path:
    """``path``, which must be a file (decoding waits for the file check or a batch)."""
    if not path.is_file():
        raise DataError(f"image file not found: {path}", where, reason="image file not found")
    return path


def _read_json(path: Path):
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", str(path)) from exc


def _records(data, key: str, path: Path) -> list:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataError(f"expected a JSON object with a '{key}' list", str(path))
    return data[key]


def _default_image_dir(path: Path, image_dir: str | Path | None) -> Path:
    if image_dir:
        return Path(image_dir)
    for name in _IMAGE_FOLDERS:
        if (path.parent / name).is_dir():
            return path.parent / name
    return path.parent




def _write_png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(path)


def load_image_pairs(spec: str, image_dir: str | Path | None = None, skip_bad: bool = False,
                     skipped: Skipped | None = None, image_column: str = "image", caption_column: str = "caption",
                     split: str | None = None, label_templates: tuple[str, ...] = ("a photo of a {label}.",)) -> list[Pair]:
    """Image-caption pairs of a spec (see the module docstring)."""
    opts = ReadOptions("image", Path(image_dir) if image_dir else None, None, image_column, caption_column,
                       tuple(label_templates), split, skip_bad=skip_bad)
    return read_pairs(spec, opts, skipped if skipped is not None else Skipped())


def _resolve(opts: ReadOptions):
    return image_file if opts.require_media else (lambda file, where: file)


def _write_csv(d: Path) -> tuple[str, Path]:
    for i in range(3):
        _write_png(d / f"p{i}.png")
    (d / "m.csv").write_text("image,caption\n" + "".join(f"p{i}.png,a red square {i}\n" for i in range(3)))
    return f"csv:{d / 'm.csv'}", d / "m.csv"


@spec_kind("csv", PAIRS, ("image",), "FILE", "columns `image,caption` (`data.image_column`, `--image-column`), one row "
           "per pair, paths relative to the CSV or `--image-dir`; an optional `language` column (the caption's "
           "language code)", example=_write_csv)
def read_csv(path: Path, opts: ReadOptions, skipped: Skipped) -> list[Pair]:
    return csv_pairs(path, opts, skipped, _resolve(opts))


def _write_jsonl(d: Path) -> tuple[str, Path]:
    for i in range(2):
        _write_png(d / f"p{i}.png")
    (d / "m.jsonl").write_text("".join(json.dumps({"image": f"p{i}.png", "caption": [f"a cat {i}", "a mat"]}) + "\n"
                                       for i in range(2)))
    return f"jsonl:{d / 'm.jsonl'}", d / "m.jsonl"


@spec_kind("jsonl", PAIRS, ("image",), "FILE", '`{"image": ..., "caption": "..." or [...]}` a line (optional '
           '`"language"`)', example=_write_jsonl)
def read_jsonl(path: Path, opts: ReadOptions, skipped: Skipped) -> list[Pair]:
    return jsonl_pairs(path, opts, skipped, _resolve(opts))


def _write_coco(d: Path) -> tuple[str, Path]:
    for i in range(2):
        _write_png(d / "val2017" / f"{i:012d}.jpg")
    (d / "annotations").mkdir()
    (d / "annotations" / "captions_val2017.json").write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(2)],
        "annotations": [{"image_id": i, "id": 10 + i, "caption": f"a cat on a mat {i}"} for i in range(2)]}))
    return f"coco:{d / 'annotations' / 'captions_val2017.json'}", d / "annotations" / "captions_val2017.json"


@spec_kind("coco", PAIRS, ("image",), "JSON", "COCO captions (`annotations/captions_val2017.json`); images in "
           "`--image-dir` (default `ROOT/val2017` beside `annotations/`)", example=_write_coco)
def read_coco(path: Path, opts: ReadOptions, skipped: Skipped) -> list[Pair]:
    return _coco(path, opts.media_dir, opts.split, Collector(opts.skip_bad, skipped), _resolve(opts))


def _write_karpathy(d: Path) -> tuple[str, Path]:
    for i in range(2):
        _write_png(d / "images" / f"{i}.jpg")
    (d / "dataset_flickr8k.json").write_text(json.dumps({"images": [
        {"filename": f"{i}.jpg", "split": "test", "sentences": [{"raw": f"two dogs run {i}"}]} for i in range(2)]}))
    return f"karpathy:{d / 'dataset_flickr8k.json'}", d / "dataset_flickr8k.json"


@spec_kind("karpathy", PAIRS, ("image",), "JSON", "the Karpathy split files (`dataset_flickr30k.json`, "
           "`dataset_coco.json`) with their `split` field (`--split test`; `restval` counts as train); images in "
           "`--image-dir` (default a `flickr30k-images`/`Flicker8k_Dataset`/`images` folder beside it)",
           example=_write_karpathy)
def read_karpathy(path: Path, opts: ReadOptions, skipped: Skipped) -> list[Pair]:
    return _karpathy(path, opts.media_dir, opts.split, Collector(opts.skip_bad, skipped), _resolve(opts))


def _write_flickr(d: Path) -> tuple[str, Path]:
    for i in range(2):
        _write_png(d / "Flicker8k_Dataset" / f"{i}.jpg")
    (d / "Flickr8k.token.txt").write_text("".join(f"{i}.jpg#{k}\ta child plays {i} {k}\n" for i in range(2)
                                                  for k in range(2)))
    return f"flickr:{d / 'Flickr8k.token.txt'}", d / "Flickr8k.token.txt"


@spec_kind("flickr", PAIRS, ("image",), "TOKENFILE", "Flickr30k's `results_20130124.token` / Flickr8k's "
           "`Flickr8k.token.txt` (`IMAGE#N<TAB>caption`); images as for `karpathy:`", example=_write_flickr)
def read_flickr(path: Path, opts: ReadOptions, skipped: Skipped) -> list[Pair]:
    return _flickr(path, opts.media_dir, opts.split, Collector(opts.skip_bad, skipped), _resolve(opts))


def _coco(path: Path, image_dir, split, c: Collector, resolve=image_file) -> list[Pair]:
    data = _read_json(path)
    images, annotations = _records(data, "images", path), _records(data, "annotations", path)
    if image_dir:
        base = Path(image_dir)
    else:  # ROOT/annotations/captions_val2017.json -> ROOT/val2017
        guess = path.parent.parent / path.stem.rsplit("_", 1)[-1]
        base = guess if guess.is_dir() else path.parent
    files: dict = {}
    for n, rec in enumerate(images):
        where = f"{path} images[{n}]"
        if not isinstance(rec, dict) or "id" not in rec or not isinstance(rec.get("file_name"), str):
            c.fail(DataError("needs 'id' and 'file_name'", where, reason="malformed record"))
            continue
        files[rec["id"]] = (rec["file_name"], where)
    found: dict = {}

    for n, ann in enumerate(annotations):
        where = f"{path} annotations[{n}]"

        def one(ann=ann, where=where):
            if not isinstance(ann, dict) or "image_id" not in ann:
                raise DataError("needs 'image_id' and 'caption'", where)
            where = f"{where} (image_id {ann['image_id']})"
            if ann["image_id"] not in files:
                raise DataError("image_id not among the images", where, reason="unknown image_id")
            name, _ = files[ann["image_id"]]
            if name not in found:
                found[name] = resolve(base / name, where)
            return [Pair(found[name], clean_caption(ann.get("caption"), where), str(ann["image_id"]), where)]

        c(one)
    return c.items


def _karpathy(path: Path, image_dir, split, c: Collector, resolve=image_file) -> list[Pair]:
    data = _read_json(path)
    base = _default_image_dir(path, image_dir)
    for n, rec in enumerate(_records(data, "images", path)):
        where = f"{path} images[{n}]"

        def one(rec=rec, where=where):
            if not isinstance(rec, dict) or not isinstance(rec.get("filename"), str):
                raise DataError("needs 'filename', 'split' and 'sentences'", where)
            where = f"{where} ({rec['filename']})"
            rec_split = "train" if rec.get("split") == "restval" else rec.get("split")
            if split and rec_split != split:
                return []
            sentences = rec.get("sentences")
            if not isinstance(sentences, list) or not sentences:
                raise DataError("no 'sentences'", where, reason="no captions")
            image = resolve(base / rec.get("filepath", "") / rec["filename"], where)
            media_id = str(rec.get("imgid", rec["filename"]))
            return [Pair(image, clean_caption(s.get("raw") if isinstance(s, dict) else None, f"{where} sentences[{k}]"),
                         media_id, where) for k, s in enumerate(sentences)]

        c(one)
    return c.items


def _flickr(path: Path, image_dir, split, c: Collector, resolve=image_file) -> list[Pair]:
    text = read_text(path)
    base = _default_image_dir(path, image_dir)
    found: dict = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"

        def one(line=line, where=where):
            key, tab, caption = line.partition("\t")
            name, hash_, number = key.partition("#")
            if not tab or not hash_ or not number.strip().isdigit():
                raise DataError("expected IMAGE#N<TAB>caption", where, reason="malformed line")
            if name not in found:
                found[name] = resolve(base / name, where)
            return [Pair(found[name], clean_caption(caption, where), name, where)]

        c(one)
    return c.items


# XTD10 as adobe-research/Cross-lingual-Test-Dataset-XTD10 publishes it, and the folder CLIP_benchmark's
# clip_benchmark/datasets/xtd10.py reads each language from: MIC for de and fr, STAIR for jp, XTD10 for the rest
XTD10_IMAGES = "test_image_names.txt"
XTD10_CAPTIONS = "test_1kcaptions_"
XTD10_FOLDERS = {"de": "MIC", "fr": "MIC", "jp": "STAIR"}


def aligned_lines(path: Path) -> list[str]:
    """The lines of a file whose line N belongs to line N of another (split on ``\\n`` alone,
    so that no other line break inside a caption shifts them; a ``\\r`` before it and one
    final newline dropped)."""
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def xtd10_files(root: Path) -> tuple[Path, dict[str, Path]]:
    """XTD10's image list and each language's caption file under ``root`` (its repository's
    ``XTD10/``, ``MIC/``, ``STAIR/`` folders, or every file in ``root`` itself)."""
    if not root.is_dir():
        raise DataError("folder not found (expected XTD10's repository: XTD10/, MIC/, STAIR/)", str(root))
    nested = (root / "XTD10").is_dir()
    folders = ("XTD10", "MIC", "STAIR") if nested else ("",)
    files: dict[str, Path] = {}
    for folder in folders:
        for f in sorted((root / folder).glob(f"{XTD10_CAPTIONS}*.txt")):
            lang = f.stem[len(XTD10_CAPTIONS):]
            if lang and (not nested or XTD10_FOLDERS.get(lang, "XTD10") == folder):
                files[lang] = f
    names = root / "XTD10" / XTD10_IMAGES if nested else root / XTD10_IMAGES
    if not names.is_file():
        raise DataError(f"no {XTD10_IMAGES} (XTD10's image list)", str(names))
    if not files:
        raise DataError(f"no {XTD10_CAPTIONS}{{lang}}.txt caption files", str(root))
    return names, dict(sorted(files.items()))


def _write_xtd10(d: Path) -> tuple[str, Path]:
    names = [f"COCO_train2014_{i:012d}.jpg" for i in range(2)]
    for name in names:
        _write_png(d / "images" / name)
    for folder, lang, words in (("XTD10", "en", "a cat on a desk"), ("MIC", "de", "eine Katze auf einem Tisch")):
        (d / folder).mkdir(parents=True, exist_ok=True)
        (d / folder / f"{XTD10_CAPTIONS}{lang}.txt").write_text("".join(f"{words} {i}\n" for i in range(2)))
    (d / "XTD10" / XTD10_IMAGES).write_text("".join(f"{n}\n" for n in names))
    return f"xtd10:{d}", d / "XTD10" / f"{XTD10_CAPTIONS}en.txt"


@spec_kind("xtd10", PAIRS, ("image",), "ROOT", "XTD10's repository: `XTD10/test_image_names.txt` and, aligned with it "
           "line by line, `test_1kcaptions_{lang}.txt` in `XTD10/`, `MIC/` (de, fr), `STAIR/` (jp); each caption "
           "carries its language; images in `--image-dir` (default `ROOT/images`)", example=_write_xtd10)
def read_xtd10(path: Path, opts: ReadOptions, skipped: Skipped) -> list[Pair]:
    names_file, files = xtd10_files(path)
    names = aligned_lines(names_file)
    captions = {}
    for lang, f in files.items():
        captions[lang] = aligned_lines(f)
        if len(captions[lang]) != len(names):
            raise DataError(f"{len(captions[lang])} captions for the {len(names)} images of {names_file}; the files "
                            "are aligned line by line", str(f))
    base = opts.media_dir or (path / "images" if (path / "images").is_dir() else path)
    c, resolve = Collector(opts.skip_bad, skipped), _resolve(opts)
    for i, name in enumerate(names):
        where = f"{names_file} line {i + 1}"

        def one(i=i, name=name.strip(), where=where):
            if not name:
                raise DataError("empty image name", where)
            image = resolve(base / name, where)
            return [Pair(image, clean_caption(captions[lang][i], f"{f} line {i + 1}"), name, f"{f} line {i + 1}",
                         language=lang) for lang, f in files.items()]

        c(one)
    return c.items


def _write_crossmodal3600(d: Path) -> tuple[str, Path]:
    keys = ["d89a4889331ce042", "74f94963ee1e135d"]
    for key in keys:
        _write_png(d / "images" / f"{key}.jpg")
    words = (("en", "a red bus"), ("ru", "красный автобус"))
    lines = [{"image/key": key, "image/locale": "en",
              **{lang: {"caption": [f"{w} {i}"], "caption/tokenized": [f"{w} {i}"],
                        "caption/tokenized/lowercase": [f"{w} {i}"]} for lang, w in words}}
             for i, key in enumerate(keys)]
    (d / "captions.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    return f"crossmodal3600:{d / 'captions.jsonl'}", d / "captions.jsonl"


@spec_kind("crossmodal3600", PAIRS, ("image",), "JSONL", "Crossmodal-3600's `captions.jsonl`: a line per image with "
           "`image/key` and, per language code, `{\"caption\": [...]}`; every caption of every language, each "
           "carrying its language; images `{image/key}.jpg` in `--image-dir` (default `images/` beside the file)",
           example=_write_crossmodal3600)
def read_crossmodal3600(path: Path, opts: ReadOptions, skipped: Skipped) -> list[Pair]:
    text = read_text(path)
    base = opts.media_dir or (path.parent / "images" if (path.parent / "images").is_dir() else path.parent)
    c, resolve = Collector(opts.skip_bad, skipped), _resolve(opts)
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 and the like may stand in a caption
        if not line.strip():
            continue

        def one(line=line, where=f"{path} line {n}"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"not valid JSON ({exc.msg})", where) from exc
            key = obj.get("image/key") if isinstance(obj, dict) else None
            if not isinstance(key, str) or not key.strip():
                raise DataError("needs an 'image/key' and one entry per language", where)
            where = f"{where} (image/key {key})"
            langs = {k: v for k, v in obj.items() if isinstance(v, dict)}
            if not langs:
                raise DataError("no language entries ({\"en\": {\"caption\": [...]}, ...})", where)
            bad = [k for k, v in langs.items() if not isinstance(v.get("caption"), list)]
            if bad:
                raise DataError(f"language {bad[0]!r}: needs a 'caption' list", where)
            image = resolve(base / f"{key.strip()}.jpg", where)
            return [Pair(image, clean_caption(cap, f"{where} {lang} caption[{k}]"), key.strip(), where, language=lang)
                    for lang, entry in langs.items() for k, cap in enumerate(entry["caption"])]

        c(one)
    return c.items
