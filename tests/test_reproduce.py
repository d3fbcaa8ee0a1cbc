"""Reproduction cards (``clapkit reproduce``): the card schema, the MiniLM card end to end on
the real STS Benchmark, every shipped card's protocol resolved on fixtures in the owners'
layouts, missing-item accounting, fold protocols and STS intervals."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import published
import pytest
import yaml
from typer.testing import CliRunner

from clapkit.cli import app
from clapkit.errors import ConfigError
from clapkit.experiments.reproduce import (
    REQUIRED,
    check_card,
    check_protocol,
    list_cards,
    load_card,
)


def card_dict(**task) -> dict:
    return {"title": "a row", "model": {"name": "m"}, "task": task or {"type": "zeroshot", "data": "esc50:{data}/E"},
            "metric": "top1", "published": {"value": 0.5, "source": "https://example.org/x", "where": "line 1"}}


@pytest.mark.parametrize("field", list(REQUIRED))
def test_each_missing_card_field_is_named(field, tmp_path):
    card = card_dict()
    parent, _, child = field.partition(".")
    if child:
        del card[parent][child]
    else:
        del card[parent]
    with pytest.raises(ConfigError, match=rf"card.yaml: missing field {field} \("):
        check_card(card, tmp_path / "card.yaml")


def test_card_schema_refuses_unknown_fields_and_bad_values(tmp_path):
    where = tmp_path / "c.yaml"
    with pytest.raises(ConfigError, match="unknown field.*published.url"):
        check_card(card_dict() | {"published": {**card_dict()["published"], "url": "x"}}, where)
    with pytest.raises(ConfigError, match="unknown field.*metrics"):
        check_card(card_dict() | {"metrics": "top1"}, where)
    with pytest.raises(ConfigError, match=r"published.value '91.0%' is not a number"):
        check_card(card_dict() | {"published": {**card_dict()["published"], "value": "91.0%"}}, where)
    with pytest.raises(ConfigError, match="metric 'top_1' is not one a zeroshot task reports"):
        check_card(card_dict() | {"metric": "top_1"}, where)
    with pytest.raises(ConfigError, match="items 0"):
        check_card(card_dict() | {"items": 0}, where)
    with pytest.raises(ConfigError, match="task.name"):
        check_card(card_dict(type="zeroshot", data="esc50:x", name="t"), where)
    with pytest.raises(ConfigError, match="neither a shipped card"):
        load_card("no-such-card")
    assert check_card(card_dict(), where)["name"] == "c"


def test_minilm_card_reproduces_stsb_inside_its_interval(shared_data, tmp_path):
    result = CliRunner().invoke(app, ["reproduce", "minilm-stsb", "--model", "minilm", "--data-root",
                                      str(shared_data / "sts"), "--out", str(tmp_path / "r"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "r" / "reproduction.json").read_text())
    (r,) = record["results"]
    assert record["published"]["value"] == 82.03 and r["n"] == 1379 == record["items"]
    assert r["value"] == pytest.approx(82.03, abs=0.005)  # the published figure, to its printed precision
    assert r["published_inside_interval"] and r["ci"][0] < 82.03 < r["ci"][1] and r["verdict"] == "agrees"
    assert r["coverage"] == {"listed": 1379, "present": 1379, "missing": 0, "unreadable": 0, "malformed": 0}
    assert "agrees" in result.output and "published 82.03" in result.output


def fixture_root(root, shared_data):
    """Every dataset a shipped card names, in its owner's layout, under one --data-root."""
    from test_sts import write_senteval

    published.esc50(root / "ESC-50-master")
    published.us8k(root / "UrbanSound8K")
    published.gtzan(root / "gtzan")
    published.vggsound(root / "vggsound", root / "vggsound" / "audio")
    published.imagenet_kaggle(root / "imagenet")
    c10, c100 = root / "cifar-10-batches-py", root / "cifar-100-python"
    c10.mkdir()
    c100.mkdir()
    pixels = (np.arange(2 * 3072) % 256).reshape(2, 3072).astype(np.uint8)
    pickle.dump({b"label_names": [b"airplane", b"automobile"]}, open(c10 / "batches.meta", "wb"))
    pickle.dump({b"data": pixels, b"labels": [1, 0]}, open(c10 / "test_batch", "wb"))
    pickle.dump({b"fine_label_names": [b"apple", b"aquarium_fish"], b"coarse_label_names": [b"fish"]},
                open(c100 / "meta", "wb"))
    pickle.dump({b"data": pixels, b"fine_labels": [0, 1], b"coarse_labels": [0, 0]}, open(c100 / "test", "wb"))
    shutil.copytree(shared_data / "sts" / "stsbenchmark", root / "stsbenchmark")
    sts = root / "downstream" / "STS"
    sts.mkdir(parents=True)
    write_senteval(sts, {f"STS1{k}": 2 for k in range(2, 7)})
    shutil.copytree(shared_data / "sts" / "stsbenchmark", sts / "STSBenchmark")
    (root / "downstream" / "SICK").mkdir()
    (root / "downstream" / "SICK" / "SICK_test_annotated.txt").write_text(
        "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
        "6\tA man plays.\tA man is playing.\t4.9\tENTAILMENT\n"
        "7\tA dog runs.\tA cat sleeps.\t1.2\tNEUTRAL\n"
        "8\tA woman sings.\tA woman is singing a song.\t4.4\tENTAILMENT\n")
    return root


def test_every_shipped_card_runs_its_protocol_on_fixtures(shared_data, tmp_path, tiny_checkpoint,
                                                         tiny_image_checkpoint, tiny_bert):
    """Each card's readers, prompts and class names on fixtures in the owners' layouts
    (``--check``), then its whole protocol run on a tiny model of its medium: a value with its
    interval on the items read, and the model departure named."""
    from clapkit.experiments.reproduce import reproduce

    cards = list_cards()
    assert len(cards) >= 15
    root = fixture_root(tmp_path / "data", shared_data)
    seen = {}
    for name in cards:
        card = load_card(name)
        assert card["published"]["source"].startswith("https://") and card["published"]["where"], name
        if name == "clip-vit-b-32-imagenet1k":  # CLIP_benchmark's 1000 names need the 1000 classes
            with pytest.raises(Exception, match="1000 names for the data's 2 classes"):
                check_protocol(card, root)
            continue
        seen[name] = check_protocol(card, root)
        assert seen[name]["items"] > 0, name
        if name == "minilm-stsb":  # run on the real model in test_minilm_card_reproduces_stsb_inside_its_interval
            continue
        data = card["task"]["data"]
        model = tiny_bert if card["task"]["type"] == "sts" else \
            tiny_image_checkpoint if str(data).startswith(("cifar:", "imagenet:")) else tiny_checkpoint
        record = reproduce(card, [f"tiny={model}"], tmp_path / "runs" / name, root, bootstrap=50)
        (r,) = record["results"]
        assert r["n"] == seen[name]["items"] and r["ci"][0] <= r["value"] <= r["ci"][1], name
        assert r["verdict"] in ("agrees", "above the published value", "below the published value"), name
        if card["model"].get("kind") or card["model"].get("family"):
            assert any(d.startswith(("model:", "model kind")) for d in r["departures"]), (name, r["departures"])
        if (card.get("input") or {}).get("sample_rate"):
            assert any(d.startswith("sample_rate: the model is fed 8000 Hz") for d in r["departures"]), name
    assert seen["laion-clap-esc50-fold1"]["items"] == 5  # fold 1 only
    assert seen["laion-clap-esc50-fold1"]["first_prompts"] == ["This is a sound of cow"]
    assert seen["laion-clap-table-esc50"]["items"] == 10 and seen["msclap-2023-esc50"]["first_prompts"] == [
        "this is the sound of cow"]
    assert seen["laion-clap-table-us8k"]["class_names_used"][:2] == ["air conditioner", "car horn"]
    assert seen["laion-clap-music-gtzan"]["first_prompts"] == ["This audio is a blues song."]
    assert len(seen["clip-vit-b-32-cifar10"]["first_prompts"]) == 18  # CLIP_benchmark's cifar10 templates
    assert seen["simcse-sup-bert-base"]["sets"]["STSB-test"] == 1379 and len(seen["simcse-sup-bert-base"]["sets"]) == 7
    assert seen["minilm-stsb"]["sets"] == {"STSB-test": 1379}


def test_missing_and_truncated_clips_are_counted_and_reported(tiny_checkpoint, tmp_path):
    root = published.esc50(tmp_path / "data" / "ESC-50-master")
    for name, *_ in published.ESC50_ROWS[1:4]:
        (root / "audio" / name).unlink()
    cut = root / "audio" / published.ESC50_ROWS[5][0]
    cut.write_bytes(cut.read_bytes()[:3000])  # a copy interrupted mid-file: the header still says 0.5 s
    card = card_dict(type="zeroshot", data="esc50:{data}/ESC-50-master", fold_protocol="all-folds")
    card.update(items=10, input={"sample_rate": 48000})
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    args = ["reproduce", str(tmp_path / "card.yaml"), "--model", f"a={tiny_checkpoint}", "--model",
            f"b={tiny_checkpoint}", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "r"),
            "--bootstrap", "200", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "r" / "reproduction.json").read_text())
    a = record["results"][0]
    assert a["coverage"] == {"listed": 10, "present": 6, "missing": 3, "unreadable": 1, "malformed": 0}
    assert a["n"] == 6 and len(a["ci"]) == 2
    assert "3 of the 10 items the metadata lists are missing" in a["departures"]
    assert "1 of the 10 items the metadata lists are unreadable" in a["departures"]
    assert "scored 6 items; the published row was computed on 10" in a["departures"]
    assert any(d.startswith("sample_rate: the model is fed 8000 Hz; the card states 48000 Hz") for d in a["departures"])
    (pair,) = record["paired"]  # the same model twice: no difference, McNemar's p = 1
    assert (pair["difference"], pair["p_value"], pair["test"]) == (0.0, 1.0, "mcnemar_exact")
    rows = (tmp_path / "r" / "results.csv").read_text().splitlines()
    header = rows[0].split(",")
    top1 = next(r.split(",") for r in rows[1:] if ",top1," in r)
    assert [top1[header.index(k)] for k in ("listed", "present", "missing", "unreadable")] == ["10", "6", "3", "1"]
    cell = json.loads((tmp_path / "r" / "cells" / "a__card.json").read_text())
    assert cell["skipped"] == 4 and cell["audio_input"]["sample_rate"] == 8000


def test_fold_protocols(tiny_checkpoint, tmp_path):
    from clapkit.evaluation.zeroshot import fold_protocol
    from clapkit.experiments.bench import check_bench, run_bench

    assert fold_protocol("all-folds") == (None, "top1") and fold_protocol("fold-3") == ([3], "top1")
    assert fold_protocol("per-fold-mean") == (None, "top1_fold_mean")
    with pytest.raises(ConfigError, match="'fold3': choose all-folds, fold-K"):
        fold_protocol("fold3")
    published.esc50(tmp_path / "E")
    tasks = [{"name": p, "type": "zeroshot", "data": f"esc50:{tmp_path / 'E'}", "fold_protocol": p}
             for p in ("all-folds", "fold-1", "per-fold-mean")]
    bench = check_bench({"tasks": tasks, "bootstrap": 0, "seed": 0}, "t", models=[f"m={tiny_checkpoint}"])
    run_bench(bench, tmp_path / "out", progress=False)
    cells = {t["name"]: json.loads((tmp_path / "out" / "cells" / f"m__{t['name']}.json").read_text()) for t in tasks}
    value = {k: {r["metric"]: r["value"] for r in c["metrics"]} for k, c in cells.items()}
    assert cells["fold-1"]["coverage"]["present"] == 5 and cells["all-folds"]["coverage"]["present"] == 10
    folds = cells["per-fold-mean"]["per_fold"]["folds"]
    assert cells["per-fold-mean"]["main_metric"] == "top1_fold_mean"
    assert value["per-fold-mean"]["top1_fold_mean"] == pytest.approx((folds["1"] + folds["2"]) / 2)
    assert value["fold-1"]["top1"] == pytest.approx(folds["1"])
    both = {"name": "x", "type": "zeroshot", "data": f"esc50:{tmp_path / 'E'}", "fold_protocol": "fold-1", "folds": [1]}
    with pytest.raises(ConfigError, match="task x: give folds or a fold protocol .fold-1., not both"):
        run_bench(check_bench({"tasks": [both]}, "t", models=[f"m={tiny_checkpoint}"]), tmp_path / "o2", progress=False)


def test_sts_intervals_are_the_bootstrap_of_scipys_spearman():
    from scipy.stats import spearmanr

    from clapkit.evaluation.sts import spearman_intervals

    rng = np.random.default_rng(3)
    gold = rng.integers(0, 6, 150).astype(float)
    pred = gold + rng.normal(0, 2, 150)
    (lo, hi) = spearman_intervals({"s": (pred, gold)}, resamples=100, seed=7)["s"]
    draws = np.random.default_rng(7)
    idx = np.concatenate([draws.integers(0, 150, size=(64, 150)), draws.integers(0, 150, size=(36, 150))])
    stats = [100 * spearmanr(pred[i], gold[i]).correlation for i in idx]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(stats, [0.025, 0.975])), abs=1e-9)


def test_a_missing_clip_of_another_fold_is_not_counted(tmp_path):
    root = published.esc50(tmp_path / "data" / "ESC-50-master")
    (root / "audio" / published.ESC50_ROWS[7][0]).unlink()  # a fold-2 clip
    one = check_protocol(load_card("laion-clap-esc50-fold1"), tmp_path / "data")
    assert one["coverage"] == {"listed": 5, "present": 5, "missing": 0, "unreadable": 0, "malformed": 0}
    every = check_protocol(load_card("laion-clap-table-esc50"), tmp_path / "data")
    assert every["coverage"] == {"listed": 10, "present": 9, "missing": 1, "unreadable": 0, "malformed": 0}


def test_a_cell_of_another_model_is_never_reused(tiny_checkpoint, tiny_image_checkpoint, tmp_path):
    from clapkit.experiments.reproduce import reproduce

    published.esc50(tmp_path / "data" / "ESC-50-master")
    card = load_card("msclap-2023-esc50")
    record = reproduce(card, [f"m={tiny_checkpoint}"], tmp_path / "r", tmp_path / "data", bootstrap=20)
    assert record["results"][0]["n"] == 10
    with pytest.raises(ConfigError, match=r"m__msclap-2023-esc50.json: this cell was computed from another model"):
        reproduce(card, [f"m={tiny_image_checkpoint}"], tmp_path / "r", tmp_path / "data", bootstrap=20)
    other = reproduce(card, [f"clip={tiny_image_checkpoint}"], tmp_path / "r2", tmp_path / "data", bootstrap=20)
    assert other["results"][0]["verdict"] == "not scored: an image model" and other["results"][0]["value"] is None


def test_a_text_encoder_in_a_bench_scores_sts_and_says_why_not_the_rest(shared_data, tiny_checkpoint, tmp_path):
    from clapkit.experiments.bench import check_bench, run_bench

    tasks = [{"name": "stsb", "type": "sts", "data": f"stsb:{shared_data / 'sts' / 'stsbenchmark'}"},
             {"name": "esc", "type": "zeroshot", "data": f"esc50:{published.esc50(tmp_path / 'E')}"}]
    bench = check_bench({"tasks": tasks, "bootstrap": 20}, "t", models=["mini=minilm", f"clap={tiny_checkpoint}"])
    run_bench(bench, tmp_path / "out", progress=False)
    cell = lambda name: json.loads((tmp_path / "out" / "cells" / f"{name}.json").read_text())  # noqa: E731
    assert cell("mini__esc")["not_applicable"].startswith("a text encoder")
    assert cell("mini__stsb")["metrics"][0]["value"] == pytest.approx(82.03, abs=0.005)
    clap = cell("clap__stsb")  # a dual encoder's text tower, named as the checkpoint, not as its wrapper
    assert clap["model_family"] == cell("clap__esc")["model_family"] != "clapkit"
