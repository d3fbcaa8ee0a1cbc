"""``clapkit export mteb`` (issue 32): a bench's cells and eval results written as MTEB
result files and read back with mteb's own classes (``TaskResult.from_disk``,
``ResultCache.load_results``, ``ModelMeta``; mteb 2.26.24, in the dev environment through
the ``reference`` extra: a missing mteb fails these tests, never skips them); the tasks MTEB
lacks and the protocol differences listed, not written; and the mapping table checked
against mteb's own task definitions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_tones
from published import us8k
from test_cli import clapkit

from clapkit.cli import export as _export  # noqa: F401 (registers `clapkit export`; the lead adds it to clapkit.cli)
from clapkit.experiments.mteb_export import ESC50_CLASSES, MTEB_TASKS, MTEB_VERSION

ESC50_HEADER = "filename,fold,target,category,esc10,src_file,take"  # meta/esc50.csv as published


@pytest.fixture(scope="session")
def mteb():
    try:
        import mteb
    except ImportError as exc:  # the reference extra installs it (make venv-dev)
        pytest.fail(f"mteb is not installed ({exc}); `make venv-dev` installs it with the reference extra")
    assert mteb.__version__ == MTEB_VERSION, f"mteb {mteb.__version__}; MTEB_TASKS copies mteb {MTEB_VERSION}"
    return mteb


@pytest.fixture(scope="module")
def esc50_full(tmp_path_factory) -> Path:
    """ESC-50's whole layout: its 50 categories in target order, 40 clips each over 5 folds
    (2,000, the clips MTEB's ESC50_Zeroshot scores), each clip a class tone with its own
    noise (0.1 s at 8 kHz), named as ESC-50 names them (FOLD-SOURCE-TAKE-TARGET.wav)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("esc50-full")
    (root / "meta").mkdir()
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(800) / 8000
    lines = [ESC50_HEADER]
    for target, category in enumerate(ESC50_CLASSES):
        for i in range(40):
            fold, source = 1 + i // 8, 100000 + 100 * target + i
            name = f"{fold}-{source}-A-{target}.wav"
            lines.append(f"{name},{fold},{target},{category},False,{source},A")
            clip = 0.2 * np.sin(2 * np.pi * (200 + 60 * target) * t) + 0.05 * rng.standard_normal(len(t))
            sf.write(root / "audio" / name, clip.astype(np.float32), 8000, subtype="PCM_16")
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def embedding_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embedding-cache")


def _bench(tmp_path, esc50_full, tiny_checkpoint, embedding_cache) -> Path:
    captions = tmp_path / "captions.csv"  # the model's training captions: they name dogs and rain
    captions.write_text("audio,caption\na.wav,a dog barks at night\nb.wav,rain on a tin roof\n")
    train = tmp_path / "train.csv"  # its training data holds five of the evaluation clips
    clips = sorted((esc50_full / "audio").glob("*.wav"))[:5]
    train.write_text("audio,caption\n" + "".join(f"{c},a clip\n" for c in clips))
    spec = {"models": [{"name": "ours", "model": str(tiny_checkpoint), "captions": [str(captions)],
                        "train_data": [f"csv:{train}"]}],
            "tasks": [{"name": "esc50-mteb", "data": f"esc50:{esc50_full}", "type": "zeroshot", "prompts": "maeb:esc50"},
                      {"name": "esc50-default", "data": f"esc50:{esc50_full}", "type": "zeroshot"},
                      {"name": "digits", "data": f"fsdd:{write_tones(tmp_path / 'fsdd')}", "type": "zeroshot"},
                      {"name": "us8k", "data": us8k(tmp_path / "us8k"), "type": "zeroshot"}],
            "bootstrap": 20, "seed": 0}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "bench-out"
    clapkit("bench", "--config", path, "--out", out, "--device", "cpu", "--cache", embedding_cache)
    return out


@pytest.mark.slow
def test_a_bench_exports_the_tasks_mteb_has_and_lists_the_rest(tmp_path, mteb, esc50_full, tiny_checkpoint,
                                                                  embedding_cache):
    from mteb.models import ModelMeta

    bench = _bench(tmp_path, esc50_full, tiny_checkpoint, embedding_cache)
    cell = json.loads((bench / "cells" / "ours__esc50-mteb.json").read_text())
    top1 = next(r for r in cell["metrics"] if r["metric"] == "top1")
    mca = next(r for r in cell["metrics"] if r["metric"] == "mean_class_accuracy")
    assert top1["n"] == 2000 and cell["class_names"][11] == "sea_waves"
    out = tmp_path / "mteb"
    proc = clapkit("export", "mteb", bench, "--out", out)
    folder = out / "results" / "clapkit__ours" / cell["model_fingerprint"]
    assert sorted(p.name for p in folder.iterdir()) == ["ESC50_Zeroshot.json", "model_meta.json"]
    assert "-> ESC50_Zeroshot accuracy" in proc.stdout

    # the file, read by mteb's TaskResult: task, split, subset, languages, the main score as clapkit's number
    result = mteb.TaskResult.from_disk(folder / "ESC50_Zeroshot.json")
    task = mteb.get_task("ESC50_Zeroshot")
    assert result.task_name == "ESC50_Zeroshot" and result.eval_splits == task.metadata.eval_splits == ["train"]
    assert result.dataset_revision == task.metadata.revision and result.mteb_version == MTEB_VERSION
    (entry,) = result.scores["train"]
    assert entry["hf_subset"] == "default" and entry["languages"] == ["zxx-Zxxx"]
    assert entry["main_score"] == entry["accuracy"] == top1["value"] and result.get_score() == top1["value"]
    assert entry["recall"] == mca["value"] and "clapkit_protocol_differences" not in entry
    assert result.validate_and_filter_scores(task).scores["train"] == [entry]  # nothing missing for MTEB's task

    # read as MTEB reads a results folder: the model's name and revision from its model_meta.json
    loaded = mteb.ResultCache(out).load_results(include_remote=False)
    (model,) = loaded.model_results
    assert (model.model_name, model.model_revision) == ("clapkit/ours", cell["model_fingerprint"])
    assert [r.task_name for r in model.task_results] == ["ESC50_Zeroshot"]
    meta = ModelMeta.model_validate(json.loads((folder / "model_meta.json").read_text()))
    assert meta.name == "clapkit/ours" and meta.modalities == ["audio", "text"]
    assert meta.training_datasets == {"ESC50_Zeroshot"}  # its training data holds 5 of the clips

    # the rest listed with the reason, not written
    listed = {n["task"]: n for n in json.loads((out / "not_exported.json").read_text())}
    assert listed["digits"]["status"] == "no_mteb_task" and "no zero-shot task" in listed["digits"]["reasons"][0]
    default = listed["esc50-default"]
    assert default["status"] == "protocol_differs" and default["mteb_task"] == "ESC50_Zeroshot"
    assert default["reasons"] == ["the prompts differ from MTEB's candidate texts (50 of 50): clapkit's "
                                  "'This is a sound of dog.' where MTEB's is 'This is a sound of dog'"]
    reasons = listed["us8k"]["reasons"]
    assert listed["us8k"]["status"] == "protocol_differs" and "2,048-clip stratified sample" in reasons[0]
    assert "clapkit scored 6 clips; MTEB's UrbanSound8kZeroshot scores 2048 (its train split)" in reasons
    assert "not exported: ours digits, no_mteb_task" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    (record,) = report["models"]
    (why,) = record["training_datasets_evidence"].items()  # the first ESC-50 cell's overlap, exported or not
    assert why == ("ESC50_Zeroshot", "esc50-default: overlap_fraction 0.0025")
    evidence = record["leakage_and_overlap"]["esc50-mteb"]
    assert evidence["overlap_fraction"]["value"] == pytest.approx(5 / 2000) and evidence["dirty_fraction"]["value"] > 0
    assert record["training_data"] == json.loads(json.dumps(cell["model_training_data"]))

    # --allow-protocol-differences writes the differing ones too, marked; the task MTEB lacks stays out
    marked = tmp_path / "mteb-marked"
    clapkit("export", "mteb", bench / "cells", "--out", marked, "--allow-protocol-differences",
            "--model-name", "someone/tiny-clap", "--revision", "r1")
    names = sorted(p.name for p in (marked / "results" / "someone__tiny-clap" / "r1").iterdir())
    assert names == ["ESC50_Zeroshot.json", "UrbanSound8kZeroshot.json", "model_meta.json"]
    us = mteb.TaskResult.from_disk(marked / "results" / "someone__tiny-clap" / "r1" / "UrbanSound8kZeroshot.json")
    assert us.scores["train"][0]["clapkit_protocol_differences"] == reasons
    listed = {(n["task"], n["status"]) for n in json.loads((marked / "not_exported.json").read_text())}
    assert listed == {("digits", "no_mteb_task"), ("esc50-default", "duplicate")}


@pytest.mark.slow
def test_eval_results_export_and_retrieval_protocols_are_checked(tmp_path, mteb, esc50_full, tiny_checkpoint,
                                                                  embedding_cache):
    zs = tmp_path / "esc50.json"
    clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", f"esc50:{esc50_full}", "--prompts", "maeb:esc50",
            "--out", zs, "--bootstrap", "20", "--device", "cpu", "--cache", embedding_cache)
    clips = sorted((esc50_full / "audio").glob("*.wav"))[:4]  # Clotho's layout: file_name, caption_1..caption_5
    clotho = tmp_path / "clotho_captions_evaluation.csv"
    clotho.write_text("file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n" + "".join(
        f"{c.name},{','.join(f'caption {k} of clip {i}' for k in range(5))}\n" for i, c in enumerate(clips)))
    rt = tmp_path / "clotho.json"
    clapkit("eval", "retrieval", "--model", tiny_checkpoint, "--data", f"clotho:{clotho}", "--audio-dir",
            esc50_full / "audio", "--out", rt, "--bootstrap", "0", "--device", "cpu")
    m, r = json.loads(zs.read_text()), json.loads(rt.read_text())
    out = tmp_path / "mteb"
    clapkit("export", "mteb", zs, rt, "--out", out)
    folder = out / "results" / "clapkit__tiny-run0" / m["model_provenance"]["fingerprint"]
    result = mteb.TaskResult.from_disk(folder / "ESC50_Zeroshot.json")
    assert result.task_name == "ESC50_Zeroshot" and result.get_score() == m["top1"]
    assert result.scores["train"][0]["main_score"] == m["top1"]
    listed = {n["mteb_task"]: n for n in json.loads((out / "not_exported.json").read_text())}
    assert set(listed) == {"ClothoT2ARetrieval.v2", "ClothoA2TRetrieval.v2"}
    assert listed["ClothoT2ARetrieval.v2"]["reasons"] == [
        "clapkit scored 20 text queries; MTEB's ClothoT2ARetrieval.v2 scores 4680",
        "clapkit searched 4 items; MTEB's ClothoT2ARetrieval.v2 searches 1045"]

    marked = tmp_path / "mteb-marked"
    clapkit("export", "mteb", rt, "--out", marked, "--allow-protocol-differences")
    files = {e["mteb_task"]: marked / e["file"] for e in json.loads((marked / "report.json").read_text())["exported"]}
    assert sorted(files) == ["ClothoA2TRetrieval.v2", "ClothoT2ARetrieval.v2"]
    for task, direction in (("ClothoT2ARetrieval.v2", "text_to_audio"), ("ClothoA2TRetrieval.v2", "audio_to_text")):
        assert files[task].parent == marked / folder.relative_to(out)
        result = mteb.TaskResult.from_disk(files[task])
        (entry,) = result.scores["test"]
        assert result.get_score() == entry["hit_rate_at_5"] == r[direction]["R@5"]
        assert entry["hit_rate_at_1"] == r[direction]["R@1"] and entry["languages"] == ["eng-Latn"]
        assert entry["clapkit_protocol_differences"] and mteb.get_task(task).metadata.main_score == "hit_rate_at_5"


def test_the_table_is_mtebs_own_task_definitions(mteb):
    """Each MTEB task the table names, as mteb defines it: type, main score, split, subset
    and languages, dataset revision, size (its descriptive statistics) and a zero-shot
    task's candidate texts; and MTEB has no audio zero-shot task on the data the table says
    it lacks one for."""
    for e in MTEB_TASKS:
        if e.task is None:
            continue
        meta = mteb.get_task(e.task).metadata
        assert (meta.type, meta.main_score, meta.revision) == (e.mteb_type, e.main_score, e.revision), e.task
        assert meta.eval_splits == [e.split] and meta.hf_subsets_to_langscripts == {e.hf_subset: list(e.languages)}
        stats = meta.descriptive_stats[e.split]
        if e.type == "retrieval":
            assert (stats["num_queries"], stats["num_documents"]) == (e.items, e.documents), e.task
        else:
            assert stats["num_samples"] == e.items, e.task
        if e.texts is not None:
            assert list(e.texts) == mteb.get_task(e.task).get_candidate_labels()
        assert e.main_score in e.metrics.values()
    zeroshot = [t.metadata.name for t in mteb.get_tasks(task_types=["AudioZeroshotClassification"],
                                                         exclude_superseded=False)]
    lacking = {e.kind for e in MTEB_TASKS if e.task is None}
    names = {"fsdd": "digit", "gtzan": "gtzan", "fsd50k": "fsd", "audioset": "audioset", "vggsound": "vggsound",
             "tut2017": "tut"}
    assert lacking == set(names)
    assert not [n for n in zeroshot for kind in lacking if names[kind] in n.lower()]


def test_what_is_not_a_result_and_a_name_mteb_refuses(tmp_path):
    cell = {"model": "a", "model_spec": "a", "task": "t", "type": "zeroshot", "data": "esc50:/x", "medium": "audio",
            "model_fingerprint": "f", "metrics": [{"metric": "top1", "value": 0.5, "ci_low": None, "ci_high": None,
                                                  "n": 10}], "templates": ["{label}"], "class_names": ["dog"]}
    cells = tmp_path / "cells"
    cells.mkdir()
    (cells / "a__t.json").write_text(json.dumps(cell))
    (cells / "b__t.json").write_text(json.dumps({**cell, "model": "b", "model_fingerprint": "g"}))
    (cells / "other.json").write_text(json.dumps({"hello": 1}))
    proc = clapkit("export", "mteb", tmp_path, "--out", tmp_path / "o", "--model-name", "x/y", check=False)
    assert proc.returncode == 2 and "--model-name names one model; the results hold 2 (a, b)" in proc.stderr
    proc = clapkit("export", "mteb", cells / "a__t.json", "--out", tmp_path / "o", "--model-name", "y", check=False)
    assert proc.returncode == 2 and "MTEB wants organization/model" in proc.stderr
    proc = clapkit("export", "mteb", tmp_path, "--out", tmp_path / "o")
    listed = json.loads((tmp_path / "o" / "not_exported.json").read_text())
    assert [n["status"] for n in listed] == ["not_a_result", "protocol_differs", "protocol_differs"]
    assert listed[1]["reasons"] == ["clapkit scored 10 clips; MTEB's ESC50_Zeroshot scores 2000 (its train split)",
                                    "clapkit scored 1 classes; MTEB's ESC50_Zeroshot scores 50"]
    assert not (tmp_path / "o" / "results").exists() and "wrote 0 MTEB result file(s)" in proc.stdout


def _row(metric, value, n):
    return {"metric": metric, "value": value, "ci_low": None, "ci_high": None, "n": n}


def test_a_hub_model_keeps_its_name_and_its_training_data_names_mteb_tasks(tmp_path, mteb):
    """Cells as bench writes them for a public model: an ESC-50 cell with MTEB's candidate
    texts on 2,000 clips and an AudioCaps retrieval cell on MTEB's 4,411 captions of 883
    clips; the model card's datasets name Clotho and AudioCaps, which model_meta.json's
    training_datasets gives as MTEB's task names."""
    from mteb.models import ModelMeta

    common = {"model": "laion", "model_spec": "laion/clap-htsat-unfused", "medium": "audio", "model_fingerprint": "abc",
              "model_training_data": ["clotho:/d/clotho_captions_development.csv", "agkphysics/AudioCaps"]}
    cells = tmp_path / "out" / "cells"
    cells.mkdir(parents=True)
    (cells / "laion__esc50.json").write_text(json.dumps({
        **common, "task": "esc50", "type": "zeroshot", "data": "esc50:/d/ESC-50",
        "metrics": [_row("top1", 0.9, 2000), _row("mean_class_accuracy", 0.91, 2000)],
        "templates": ["This is a sound of {label}"], "class_names": list(ESC50_CLASSES)}))
    rows = [_row(f"{d}_R@{k}", v, n) for d, n in (("text_to_audio", 4411), ("audio_to_text", 883))
            for k, v in ((1, 0.3), (5, 0.6), (10, 0.7))]
    (cells / "laion__audiocaps.json").write_text(json.dumps({
        **common, "task": "audiocaps", "type": "retrieval", "data": "audiocaps:/d/test.csv", "metrics": rows,
        "captions": 4411}))
    out = tmp_path / "mteb"
    clapkit("export", "mteb", tmp_path / "out", "--out", out)
    folder = out / "results" / "laion__clap-htsat-unfused" / "abc"
    assert sorted(p.name for p in folder.iterdir()) == ["AudioCapsA2TRetrieval.json", "AudioCapsT2ARetrieval.json",
                                                        "ESC50_Zeroshot.json", "model_meta.json"]
    assert json.loads((out / "not_exported.json").read_text()) == []
    (model,) = mteb.ResultCache(out).load_results(include_remote=False).model_results
    assert model.model_name == "laion/clap-htsat-unfused"
    scores = {r.task_name: r for r in model.task_results}
    assert scores["AudioCapsT2ARetrieval"].scores["test"][0]["hit_rate_at_5"] == 0.6
    assert scores["AudioCapsA2TRetrieval"].get_score() == 0.6 and scores["ESC50_Zeroshot"].get_score() == 0.9
    assert scores["AudioCapsT2ARetrieval"].scores["test"][0]["languages"] == ["eng-Latn", "zxx-Zxxx"]
    meta = ModelMeta.model_validate(json.loads((folder / "model_meta.json").read_text()))
    assert meta.training_datasets == {"ClothoT2ARetrieval.v2", "ClothoA2TRetrieval.v2", "AudioCapsT2ARetrieval",
                                      "AudioCapsA2TRetrieval"}
