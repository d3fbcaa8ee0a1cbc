"""Evaluation at scale: two gloo processes under torchrun give the one-process result
(each embeds its share of the batches), bf16 autocast, and the embedding cache shared
by commands and runs."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from test_cli import clapkit


def _torchrun(n: int, port: int, *args):
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
                           str(port), "-m", "clapkit.cli", *map(str, args)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_processes_evaluate_and_fill_the_cache_exactly_as_one(tmp_path, tiny_checkpoint, shared_data):
    esc = f"esc50:{shared_data / 'esc50'}"
    # folds 2, 3 and 5: 14 clips; batch 3 makes 5 batches, 3 for one process and 2 (one of
    # them short) for the other
    rows = [r for r in csv.DictReader(open(shared_data / "esc50" / "meta" / "esc50.csv")) if r["fold"] != "4"]
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as f:
        csv.writer(f).writerows([("audio", "caption")] + [(shared_data / "esc50" / "audio" / r["filename"].replace(".wav", ".ogg"),
                                                           r["category"]) for r in rows])
    common = ["--bootstrap", "50", "--batch-size", "3", "--device", "cpu"]
    for n in (1, 2):
        proc = _torchrun(n, 29810 + n, "eval", "zeroshot", "--model", tiny_checkpoint, "--data", esc, "--folds", "2,3,5",
                         "--cache", tmp_path / f"c{n}", "--out", tmp_path / f"zs{n}.json", *common)
        assert proc.stdout.count("zero-shot") == 1  # printed once, by the first process
        _torchrun(n, 29820 + n, "embed", "--model", tiny_checkpoint, "--audio", f"csv:{pairs}", "--out",
                  tmp_path / f"e{n}.npz", "--batch-size", "3", "--device", "cpu")
    one, two = (json.loads((tmp_path / f"zs{n}.json").read_text()) for n in (1, 2))
    assert (one["world_size"], two["world_size"]) == (1, 2) and one["clips"] == 14
    for key in ("top1", "top5", "confusion", "per_class", "ci"):
        assert one[key] == two[key], key
    assert two["cache"]["audio_computed"] == 14  # every process's share, counted once
    e1, e2 = (np.load(tmp_path / f"e{n}.npz") for n in (1, 2))
    assert e1["embeddings"].shape == (14, e1["embeddings"].shape[1])
    np.testing.assert_array_equal(e1["embeddings"], e2["embeddings"])  # the same batches: the same numbers
    np.testing.assert_array_equal(e1["ids"], e2["ids"])
    # one process reads what two wrote: nothing computed, the same result
    clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", esc, "--folds", "2,3,5", "--cache", tmp_path / "c2",
            "--out", tmp_path / "again.json", *common)
    again = json.loads((tmp_path / "again.json").read_text())
    assert (again["cache"]["audio_computed"], again["cache"]["audio_reused"]) == (0, 14)
    assert again["top1"] == one["top1"] and again["confusion"] == one["confusion"]


def test_bf16_is_recorded_cached_apart_and_close_to_fp32(tmp_path, tiny_checkpoint, shared_data):
    from clapkit.data.audio.labelled import load_labelled
    from clapkit.inference.embed import inference_precision
    from clapkit.inference.features import embed_items
    from clapkit.models.dual import DualEncoder

    net = DualEncoder.load(tiny_checkpoint)
    clips = load_labelled(f"esc50:{shared_data / 'esc50'}").clips[:40]
    cache = tmp_path / "cache"
    fp32, _ = embed_items(net, clips, ("E",), cache=cache, model_spec=tiny_checkpoint)
    with inference_precision("bf16", "cpu"):
        bf16, info = embed_items(net, clips, ("E",), cache=cache, model_spec=tiny_checkpoint)
    assert info["cache"]["audio+bf16_computed"] == 40  # not the fp32 rows
    assert bf16["E"].dtype == np.float32 and not np.array_equal(bf16["E"], fp32["E"])
    cos = (bf16["E"] * fp32["E"]).sum(axis=1)
    assert cos.min() > 0.99  # bf16 keeps 8 bits of mantissa: each E within a small angle of fp32's
    out = tmp_path / "zs.json"
    clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", f"esc50:{shared_data / 'esc50'}", "--folds", "2",
            "--precision", "bf16", "--bootstrap", "0", "--out", out)
    assert json.loads(out.read_text())["precision"] == "bf16"
    bad = clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", f"esc50:{shared_data / 'esc50'}",
                  "--precision", "fp8", check=False)
    assert bad.returncode == 2 and "--precision 'fp8': choose fp32 or bf16" in bad.stderr


def test_inference_precision_rejects_a_name():
    from clapkit.errors import ConfigError
    from clapkit.inference.embed import inference_precision

    with pytest.raises(ConfigError):
        inference_precision("half", "cpu")


def test_curate_under_two_processes_writes_the_one_process_manifest(tmp_path, tiny_checkpoint, tiny_synthetic):
    args = ["curate", "--teacher", tiny_checkpoint, "--audio", tiny_synthetic / "unseen", "--captions",
            tiny_synthetic / "train.csv", "--sigma", "-1", "--top-k", "2", "--batch-size", "4", "--device", "cpu"]
    _torchrun(2, 29841, *args, "--out", tmp_path / "two" / "m.csv", "--cache", tmp_path / "c2")
    clapkit(*args, "--out", tmp_path / "one" / "m.csv", "--cache", tmp_path / "c1")
    assert (tmp_path / "two" / "m.csv").read_text() == (tmp_path / "one" / "m.csv").read_text()
    stats = json.loads((tmp_path / "two" / "m.stats.json").read_text())
    assert stats["cache"]["audio_computed"] == stats["audio_pool"] > 0  # the pool embedded once, by both processes' shares


def test_the_cache_is_shared_by_eval_and_embed(tmp_path, tiny_checkpoint, shared_data):
    esc = f"esc50:{shared_data / 'esc50'}"
    cache = tmp_path / "cache"
    clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", esc, "--folds", "2", "--bootstrap", "0",
            "--cache", cache, "--out", tmp_path / "zs.json")
    assert json.loads((tmp_path / "zs.json").read_text())["cache"]["audio_computed"] == 11
    clapkit("eval", "retrieval", "--model", tiny_checkpoint, "--data", esc, "--bootstrap", "0", "--cache", cache,
            "--out", tmp_path / "r.json")
    r = json.loads((tmp_path / "r.json").read_text())["cache"]
    assert (r["audio_reused"], r["audio_computed"]) == (11, 403)  # fold 2's clips from the zero-shot run


def test_init_registers_a_shutdown_that_leaves_the_group(monkeypatch):
    """init_distributed registers shutdown_distributed at exit, so the group is left while
    the interpreter is alive (a gloo group left to the teardown can abort the process)."""
    import torch.distributed as dist

    from clapkit import distributed

    registered = []
    monkeypatch.setattr(distributed.atexit, "register", registered.append)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_distributed() == (0, 1) and registered == []  # one process: no group
    distributed.shutdown_distributed()  # a no-op outside a group
    real_init = dist.init_process_group  # torchrun's two processes, played by a group of one
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: real_init(
        backend, init_method="tcp://127.0.0.1:29689", rank=0, world_size=1))
    monkeypatch.setenv("WORLD_SIZE", "2")
    try:
        assert distributed.init_distributed() == (0, 1) and registered == [distributed.shutdown_distributed]
        registered[0]()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_retrieval_probe_and_bench_in_windows_under_two_processes_equal_one(tmp_path, tiny_checkpoint, shared_data):
    """eval retrieval, eval probe and a bench of every task type (zero-shot, retrieval,
    probe), each on 2 s windows of the 5 s clips, under torchrun's two processes give the
    numbers of one process (run here in this one)."""
    import yaml

    esc = f"esc50:{shared_data / 'esc50'}"
    rows = [r for r in csv.DictReader(open(shared_data / "esc50" / "meta" / "esc50.csv")) if r["fold"] != "4"]
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as f:
        csv.writer(f).writerows([("audio", "caption")] + [
            (shared_data / "esc50" / "audio" / r["filename"].replace(".wav", ".ogg"), f"the sound of {r['category']}")
            for r in rows])
    win = ["--window", "2", "--hop", "1.5"]
    common = ["--bootstrap", "50", "--batch-size", "3", "--device", "cpu", *win]
    retrieval = ["eval", "retrieval", "--model", tiny_checkpoint, "--data", f"csv:{pairs}", *common]
    probe = ["eval", "probe", "--model", tiny_checkpoint, "--data", esc, "--folds", "2,3,5", "--knn-k", "3", *common]
    bench = {"models": [{"name": "ours", "model": str(tiny_checkpoint)}], "bootstrap": 50, "seed": 0, "tasks": [
        {"name": "zs", "data": esc, "type": "zeroshot", "folds": [2, 3, 5], "window": 2, "hop": 1.5, "pool": "max"},
        {"name": "ret", "data": f"csv:{pairs}", "type": "retrieval", "window": 2, "hop": 1.5},
        {"name": "probe", "data": esc, "type": "probe", "folds": [2, 3, 5], "knn_k": 3, "window": 2, "hop": 1.5}]}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    for n, run in ((2, lambda *a: _torchrun(2, 29831, *a)), (1, clapkit)):
        run(*retrieval, "--out", tmp_path / f"ret{n}.json")
        run(*probe, "--out", tmp_path / f"probe{n}.json")
        run("bench", "--config", tmp_path / "bench.yaml", "--out", tmp_path / f"bench{n}", "--batch-size", "3",
            "--device", "cpu")
    r1, r2 = (json.loads((tmp_path / f"ret{n}.json").read_text()) for n in (1, 2))
    assert r1["windows"]["windows"] == 14 * 3 and r2["world_size"] == 2
    for key in ("text_to_audio", "audio_to_text"):
        assert r1[key] == r2[key], key
    p1, p2 = (json.loads((tmp_path / f"probe{n}.json").read_text()) for n in (1, 2))
    assert p1["features"] == p2["features"] and p1["windows"] == p2["windows"]
    for task in ("zs", "ret", "probe"):
        c1, c2 = (json.loads((tmp_path / f"bench{n}" / "cells" / f"ours__{task}.json").read_text()) for n in (1, 2))
        assert c1["metrics"] == c2["metrics"] and c1["windows"]["hop"] == 1.5, task
    cell = json.loads((tmp_path / "bench1" / "cells" / "ours__ret.json").read_text())
    names = {m["metric"] for m in cell["metrics"]}
    assert {"text_to_audio_R@1", "audio_to_text_mAP@10", "audio_to_text_mAP@10_laion"} <= names
    assert cell["captions"] == 14 and all(m["ci_low"] is not None for m in cell["metrics"])
    # the bench's retrieval cell is eval retrieval's number
    assert {m["metric"]: m["value"] for m in cell["metrics"]}["text_to_audio_R@1"] == r1["text_to_audio"]["R@1"]
