"""The standard audio suites read in their owners' layouts (issue 22, item 1): UrbanSound8K's
10 folds, GTZAN's genre folders, AudioSet's segment lists. Each kind's own example is also
fuzzed (tests/test_format_fuzz.py) and read (tests/test_specs.py) through the registry."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from clapkit.data import specs
from clapkit.data.audio.labelled import load_labelled, write_wavs
from clapkit.errors import DataError


def _example(kind, folder):
    return next(k for k in specs.kinds(specs.LABELLED, "audio") if k.kind == kind).example(folder)


def test_urbansound8k_reads_only_the_folds_asked_for(tmp_path):
    spec, meta = _example("us8k", tmp_path)
    data = load_labelled(spec)
    assert data.class_names == ["air_conditioner", "car_horn"] and [c.fold for c in data.clips] == [1, 1, 2, 2]
    assert data.label_texts() == ["air conditioner", "car horn"]
    shutil.rmtree(tmp_path / "audio" / "fold2")
    assert [c.media.name for c in load_labelled(spec, folds=[1]).clips] == ["100852-0-0-0.wav", "100648-1-0-0.wav"]
    with pytest.raises(DataError, match=r"UrbanSound8K.csv line 4: fold folder .*fold2 not found; give --folds without"):
        load_labelled(spec)
    meta.write_text(meta.read_text().replace(",1,0,air_conditioner", ",1,1,air_conditioner", 1))
    with pytest.raises(DataError, match="classID 1 is both 'air_conditioner' and 'car_horn'|classID 1 is both"):
        load_labelled(spec, folds=[1])


def test_gtzan_in_both_releases(tmp_path):
    spec, _ = _example("gtzan", tmp_path / "kaggle")
    data = load_labelled(spec)
    assert data.class_names == ["blues", "jazz"] and [c.label for c in data.clips] == [0, 0, 1, 1]
    original = tmp_path / "marsyas" / "genres"
    for genre in ("rock", "blues", "metal"):  # the 2002 release: .au files (libsndfile reads them)
        write_wavs(original / genre, [f"{genre}.00000.au"])
    data = load_labelled(f"gtzan:{tmp_path / 'marsyas'}")
    assert data.class_names == ["blues", "metal", "rock"] and data.clips[0].media.suffix == ".au"
    write_wavs(original / "rock", ["notes.wav"])
    with pytest.raises(DataError, match=r"notes.wav: not a rock clip"):
        load_labelled(f"gtzan:{tmp_path / 'marsyas'}")
    assert load_labelled(f"gtzan:{tmp_path / 'marsyas'}", skip_bad=True).skipped.count == 1


def test_audioset_segments_with_their_class_list(tmp_path):
    spec, csv = _example("audioset", tmp_path)
    data = load_labelled(spec)
    assert data.multilabel and data.class_names == ["Speech", "Male speech, man speaking", "Dog"]
    assert [c.labels for c in data.clips] == [(0, 1), (2,), (0,)]
    (tmp_path / "Y-0BIyqJj9ZU.wav").unlink()  # a video gone from YouTube: named, or counted with --skip-bad
    with pytest.raises(DataError, match=r"eval_segments.csv line 6: no clip for -0BIyqJj9ZU at 30 s"):
        load_labelled(spec)
    kept = load_labelled(spec, skip_bad=True)
    assert len(kept.clips) == 2 and kept.skipped.count == 1
    elsewhere = tmp_path / "clips"
    elsewhere.mkdir()
    for f in tmp_path.glob("*.wav"):
        f.rename(elsewhere / f.name)
    assert len(load_labelled(spec, skip_bad=True, media_dir=elsewhere).clips) == 2  # --audio-dir
    csv.write_text(csv.read_text() + '-1AbCdEfGhI, 0.000, 10.000, "/m/unknown"\n')
    write_wavs(elsewhere, ["Y-0BIyqJj9ZU.wav"])
    with pytest.raises(DataError, match=r"line 7: label\(s\) /m/unknown not in class_labels_indices.csv"):
        load_labelled(spec, media_dir=elsewhere)


def _image_example(kind, folder):
    return next(k for k in specs.kinds(specs.LABELLED, "image") if k.kind == kind).example(folder)


def test_voc2007_is_multilabel_from_its_annotations(tmp_path):
    from clapkit.data.image.labelled import load_labelled_images

    spec, xml = _image_example("voc2007", tmp_path)
    data = load_labelled_images(spec)
    assert data.multilabel and len(data.class_names) == 20 and data.class_names[11] == "dog"
    assert [tuple(data.class_names[i] for i in c.labels) for c in data.clips] == [("dog", "person"), ("train",), ("car",)]
    xml.write_text("<annotation><object><name>unicorn</name></object></annotation>")
    with pytest.raises(DataError, match=r"000001.xml: object name\(s\) unicorn; VOC's classes are aeroplane"):
        load_labelled_images(spec)
    xml.write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"000001.xml: not valid XML"):
        load_labelled_images(spec)
    assert len(load_labelled_images(spec, skip_bad=True).clips) == 2


def test_food101_and_stl10(tmp_path):
    from clapkit.data.image.io import open_image
    from clapkit.data.image.labelled import load_labelled_images

    spec, split = _image_example("food101", tmp_path / "food")
    data = load_labelled_images(spec)
    assert data.class_names == ["Apple pie", "Baby back ribs"] and [c.label for c in data.clips] == [0, 0, 1, 1]
    split.write_text(split.read_text() + "pizza/1\n")
    with pytest.raises(DataError, match=r"test.txt line 5: 'pizza/1': expected CLASS/ID"):
        load_labelled_images(spec)
    spec, x = _image_example("stl10", tmp_path / "stl")
    data = load_labelled_images(spec)
    assert data.class_names == ["airplane", "bird"] and [c.label for c in data.clips] == [0, 1, 0]
    pixels = np.asarray(open_image(data.clips[1].media))
    plane = (np.arange(3 * 3 * 96 * 96) % 251).astype(np.uint8)[3 * 96 * 96:2 * 3 * 96 * 96].reshape(3, 96, 96)
    assert pixels.shape == (96, 96, 3) and pixels[5, 7, 2] == plane[2, 7, 5]  # column-major: row 5, column 7
    x.write_bytes(x.read_bytes()[:-1])
    with pytest.raises(DataError, match="no whole number of 3 x 96 x 96 images"):
        load_labelled_images(spec)


def test_tut2017_folds_are_its_evaluation_lists(tmp_path):
    spec, meta = _example("tut2017", tmp_path)
    data = load_labelled(spec)
    assert data.class_names == ["cafe/restaurant", "residential_area"] and [c.fold for c in data.clips] == [1, 1, 2, 2]
    assert [c.media.name for c in load_labelled(spec, folds=[2]).clips] == ["a002_10_20.wav", "b021_0_10.wav"]
    meta.write_text(meta.read_text() + "audio/missing.wav\tbus\ta9\n")
    with pytest.raises(DataError, match=r"meta.txt line 5: audio file not found: .*missing.wav"):
        load_labelled(spec)


def test_vggsound_splits_and_missing_videos(tmp_path):
    spec, csv = _example("vggsound", tmp_path)
    data = load_labelled(spec)  # test split; classes over both splits
    assert len(data.class_names) == 4 and [data.class_names[c.label] for c in data.clips] == [
        "people marching", "playing tennis", "people belly laughing"]
    with pytest.raises(DataError, match=r"vggsound.csv line 2: no clip for --0PQM4-hqg at 30 s"):
        load_labelled(spec, split="train")
    csv.write_text(csv.read_text() + "abc,5,dog barking,dev\n")
    with pytest.raises(DataError, match=r"line 5: expected youtube_id,start_seconds,label,split"):
        load_labelled(spec)


def test_imagenet_in_its_three_layouts(tmp_path):
    import shutil

    from scipy.io import savemat

    from clapkit.data.image.labelled import load_labelled_images

    spec, solution = _image_example("imagenet", tmp_path / "kaggle")  # flat + LOC_val_solution.csv
    data = load_labelled_images(spec)
    assert data.class_names == ["tench", "goldfish"] and [c.label for c in data.clips] == [0, 1, 0]
    picture = data.clips[0].media
    folders = tmp_path / "folders" / "val"  # synset folders, names read off a mapping beside them
    for wnid in ("n01443537", "n01440764"):
        (folders / wnid).mkdir(parents=True)
        shutil.copy(picture, folders / wnid / "x.JPEG")
    shutil.copy(tmp_path / "kaggle" / "LOC_synset_mapping.txt", tmp_path / "folders")
    data = load_labelled_images(f"imagenet:{tmp_path / 'folders'}")
    assert data.class_names == ["tench", "goldfish"] and data.clips[0].media.parent.name == "n01440764"
    kit = tmp_path / "devkit" / "ILSVRC2012_devkit_t12" / "data"  # the devkit's ILSVRC2012_IDs and meta.mat
    kit.mkdir(parents=True)
    synsets = np.array([(1, "n01443537", "goldfish, Carassius auratus", 0), (2, "n01440764", "tench, Tinca tinca", 0),
                        (1001, "n00000001", "fish", 2)],
                       dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")])
    savemat(kit / "meta.mat", {"synsets": synsets})
    (kit / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n1\n")
    for n in (1, 2):
        shutil.copy(picture, tmp_path / "devkit" / f"ILSVRC2012_val_{n:08d}.JPEG")
    data = load_labelled_images(f"imagenet:{tmp_path / 'devkit'}")
    assert data.class_names == ["tench", "goldfish"] and [c.label for c in data.clips] == [0, 1]
    solution.write_text(solution.read_text() + "ILSVRC2012_val_00000009,n01440764 1 2 3 4\n")
    with pytest.raises(DataError, match=r"LOC_val_solution.csv line 5: image file not found"):
        load_labelled_images(spec)


def test_each_set_reads_its_owners_published_lines(tmp_path):
    """The readers on fixtures written from a few lines of the owners' own files
    (tests/published.py), not by their own example writers."""
    import published

    from clapkit.data.image.labelled import load_labelled_images

    data = load_labelled(published.us8k(tmp_path / "us8k"))
    assert data.class_names == ["air_conditioner", "car_horn", "children_playing", "dog_bark"]
    assert [(data.class_names[c.label], c.fold) for c in data.clips] == [
        ("dog_bark", 5)] + [("children_playing", 5)] * 3 + [("car_horn", 10), ("air_conditioner", 5)]
    assert data.clips[0].source == "freesound:100032"
    data = load_labelled(published.vggsound(tmp_path / "vgg"))
    assert [data.class_names[c.label] for c in data.clips] == [
        "people marching", "bee, wasp, etc. buzzing", "people crowd", "playing mandolin", "waterfall burbling"]
    assert data.clips[0].source == "youtube:---g-f_I2yQ"
    data = load_labelled(published.audioset(tmp_path / "audioset"))
    assert [[data.class_names[i] for i in c.labels] for c in data.clips] == [
        ["Domestic animals, pets", "Squeak", "Dog", "Animal"], ["Hammer"], ["Chuckle, chortle", "Belly laugh", "Giggle"]]
    assert data.class_ids[:2] == ["/m/068hy", "/m/07q6cd_"]
    data = load_labelled(published.fsd50k(tmp_path / "FSD50K"))
    assert [[data.class_names[i] for i in c.labels] for c in data.clips] == [
        ["Gunshot_and_gunfire"], ["Bark", "Accelerating_and_revving_and_vroom"]]
    for kaggle in (False, True):
        data = load_labelled(published.gtzan(tmp_path / f"gtzan{kaggle}", kaggle))
        assert data.class_names == ["blues", "classical", "jazz"] and len(data.clips) == 6
    data = load_labelled(published.tut2017(tmp_path / "tut"))
    assert data.class_names == ["beach", "residential_area"] and [c.fold for c in data.clips] == [1, 2]
    data = load_labelled_images(published.food101(tmp_path / "food"))
    assert data.class_names == ["Apple pie", "Baby back ribs"] and [c.label for c in data.clips] == [0, 0, 1]
    data = load_labelled_images(published.imagenet_kaggle(tmp_path / "imagenet"))
    assert data.class_names == ["sea snake", "kit fox"]  # the synsets of the solution's rows, sorted
    assert sorted((c.media.name, data.class_names[c.label]) for c in data.clips) == [
        ("ILSVRC2012_val_00000001.JPEG", "sea snake"), ("ILSVRC2012_val_00008726.JPEG", "kit fox")]
