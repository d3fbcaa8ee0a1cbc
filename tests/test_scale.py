"""Evaluation at scale: two gloo processes under torchrun give the one-process result
(each embeds its share of the batches), bf16 autocast, and the embedding cache shared
by commands and runs."""

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


def test_two_processes_evaluate_exactly_as_one(tmp_path, tiny_checkpoint, shared_data):
    esc = f"esc50:{shared_data / 'esc50'}"
    outs = {}
    for n in (1, 2):
        outs[n] = tmp_path / f"zs{n}.json"
        # batch 32 over 414 clips: 13 batches, 7 for one process and 6 for the other
        proc = _torchrun(n, 29810 + n, "eval", "zeroshot", "--model", tiny_checkpoint, "--data", esc, "--out", outs[n],
                         "--bootstrap", "50", "--device", "cpu")
        assert proc.stdout.count("zero-shot") == 1  # printed once, by the first process
        _torchrun(n, 29820 + n, "embed", "--model", tiny_checkpoint, "--audio", esc, "--out", tmp_path / f"e{n}.npz",
                  "--device", "cpu")
    one, two = (json.loads(outs[n].read_text()) for n in (1, 2))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for key in ("top1", "top5", "confusion", "per_class", "ci"):
        assert one[key] == two[key], key
    e1, e2 = (np.load(tmp_path / f"e{n}.npz") for n in (1, 2))
    assert e1["embeddings"].shape == (414, e1["embeddings"].shape[1])
    np.testing.assert_array_equal(e1["embeddings"], e2["embeddings"])  # the same batches: the same numbers
    np.testing.assert_array_equal(e1["ids"], e2["ids"])


def test_a_cache_filled_by_two_processes_is_the_one_process_cache(tmp_path, tiny_checkpoint, shared_data):
    esc = f"esc50:{shared_data / 'esc50'}"
    args = ["eval", "probe", "--model", tiny_checkpoint, "--data", esc, "--features", "E", "--knn-k", "3",
            "--bootstrap", "0", "--device", "cpu"]
    _torchrun(2, 29831, *args, "--cache", tmp_path / "c2", "--out", tmp_path / "p2.json")
    clapkit(*args, "--cache", tmp_path / "c1", "--out", tmp_path / "p1.json")
    clapkit(*args, "--cache", tmp_path / "c2", "--out", tmp_path / "again.json")  # reads what two processes wrote
    p1, p2, again = (json.loads((tmp_path / f).read_text()) for f in ("p1.json", "p2.json", "again.json"))
    assert p2["cache"]["audio_computed"] == 414 and again["cache"] == {**again["cache"], "audio_computed": 0,
                                                                        "audio_reused": 414}
    assert p1["features"] == p2["features"] == again["features"]


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
