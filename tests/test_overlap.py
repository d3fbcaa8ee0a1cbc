"""`clapkit audit overlap`: the same recording in training and evaluation data, by source
id, decoded content, perceptual hash and embedding, on copies of the shared ESC-50 clips."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf
from test_cli import clapkit

from clapkit.audit.overlap import content_hash, embedding_matches, perceptual_hash
from clapkit.errors import ConfigError, DataError


def _esc50_rows(shared_data):
    with open(shared_data / "esc50" / "meta" / "esc50.csv", newline="") as fh:
        return list(csv.DictReader(fh))


HEADER = "filename,fold,target,category,esc10,src_file,take\n"


def _copies(tmp_path, shared_data):
    """An evaluation set in ESC-50's original layout (PCM 16-bit WAV, as the release ships
    it) made of four shared clips, and a training caption CSV of: a FLAC re-encode, a renamed
    copy and a shifted copy of three of them, and a clip of another fold."""
    rows = _esc50_rows(shared_data)
    picked = [r for r in rows if r["fold"] in ("5", "3")] + [r for r in rows if r["fold"] == "2"][:2]
    shared = shared_data / "esc50" / "audio"
    root = tmp_path / "esc-eval"
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    waves = []
    for r in picked:
        wave, sr = sf.read(shared / r["filename"].replace(".wav", ".ogg"), dtype="float32")
        sf.write(root / "audio" / r["filename"], wave, sr, subtype="PCM_16")
        waves.append(sf.read(root / "audio" / r["filename"], dtype="int16"))
    dense = {c: i for i, c in enumerate(sorted({r["category"] for r in picked[:4]}))}  # ESC-50's targets are 0..n-1
    (root / "meta" / "esc50.csv").write_text(HEADER + "".join(
        ",".join(str(dense[r["category"]]) if k == "target" else r[k] for k in HEADER.strip().split(",")) + "\n"
        for r in picked[:4]))
    folder = tmp_path / "copies"
    folder.mkdir()
    (a, sr), (b, _), (c, _), _, (d, _) = waves
    sf.write(folder / "reencoded.flac", a, sr, subtype="PCM_16")
    sf.write(folder / "renamed_copy.wav", b, sr, subtype="PCM_16")
    sf.write(folder / "shifted.wav", np.r_[np.zeros(sr // 4, np.int16), c[: -(sr // 4)]], sr, subtype="PCM_16")
    sf.write(folder / "unrelated.wav", d, sr, subtype="PCM_16")
    manifest = folder / "train.csv"
    manifest.write_text("audio,caption\n" + "".join(f"{n},a sound {i}\n{n},another caption {i}\n" for i, n in enumerate(
        ["reencoded.flac", "renamed_copy.wav", "shifted.wav", "unrelated.wav"])))
    return manifest, root, picked[:4]


def test_content_hash_sees_through_re_encoding_and_names_but_not_a_shift(tmp_path, shared_data):
    manifest, root, evaluated = _copies(tmp_path, shared_data)
    folder, audio = manifest.parent, root / "audio"
    assert content_hash("audio", folder / "reencoded.flac") == content_hash("audio", audio / evaluated[0]["filename"])
    assert content_hash("audio", folder / "renamed_copy.wav") == content_hash("audio", audio / evaluated[1]["filename"])
    assert content_hash("audio", folder / "shifted.wav") != content_hash("audio", audio / evaluated[2]["filename"])
    float_copy = tmp_path / "float.wav"  # the same samples as 32-bit float
    sf.write(float_copy, sf.read(audio / evaluated[0]["filename"], dtype="float32")[0], 16000, subtype="FLOAT")
    assert content_hash("audio", float_copy) == content_hash("audio", audio / evaluated[0]["filename"])


def test_audit_overlap_finds_each_copy_by_its_rule_and_writes_a_clean_manifest(tmp_path, shared_data):
    manifest, eval_root, evaluated = _copies(tmp_path, shared_data)
    # an ESC-50 layout whose one clip is another take of an evaluated clip's Freesound recording
    root = tmp_path / "esc-train"
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    e = evaluated[3]
    take = f"1-{e['src_file']}-Z-{e['target']}.wav"
    sf.write(root / "audio" / take, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    (root / "meta" / "esc50.csv").write_text(HEADER + f"{take},1,0,{e['category']},False,{e['src_file']},Z\n")
    out = tmp_path / "report"
    clean = tmp_path / "clean.csv"
    proc = clapkit("audit", "overlap", "--train", f"csv:{manifest}", "--train", f"esc50:{root}", "--eval",
                   f"esc50:{eval_root}", "--out", out, "--write-clean", clean)  # no model: id and content
    r = json.loads((out / "overlap.json").read_text())
    assert r["eval_items"] == 4 and r["train_items"] == 5
    by_train = {p["train"].rsplit("/", 1)[-1]: p for p in r["pairs"]}
    assert by_train["reencoded.flac"]["eval"].endswith(evaluated[0]["filename"])
    assert by_train["reencoded.flac"]["rule"] == "content" and r["rules"] == ["id", "content"]
    assert by_train["renamed_copy.wav"]["rule"] == "content"
    assert by_train["renamed_copy.wav"]["eval"].endswith(evaluated[1]["filename"])
    assert by_train[take]["rule"] == "id" and by_train[take]["source"] == f"freesound:{e['src_file']}"
    assert by_train[take]["eval"].endswith(e["filename"])
    assert "unrelated.wav" not in by_train
    assert r["per_rule"]["id"] == {"pairs": 1, "eval_items": 1} and r["per_rule"]["content"]["pairs"] == 2
    assert sum(v["matched"] for v in r["per_class"].values()) == r["eval_items_matched"]
    assert r["notes"]["id"] == {"train": 1, "eval": 4}  # the caption CSV has no source ids
    # the clean manifest: every pair of a matched training item dropped, the others kept, readable by training
    with open(clean, newline="") as fh:
        kept = list(csv.DictReader(fh))
    names = {row["audio"].rsplit("/", 1)[-1] for row in kept}
    assert "unrelated.wav" in names and not names & {"reencoded.flac", "renamed_copy.wav", take}
    assert r["clean"]["pairs_dropped"] == 2 + 2 + 1 and "shifted.wav" in names  # a shift is no content match
    from clapkit.data.files import Skipped
    from clapkit.data.specs import ReadOptions, read_pairs

    assert len(read_pairs(f"csv:{clean}", ReadOptions("audio"), Skipped())) == len(kept)
    assert "summary.md" in proc.stdout and (out / "summary.md").read_text().startswith("# Overlap")


def test_the_shifted_copy_is_found_by_embedding_and_disjoint_folds_share_nothing(tmp_path, shared_data, tiny_checkpoint):
    from clapkit.inference.embed import embed_media
    from clapkit.models.dual import DualEncoder

    manifest, eval_root, evaluated = _copies(tmp_path, shared_data)
    net = DualEncoder.load(tiny_checkpoint)

    from clapkit.data.records import Pair

    e = embed_media(net, [Pair(f, "", str(f), str(f)) for f in (manifest.parent / "shifted.wav",
                                                              eval_root / "audio" / evaluated[2]["filename"])])
    cosine = float(e[0] @ e[1])
    out = tmp_path / "shift"
    clapkit("audit", "overlap", "--train", f"csv:{manifest}", "--eval", f"esc50:{eval_root}", "--out", out, "--model", tiny_checkpoint, "--rules", "content,embedding", "--threshold",
            str(cosine - 1e-4), "--device", "cpu")
    report = json.loads((out / "overlap.json").read_text())
    pairs = report["pairs"]
    spread = report["notes"]["embedding"]["nearest_cosine_percentiles"]
    assert set(spread) == {"50", "90", "99"} and spread["50"] <= spread["90"] <= spread["99"] <= 1 + 1e-6
    shifted = [p for p in pairs if p["train"].endswith("shifted.wav") and p["eval"].endswith(evaluated[2]["filename"])]
    assert shifted and shifted[0]["rule"] == "embedding" and shifted[0]["similarity"] == pytest.approx(cosine, abs=1e-4)
    # ESC-50 keeps every take of a recording in one fold: folds 2 and 4 share no source and no content
    out = tmp_path / "folds"
    clapkit("audit", "overlap", "--train", f"esc50:{shared_data / 'esc50'}", "--train-folds", "2,3,5", "--eval",
            f"esc50:{shared_data / 'esc50'}", "--eval-folds", "4", "--out", out)
    r = json.loads((out / "overlap.json").read_text())
    assert r["train_items"] == 14 and r["eval_items"] == 400 and r["pairs"] == [] and r["rules"] == ["id", "content"]
    assert r["notes"]["id"] == {"train": 14, "eval": 400}


def test_embedding_matches_are_exact_at_the_threshold():
    rng = np.random.default_rng(0)
    train, evaluate = rng.normal(size=(300, 16)), rng.normal(size=(40, 16))
    evaluate[:5] = train[[3, 7, 7, 100, 299]] + 0.01 * rng.normal(size=(5, 16))
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    sims = unit(evaluate) @ unit(train).T
    threshold = float(np.sort(sims.ravel())[-12])  # exactly 12 pairs at or above it
    got = embedding_matches(train, evaluate, threshold)
    want = {(int(t), int(q)) for q, t in zip(*np.nonzero(sims >= threshold), strict=True)}
    assert {(t, q) for t, q, _ in got} == want and len(want) == 12
    assert all(abs(s - sims[q, t]) < 1e-5 for t, q, s in got)


def test_perceptual_hash_matches_a_resized_recompressed_picture(tmp_path, shared_data):
    from clapkit.data.image.io import open_image

    pictures = sorted((shared_data / "images" / "emoji").rglob("*.png"))[:2]
    open_image(pictures[0]).resize((48, 48)).save(tmp_path / "small.jpg", quality=80)  # the picture as shown, on white
    near = bin(perceptual_hash(pictures[0]) ^ perceptual_hash(tmp_path / "small.jpg")).count("1")
    far = bin(perceptual_hash(pictures[0]) ^ perceptual_hash(pictures[1])).count("1")
    assert near <= 4 < far


def test_bad_rule_choices_are_errors():
    from clapkit.audit.overlap import Side, find_overlap

    empty = Side(["x"], [], [])
    with pytest.raises(ConfigError, match="choose from id, content, perceptual, embedding"):
        find_overlap(empty, empty, "audio", ["hash"])
    with pytest.raises(ConfigError, match="perceptual hash is for images"):
        find_overlap(empty, empty, "audio", ["perceptual"])
    with pytest.raises(ConfigError, match="needs --model"):
        find_overlap(empty, empty, "audio", ["embedding"])


def test_audit_overlap_of_pictures_by_content_and_perceptual_hash(tmp_path, shared_data):
    from clapkit.data.image.io import open_image

    pictures = sorted((shared_data / "images" / "emoji").rglob("*.png"))[:3]
    (tmp_path / "eval.csv").write_text("image,label\n" + "".join(f"{p},c{i % 2}\n" for i, p in enumerate(pictures)))
    open_image(pictures[0]).resize((48, 48)).save(tmp_path / "small.jpg", quality=80)
    (tmp_path / "train.csv").write_text(f"image,caption\nsmall.jpg,a small copy\n{pictures[1]},the same file\n")
    out = tmp_path / "out"
    clapkit("audit", "overlap", "--train", f"csv:{tmp_path / 'train.csv'}", "--eval", f"csv:{tmp_path / 'eval.csv'}",
            "--medium", "image", "--out", out)
    r = json.loads((out / "overlap.json").read_text())
    assert r["rules"] == ["id", "content", "perceptual"] and r["eval_items_matched"] == 2
    rule = {p["train"].rsplit("/", 1)[-1]: (p["rule"], p["eval"]) for p in r["pairs"]}
    assert rule["small.jpg"] == ("perceptual", str(pictures[0])) and rule[pictures[1].name] == ("content", str(pictures[1]))
    assert r["per_class"]["c0"] == {"items": 2, "matched": 1, "id": 0, "content": 0, "perceptual": 1}


def test_a_source_id_that_cannot_be_parsed_names_the_row_or_is_skipped(tmp_path, shared_data):
    from clapkit.data.audio.labelled import load_labelled

    root = tmp_path / "esc"
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    for name in ("1-100-A-0.wav", "1-101-A-0.wav"):
        sf.write(root / "audio" / name, np.zeros(800, np.float32), 8000)
    (root / "meta" / "esc50.csv").write_text(HEADER + "1-100-A-0.wav,1,0,dog,False,100,A\n"
                                             "1-101-A-0.wav,1,0,dog,False,freesound-101,A\n")
    with pytest.raises(DataError, match=r"esc50.csv line 3: src_file 'freesound-101' is not a Freesound id"):
        load_labelled(f"esc50:{root}")
    data = load_labelled(f"esc50:{root}", skip_bad=True)
    assert [c.source for c in data.clips] == ["freesound:100"] and data.skipped.count == 1


def test_audit_model_and_bench_report_overlap_beside_leakage(tmp_path, shared_data, tiny_checkpoint):
    import yaml

    manifest, eval_root, evaluated = _copies(tmp_path, shared_data)
    out = tmp_path / "audit"
    proc = clapkit("audit", "model", "--model", tiny_checkpoint, "--data", f"esc50:{eval_root}", "--out", out,
                   "--train-data", f"csv:{manifest}", "--device", "cpu")
    o = json.loads((out / "report.json").read_text())["overlap"]
    assert o["eval_items_matched"] == 2 and o["per_rule"]["content"]["eval_items"] == 2  # the re-encoded and renamed
    assert o["top1_overlapping"]["n"] == 2 and o["top1_not_overlapping"]["n"] == 2
    assert "in the training data: 2 of 4" in proc.stdout and "## Are evaluation recordings" in (out / "report.md").read_text()
    bench = {"models": [{"name": "ours", "model": str(tiny_checkpoint), "train_data": [f"csv:{manifest}"]}],
             "tasks": [{"name": "esc", "data": f"esc50:{eval_root}", "type": "zeroshot"}], "bootstrap": 0}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    clapkit("bench", "--config", path, "--out", tmp_path / "b", "--device", "cpu")
    rows = {r["metric"]: r for r in csv.DictReader(open(tmp_path / "b" / "results.csv", newline=""))}
    assert float(rows["overlap_fraction"]["value"]) == 0.5 and rows["overlap_fraction"]["n"] == "4"
    top1 = float(rows["top1"]["value"])
    both = [rows[k] for k in ("top1_overlapping", "top1_not_overlapping")]
    assert [r["n"] for r in both] == ["2", "2"]
    assert top1 == pytest.approx(sum(float(r["value"]) * 2 for r in both) / 4)
    assert o["top1_overlapping"]["value"] == pytest.approx(float(both[0]["value"]))


def test_source_ids_match_across_datasets(tmp_path):
    """The id rule for every format that names a source, each in its owner's layout
    (tests/published.py): Clotho's sound_id (from clotho_metadata_<split>.csv beside the
    captions) against UrbanSound8K's fsID and FSD50K's fname (Freesound ids across
    datasets), and AudioCaps' youtube_id against AudioSet's and VGGSound's YTIDs."""
    import published

    from clapkit.data.audio.labelled import write_wavs

    clotho = tmp_path / "clotho"
    clotho.mkdir()
    (clotho / "clotho_captions_development.csv").write_text(
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
        "Distorted AM Radio noise.wav,A muddled noise of broken channel of the TV,A television blares the rhythm of a "
        "static TV.,Loud television static dips in and out of focus,The loud buzz of static constantly changes pitch and "
        "volume.,heavy static and the beginnings of a signal on a transistor radio\n"
        "Paper_Parchment_Rustling.wav,A person is turning a map over and over.,A person is very carefully rapping a "
        "gift for someone else.,A person is very carefully wrapping a gift for someone else.,\"He sighed as he turned "
        "the pages of the book, stopping to scan the information.\",\"papers are being turned, stopped, then turned "
        "again and someone is breathing.\"\n")
    # Clotho's metadata header; the rows' sound ids are the test's: those of an UrbanSound8K and an FSD50K clip
    (clotho / "clotho_metadata_development.csv").write_text(
        "file_name,keywords,sound_id,sound_link,start_end_samples,manufacturer,license\n"
        "Distorted AM Radio noise.wav,noise;radio,100032,https://freesound.org/people/x/sounds/100032,,x,"
        "http://creativecommons.org/licenses/by/3.0/\n"
        "Paper_Parchment_Rustling.wav,paper;rustling,37199,https://freesound.org/people/y/sounds/37199,,y,"
        "http://creativecommons.org/publicdomain/zero/1.0/\n")
    write_wavs(clotho, ["Distorted AM Radio noise.wav", "Paper_Parchment_Rustling.wav"])
    audiocaps = tmp_path / "audiocaps"
    audiocaps.mkdir()
    (audiocaps / "train.csv").write_text(  # the first row as published, then rows of the evaluation sets' videos
        "audiocap_id,youtube_id,start_time,caption\n91139,r1nicOVtvkQ,130,A woman talks nearby as water pours\n"
        "1,--4gqARaEJE,0,A dog barks and squeaks\n2,---g-f_I2yQ,1,People march in step\n")
    write_wavs(audiocaps, ["r1nicOVtvkQ_130.wav", "--4gqARaEJE_0.wav", "---g-f_I2yQ_1.wav"])
    train = ["--train", f"clotho:{clotho / 'clotho_captions_development.csv'}", "--train",
             f"audiocaps:{audiocaps / 'train.csv'}"]
    expected = {"us8k": ("freesound:100032", "100032-3-0-0.wav"), "fsd50k": ("freesound:37199", "37199.wav"),
                "audioset": ("youtube:--4gqARaEJE", "Y--4gqARaEJE_0.000_10.000.wav"),
                "vggsound": ("youtube:---g-f_I2yQ", "---g-f_I2yQ_000001.wav")}
    sets = {"us8k": published.us8k(tmp_path / "us8k"), "fsd50k": published.fsd50k(tmp_path / "FSD50K"),
            "audioset": published.audioset(tmp_path / "audioset"), "vggsound": published.vggsound(tmp_path / "vgg")}
    for name, spec in sets.items():
        out = tmp_path / f"overlap-{name}"
        clapkit("audit", "overlap", *train, "--eval", spec, "--out", out, "--rules", "id")
        r = json.loads((out / "overlap.json").read_text())
        source, clip = expected[name]
        assert [(p["source"], p["eval"].rsplit("/", 1)[-1]) for p in r["pairs"]] == [(source, clip)], name
        assert r["per_rule"]["id"] == {"pairs": 1, "eval_items": 1}, name
