"""Class-name files are applied by name, never by position (issue 29, item 2), on data
and label files written from a few lines of their owners' published files
(tests/published.py: VGGSound's ``vggsound.csv``, FSD50K's ``vocabulary.csv``, AudioSet's
``class_labels_indices.csv``) and of LAION-CLAP's ``class_labels/VGGSound_class_labels_indices.json``
and ``FSD50k_class_labels_indices.json`` (its own tag indices: "people crowd" is 0,
"Whispering" is 0)."""

from __future__ import annotations

import json

import published
import pytest
from test_cli import clapkit

from clapkit.errors import ClapkitError

# LAION-CLAP's indices for these labels, as its VGGSound file has them (309 entries there)
LAION_VGGSOUND = {"people crowd": 0, "playing mandolin": 1, "bee, wasp, etc. buzzing": 14, "people marching": 105,
                  "waterfall burbling": 175}


def _vggsound(tmp_path):
    return published.vggsound(tmp_path)


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


def _fsd50k(tmp_path):
    return published.fsd50k(tmp_path / "FSD50K")


def test_fsd50k_is_spelled_by_audioset_through_its_mids(tmp_path):
    from clapkit.data.audio.labelled import load_labelled
    from clapkit.evaluation.prompts import load_classnames

    data = load_labelled(_fsd50k(tmp_path))
    assert data.class_ids == ["/m/07q2z82", "/m/05tny_", "/m/crash_cymbal", "/m/032s66"]
    csv = tmp_path / "class_labels_indices.csv"
    csv.write_text(published.FSD_AUDIOSET_LABELS)
    spelled = ["Accelerating, revving, vroom", "Bark", "Crash cymbal", "Gunshot, gunfire"]
    # Crash cymbal is not among AudioSet's 527: spelled back from FSD50K's name, with a warning
    with pytest.warns(UserWarning, match=r"1 class\(es\) have a mid it lacks \(Crash_cymbal\)"):
        assert load_classnames(f"audioset:{csv}", data.class_names, data.class_ids) == spelled
    ontology = tmp_path / "ontology.json"  # AudioSet's ontology.json has every class
    ontology.write_text(json.dumps([{"id": "/m/07q2z82", "name": "Accelerating, revving, vroom", "description": ""},
                                    {"id": "/m/05tny_", "name": "Bark"}, {"id": "/m/crash_cymbal", "name": "Crash cymbal"},
                                    {"id": "/m/032s66", "name": "Gunshot, gunfire"}]))
    assert load_classnames(f"audioset:{ontology}", data.class_names, data.class_ids) == spelled
    # LAION-CLAP's FSD50K file (AudioSet display names, its own indices) through the mids and the csv beside it
    laion = tmp_path / "FSD50k_class_labels_indices.json"
    laion.write_text(json.dumps({"Whispering": 0, "Gunshot, gunfire": 1, "Bark": 10, "Accelerating, revving, vroom": 89,
                                 "Crash cymbal": 112}))
    assert load_classnames(str(laion), data.class_names, data.class_ids) == spelled
    csv.unlink()
    ontology.unlink()  # without a list of AudioSet's names: through the spelling FSD50K's names were written from
    assert load_classnames(str(laion), data.class_names, data.class_ids) == spelled
    laion.write_text(json.dumps({"Whispering": 0, "Gunshot, gunfire": 1, "Bark": 10, "Crash cymbal": 112}))
    with pytest.raises(ClapkitError, match=r"class 'Accelerating_and_revving_and_vroom' has no entry .*put AudioSet's "
                                           r"class_labels_indices.csv or ontology.json beside"):
        load_classnames(str(laion), data.class_names, data.class_ids)
    with pytest.raises(ClapkitError, match="which this data does not carry"):
        load_classnames(f"audioset:{csv}", ["dog"], None)


def test_class_names_given_inline_and_one_key_for_two_classes(tmp_path):
    from clapkit.evaluation.prompts import load_classnames, zeroshot_texts

    assert zeroshot_texts(["dog", "sea_waves"], "audio", classnames=[]).names == ["dog", "sea waves"]  # none given
    texts = zeroshot_texts(["dog", "sea_waves"], "audio", classnames={"dog": "puppy", "sea_waves": "surf"})
    assert texts.names == ["puppy", "surf"] and texts.classnames == "inline"
    listed = tmp_path / "names.txt"
    listed.write_text("puppy\nsurf\n")
    assert zeroshot_texts(["dog", "sea_waves"], "audio", classnames=listed).classnames == str(listed)  # a Path
    laion = tmp_path / "labels.json"
    laion.write_text(json.dumps({"dog": 0, "sea waves": 1}))
    with pytest.raises(ClapkitError, match=r"entry 'dog' matches two of the data's classes, 'dog' and 'Dog'"):
        load_classnames(str(laion), ["dog", "Dog"])
