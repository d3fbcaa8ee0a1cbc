"""Fixtures in the datasets' published layouts, written from a few lines of each owner's
own file (kept here verbatim: header, quoting, separators, the rows' order), not by the
readers' ``example=`` writers, so that a misreading of a layout is not shared by the reader
and its fixture. Where a subset had to be renumbered or ids had to be picked to make a
small set, the comment says so.

Sources: ESC-50's ``meta/esc50.csv`` (the shared data's copy); UrbanSound8K's
``metadata/UrbanSound8K.csv`` (its first rows); VGGSound's ``vggsound.csv`` (no header; its
first two rows, then rows of the quoted-label form that labels with commas take);
AudioSet's ``eval_segments.csv`` (its three comment lines and first row) and
``class_labels_indices.csv``; FSD50K's ``FSD50K.ground_truth``; GTZAN's Marsyas release
(``genres/<genre>/<genre>.000NN.au``) and the Kaggle re-release (``genres_original/``,
``.wav``); TUT Acoustic Scenes 2017's ``meta.txt`` and ``evaluation_setup``; Food-101's
``meta/``; the ImageNet Kaggle release (``LOC_synset_mapping.txt``, ``LOC_val_solution.csv``,
``ILSVRC/Data/CLS-LOC/val/``)."""

from __future__ import annotations

from pathlib import Path

from clapkit.data.audio.labelled import write_wavs

US8K_CSV = ("slice_file_name,fsID,start,end,salience,fold,classID,class\n"
            "100032-3-0-0.wav,100032,0.0,0.317551,1,5,3,dog_bark\n"
            "100263-2-0-117.wav,100263,58.5,62.5,1,5,2,children_playing\n"
            "100263-2-0-121.wav,100263,60.5,64.5,1,5,2,children_playing\n"
            "100263-2-0-126.wav,100263,63.0,67.0,1,5,2,children_playing\n"
            # classIDs 0 and 1 (the reader wants every classID below the largest; file names as published, times
            # not checked against it)
            "100648-1-0-0.wav,100648,4.823402,5.471927,2,10,1,car_horn\n"
            "100852-0-0-0.wav,100852,0.0,4.0,1,5,0,air_conditioner\n")


def us8k(root: Path, extra: str = "") -> str:
    """UrbanSound8K's first rows (fold 5), two more rows (folds 10 and 5), plus ``extra`` rows."""
    (root / "metadata").mkdir(parents=True)
    (root / "metadata" / "UrbanSound8K.csv").write_text(US8K_CSV + extra)
    for line in (US8K_CSV + extra).splitlines()[1:]:
        name, _, _, _, _, fold = line.split(",")[:6]
        write_wavs(root / "audio" / f"fold{fold}", [name])
    return f"us8k:{root}"


# VGGSound: the first two rows of vggsound.csv as published, then test rows (ids picked for the fixture) in the
# form a label with commas takes there, quoted
VGGSOUND_CSV = ("---g-f_I2yQ,1,people marching,test\n"
                "--0PQM4-hqg,30,waterfall burbling,train\n"
                '-0Hh0ghk4rA,30,"bee, wasp, etc. buzzing",test\n'
                "-0SxMzaDeGA,20,people crowd,test\n"
                "-1nMd0BCZ5g,0,playing mandolin,test\n"
                "-2ZHWYV5Ss4,100,waterfall burbling,test\n")
VGGSOUND_CLIPS = ["---g-f_I2yQ_000001.wav", "-0Hh0ghk4rA_000030.wav", "-0SxMzaDeGA_20.wav", "-1nMd0BCZ5g_000000.wav",
                  "-2ZHWYV5Ss4_000100.wav"]  # the test rows, under the names the downloaders write


def vggsound(folder: Path, audio: Path | None = None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vggsound.csv").write_text(VGGSOUND_CSV)
    write_wavs(audio or folder, VGGSOUND_CLIPS)
    return f"vggsound:{folder / 'vggsound.csv'}"


# AudioSet: eval_segments.csv's header lines and first row as published, then two rows picked for the fixture; the
# class_labels_indices.csv rows of their mids (renumbered 0..n-1, as a whole file runs)
AUDIOSET_SEGMENTS = ("# Segments csv created Sun Mar  5 10:54:25 2017\n"
                     "# num_ytids=20371, num_segs=20371, num_unique_labels=527, num_positive_labels=51804\n"
                     "# YTID, start_seconds, end_seconds, positive_labels\n"
                     '--4gqARaEJE, 0.000, 10.000, "/m/068hy,/m/07q6cd_,/m/0bt9lr,/m/0jbk"\n'
                     '--BfvyPmVMo, 20.000, 30.000, "/m/03l9g"\n'
                     '-0BIyqJj9ZU, 30.000, 40.000, "/m/07rgt08,/m/07sq110,/m/07sr1lc"\n')
AUDIOSET_LABELS = ('index,mid,display_name\n0,/m/068hy,"Domestic animals, pets"\n1,/m/07q6cd_,"Squeak"\n'
                   '2,/m/0bt9lr,"Dog"\n3,/m/0jbk,"Animal"\n4,/m/03l9g,"Hammer"\n'
                   '5,/m/07rgt08,"Chuckle, chortle"\n6,/m/07sq110,"Belly laugh"\n7,/m/07sr1lc,"Giggle"\n')


def audioset(folder: Path, audio: Path | None = None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval_segments.csv").write_text(AUDIOSET_SEGMENTS)
    (folder / "class_labels_indices.csv").write_text(AUDIOSET_LABELS)
    write_wavs(audio or folder, ["Y--4gqARaEJE_0.000_10.000.wav", "Y--BfvyPmVMo_20.000_30.000.wav",
                                 "Y-0BIyqJj9ZU_30.000_40.000.wav"])
    return f"audioset:{folder / 'eval_segments.csv'}"


# FSD50K: vocabulary.csv lines (index,label,mid; renumbered 0..3, published as 0,Accelerating_and_revving_and_vroom,
# /m/07q2z82 ... 92,Gunshot_and_gunfire,/m/032s66) and eval.csv rows in its quoting; AudioSet's rows for the mids.
# Crash_cymbal is one of FSD50K's eight classes outside AudioSet's 527-class list (its mid here is the test's: any mid
# that class_labels_indices.csv lacks behaves alike)
FSD_VOCABULARY = ("0,Accelerating_and_revving_and_vroom,/m/07q2z82\n1,Bark,/m/05tny_\n2,Crash_cymbal,/m/crash_cymbal\n"
                  "3,Gunshot_and_gunfire,/m/032s66\n")
FSD_EVAL = ('fname,labels,mids\n37199,Gunshot_and_gunfire,/m/032s66\n'
            '100,"Bark,Accelerating_and_revving_and_vroom","/m/05tny_,/m/07q2z82"\n')
FSD_AUDIOSET_LABELS = ('index,mid,display_name\n0,/m/09x0r,"Speech"\n75,/m/05tny_,"Bark"\n'
                       '353,/m/07q2z82,"Accelerating, revving, vroom"\n427,/m/032s66,"Gunshot, gunfire"\n')


def fsd50k(root: Path) -> str:
    gt = root / "FSD50K.ground_truth"
    gt.mkdir(parents=True)
    (gt / "vocabulary.csv").write_text(FSD_VOCABULARY)
    (gt / "eval.csv").write_text(FSD_EVAL)
    write_wavs(root / "FSD50K.eval_audio", ["37199.wav", "100.wav"])
    return f"fsd50k:{root}"


def gtzan(root: Path, kaggle: bool = False) -> str:
    """GTZAN as Marsyas released it (``genres/blues/blues.00000.au``) or as the Kaggle
    re-release ships it (``Data/genres_original/blues/blues.00000.wav``)."""
    folder = root / "Data" / "genres_original" if kaggle else root / "genres"
    for genre in ("blues", "classical", "jazz"):
        write_wavs(folder / genre, [f"{genre}.0000{i}.{'wav' if kaggle else 'au'}" for i in range(2)])
    return f"gtzan:{root / 'Data' if kaggle else root}"


# TUT Acoustic Scenes 2017 development: meta.txt (FILE<TAB>scene<TAB>identifier) and fold lists (FILE<TAB>scene)
TUT_META = "audio/a001_0_10.wav\tresidential_area\ta001\naudio/b020_90_100.wav\tbeach\tb020\n"


def tut2017(root: Path) -> str:
    (root / "evaluation_setup").mkdir(parents=True)
    (root / "meta.txt").write_text(TUT_META)
    (root / "evaluation_setup" / "fold1_evaluate.txt").write_text("audio/a001_0_10.wav\tresidential_area\n")
    (root / "evaluation_setup" / "fold2_evaluate.txt").write_text("audio/b020_90_100.wav\tbeach\n")
    write_wavs(root / "audio", ["a001_0_10.wav", "b020_90_100.wav"])
    return f"tut2017:{root}"


def _png(path: Path) -> None:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path, format="JPEG")


def food101(root: Path) -> str:
    """``food-101/meta``'s first lines (classes.txt, labels.txt, test.txt) and the images."""
    meta = root / "food-101" / "meta"
    meta.mkdir(parents=True)
    (meta / "classes.txt").write_text("apple_pie\nbaby_back_ribs\n")
    (meta / "labels.txt").write_text("Apple pie\nBaby back ribs\n")
    (meta / "test.txt").write_text("apple_pie/1011328\napple_pie/101251\nbaby_back_ribs/1005293\n")
    for item in ("apple_pie/1011328", "apple_pie/101251", "baby_back_ribs/1005293"):
        _png(root / "food-101" / "images" / f"{item}.jpg")
    return f"food101:{root}"


def imagenet_kaggle(root: Path) -> str:
    """The Kaggle release: the mapping (three of its lines, in its wnid order) and the
    solution file's rows of two images, at the top; images in ``ILSVRC/Data/CLS-LOC/val/``."""
    root.mkdir(parents=True)
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\n"
                                                 "n01751748 sea snake\n"
                                                 "n02119789 kit fox, Vulpes macrotis\n")
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n"
                                               "ILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295\n"
                                               "ILSVRC2012_val_00000001,n01751748 156 48 272 332 n01751748 42 9 322 285\n")
    for name in ("ILSVRC2012_val_00008726", "ILSVRC2012_val_00000001"):
        _png(root / "ILSVRC" / "Data" / "CLS-LOC" / "val" / f"{name}.JPEG")
    return f"imagenet:{root}"


# ESC-50's meta/esc50.csv: its first ten rows (the shared data's copy) as published, except that the targets are
# renumbered 0..4 (the reader wants every target below the largest) and the first five rows moved to fold 1 (so the
# fold-1 cards have clips)
ESC50_ROWS = [("2-103426-A-3.wav", "cow", "103426", "A"), ("2-103427-A-3.wav", "cow", "103427", "A"),
              ("2-103428-A-3.wav", "cow", "103428", "A"), ("2-104105-A-19.wav", "thunderstorm", "104105", "A"),
              ("2-104105-B-19.wav", "thunderstorm", "104105", "B"), ("2-104168-A-32.wav", "keyboard_typing", "104168", "A"),
              ("2-104475-A-37.wav", "clock_alarm", "104475", "A"), ("2-104476-A-37.wav", "clock_alarm", "104476", "A"),
              ("2-104877-A-3.wav", "cow", "104877", "A"), ("2-104952-A-16.wav", "wind", "104952", "A")]


def esc50(root: Path, seconds: float = 0.5) -> Path:
    """ESC-50's layout with ESC50_ROWS, a tone per class (8 kHz, 16-bit WAV)."""
    import numpy as np
    import soundfile as sf

    target = {}
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for i, (name, cat, src, take) in enumerate(ESC50_ROWS):
        target.setdefault(cat, len(target))
        lines.append(f"{name},{1 if i < 5 else 2},{target[cat]},{cat},False,{src},{take}")
        t = np.arange(int(seconds * 8000)) / 8000
        sf.write(root / "audio" / name, (0.2 * np.sin(2 * np.pi * (200 + 150 * target[cat]) * t)).astype(np.float32),
                 8000, subtype="PCM_16")
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root


# XTD10 (adobe-research/Cross-lingual-Test-Dataset-XTD10, commit d77ff16): the first three lines of
# XTD10/test_image_names.txt and of each language's caption file, aligned line by line, in their own line endings:
# en, de (MIC/), jp (STAIR/) end each line with LF; es, ru, zh with CRLF and their last line with none (each file as
# published ends so); the folder each language is read from is CLIP_benchmark's (clip_benchmark/datasets/xtd10.py)
XTD10_IMAGES = "COCO_train2014_000000061844.jpg\nCOCO_train2014_000000061849.jpg\nCOCO_train2014_000000061850.jpg\n"
XTD10_CAPTIONS = {
    ("XTD10", "en"): "major league baseball game with player from pittsburgh pirates crossing home plate\n"
                     "a cat with its paws on a computer mouse at a desk\n"
                     "flock of birds taking off from water near long pier on open ocean\n",
    ("XTD10", "es"): "partido de béisbol de gran liga con jugador de los pittsburgh pirates cruzando la base del "
                     "plateador\r\ngato con sus garras en un ratón de ordenador en una mesa de trabajo\r\n"
                     "pájaros despegando del agua cerca de un largo muelle en mar abierto",
    ("XTD10", "ru"): "игра основной бейсбольной лиги\r\nкот положил лапы на компьютерную мышь на столе\r\n"
                     "стая птиц взлетает с воды возле длинного пирса в открытом море",
    ("XTD10", "zh"): "棒球大联盟联赛上，匹兹堡海盗队的球员穿过本垒\r\n一只猫将爪子放在桌子上的电脑鼠标上\r\n一群鸟长桥墩附近的海面起飞",
    ("MIC", "de"): "Oberliga Basketball Spiel mit Spieler von Pittsburgh Pirates gehen durch die Heimat\n"
                   "Eine Katze spielt mit seinen Pfoten an einer Computer-Maus auf einem Schreibtisch .\n"
                   "Vogelschwarm Das Starten von Wasser in der Nähe von langen Pier am offenen Meer .\n",
    ("STAIR", "jp"): "黒いユニフォームのランナーがホームに帰ってきた\nマウスの上に猫の手が乗っている\nたくさんの海鳥が空から降りてきた\n",
}


def xtd10(root: Path) -> str:
    """XTD10's repository layout with the lines above and the three COCO images in ``ROOT/images``
    (where CLIP_benchmark unpacks its images.tar.gz)."""
    (root / "XTD10").mkdir(parents=True)
    (root / "XTD10" / "test_image_names.txt").write_bytes(XTD10_IMAGES.encode())
    for (folder, lang), text in XTD10_CAPTIONS.items():
        (root / folder).mkdir(exist_ok=True)
        (root / folder / f"test_1kcaptions_{lang}.txt").write_bytes(text.encode())
    for name in XTD10_IMAGES.split():
        _png(root / "images" / name)
    return f"xtd10:{root}"


# Crossmodal-3600 (google/crossmodal-3600, web-data/captions.zip -> captions.jsonl): a line per image with
# "image/key", "image/locale" and, per language code, {"caption": [...], "caption/tokenized": [...],
# "caption/tokenized/lowercase": [...]} (the keys CLIP_benchmark's crossmodal3600.py, HELM's and SEACrowd's loaders
# read); the image keys are the first three of web-data/image_ids.txt. captions.zip is not in the stored snapshot, so
# the captions are written for the fixture (the image -> language -> caption list shape as published, 1-2 a language)
XM3600_KEYS = ["d89a4889331ce042", "74f94963ee1e135d", "eb4cdfd93268c52c"]
XM3600_CAPTIONS = [
    {"en": ["A red bus on a city street.", "A double-decker bus parked by the road."], "de": ["Ein roter Bus."],
     "ja": ["街の通りを走る赤いバス。"], "ru": ["Красный автобус на улице."]},
    {"en": ["A dog sleeping on a sofa."], "de": ["Ein Hund schläft auf dem Sofa.", "Ein Hund auf einem Sofa."],
     "ja": ["ソファで寝ている犬。"], "ru": ["Собака спит на диване."]},
    {"en": ["Fresh vegetables at a market stall."], "de": ["Frisches Gemüse auf dem Markt."],
     "ja": ["市場の新鮮な野菜。", "野菜が並ぶ屋台。"], "ru": ["Свежие овощи на рынке."]},
]


def crossmodal3600(folder: Path) -> str:
    """``captions.jsonl`` with the three lines above and ``images/{image/key}.jpg`` beside it."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, by_lang, locale in zip(XM3600_KEYS, XM3600_CAPTIONS, ("en", "de", "ja"), strict=True):
        entries = {lang: {"caption": caps, "caption/tokenized": caps,
                          "caption/tokenized/lowercase": [c.lower() for c in caps]} for lang, caps in by_lang.items()}
        lines.append(json.dumps({"image/key": key, "image/locale": locale, **entries}, ensure_ascii=False))
        _png(folder / "images" / f"{key}.jpg")
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"crossmodal3600:{folder / 'captions.jsonl'}"
