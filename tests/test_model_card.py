"""Model cards (clapkit.audit.card): Hugging Face front matter that round-trips, the card a
training run writes, the contamination audit by rule, and `clapkit card`."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from typer.testing import CliRunner

import clapkit.cli.card  # noqa: F401 (registers `clapkit card`; the lead adds it to clapkit.cli)
from clapkit.audit.card import (
    CardInfo,
    TrainingData,
    class_leakage,
    label_suites,
    load_suites,
    read_card,
    read_results,
    text_fingerprint,
    write_card,
)
from clapkit.cli import app
from clapkit.errors import ConfigError, DataError

# Hand-checked against ESC-50's class words (clapkit.audit.leakage's rules):
CAPTIONS = [
    "A dog barks at the mailman.",  # dog: stem (UrbanSound8K dog_bark: dog, barks)
    "Three mice squeak in the attic.",  # mouse_click: mice's lemma is mouse
    "Wind through a wooden door.",  # wind, door (both door_wood_* classes): stem; wooden: derivation of wood
    "Raindrops on the category page.",  # rain + drop(s): compound only; cat is no part of category
    "A windy afternoon.",  # wind: derivation only
    "Someone walks on the carpet.",  # car + pet, but carpet is a listed false friend of car_horn: nothing
    "Church bells ring.",  # church_bells: stem
]
PAPER = ["dog", "wind", "door_wood_knock", "mouse_click", "door_wood_creaks", "church_bells"]  # ESC-50's order
ALL = ["dog", "rain", "water_drops", "wind", "door_wood_knock", "mouse_click", "door_wood_creaks", "church_bells"]


def test_contamination_names_exactly_the_classes_the_captions_name_by_each_rule():
    found = class_leakage(CAPTIONS, label_suites(["esc50", "urbansound8k"]))
    esc = found["esc50"]
    assert esc["named_paper"] == PAPER and esc["named_all"] == ALL
    assert esc["by_rule"] == {"stem": ["dog", "wind", "door_wood_knock", "door_wood_creaks", "church_bells"],
                              "lemma": ["mouse_click"], "derivation": ["wind", "door_wood_knock", "door_wood_creaks"],
                              "compound": ["rain", "water_drops"]}
    assert (esc["texts"], esc["dirty_texts"], esc["dirty_texts_paper"]) == (7, 6, 4)
    assert esc["per_class"]["wind"] == {"captions": 2, "paper_captions": 1, "words": {"wind": "stem", "windy": "derivation"},
                                        "examples": ["Wind through a wooden door.", "A windy afternoon."]}
    assert esc["per_class"]["rain"]["paper_captions"] == 0 and "cat" not in esc["per_class"]
    us8k = found["urbansound8k"]
    assert us8k["named_paper"] == us8k["named_all"] == ["dog_bark"] and us8k["classes"] == 10


def test_shipped_class_lists_are_the_datasets_own(shared_data):
    """ESC-50's 50 names in `target` order, as its meta/esc50.csv spells them."""
    from clapkit.data.text import load_label_names

    suites = load_suites()
    assert suites["esc50"]["classes"] == load_label_names(f"esc50:{shared_data / 'esc50'}")
    assert len(suites["esc50"]["classes"]) == 50 and len(suites["urbansound8k"]["classes"]) == 10
    assert len(suites["cifar10"]["classes"]) == 10 and all(s["source"] for s in suites.values())


def _zeroshot_json(path: Path, data: str = "esc50:/data/ESC-50") -> dict:
    """The keys `clapkit eval zeroshot` writes (those a card reads, and some it does not)."""
    d = {"top1": 0.5, "top5": 0.875, "accuracy": 0.5, "mean_class_accuracy": 0.4, "clips": 16, "classes": 8,
         "chance": 0.125, "ci": {"top1": [0.25, 0.75], "top5": [0.7, 1.0]}, "multilabel": False, "data": data,
         "split": None, "folds": [4], "model_provenance": {"medium": "audio"}, "per_class": {"dog": {"accuracy": 1.0}}}
    path.write_text(json.dumps(d))
    return d


def test_card_round_trips_through_huggingface_hub(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"0" * 10)
    zs = _zeroshot_json(tmp_path / "zs.json")
    rows = read_results(tmp_path / "zs.json")
    info = CardInfo(name="tiny", source=str(folder), kind="clapkit", library="clapkit", family="small_cnn+bert",
                    medium="audio", datasets=["csv:/data/train.csv", "clotho:/data/clotho.csv"], recipe="clap",
                    training=[TrainingData(["csv:/data/train.csv"], CAPTIONS, [], {"pairs": 7}).record()],
                    results=rows, leakage=class_leakage(CAPTIONS, label_suites(["esc50"])))
    path = write_card(folder, info)
    card = ModelCard.load(path)
    assert card.data.library_name == "clapkit" and card.data.pipeline_tag == "zero-shot-audio-classification"
    assert {"clapkit", "clap", "zero-shot-audio-classification"} <= set(card.data.tags)
    assert card.data.datasets == ["csv:/data/train.csv", "clotho:/data/clotho.csv"]
    assert card.data.model_name == "tiny"
    got = {(r.task_type, r.dataset_name, r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert got == {("zero-shot-audio-classification", "esc50:/data/ESC-50", "folds 4", "top1"): zs["top1"],
                   ("zero-shot-audio-classification", "esc50:/data/ESC-50", "folds 4", "top5"): zs["top5"],
                   ("zero-shot-audio-classification", "esc50:/data/ESC-50", "folds 4", "mean_class_accuracy"): 0.4}
    assert {r.metric_type for r in card.data.eval_results} == {"accuracy", "top_5_accuracy", "mean_class_accuracy"}
    own = read_card(path)["clapkit"]
    assert [r["ci"] for r in own["results"]] == [[0.25, 0.75], [0.7, 1.0], None]
    assert own["contamination"]["suites"]["esc50"]["named_paper"] == PAPER
    assert own["training_data"][0]["text_fingerprint"] == text_fingerprint(CAPTIONS)
    text = path.read_text()
    assert "| Zero-shot audio classification | `esc50:/data/ESC-50` | folds 4 | top1 | 0.5 | [0.25, 0.75] | 16 |" in text
    assert f"Paper's rule: 6 of 50 classes named (4 of 7 captions): {', '.join(PAPER)}." in text
    # the fingerprint in the card is the folder's, card included (what every result of the model records)
    from clapkit.models.provenance import model_fingerprint

    assert own["fingerprint"] == model_fingerprint(str(folder)) != "f" * 16


def test_training_run_writes_its_card(tiny_checkpoint):
    """The tiny run's checkpoint carries a card: its data with counts and fingerprints,
    the classes its captions name, the provenance's datasets and fingerprint."""
    import clapkit
    from clapkit.audit.leakage import default_word_list, scan
    from clapkit.config import load_config
    from clapkit.data.files import fingerprint_files
    from clapkit.training.pairs import load_clap_data

    run = tiny_checkpoint.parent
    card = ModelCard.load(tiny_checkpoint / "README.md")
    meta = read_card(tiny_checkpoint / "README.md")["clapkit"]
    provenance = clapkit.load(tiny_checkpoint, device="cpu").provenance
    assert card.data.library_name == "clapkit" and "clap" in card.data.tags
    assert card.data.datasets == provenance["training_data"] and meta["fingerprint"] == provenance["fingerprint"]
    summary = json.loads((run / "summary.json").read_text())
    train = load_clap_data(load_config(str(run / "config.yaml"))).train  # the seeded split the run trained on
    record = meta["training_data"][0]
    assert record["counts"] == {"pairs": summary["train_pairs"], "clips": summary["train_clips"],
                                "validation_pairs": summary["val_pairs"], "skipped": 0}
    assert record["media_fingerprint"] == fingerprint_files({os.path.abspath(p.media) for p in train})
    assert record["text_fingerprint"] == text_fingerprint([p.caption for p in train])
    esc50 = load_suites()["esc50"]["classes"]
    hits = scan(train, default_word_list(esc50))
    expected = [c for c in esc50 if hits.per_class[c]["paper_captions"]]
    assert meta["contamination"]["suites"]["esc50"]["named_paper"] == expected and "church_bells" in expected
    assert meta["recipe"] == "clap" and "| `train.epochs` | 1 |" in (tiny_checkpoint / "README.md").read_text()
    text_card = ModelCard.load(tiny_checkpoint / "text" / "README.md")  # the sentence-transformers folder's own
    assert text_card.data.library_name == "sentence-transformers" and text_card.data.datasets == card.data.datasets


def test_card_command_writes_the_overlap_evidence(tmp_path, tiny_checkpoint, tiny_synthetic):
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint.parent, run, ignore=shutil.ignore_patterns("last"))
    ckpt = run / "checkpoint"
    rows = list(csv.DictReader(open(tiny_synthetic / "train.csv")))
    ev = tmp_path / "eval"
    for i, row in enumerate(rows[:4:2]):  # two training recordings under new names, and one that is not
        (ev / f"class{i}").mkdir(parents=True)
        shutil.copy(tiny_synthetic / row["audio"], ev / f"class{i}" / f"copy{i}.wav")
    unseen = sorted((tiny_synthetic / "unseen").rglob("*.wav"))[0]
    shutil.copy(unseen, ev / "class1" / "other.wav")
    runner = CliRunner()
    zs = tmp_path / "zs.json"
    r = runner.invoke(app, ["eval", "zeroshot", "--model", str(ckpt), "--data", f"folder:{tiny_synthetic / 'unseen'}",
                            "--out", str(zs), "--bootstrap", "50", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["card", str(ckpt), "--train-data", f"csv:{tiny_synthetic / 'train.csv'}",
                            "--eval", f"folder:{ev}", "--results", str(zs)])
    assert r.exit_code == 0, r.output
    assert f"folder:{ev}: 2 of 3 evaluation items are in the training data" in r.output
    meta = read_card(ckpt / "README.md")["clapkit"]
    (o,) = meta["contamination"]["overlap"]
    assert (o["eval_items"], o["eval_items_matched"], o["per_rule"]["content"]["eval_items"]) == (3, 2, 2)
    assert o["classes_matched"] == {"class0": {"items": 1, "matched": 1}, "class1": {"items": 2, "matched": 1}}
    assert sorted(Path(x["eval"]).name for x in o["examples"]) == ["copy0.wav", "copy1.wav"]
    written = json.loads(zs.read_text())
    card = ModelCard.load(ckpt / "README.md")
    got = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert got["top1"] == written["top1"] and got["top5"] == written["top5"]
    assert card.data.datasets == [f"csv:{tiny_synthetic / 'train.csv'}"]  # the model's own record (provenance's)
    assert meta["training_data"][0]["counts"]["pairs"] == len(rows)  # --train-data: the whole file, audited
    assert "2 of 3 evaluation items (66.7%) match one or more" in (ckpt / "README.md").read_text()
    # a refresh that reads nothing new keeps the evidence and the results
    r = runner.invoke(app, ["card", str(ckpt)])
    assert r.exit_code == 0, r.output
    again = read_card(ckpt / "README.md")["clapkit"]
    assert again["contamination"]["overlap"] == meta["contamination"]["overlap"] and again["results"] == meta["results"]


def test_bad_inputs_name_the_file_or_option(tmp_path, tiny_checkpoint):
    runner = CliRunner()
    missing = tmp_path / "no-such-model"
    r = runner.invoke(app, ["card", str(missing)])
    assert isinstance(r.exception, ConfigError) and str(missing) in str(r.exception)
    bad = tmp_path / "bad.json"
    bad.write_text('{"top1": 0.5,')
    out = tmp_path / "card.md"
    r = runner.invoke(app, ["card", str(tiny_checkpoint), "--results", str(bad), "--out", str(out)])
    assert isinstance(r.exception, DataError) and str(bad) in str(r.exception) and not out.exists()
    (tmp_path / "other.json").write_text('{"loss": 1.0}')
    with pytest.raises(DataError, match="other.json: no results a model card reads"):
        read_results(tmp_path / "other.json")
    with pytest.raises(DataError, match="missing.json: results file not found"):
        read_results(tmp_path / "missing.json")
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_checkpoint, foreign)
    (foreign / "README.md").write_text("---\nlibrary_name: transformers\n---\n# someone's card\n")
    r = runner.invoke(app, ["card", str(foreign)])
    assert isinstance(r.exception, ConfigError) and "give --out" in str(r.exception)
    r = runner.invoke(app, ["card", str(tiny_checkpoint), "--out", str(out), "--train-data", f"csv:{tmp_path / 'x.csv'}"])
    assert isinstance(r.exception, DataError) and "x.csv" in str(r.exception)
    other = tmp_path / "other-model.json"  # another model's results never land on this card
    other.write_text(json.dumps({"top1": 0.5, "clips": 4, "multilabel": False, "model": "runs/b/checkpoint",
                                 "model_provenance": {"fingerprint": "0123456789abcdef"}}))
    r = runner.invoke(app, ["card", str(tiny_checkpoint), "--results", str(other), "--out", str(out)])
    assert isinstance(r.exception, ConfigError) and "other-model.json: these results are of another model" in str(
        r.exception) and not out.exists()


def test_a_card_that_cannot_be_written_warns_and_the_run_stands(tmp_path):
    from clapkit.training.common import write_run_card

    (tmp_path / "checkpoint").mkdir()

    def broken():
        raise OSError("No space left on device")

    with pytest.warns(RuntimeWarning, match=r"model card not written \(OSError: No space left.*clapkit card"):
        write_run_card(tmp_path, "clap", {}, {}, "audio", broken)
    assert not (tmp_path / "checkpoint" / "README.md").exists()


def test_results_are_read_from_each_result_format(tmp_path):
    """eval retrieval / eval sts output, a bench cell (its audit columns left out) and a
    run's metrics.json holding results by name."""
    from clapkit.audit.card import result_rows

    retrieval = {"text_to_audio": {"R@1": 0.1, "R@10": 0.5, "ci": {"R@1": [0.05, 0.2]}, "queries": 40},
                 "audio_to_text": {"R@1": 0.2, "queries": 8}, "data": "clotho:eval.csv", "audio": 8}
    got = {(r["task"], r["metric"]): (r["value"], r["ci"], r["n"]) for r in result_rows(retrieval)}
    assert got == {("text-to-audio-retrieval", "R@1"): (0.1, [0.05, 0.2], 40), ("text-to-audio-retrieval", "R@10"): (0.5, None, 40),
                   ("audio-to-text-retrieval", "R@1"): (0.2, None, 8)}
    sts = {"tasks": {"STSBenchmark": {"spearman": 80.5, "pairs": 1379, "ci": {"spearman": [79.0, 82.0]}}}, "avg": 75.0}
    assert [(r["dataset"], r["value"], r["metric_type"]) for r in result_rows(sts)] == [
        ("STSBenchmark", 80.5, "spearmanr"), ("STS 7-task average", 75.0, "spearmanr")]
    cell = {"type": "retrieval", "medium": "audio", "data": "clotho:eval.csv", "metrics": [
        {"metric": "text_to_audio_R@1", "value": 0.1, "ci_low": 0.05, "ci_high": 0.2, "n": 40},
        {"metric": "overlap_fraction", "value": 0.0, "ci_low": None, "ci_high": None, "n": 8},
        {"metric": "top1[prompts=clapkit:ensemble]", "value": 0.3, "ci_low": None, "ci_high": None, "n": 8}]}
    (row,) = result_rows(cell)
    assert (row["task"], row["metric"], row["ci"], row["n"]) == ("text-to-audio-retrieval", "R@1", [0.05, 0.2], 40)
    demo = {"zeroshot_unseen": {"accuracy": 0.25, "top5": 0.75, "clips": 16, "chance": 0.125}, "retrieval_heldout": retrieval,
            "train": {"train_pairs": 10}}
    rows = result_rows(demo)
    assert {(r["dataset"], r["metric"]) for r in rows} >= {("zeroshot_unseen", "top1"), ("zeroshot_unseen", "top5"),
                                                           ("clotho:eval.csv", "R@1")}


def test_train_cse_writes_a_card_that_provenance_reads(tmp_path, tiny_bert):
    """A train cse folder records no data.train: the card's datasets are its training data
    (what provenance then reports), and its sentences are scanned against every suite."""
    import clapkit
    from clapkit.config import load_config
    from clapkit.training.cse import train_cse

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"{s}, number {i}." for i, s in enumerate(CAPTIONS * 3)) + "\n")
    train_cse(load_config(None, [f"cse.model.name={tiny_bert}", f"cse.corpus=txt:{corpus}", "cse.batch_size=8",
                                 "cse.steps=2", "cse.eval_steps=2", "cse.model.max_length=16", "runtime.progress=false",
                                 "runtime.device=cpu"]), tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoint"
    card = ModelCard.load(ckpt / "README.md")
    meta = read_card(ckpt / "README.md")["clapkit"]
    assert card.data.library_name == "clapkit" and card.data.pipeline_tag == "sentence-similarity"
    assert card.data.datasets == [f"txt:{corpus}"] == clapkit.load(ckpt, device="cpu").provenance["training_data"]
    assert meta["training_data"][0]["counts"]["sentences"] == 21 and meta["recipe"] == "cse"
    assert set(meta["contamination"]["suites"]) == {"esc50", "urbansound8k", "cifar10"}
    assert meta["contamination"]["suites"]["esc50"]["named_all"] == ALL


def test_a_runs_own_evaluators_give_the_best_windows_results(tmp_path):
    """train.eval's metrics in the best epoch's row of metrics.csv (NaN on other windows)."""
    from clapkit.audit.card import run_results

    (tmp_path / "metrics.csv").write_text("epoch,phase,train_loss,val_loss,zeroshot_top1,zeroshot_top5,seconds\n"
                                          "1,unfrozen,2.0,1.9,0.25,0.5,1.0\n2,unfrozen,1.5,1.4,nan,nan,1.0\n"
                                          "3,unfrozen,1.2,1.1,0.375,0.75,1.0\n")
    cfg = {"train": {"eval": {"zeroshot": "esc50:/data/ESC-50"}}}
    rows = run_results(tmp_path, cfg, {"best_epoch": 3}, "audio")
    assert [(r["task"], r["dataset"], r["metric"], r["value"], r["ci"]) for r in rows] == [
        ("zero-shot-audio-classification", "esc50:/data/ESC-50", "top1", 0.375, None),
        ("zero-shot-audio-classification", "esc50:/data/ESC-50", "top5", 0.75, None)]
    assert run_results(tmp_path, cfg, {"best_epoch": 2}, "audio") == []  # not evaluated that epoch
