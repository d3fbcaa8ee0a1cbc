"""The registry of named audio prompt sets (``src/clapkit/evaluation/prompt_sets.yaml``):
each set as its owner published it, with the repository, commit, file and lines it was read
from; ``--prompts NAME`` resolves every name, and a set's class-name handling (MTEB's ESC-50
task keeps ``_``; EVAR's CREMA-D names each class itself) reaches ``zeroshot_texts``."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from clapkit.errors import ClapkitError
from clapkit.evaluation.prompts import (
    REGISTRY_FILE,
    load_prompts,
    prompt_set,
    registered_prompt_sets,
    zeroshot_texts,
)

REPO = Path(__file__).resolve().parents[1]


def _published():
    return [e for e in registered_prompt_sets("audio") if not e["name"].startswith("clapkit:")]


def test_every_set_has_templates_with_a_label_a_cited_source_and_a_unique_name():
    sets = registered_prompt_sets("audio")
    names = [e["name"] for e in sets]
    assert len(names) == len(set(names))
    assert names[:2] == ["clapkit:default", "clapkit:ensemble"] and sets[0]["default"]
    assert [e["name"] for e in sets if e["default"]] == ["clapkit:default"]
    for entry in sets:
        assert entry["templates"] and all("{label}" in t for t in entry["templates"]), entry["name"]
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+", entry["name"]), entry["name"]
        assert isinstance(entry["datasets"], list) and set(entry["flags"]) == {"keep_underscore", "classnames"}
        assert entry["source"]["note"] and '"' not in entry["source"]["note"]  # one line, nothing quoted
    published = _published()
    assert {e["name"].partition(":")[0] for e in published} == {"laion_clap", "msclap", "evar", "glap", "maeb"}
    for entry in published:
        src = entry["source"]
        assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", src["repo"]), entry["name"]
        assert re.fullmatch(r"[0-9a-f]{40}", src["commit"]), entry["name"]
        assert re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", str(src["lines"])), entry["name"]
        assert src["url"].startswith(f"{src['repo']}/blob/{src['commit']}/{src['path']}#L"), entry["name"]


def test_the_registry_ships_with_the_package():
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "evaluation/prompt_sets.yaml" in package_data["clapkit"]
    assert REGISTRY_FILE.is_file() and REGISTRY_FILE.parent.name == "evaluation"


def test_spot_checks_of_the_published_sets():
    assert zeroshot_texts(["dog"], "audio", "laion_clap:esc50").texts == [["This is a sound of dog."]]
    assert zeroshot_texts(["dog"], "audio", "laion_clap:esc50_readme").texts == [["This is a sound of dog"]]
    assert zeroshot_texts(["blues"], "audio", "laion_clap:gtzan_readme").texts == [["This audio is a blues song."]]
    assert zeroshot_texts(["blues"], "audio", "laion_clap:gtzan_eval_script").texts == [["This is a blues song."]]
    assert zeroshot_texts(["sea_waves"], "audio", "msclap:default").texts == [["this is the sound of sea waves"]]
    assert zeroshot_texts(["sea_waves"], "audio", "evar:default").texts == [["sea waves can be heard"]]
    assert zeroshot_texts(["blues"], "audio", "evar:gtzan").texts == [["blues music can be heard"]]
    assert zeroshot_texts(["dog"], "audio", "glap:sound").texts == [["The sound of dog can be heard."]]
    assert zeroshot_texts(["dog_bark"], "audio", "maeb:us8k").texts == [["This is a sound of dog bark"]]
    src = prompt_set("laion_clap:esc50")["source"]  # the citation the LAION-CLAP bench file gives too
    assert (src["path"], src["lines"], src["commit"][:7]) == (
        "src/laion_clap/evaluate/eval_zeroshot_classification.py", "49-52", "1fd4c37")


def test_load_prompts_takes_every_registered_name_and_keeps_the_other_specs():
    for entry in registered_prompt_sets("audio"):
        assert load_prompts(entry["name"], "audio") == (entry["templates"], entry["name"])
    assert load_prompts(None, "audio") == (["This is a sound of {label}."], "clapkit")
    assert load_prompts("clapkit:default", "image") == (["a photo of a {label}."], "clapkit:default")
    assert [e["templates"] for e in registered_prompt_sets("image")] == [
        load_prompts("clapkit:default", "image")[0], load_prompts("clapkit:ensemble", "image")[0]]
    templates, source = load_prompts("open_clip:imagenet", "image")  # open_clip is installed in the dev env
    assert source == "open_clip:imagenet" and len(templates) == 80
    assert prompt_set("open_clip:imagenet") is None and prompt_set(["{label}"]) is None


def test_an_unknown_name_is_an_error_listing_the_known_ones():
    for spec in ("laion_clap:nosuchset", "maeb:esc-50", "nosuchowner:set"):
        with pytest.raises(ClapkitError) as err:
            load_prompts(spec, "audio")
        for known in ("clapkit:default", "clapkit:ensemble", "laion_clap:esc50", "msclap:default", "maeb:esc50"):
            assert known in str(err.value), (spec, known)


def test_maeb_keeps_the_underscore_in_esc50_names(shared_data):
    from clapkit.data.audio.labelled import load_labelled

    names = load_labelled(f"esc50:{shared_data / 'esc50'}", None).class_names  # ESC-50's target order
    maeb = zeroshot_texts(names, "audio", "maeb:esc50")
    assert maeb.names == names and maeb.classnames is None and maeb.source == "maeb:esc50"
    # MTEB's ESC50_Zeroshot candidate texts at these targets (esc50.py lines 51, 62, 81, 101)
    assert [maeb.texts[i] for i in (0, 11, 30, 49)] == [
        ["This is a sound of dog"], ["This is a sound of sea_waves"], ["This is a sound of door_wood_knock"],
        ["This is a sound of hand_saw"]]
    laion = zeroshot_texts(names, "audio", "laion_clap:esc50")  # LAION-CLAP's _space names
    assert laion.texts[30] == ["This is a sound of door wood knock."]
    # --classnames is used as given, whatever the set
    renamed = zeroshot_texts(names, "audio", "maeb:esc50", [n.replace("_", " ") for n in names])
    assert renamed.texts[30] == ["This is a sound of door wood knock"]


def test_a_set_that_names_its_classes_itself():
    texts = zeroshot_texts(["ANG", "NEU"], "audio", "evar:cremad")
    assert texts.texts == [["angry person talking can be heard"], ["someone talking calmly can be heard"]]
    assert texts.classnames == "evar:cremad"
    assert zeroshot_texts(["ANG"], "audio", "evar:cremad", ["anger"]).texts == [["anger can be heard"]]
    with pytest.raises(ClapkitError, match="'dog' has none"):
        zeroshot_texts(["dog"], "audio", "evar:cremad")
