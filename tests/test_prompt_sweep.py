"""``--prompt-sweep`` (every registered prompt set on one embedding of the media) and
``--manifest`` / ``--intersect`` (another lab's copy of the set) on ``eval zeroshot`` and
``bench``."""

from __future__ import annotations

import json

import numpy as np
import published
import pytest
from typer.testing import CliRunner

from clapkit.cli import app
from clapkit.evaluation.prompts import registered_prompt_sets


def zeroshot(*args):
    result = CliRunner().invoke(app, ["eval", "zeroshot", "--device", "cpu", "--bootstrap", "200", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def test_each_swept_set_equals_its_own_run(tiny_checkpoint, tmp_path):
    data = f"esc50:{published.esc50(tmp_path / 'E')}"
    out = tmp_path / "sweep.json"
    printed = zeroshot("--model", tiny_checkpoint, "--data", data, "--prompt-sweep", "--out", out).output
    sweep = json.loads(out.read_text())["prompt_sweep"]
    names = [s["name"] for s in sweep["sets"]]
    registered = [e["name"] for e in registered_prompt_sets("audio")]
    assert sweep["default"] == "clapkit:default" and names[0] == "clapkit:default"
    assert set(names) | set(sweep["not_applicable"]) == set(registered)
    assert "evar:cremad" in sweep["not_applicable"]  # its own phrases name CREMA-D's classes, not ESC-50's
    by_name = {s["name"]: s for s in sweep["sets"]}
    for name in ("laion_clap:esc50", "maeb:esc50", "glap:sound"):
        path = tmp_path / f"{name}.json"
        zeroshot("--model", tiny_checkpoint, "--data", data, "--prompts", name, "--out", path)
        alone = json.loads(path.read_text())
        assert by_name[name]["top1"] == alone["top1"] and by_name[name]["ci"] == alone["ci"]["top1"]
        assert by_name[name]["first_prompts"] == [t.format(label=alone["class_names_used"][0])
                                                  for t in alone["templates"]]
    values = [s["top1"] for s in sweep["sets"]]
    assert sweep["spread"] == pytest.approx(max(values) - min(values))
    assert by_name[sweep["best"]]["top1"] == max(values) and by_name[sweep["worst"]]["top1"] == min(values)
    assert "vs_default" not in by_name["clapkit:default"]
    for s in sweep["sets"][1:]:
        assert s["vs_default"]["test"] == "mcnemar_exact" and 0 <= s["vs_default"]["p_value"] <= 1
        assert s["vs_default"]["difference"] == pytest.approx(s["top1"] - by_name["clapkit:default"]["top1"])
    assert "prompt spread" in printed and "maeb:esc50" in printed


def test_sweep_compares_with_the_prompts_given(tiny_checkpoint, tmp_path):
    data = f"esc50:{published.esc50(tmp_path / 'E')}"
    out = tmp_path / "s.json"
    zeroshot("--model", tiny_checkpoint, "--data", data, "--prompts", "msclap:default", "--prompt-sweep", "--out", out)
    sweep = json.loads(out.read_text())["prompt_sweep"]
    assert sweep["default"] == "msclap:default"
    assert "vs_default" not in next(s for s in sweep["sets"] if s["name"] == "msclap:default")


def test_bench_sweep_rows_equal_the_cells_sweep(tiny_checkpoint, tmp_path):
    from clapkit.experiments.bench import check_bench, run_bench

    task = {"name": "esc", "type": "zeroshot", "data": f"esc50:{published.esc50(tmp_path / 'E')}"}
    bench = check_bench({"tasks": [task], "bootstrap": 100, "seed": 0}, "t", models=[f"m={tiny_checkpoint}"])
    run_bench(bench, tmp_path / "out", progress=False, prompt_sweep=True)
    cell = json.loads((tmp_path / "out" / "cells" / "m__esc.json").read_text())
    rows = {r["metric"]: r for r in cell["metrics"]}
    for s in cell["prompt_sweep"]["sets"]:
        assert rows[f"top1[prompts={s['name']}]"]["value"] == s["top1"]
        assert [rows[f"top1[prompts={s['name']}]"][k] for k in ("ci_low", "ci_high")] == s["ci"]
    assert rows["top1_prompt_spread"]["value"] == cell["prompt_sweep"]["spread"]
    assert rows["top1[prompts=clapkit:default]"]["value"] == rows["top1"]["value"]


def test_eval_against_another_labs_copy_and_the_shared_items(tiny_checkpoint, tmp_path):
    ours = published.esc50(tmp_path / "ours" / "ESC-50-master")
    theirs = published.esc50(tmp_path / "theirs" / "ESC-50-master")
    for name, *_ in published.ESC50_ROWS[:2]:  # their copy lacks two clips
        (theirs / "audio" / name).unlink()
    clip = theirs / "audio" / published.ESC50_ROWS[4][0]  # and holds one re-encoded
    import soundfile as sf

    wave, sr = sf.read(clip)
    sf.write(clip, wave, sr, subtype="FLOAT")
    manifest = tmp_path / "theirs.json"
    result = CliRunner().invoke(app, ["manifest", f"esc50:{theirs}", "--out", str(manifest)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "r.json"
    zeroshot("--model", tiny_checkpoint, "--data", f"esc50:{ours}", "--manifest", manifest, "--out", out)
    (copy,) = json.loads(out.read_text())["copies"]
    assert (copy["same"]["count"], copy["different_content"]["count"], copy["only_here"]["count"],
            copy["only_there"]["count"]) == (7, 1, 2, 0)
    zeroshot("--model", tiny_checkpoint, "--data", f"esc50:{ours}", "--manifest", manifest, "--intersect", "--out", out)
    r = json.loads(out.read_text())
    assert r["intersect"] == {"kept": 7, "left_out": 3} and r["clips"] == 7
    assert r["coverage"] == {"listed": 10, "present": 10, "missing": 0, "unreadable": 0, "malformed": 0}
    bad = CliRunner().invoke(app, ["eval", "zeroshot", "--model", str(tiny_checkpoint), "--data", f"esc50:{ours}",
                                   "--intersect", "--device", "cpu"])
    assert bad.exit_code != 0 and "give at least one --manifest" in str(bad.exception)


def test_fold_protocol_on_eval_zeroshot(tiny_checkpoint, tmp_path):
    data = f"esc50:{published.esc50(tmp_path / 'E')}"
    out = tmp_path / "r.json"
    zeroshot("--model", tiny_checkpoint, "--data", data, "--fold-protocol", "per-fold-mean", "--out", out)
    r = json.loads(out.read_text())
    assert r["main_metric"] == "top1_fold_mean" and r["fold_protocol"] == "per-fold-mean"
    assert r["top1_fold_mean"] == pytest.approx(np.mean(list(r["per_fold"]["folds"].values())))
    zeroshot("--model", tiny_checkpoint, "--data", data, "--fold-protocol", "fold-2", "--out", out)
    assert json.loads(out.read_text())["clips"] == 5
    bad = CliRunner().invoke(app, ["eval", "zeroshot", "--model", str(tiny_checkpoint), "--data", data,
                                   "--fold-protocol", "fold-2", "--folds", "1", "--device", "cpu"])
    assert bad.exit_code != 0 and "not both" in str(bad.exception)


def test_sweep_against_the_tasks_own_templates(tiny_checkpoint, tmp_path):
    data = f"esc50:{published.esc50(tmp_path / 'E')}"
    out = tmp_path / "s.json"
    zeroshot("--model", tiny_checkpoint, "--data", data, "--template", "a sound of {label}", "--prompt-sweep",
             "--out", out)
    r = json.loads(out.read_text())
    sweep = r["prompt_sweep"]
    assert sweep["default"] == "task prompts" and sweep["sets"][0]["name"] == "task prompts"
    assert sweep["sets"][0]["top1"] == r["top1"] and sweep["sets"][0]["first_prompts"] == ["a sound of cow"]
