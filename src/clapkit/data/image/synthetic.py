"""The embedded synthetic image-caption set of ``clapkit demo --modality image``.

The image twin of :mod:`clapkit.data.audio.synthetic`: pictures are drawn from three
attributes, size (small / large), colour (red / green / blue / yellow) and shape
(circle / square / triangle / cross), on a noisy background, with a texture (plain,
striped, dotted) and position that vary freely. Class names are descriptive
("large red circle"); captions use synonyms and varied wording ("a big crimson disc
with stripes"). 8 of the 32 combinations are *never used in training*, while each of
their words is, so they can only be classified zero-shot by composing what was learnt.
Everything comes from a seeded generator: the same seed writes the same files.

Written layout (the formats clapkit reads)::

    train.csv            image,caption  - pairs of the seen classes (several captions per image)
    test.csv             image,caption  - held-out images of the seen classes (retrieval)
    unseen/<class>/*.png folder-per-class set of the never-seen classes (zero-shot)
    seen/<class>/*.png   folder-per-class set of held-out seen-class images
    classes.json         class names, which are unseen, generation settings
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..audio.synthetic import held_out_combinations

SIZES = {"small": (0.22, 0.32), "large": (0.55, 0.75)}  # shape extent as a fraction of the picture
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40)}
SHAPES = ("circle", "square", "triangle", "cross")
TEXTURES = ("plain", "striped", "dotted")

WORDS = {
    "small": ("small", "tiny", "little"),
    "large": ("large", "big", "huge"),
    "red": ("red", "crimson", "scarlet"),
    "green": ("green", "emerald", "lime"),
    "blue": ("blue", "navy", "azure"),
    "yellow": ("yellow", "golden", "lemon"),
    "circle": ("circle", "disc", "round dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge", "three-sided shape"),
    "cross": ("cross", "plus sign", "x shape"),
}
TEXTURE_WORDS = {"plain": ("", "solid"), "striped": ("with stripes", "striped"), "dotted": ("with dots", "spotted")}
TEMPLATES = (
    "a {size} {colour} {shape}",
    "a picture of a {size} {colour} {shape}",
    "a {colour} {shape}, {size}",
    "there is a {size} {shape} in {colour}",
    "a drawing of a {size} {colour} {shape} on a grey background",
    "{size} {colour} {shape}",
)


def class_name(size: str, colour: str, shape: str) -> str:
    return f"{size} {colour} {shape}"


def all_classes() -> list[tuple[str, str, str]]:
    return list(itertools.product(SIZES, COLOURS, SHAPES))


def unseen_classes() -> list[tuple[str, str, str]]:
    """8 of the 32 combinations; every word and every (colour, shape) pair still occurs
    in a seen class (with the other size)."""
    return held_out_combinations(list(SIZES), list(COLOURS), SHAPES)


def draw_image(size: str, colour: str, shape: str, rng: np.random.Generator, pixels: int = 64) -> tuple[Image.Image, str]:
    """One picture of the class and its texture (random, as are position, shade and background)."""
    bg = rng.integers(90, 170)
    base = rng.normal(bg, 12, (pixels, pixels, 1)).clip(0, 255).repeat(3, axis=2).astype(np.uint8)
    im = Image.fromarray(base)
    extent = rng.uniform(*SIZES[size]) * pixels
    cx = rng.uniform(extent / 2, pixels - extent / 2)
    cy = rng.uniform(extent / 2, pixels - extent / 2)
    shade = np.clip(np.array(COLOURS[colour]) * rng.uniform(0.8, 1.1), 0, 255).astype(int)
    fill = tuple(int(v) for v in shade)
    mask = Image.new("L", (pixels, pixels), 0)
    d = ImageDraw.Draw(mask)
    h = extent / 2
    if shape == "circle":
        d.ellipse([cx - h, cy - h, cx + h, cy + h], fill=255)
    elif shape == "square":
        d.rectangle([cx - h, cy - h, cx + h, cy + h], fill=255)
    elif shape == "triangle":
        a = rng.uniform(0, 2 * math.pi / 3)
        d.polygon([(cx + h * math.cos(a + k * 2 * math.pi / 3), cy + h * math.sin(a + k * 2 * math.pi / 3))
                   for k in range(3)], fill=255)
    else:
        w = max(1.0, extent / 6)
        d.rectangle([cx - h, cy - w, cx + h, cy + w], fill=255)
        d.rectangle([cx - w, cy - h, cx + w, cy + h], fill=255)
    texture = TEXTURES[rng.integers(len(TEXTURES))]
    layer = np.zeros((pixels, pixels, 3), np.uint8) + np.array(fill, np.uint8)
    if texture != "plain":
        yy, xx = np.mgrid[:pixels, :pixels]
        period = int(rng.integers(4, 7))
        dark = (yy % period < period // 2) if texture == "striped" else ((yy % period < 2) & (xx % period < 2))
        layer[dark] = (layer[dark] * 0.55).astype(np.uint8)
    im.paste(Image.fromarray(layer), (0, 0), mask)
    return im, texture


def caption(size: str, colour: str, shape: str, texture: str, rng: np.random.Generator) -> str:
    tpl = TEMPLATES[rng.integers(len(TEMPLATES))]
    words = {k: WORDS[v][rng.integers(3)] for k, v in (("size", size), ("colour", colour), ("shape", shape))}
    text = tpl.format(**words)
    extra = TEXTURE_WORDS[texture][rng.integers(2)]
    if extra and rng.random() < 0.5:
        text = f"{text} {extra}" if extra.startswith("with") else f"{text}, {extra}"
    return text[0].upper() + text[1:] + "."


def write_synthetic_images(
    out: str | Path, seed: int = 0, pixels: int = 64,
    train_images: int = 24, test_images: int = 4, unseen_images: int = 12, captions_per_image: int = 3,
) -> dict:
    """Write the set to ``out``; returns the contents of ``classes.json``."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    unseen = set(unseen_classes())
    train_rows, test_rows = [], []

    def write(rel: str, cls: tuple[str, str, str]) -> str:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        im, texture = draw_image(*cls, rng, pixels)
        im.save(path)
        return texture

    for cls in all_classes():
        name = class_name(*cls).replace(" ", "_")
        if cls in unseen:
            for k in range(unseen_images):
                write(f"unseen/{name}/{name}_{k:02d}.png", cls)
            continue
        for k in range(train_images):
            rel = f"images/{name}_{k:02d}.png"
            texture = write(rel, cls)
            train_rows += [(rel, caption(*cls, texture, rng)) for _ in range(captions_per_image)]
        for k in range(test_images):
            rel = f"seen/{name}/{name}_test{k:02d}.png"
            texture = write(rel, cls)
            test_rows += [(rel, caption(*cls, texture, rng)) for _ in range(2)]
    for fname, rows in (("train.csv", train_rows), ("test.csv", test_rows)):
        with open(out / fname, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image", "caption"])
            w.writerows(rows)
    meta = {
        "classes": [class_name(*c) for c in all_classes()],
        "unseen": [class_name(*c) for c in all_classes() if c in unseen],
        "seed": seed, "pixels": pixels, "train_pairs": len(train_rows), "test_pairs": len(test_rows),
    }
    (out / "classes.json").write_text(json.dumps(meta, indent=2))
    return meta
