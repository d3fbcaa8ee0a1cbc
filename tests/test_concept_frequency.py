"""Concept frequency (issue 32): caption counts per evaluation class by the leakage rules,
streamed; accuracy against log10(count + 1) fitted as scipy's linregress fits it; the
``frequency`` section and figure of ``audit model``; ``audit leakage --eval``; the bench's
``frequency_slope`` and ``frequency_r2`` rows and figures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats
from test_cli import clapkit

from clapkit.audit.frequency import (
    concept_frequencies,
    count_files,
    frequency_curve,
    r2_interval,
    stream_captions,
)
from clapkit.audit.leakage import read_word_list, scan
from clapkit.data.records import Pair
from clapkit.errors import ConfigError, DataError

# per caption: the classes it names by the paper's rule (stem, lemma) and by any rule
CAPTIONS = [
    ("two dogs bark at a dog", {"dog"}, {"dog"}),  # stem; a caption counts once per class
    ("mice scratch behind the wall", {"mouse_click"}, {"mouse_click"}),  # lemma: mice -> mouse
    ("a doorbell rings", set(), {"door_wood_knock"}),  # compound: door + bell
    ("a windy afternoon", set(), {"wind"}),  # derivation: wind + y
    ("a kitten mews", {"cat"}, {"cat"}),  # a synonym of the word file
    ("someone vacuums the carpet", set(), set()),  # '!carpet' excludes car + pet
    ("a car horn honks near a wooden door", {"car_horn", "door_wood_knock"}, {"car_horn", "door_wood_knock"}),
    ("the categories of the catalogue", set(), set()),  # cat inside a word is no cat
    ("mouse clicks and a doorbell", {"mouse_click"}, {"mouse_click", "door_wood_knock"}),
]
WORD_FILE = ("# class<TAB>words\ndog\tdog\nmouse_click\tmouse click\ndoor_wood_knock\tdoor wood knock\nwind\twind\n"
             "car_horn\tcar horn !carpet\ncat\tcat kitten\n")


@pytest.fixture
def words(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text(WORD_FILE)
    return read_word_list(path)


def _hand(column: int) -> dict[str, int]:
    classes = ["dog", "mouse_click", "door_wood_knock", "wind", "car_horn", "cat"]
    return {c: sum(c in row[column] for row in CAPTIONS) for c in classes}


def test_counts_by_both_rules_match_a_hand_count(words):
    counts = concept_frequencies((c for c, _, _ in CAPTIONS), words)  # a one-pass generator
    assert counts.captions == 9 and counts.rules == ("stem", "lemma")
    assert counts.paper == _hand(1) == {"dog": 1, "mouse_click": 2, "door_wood_knock": 1, "wind": 0, "car_horn": 1,
                                        "cat": 1}
    assert counts.all_rules == _hand(2) == {"dog": 1, "mouse_click": 2, "door_wood_knock": 3, "wind": 1, "car_horn": 1,
                                            "cat": 1}
    # the leakage scan of the same captions counts the same (its per-pair lists held in memory)
    r = scan([Pair(Path(f"{i}.wav"), c, str(i), f"row {i}") for i, (c, _, _) in enumerate(CAPTIONS)], words)
    assert {k: v["paper_captions"] for k, v in r.per_class.items()} == counts.paper
    assert {k: v["captions"] for k, v in r.per_class.items()} == counts.all_rules
    # without a token cache the same counts; with the stem rule alone mice no longer names mouse_click
    assert concept_frequencies([c for c, _, _ in CAPTIONS], words, cache_size=0) == counts
    assert concept_frequencies([c for c, _, _ in CAPTIONS], words, rules=("stem",)).paper["mouse_click"] == 1
    with pytest.raises(ConfigError, match="rules suffix: choose among stem, lemma, derivation, compound"):
        concept_frequencies([], words, rules=("suffix",))


def test_caption_files_are_streamed_in_their_formats(tmp_path, words):
    texts = [c for c, _, _ in CAPTIONS]
    with open(tmp_path / "a.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["audio", "caption"])
        w.writerows([f"{i}.wav", t] for i, t in enumerate(texts[:4]))
    (tmp_path / "b.jsonl").write_text(json.dumps({"audio": "x.wav", "caption": texts[4:6]}) + "\n\n"
                                      + json.dumps({"audio": "y.wav", "caption": texts[6]}) + "\n")
    with open(tmp_path / "clotho.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "caption_1", "caption_2"])
        w.writerow(["z.wav", texts[7], texts[8]])
    specs = [str(tmp_path / "a.csv"), str(tmp_path / "b.jsonl"), str(tmp_path / "clotho.csv")]
    assert [t for s in specs for t in stream_captions(s)] == texts
    counts = count_files(specs, words)  # no audio file exists: captions only
    assert (counts.paper, counts.all_rules, counts.captions) == (_hand(1), _hand(2), 9)
    assert counts.files == {f"csv:{specs[0]}": 4, f"jsonl:{specs[1]}": 3, f"clotho:{specs[2]}": 2}
    (tmp_path / "bad.csv").write_text("audio,caption\na.wav,a dog\nb.wav,  \n")
    with pytest.raises(DataError, match=r"bad.csv line 3 column caption: empty caption"):
        list(stream_captions(str(tmp_path / "bad.csv")))
    (tmp_path / "nocap.csv").write_text("audio,text\na.wav,a dog\n")
    with pytest.raises(DataError, match=r"nocap.csv line 1: no caption column; the header has audio, text"):
        list(stream_captions(f"csv:{tmp_path / 'nocap.csv'}"))
    (tmp_path / "bad.jsonl").write_text('{"audio": "a.wav", "caption": "a dog"}\n{"audio": "b.wav"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl line 2: needs the key 'caption'"):
        list(stream_captions(str(tmp_path / "bad.jsonl")))


def _curve_inputs():
    counts = {"a": 0, "b": 9, "c": 99, "d": 999, "e": 9999, "f": 49, "g": 3}
    values = {"a": 0.12, "b": 0.31, "c": 0.38, "d": 0.61, "e": 0.83, "f": 0.29, "g": 0.33, "h": 0.9}  # h: no count
    return counts, values


def test_the_fit_is_scipys_linregress_on_log10_counts_plus_one():
    counts, values = _curve_inputs()
    curve = frequency_curve(counts, values | {"i": None}, intervals={"a": (0.05, 0.2)}, items={"a": 10})
    classes = ["a", "b", "c", "d", "e", "f", "g"]  # h has no count and i no value: left out
    x = np.log10(np.array([counts[c] for c in classes], dtype=float) + 1)
    y = np.array([values[c] for c in classes])
    fit = stats.linregress(x, y)
    t = stats.t.ppf(0.975, 5)
    assert (curve["slope"], curve["intercept"], curve["r2"], curve["p_value"], curve["n"]) == (
        fit.slope, fit.intercept, fit.rvalue ** 2, fit.pvalue, 7)
    assert curve["slope_ci"] == [fit.slope - t * fit.stderr, fit.slope + t * fit.stderr]
    assert curve["intercept_ci"] == [fit.intercept - t * fit.intercept_stderr, fit.intercept + t * fit.intercept_stderr]
    assert [r["x"] for r in curve["classes"]] == [0.0, 1.0, 2.0, 3.0, 4.0, math.log10(50), math.log10(4)]
    resid = y - (fit.intercept + fit.slope * x)
    s = math.sqrt((resid ** 2).sum() / 5)
    assert [r["residual"] for r in curve["classes"]] == resid.tolist() and curve["residual_se"] == s
    assert [r["standardised_residual"] for r in curve["classes"]] == (resid / s).tolist()
    row = curve["classes"][0]
    assert (row["class"], row["captions"], row["ci_low"], row["ci_high"], row["items"]) == ("a", 0, 0.05, 0.2, 10)
    assert curve["classes"][1]["ci_low"] is None and curve["x"] == "log10(captions + 1)"
    # r^2's interval: Fisher's z of r, by hand
    q = stats.norm.ppf(0.975) / math.sqrt(4)
    lo, hi = math.tanh(math.atanh(fit.rvalue) - q), math.tanh(math.atanh(fit.rvalue) + q)
    assert lo > 0 and curve["r2_ci"] == [lo * lo, hi * hi]
    assert r2_interval(0.1, 10) == [0.0, max(math.tanh(math.atanh(0.1) + stats.norm.ppf(0.975) / math.sqrt(7)) ** 2,
                                             math.tanh(math.atanh(0.1) - stats.norm.ppf(0.975) / math.sqrt(7)) ** 2)]
    assert r2_interval(0.5, 3) is None


def test_outliers_are_the_classes_two_residual_errors_off_the_line():
    counts = {f"c{i}": 10 ** (i % 5) - 1 for i in range(12)}
    values = {c: 0.1 + 0.15 * math.log10(n + 1) + (0.01 if i % 2 else -0.01) for i, (c, n) in enumerate(counts.items())}
    values["c7"] += 0.3  # far above the line
    curve = frequency_curve(counts, values)
    z = {r["class"]: r["standardised_residual"] for r in curve["classes"]}
    assert curve["outliers"] == ["c7"] == [c for c, v in z.items() if abs(v) > 2]
    assert z["c7"] > 2 and all(abs(v) <= 2 for c, v in z.items() if c != "c7")
    assert [r["outlier"] for r in curve["classes"]] == [c == "c7" for c in counts]


def test_an_undefined_fit_says_why():
    two = frequency_curve({"a": 0, "b": 5}, {"a": 0.1, "b": 0.2})
    assert two["slope"] is None and two["undefined"] == "2 class(es) with a value: a line and its interval need 3"
    same = frequency_curve({"a": 3, "b": 3, "c": 3}, {"a": 0.1, "b": 0.2, "c": 0.3})
    assert same["slope"] is None and same["r2"] is None and same["outliers"] == []
    assert same["undefined"] == "every class is named by as many captions: no frequency to fit against"
    assert [r["fitted"] for r in same["classes"]] == [None, None, None]
    flat = frequency_curve({"a": 0, "b": 9, "c": 99}, {"a": 0.5, "b": 0.5, "c": 0.5})  # r is undefined
    assert (flat["slope"], flat["intercept"]) == (0.0, 0.5)
    assert (flat["slope_ci"], flat["intercept_ci"]) == (None, None)  # linregress's stderr is NaN: no interval
    assert (flat["r2"], flat["r2_ci"], flat["p_value"]) == (None, None, None)
    assert [r["standardised_residual"] for r in flat["classes"]] == [0.0, 0.0, 0.0] and flat["outliers"] == []


# ESC-50 fold 2 of the shared set: 11 clips of clock_alarm (2), cow (4), keyboard_typing (1), thunderstorm (2), wind (2)
TRAIN = ["an alarm clock rings"] * 9 + ["a thunderstorm rolls in"] * 3 + ["wind blows", "a windy day",
                                                                           "an engine idles", "an engine idles"]
PAPER = {"clock_alarm": 9, "cow": 0, "keyboard_typing": 0, "thunderstorm": 3, "wind": 1}
ALL = PAPER | {"wind": 2}


def _train_captions(tmp_path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("audio,caption\n" + "".join(f"{i}.wav,{c}\n" for i, c in enumerate(TRAIN)))
    return path


def _check_curve(curve: dict, counts: dict, per_class: dict, key: str = "accuracy") -> None:
    classes = [c for c in per_class if c in PAPER]  # the set's class order
    assert sorted(classes) == sorted(PAPER)
    x = np.log10(np.array([counts[c] for c in classes], dtype=float) + 1)
    fit = stats.linregress(x, [per_class[c][key] for c in classes])
    assert [r["class"] for r in curve["classes"]] == classes and [r["captions"] for r in curve["classes"]] == [
        counts[c] for c in classes]
    assert (curve["slope"], curve["intercept"], curve["r2"]) == pytest.approx(
        (fit.slope, fit.intercept, fit.rvalue ** 2), abs=1e-12)


def _png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def _fold2_folder(tmp_path, shared_data) -> Path:
    """ESC-50's fold-2 clips of the shared set as a ``folder:`` set of its 5 classes."""
    root = tmp_path / "fold2"
    with open(shared_data / "esc50" / "meta" / "esc50.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["fold"] == "2":
                (root / row["category"]).mkdir(parents=True, exist_ok=True)
                name = row["filename"].replace(".wav", ".ogg")
                (root / row["category"] / name).symlink_to(shared_data / "esc50" / "audio" / name)
    return root


def test_audit_model_reports_the_curve_and_draws_it(tmp_path, shared_data, tiny_checkpoint):
    out = tmp_path / "audit"
    data = f"folder:{_fold2_folder(tmp_path, shared_data)}"
    proc = clapkit("audit", "model", "--model", tiny_checkpoint, "--data", data,
                   "--captions", _train_captions(tmp_path), "--out", out, "--device", "cpu", "--k-max", "2")
    r = json.loads((out / "report.json").read_text())
    f, per = r["frequency"], r["zeroshot"]["per_class"]
    assert (f["headline"], f["offset"], f["captions"], f["figure"]) == ("paper", 1.0, 16, "frequency.png")
    assert f["rules"] == {"paper": ["stem", "lemma"], "all_rules": ["stem", "lemma", "derivation", "compound"]}
    assert set(per) == set(PAPER)
    _check_curve(f["paper"], PAPER, per)
    _check_curve(f["all_rules"], ALL, per)
    for row in f["paper"]["classes"]:  # each class's bootstrap interval over its own items
        assert row["ci_low"] <= row["value"] <= row["ci_high"] and row["items"] == per[row["class"]]["clips"]
        if row["value"] in (0.0, 1.0):
            assert row["ci_low"] == row["ci_high"] == row["value"]
    assert _png(out / "frequency.png")
    md = (out / "report.md").read_text()
    assert "## Does accuracy follow how often the captions name a class?" in md and "![accuracy against" in md
    assert "accuracy vs log10(captions + 1), paper's rule: slope" in proc.stdout


def test_audit_leakage_eval_counts_each_class_without_a_model(tmp_path, shared_data):
    caps = _train_captions(tmp_path)
    proc = clapkit("audit", "leakage", "--captions", caps, "--eval", f"esc50:{shared_data / 'esc50'}", "--out",
                   tmp_path / "f")
    f = json.loads((tmp_path / "f" / "frequency.json").read_text())
    assert f["classes"] == 50 and f["captions"] == 16 and f["files"] == {f"csv:{caps}": 16}
    # against all 50 classes "clock" names clock_tick too, and "engine" the class engine
    assert {c: e["paper"] for c, e in f["per_class"].items() if e["paper"]} == {
        "clock_alarm": 9, "clock_tick": 9, "engine": 2, "thunderstorm": 3, "wind": 1}
    assert f["per_class"]["wind"] == {"paper": 1, "all_rules": 2, "x_paper": math.log10(2),
                                      "x_all_rules": math.log10(3)}
    assert f["classes_named"] == {"paper": 5, "all_rules": 5}
    assert "thunderstorm 3/3, engine 2/2, wind 1/2; 45 of 50 classes never named (paper's rule), 45 (all rules)" in (
        proc.stdout)
    assert not (tmp_path / "f" / "leakage.json").exists()  # --eval alone: the count, no scan
    assert "| wind | 1 | 2 | 0.30 |" in (tmp_path / "f" / "frequency.md").read_text()
    # with --labels too, the leakage scan beside it: its in-memory counts are the streamed ones
    clapkit("audit", "leakage", "--captions", caps, "--labels", f"esc50:{shared_data / 'esc50'}", "--eval",
            f"esc50:{shared_data / 'esc50'}", "--out", tmp_path / "both")
    leak = json.loads((tmp_path / "both" / "leakage.json").read_text())["per_class"]
    both = json.loads((tmp_path / "both" / "frequency.json").read_text())["per_class"]
    assert {c: (e["paper_captions"], e["captions"]) for c, e in leak.items()} == {
        c: (e["paper"], e["all_rules"]) for c, e in both.items()}
    bad = clapkit("audit", "leakage", "--captions", caps, "--out", tmp_path / "g", check=False)
    assert bad.returncode != 0 and "give --labels (the leakage scan), --eval (concept frequency) or both" in bad.stderr


def test_bench_rows_and_figure_of_a_model_with_captions(tmp_path, shared_data, tiny_checkpoint):
    bench = {"models": [{"name": "ours", "model": str(tiny_checkpoint), "captions": [str(_train_captions(tmp_path))]}],
             "tasks": [{"name": "esc", "data": f"esc50:{shared_data / 'esc50'}", "type": "zeroshot", "folds": [2],
                        "classes": list(PAPER)}], "bootstrap": 50, "seed": 0}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    out = tmp_path / "b"
    clapkit("bench", "--config", path, "--out", out, "--device", "cpu")
    with open(out / "results.csv", newline="") as fh:
        rows = {r["metric"]: r for r in csv.DictReader(fh)}
    cell = json.loads((out / "cells" / "ours__esc.json").read_text())
    curve = next(r for r in cell["metrics"] if r["metric"] == "frequency_slope")["curve"]
    _check_curve(curve["paper"], PAPER, cell["per_class"])
    _check_curve(curve["all_rules"], ALL, cell["per_class"])
    slope, r2 = rows["frequency_slope"], rows["frequency_r2"]
    p = curve["paper"]
    assert (float(slope["value"]), float(slope["ci_low"]), float(slope["ci_high"]), slope["n"]) == (
        p["slope"], *p["slope_ci"], "5")
    assert float(r2["value"]) == p["r2"] and r2["n"] == "5"
    assert [r2["ci_low"], r2["ci_high"]] == ([str(v) for v in p["r2_ci"]] if p["r2_ci"] else ["", ""])
    assert all(r["ci_low"] is not None for r in p["classes"])  # bootstrap: 50 resamples per class
    assert "curve" not in (out / "results.jsonl").read_text()  # drawn, not tabled
    assert _png(out / "figures" / "ours__esc.frequency.png")
