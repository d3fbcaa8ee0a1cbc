import csv
import json

import pytest

from clapkit.audit.leakage import audit_leakage, label_words, pretrain_overlap, read_word_list, scan
from clapkit.data.audio.captions import detect_spec
from clapkit.data.records import Pair
from clapkit.errors import DataError


def _pairs(captions):
    return [Pair(media=__import__("pathlib").Path(f"{i}.wav"), caption=c, media_id=str(i), where=f"row {i}")
            for i, c in enumerate(captions)]


WORDS = {
    "dog": label_words("dog"),
    "cat": label_words("cat"),
    "door_wood_knock": label_words("door_wood_knock"),
    "crackling_fire": label_words("crackling_fire"),
    "can_opening": label_words("can_opening"),
}


def test_label_words_split_and_drop_stop_words():
    assert WORDS["door_wood_knock"] == ["door", "wood", "knock"]
    assert WORDS["crackling_fire"] == ["crackling", "fire"]  # 'fire' is kept although sklearn lists it
    assert WORDS["can_opening"] == ["opening"]  # the modal 'can' would flag most captions


@pytest.mark.parametrize(
    "caption,expected",
    [
        ("Two dogs are barking", ["dog"]),
        ("A DOG barks", ["dog"]),
        ("Someone is knocking on a wooden door", ["door_wood_knock"]),
        ("The categories of the catalogue", []),  # 'cat' inside other words never matches
        ("A fire crackles while a cat meows", ["cat", "crackling_fire"]),
        ("You can hear rain", []),
        ("A can is opened", ["can_opening"]),
        ("dog's collar jingles", ["dog"]),
    ],
)
def test_scan_matches_inflections_not_substrings(caption, expected):
    result = scan(_pairs([caption]), WORDS)
    assert result.dirty == [expected]


def test_scan_counts_examples_and_matched_words():
    caps = ["Two dogs bark", "A dog barks", "A door creaks", "Rain on a roof", "A knocking on the door"]
    r = scan(_pairs(caps), WORDS)
    assert [bool(d) for d in r.dirty] == [True, True, True, False, True]
    assert r.per_class["dog"]["captions"] == 2
    assert r.per_class["dog"]["matched_words"] == {"dogs": 1, "dog": 1}
    assert r.per_class["door_wood_knock"]["captions"] == 2
    assert r.per_class["door_wood_knock"]["examples"] == ["A door creaks", "A knocking on the door"]
    assert r.per_class["cat"]["captions"] == 0


def test_pretrain_overlap():
    got = pretrain_overlap(WORDS, ["Dog", "Domestic animals, pets", "Fire alarm", "Knock", "Speech"])
    assert got == {"dog": ["Dog"], "door_wood_knock": ["Knock"], "crackling_fire": ["Fire alarm"]}


def test_audit_writes_report_clean_file_and_editable_word_list(tmp_path):
    (tmp_path / "labels.txt").write_text("dog\ndoor_wood_knock\nsea_waves\n")
    (tmp_path / "clotho.csv").write_text(
        "file_name,caption_1,caption_2\n"
        "a.wav,A dog barks,Birds sing\n"
        "b.wav,Waves crash on the shore,Someone knocks on a door\n"
        "c.wav,Wind blows,Leaves rustle\n"
    )
    (tmp_path / "pairs.csv").write_text("audio,caption\nx.wav,Dogs are howling\ny.wav,An engine idles\n")
    clean = tmp_path / "clean.csv"
    r = audit_leakage([str(tmp_path / "clotho.csv"), str(tmp_path / "pairs.csv")], f"txt:{tmp_path / 'labels.txt'}",
                      tmp_path / "out", write_clean=clean)
    assert [f["file"].split(":")[0] for f in r["files"]] == ["clotho", "csv"]
    assert (r["files"][0]["pairs"], r["files"][0]["dirty_pairs"], r["files"][0]["dirty_audio"]) == (6, 3, 2)
    assert (r["total"]["pairs"], r["total"]["dirty_pairs"]) == (8, 4)
    assert r["per_class"]["dog"]["captions"] == 2 and r["per_class"]["sea_waves"]["captions"] == 1
    with open(clean) as fh:
        kept = [row["caption"] for row in csv.DictReader(fh)]
    assert kept == ["Birds sing", "Wind blows", "Leaves rustle", "An engine idles"]  # exactly the non-matching rows
    assert json.loads((tmp_path / "out" / "leakage.json").read_text())["total"]["dirty_pairs"] == 4
    assert "| dog | 2 |" in (tmp_path / "out" / "summary.md").read_text()
    # clean by audio drops every caption of a clip with one dirty caption
    r2 = audit_leakage([str(tmp_path / "clotho.csv")], f"txt:{tmp_path / 'labels.txt'}", tmp_path / "out2",
                       write_clean=tmp_path / "clean2.csv", clean_by="audio")
    assert r2["clean"]["pairs"] == 2
    # an edited word list changes the result
    words = read_word_list(tmp_path / "out" / "words.txt")
    assert words == {"dog": ["dog"], "door_wood_knock": ["door", "wood", "knock", "!outdoor", "!outdoors"],
                     "sea_waves": ["sea", "waves"]}
    (tmp_path / "edited.txt").write_text("dog\tdog howl\n")
    r3 = audit_leakage([str(tmp_path / "pairs.csv")], f"txt:{tmp_path / 'labels.txt'}", tmp_path / "out3",
                       words_file=tmp_path / "edited.txt")
    assert r3["classes"] == 1 and r3["per_class"]["dog"]["matched_words"] == {"dogs": 1, "howling": 1}


def test_detect_spec_reads_headers(tmp_path):
    (tmp_path / "c.csv").write_text("file_name,caption_1,caption_2\n")
    (tmp_path / "a.csv").write_text("audiocap_id,youtube_id,start_time,caption\n")
    (tmp_path / "g.csv").write_text("audio,caption\n")
    assert detect_spec(str(tmp_path / "c.csv")).startswith("clotho:")
    assert detect_spec(str(tmp_path / "a.csv")).startswith("audiocaps:")
    assert detect_spec(str(tmp_path / "g.csv")).startswith("csv:")
    assert detect_spec("clotho:/x.csv") == "clotho:/x.csv"
    with pytest.raises(DataError, match="file not found"):
        detect_spec(str(tmp_path / "missing.csv"))


def test_bad_word_list_names_the_line(tmp_path):
    (tmp_path / "w.txt").write_text("# comment\ndog dog\n")
    with pytest.raises(DataError, match="w.txt line 2: expected 'class<TAB>word"):
        read_word_list(tmp_path / "w.txt")


def test_shared_captions_against_esc50(tmp_path, shared_data):
    cap = shared_data / "captions"
    r = audit_leakage([str(cap / "audiocaps" / "train.csv"), str(cap / "clotho" / "development.csv")],
                      f"esc50:{shared_data / 'esc50'}", tmp_path)
    ac, cl = r["files"]
    assert (ac["pairs"], cl["pairs"], cl["audio"]) == (49838, 19195, 3839)
    assert r["classes"] == 50 and r["total"]["classes_named"] == 50
    # regression values of these rules and the default word list (stems alone gave 33394 and
    # 12196; the lemma, derivation and compound rules add the words below)
    assert (ac["dirty_pairs"], cl["dirty_pairs"], cl["dirty_audio"]) == (33944, 12674, 3361)
    rules = {label: e["rules"] for label, e in r["per_class"].items()}
    assert rules["door_wood_knock"]["wooden"] == "derivation"
    assert rules["laughing"]["laughter"] == "derivation"
    assert rules["door_wood_knock"]["doorbell"] == "compound"
    assert rules["rain"]["raindrops"] == "compound" and rules["rain"]["rainfall"] == "compound"
    assert rules["glass_breaking"]["broken"] == "lemma"
    assert "outdoors" not in rules["door_wood_knock"] and "carrying" not in rules["car_horn"]  # false friends
    assert set(r["matches_by_rule"]) == {"stem", "lemma", "derivation", "compound"}
    words = read_word_list(tmp_path / "words.txt")
    assert words["car_horn"][:2] == ["car", "horn"] and "!carpet" in words["car_horn"]


@pytest.mark.parametrize(
    "caption,label,rule",
    [
        ("Footsteps on a wooden floor", "door_wood_knock", "derivation"),  # wooden <- wood + en
        ("A doorbell rings twice", "door_wood_knock", "compound"),  # door + bell
        ("Raindrops hit the window", "rain", "compound"),  # raindrop (lemma) = rain + drop
        ("Birdsong in the morning", "chirping_birds", "compound"),  # bird + song
        ("The dogs' toys squeak", "dog", "stem"),
        ("Mice scratch in the wall", "mouse_click", "lemma"),  # irregular plural
        ("A windy day outside", "wind", "derivation"),  # windy <- wind + y
    ],
)
def test_scan_matches_derivations_and_compounds_and_names_the_rule(caption, label, rule):
    words = {n: label_words(n) for n in ("door_wood_knock", "rain", "chirping_birds", "dog", "mouse_click", "wind")}
    r = scan(_pairs([caption]), words)
    assert label in r.dirty[0]
    assert rule in r.per_class[label]["rules"].values()


@pytest.mark.parametrize("caption", ["The categories of the catalogue", "A cathedral bell", "Dogma and doctrine"])
def test_compound_rule_needs_a_real_word_beside_the_class_word(caption):
    assert scan(_pairs([caption]), {"cat": ["cat"], "dog": ["dog"]}).dirty == [[]]


def test_word_list_exclusions(tmp_path):
    """'!word' in the editable list stops that surface word from matching its class."""
    words = {"car_horn": ["car", "horn", "!carpet"]}
    r = scan(_pairs(["a carpet is vacuumed", "a car horn honks"]), words)
    assert r.dirty == [[], ["car_horn"]]
    path = tmp_path / "words.txt"
    path.write_text("car_horn\tcar horn !carpet\n")
    assert read_word_list(path) == words


def test_the_papers_rule_is_counted_apart_from_the_extended_rules():
    """S2's dirty caption holds a word of the class set (stem or lemma); the derivation
    and compound rules flag more: "airplane" names air_conditioner by compound only."""
    from clapkit.audit.leakage import default_word_list, scan
    from clapkit.data.records import Pair

    pairs = [Pair(f"{i}.wav", c, str(i), f"x line {i}") for i, c in
             enumerate(["an airplane passes", "the air conditioner hums", "mice squeak", "a wooden door"])]
    r = scan(pairs, default_word_list(["air_conditioner", "mouse_click", "door_wood_knock"]))
    assert r.dirty == [["air_conditioner"], ["air_conditioner"], ["mouse_click"], ["door_wood_knock"]]
    assert r.dirty_paper == [[], ["air_conditioner"], ["mouse_click"], ["door_wood_knock"]]  # mice: lemma; door: stem
    assert (r.per_class["air_conditioner"]["captions"], r.per_class["air_conditioner"]["paper_captions"]) == (2, 1)
