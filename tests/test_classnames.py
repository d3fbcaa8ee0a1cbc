"""Class-name files are applied by name, never by position (issue 29, item 2), on data
and label files written from a few lines of their owners' published files: VGGSound's
``vggsound.csv`` (no header; a label with commas quoted), LAION-CLAP's
``class_labels/VGGSound_class_labels_indices.json`` and ``FSD50k_class_labels_indices.json``
(its own tag indices: "people crowd" is 0, "Whispering" is 0), FSD50K's ``vocabulary.csv``
(``index,label,mid``) and AudioSet's ``class_labels_indices.csv``."""

from __future__ import annotations

import json

import pytest
from test_cli import clapkit

from clapkit.errors import ClapkitError

# vggsound.csv: the first two rows as published, then rows of the quoted-label form
VGGSOUND_CSV = ("---g-f_I2yQ,1,people marching,test\n"
                "--0PQM4-hqg,30,waterfall burbling,train\n"
                '-0Hh0ghk4rA,30,"bee, wasp, etc. buzzing",test\n'
                "-0SxMzaDeGA,20,people crowd,test\n"
                "-1nMd0BCZ5g,0,playing mandolin,test\n"
                "-2ZHWYV5Ss4,100,waterfall burbling,test\n")
# LAION-CLAP's indices for these labels, as its VGGSound file has them (309 entries there)
LAION_VGGSOUND = {"people crowd": 0, "playing mandolin": 1, "bee, wasp, etc. buzzing": 14, "people marching": 105,
                  "waterfall burbling": 175}


def _vggsound(tmp_path):
    from clapkit.data.audio.labelled import write_wavs

    (tmp_path / "vggsound.csv").write_text(VGGSOUND_CSV)
    write_wavs(tmp_path, ["---g-f_I2yQ_000001.wav", "-0Hh0ghk4rA_000030.wav", "-0SxMzaDeGA_20.wav",
                          "-1nMd0BCZ5g_000000.wav", "-2ZHWYV5Ss4_000100.wav"])
    return f"vggsound:{tmp_path / 'vggsound.csv'}"


def test_a_laion_name_to_index_map_is_matched_by_name(tmp_path):
    from clapkit.data.audio.labelled import load_labelled
    from clapkit.evaluation.prompts import load_classnames, zeroshot_texts

    data = load_labelled(_vggsound(tmp_path))
    # the data's classes: its labels, sorted (the comma label read whole from its quotes)
    assert data.class_names == ["bee, wasp, etc. buzzing", "people crowd", "people marching", "playing mandolin",
                                "waterfall burbling"]
    labels = tmp_path / "VGGSound_class_labels_indices.json"
    labels.write_text(json.dumps(LAION_VGGSOUND))
    assert load_classnames(str(labels), data.class_names) == data.class_names  # each class its own name
    texts = zeroshot_texts(data.class_names, "audio", None, str(labels))
    assert texts.texts[1] == ["This is a sound of people crowd."] and texts.classnames == str(labels)
    # the file's spelling goes into the prompts; '_', spaces and case are set aside in matching
    labels.write_text(json.dumps({"People_Crowd": 0, "playing  mandolin": 1, "bee, wasp, etc. buzzing": 14,
                                  "people marching": 105, "waterfall burbling": 175}))
    assert load_classnames(str(labels), data.class_names)[1:4] == ["People_Crowd", "people marching",
                                                                    "playing  mandolin"]
    labels.write_text(json.dumps({k: v for k, v in LAION_VGGSOUND.items() if k != "people marching"}))
    with pytest.raises(ClapkitError, match=r"VGGSound_class_labels_indices.json: the data's class 'people marching' "
                                           r"has no entry"):
        load_classnames(str(labels), data.class_names)
    labels.write_text(json.dumps({**LAION_VGGSOUND, "People Crowd": 309}))
    with pytest.raises(ClapkitError, match=r"entries 'people crowd', 'People Crowd' both match the data's class "
                                           r"'people crowd'"):
        load_classnames(str(labels), data.class_names)
    listed = tmp_path / "names.json"  # a plain list keeps its meaning: one name per class, in class order
    listed.write_text(json.dumps(["bees", "crowd", "march", "mandolin", "waterfall"]))
    assert load_classnames(str(listed), data.class_names) == ["bees", "crowd", "march", "mandolin", "waterfall"]


def test_eval_zeroshot_with_laions_vggsound_file_prompts_each_class_by_its_name(tmp_path, tiny_checkpoint):
    spec = _vggsound(tmp_path)
    labels = tmp_path / "VGGSound_class_labels_indices.json"
    labels.write_text(json.dumps(LAION_VGGSOUND))
    out = tmp_path / "zs.json"
    clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", spec, "--classnames", labels, "--bootstrap", "0",
            "--out", out)
    m = json.loads(out.read_text())
    assert m["class_names_used"] == ["bee, wasp, etc. buzzing", "people crowd", "people marching", "playing mandolin",
                                     "waterfall burbling"]
    assert m["clips"] == 5 and m["classnames"] == str(labels)


# FSD50K's vocabulary.csv (renumbered 0..2; published as 0,Accelerating_and_revving_and_vroom,/m/07q2z82 ...
# 92,Gunshot_and_gunfire,/m/032s66) and AudioSet's class_labels_indices.csv rows for the same mids
FSD_VOCABULARY = "0,Accelerating_and_revving_and_vroom,/m/07q2z82\n1,Bark,/m/05tny_\n2,Gunshot_and_gunfire,/m/032s66\n"
AUDIOSET_LABELS = ('index,mid,display_name\n0,/m/09x0r,"Speech"\n75,/m/05tny_,"Bark"\n'
                   '353,/m/07q2z82,"Accelerating, revving, vroom"\n427,/m/032s66,"Gunshot, gunfire"\n')


def _fsd50k(tmp_path):
    from clapkit.data.audio.labelled import write_wavs

    gt = tmp_path / "FSD50K" / "FSD50K.ground_truth"
    gt.mkdir(parents=True)
    (gt / "vocabulary.csv").write_text(FSD_VOCABULARY)
    (gt / "eval.csv").write_text('fname,labels,mids\n37199,"Gunshot_and_gunfire",/m/032s66\n'
                                 '100,"Bark,Accelerating_and_revving_and_vroom","/m/05tny_,/m/07q2z82"\n')
    write_wavs(tmp_path / "FSD50K" / "FSD50K.eval_audio", ["37199.wav", "100.wav"])
    return f"fsd50k:{tmp_path / 'FSD50K'}"


def test_fsd50k_is_spelled_by_audioset_through_its_mids(tmp_path):
    from clapkit.data.audio.labelled import load_labelled
    from clapkit.evaluation.prompts import load_classnames

    data = load_labelled(_fsd50k(tmp_path))
    assert data.class_ids == ["/m/07q2z82", "/m/05tny_", "/m/032s66"]
    csv = tmp_path / "class_labels_indices.csv"
    csv.write_text(AUDIOSET_LABELS.replace('427,/m/032s66,"Gunshot, gunfire"\n', ""))
    with pytest.raises(ClapkitError, match=r"class 'Gunshot_and_gunfire' \(mid /m/032s66\) is not in it"):
        load_classnames(f"audioset:{csv}", data.class_names, data.class_ids)
    csv.write_text(AUDIOSET_LABELS)
    spelled = ["Accelerating, revving, vroom", "Bark", "Gunshot, gunfire"]
    assert load_classnames(f"audioset:{csv}", data.class_names, data.class_ids) == spelled
    # LAION-CLAP's FSD50K file (AudioSet display names, its own indices) through the mids and the csv beside it
    laion = tmp_path / "FSD50k_class_labels_indices.json"
    laion.write_text(json.dumps({"Whispering": 0, "Gunshot, gunfire": 1, "Bark": 10,
                                 "Accelerating, revving, vroom": 89}))
    assert load_classnames(str(laion), data.class_names, data.class_ids) == spelled
    csv.unlink()
    with pytest.raises(ClapkitError, match=r"class 'Accelerating_and_revving_and_vroom' has no entry .*put AudioSet's "
                                           r"class_labels_indices.csv beside"):
        load_classnames(str(laion), data.class_names, data.class_ids)
    with pytest.raises(ClapkitError, match="which this data does not carry"):
        load_classnames(f"audioset:{csv}", ["dog"], None)
