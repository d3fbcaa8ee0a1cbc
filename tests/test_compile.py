"""``runtime.compile`` / ``--compile``: torch.compile of the training forward and of
inference equals eager (losses, weights and embeddings within rtol 1e-4, atol 1e-5),
records its compile time apart, and falls back to eager where it cannot compile."""

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from safetensors.torch import load_file
from torch import nn

from clapkit.config import load_config
from clapkit.errors import ConfigError
from clapkit.training.compile import Compiled, compile_stats, compiled

RTOL, ATOL = 1e-4, 1e-5
WEIGHTS_ATOL = 5e-5  # trained weights after 14 Adam steps: rounding differences grow (5.8e-6 seen near zero)


def test_runtime_compile_bogus_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match=r"runtime.compile' = 'bogus'; choose one of .*default.*none.*reduce-overhead"):
        load_config(None, ["runtime.compile=bogus"])
    with pytest.raises(ConfigError, match=r"runtime.compile = 'bogus': choose one of none, default, reduce-overhead"):
        compiled(nn.Linear(2, 2), "bogus")
    from clapkit.inference.embed import inference_compile

    with pytest.raises(ConfigError, match=r"--compile 'max': choose none, default, reduce-overhead"):
        with inference_compile("max"):
            pass
    m = nn.Linear(2, 2)
    assert compiled(m, "none") is m and compile_stats(m) is None


def test_reduce_overhead_on_cpu_runs_as_default_without_cuda_graphs():
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    net = compiled(eager, "reduce-overhead")
    x = torch.randn(6, 4)
    y = net(x)
    torch.testing.assert_close(y, eager(x), rtol=RTOL, atol=ATOL)
    y.sum().backward()  # the backward was compiled with the forward
    s = compile_stats(net)
    assert s["mode"] == "reduce-overhead" and s["compiled"] and s["compiles"] == 1 and s["cudagraph_skips"] >= 1


class _Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _no_compiler(monkeypatch):
    """Inductor fails as it does without a C++ compiler."""
    from torch._inductor.exc import InvalidCxxCompiler

    def fail(self, model, inputs):
        raise InvalidCxxCompiler()

    monkeypatch.setattr(torch._TorchCompileInductorWrapper, "__call__", fail)


def test_a_module_that_cannot_compile_runs_eager_with_one_warning_and_loses_no_step(monkeypatch):
    _no_compiler(monkeypatch)
    torch.manual_seed(0)
    eager = _Mlp()  # a code object of its own: no other test's compiled graph fits it
    net = Compiled(eager, "default")
    x = torch.randn(5, 4)
    with pytest.warns(RuntimeWarning, match=r"runtime.compile = default: _Mlp could not be compiled "
                                            r"\(BackendCompilerFailed.*running it eager.*runtime.compile: none"):
        y = net(x)
    torch.testing.assert_close(y, eager(x), rtol=0, atol=0)  # the failed call ran eagerly
    y.sum().backward()
    assert eager.a.weight.grad is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        torch.testing.assert_close(net(x), eager(x), rtol=0, atol=0)
    s = compile_stats(net)
    assert s["compiled"] is False and "InvalidCxxCompiler" in s["fell_back"] and s["compiles"] == 0


class _Broken(nn.Module):
    """BatchNorm and dropout, a graph break, a linear layer: two graphs a call."""

    def __init__(self):
        super().__init__()
        self.bn, self.lin = nn.BatchNorm1d(4), nn.Linear(4, 2)

    def forward(self, x):
        x = nn.functional.dropout(self.bn(x), 0.5, self.training)
        torch._dynamo.graph_break()
        return self.lin(x)


def test_a_failure_after_a_graph_ran_reruns_the_call_from_where_it_started(monkeypatch):
    """The first graph compiles and runs (it draws dropout and moves BatchNorm's statistics),
    the second cannot compile: the eager rerun starts from the RNG state and buffers the
    call began with, so the step is the eager step, once."""
    from torch._inductor.exc import InvalidCxxCompiler

    graphs = []

    def second_fails(self, model, inputs):
        graphs.append(model)
        if len(graphs) > 1:
            raise InvalidCxxCompiler()
        return model  # the first graph runs as it is

    monkeypatch.setattr(torch._TorchCompileInductorWrapper, "__call__", second_fails)
    torch.manual_seed(0)
    model = _Broken().train()
    twin = copy.deepcopy(model)
    x = torch.randn(6, 4)
    torch.manual_seed(1)
    with pytest.warns(RuntimeWarning, match="_Broken could not be compiled"):
        y = Compiled(model, "default")(x)
    after = torch.rand(3)  # where the call left the RNG
    torch.manual_seed(1)
    assert torch.equal(y, twin(x)) and torch.equal(after, torch.rand(3))
    assert len(graphs) == 2 and int(model.bn.num_batches_tracked) == 1
    assert torch.equal(model.bn.running_mean, twin.bn.running_mean)


def test_the_models_own_error_is_raised_not_taken_for_a_compiler_failure():
    net = Compiled(nn.Linear(4, 2), "default")
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        net(torch.randn(3, 5))
    assert net.stats["compiled"] is True and net.stats["fell_back"] is None


def _captions(tiny_synthetic, n: int) -> list[str]:
    return [line.split(",", 1)[1] for line in (tiny_synthetic / "train.csv").read_text().splitlines()[1 : n + 1]]


def test_compiled_text_embeddings_equal_eager_and_new_lengths_recompile_a_bounded_number_of_times(
        tiny_checkpoint, tiny_synthetic):
    from clapkit.inference.embed import embed_text, inference_compile
    from clapkit.inference.embed import tower_compile_stats as inference_stats
    from clapkit.models.dual import DualEncoder

    model = DualEncoder.load(tiny_checkpoint)
    captions = _captions(tiny_synthetic, 40)  # 7 batches of 6 (the last 4), caption lengths vary
    eager_x, eager_e = (embed_text(model, captions, batch_size=6, projected=p) for p in (False, True))
    with inference_compile("default"):
        passes = [embed_text(model, captions, batch_size=6) for _ in range(2)]  # the second compiles nothing
        np.testing.assert_allclose(passes[0], eager_e, rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(passes[1], passes[0])  # deterministic
        np.testing.assert_allclose(embed_text(model, captions, batch_size=6, projected=False), eager_x,
                                   rtol=RTOL, atol=ATOL)
    s = inference_stats(model)["text/default"]
    # the first shapes, then a new caption length and the smaller last batch: symbolic from then on
    assert s["compiled"] and 1 <= s["compiles"] <= 3 and s["compiles"] + s["runs"] == 21, s
    assert s["compile_seconds"] > 0 and s["run_seconds"] > 0
    with inference_compile("default"):  # more lengths and sizes: no more compiles
        embed_text(model, _captions(tiny_synthetic, 60)[::-1], batch_size=5)
    assert inference_stats(model)["text/default"]["compiles"] == s["compiles"]
    np.testing.assert_array_equal(embed_text(model, captions, batch_size=6), eager_e)  # eager is left as it was


def test_the_command_line_embeds_compiled_and_refuses_an_unknown_mode(tmp_path, tiny_checkpoint, tiny_synthetic):
    from test_cli import clapkit

    (tmp_path / "t.txt").write_text("\n".join(_captions(tiny_synthetic, 9)) + "\n")
    for mode in ("none", "default"):
        clapkit("embed", "--model", tiny_checkpoint, "--text", tmp_path / "t.txt", "--batch-size", "4",
                "--compile", mode, "--out", tmp_path / f"{mode}.npz")
    np.testing.assert_allclose(np.load(tmp_path / "default.npz")["embeddings"],
                               np.load(tmp_path / "none.npz")["embeddings"], rtol=RTOL, atol=ATOL)
    proc = clapkit("embed", "--model", tiny_checkpoint, "--text", tmp_path / "t.txt", "--compile", "bogus",
                   "--out", tmp_path / "x.npz", check=False)
    assert proc.returncode != 0 and "--compile 'bogus': choose none, default, reduce-overhead" in proc.stderr


@pytest.mark.slow
def test_compiled_media_embeddings_equal_eager(tiny_checkpoint, tiny_synthetic):
    from clapkit.data.media import load_labelled_media
    from clapkit.inference.embed import media_features
    from clapkit.inference.embed import tower_compile_stats as inference_stats
    from clapkit.models.dual import DualEncoder

    model = DualEncoder.load(tiny_checkpoint)
    clips = load_labelled_media(f"folder:{tiny_synthetic / 'unseen'}", "audio").clips  # 16: batches of 6, 6, 4
    eager = media_features(model, clips, ("x", "E"), batch_size=6)
    for _ in range(2):
        got = media_features(model, clips, ("x", "E"), batch_size=6, compile="default")
        for k in ("x", "E"):
            np.testing.assert_allclose(got[k], eager[k], rtol=RTOL, atol=ATOL)
    s = inference_stats(model)["media/default"]
    assert s["compiled"] and 1 <= s["compiles"] <= 2 and s["compiles"] + s["runs"] == 6, s


@pytest.mark.slow
def test_a_compiled_training_run_gives_the_eager_losses_and_weights(tmp_path, tiny_bert_no_dropout, tiny_synthetic):
    """Two epochs (7 batches: the last one smaller), compiled against eager, dropout off."""
    from clapkit.training.clap import train_clap

    def run(mode: str):
        cfg = load_config(None, tiny_overrides(tiny_bert_no_dropout) + [
            f"data.train=[csv:{tiny_synthetic / 'train.csv'}]", "model.projector.dropout=0", "model.audio.dropout=0",
            "train.epochs=2", f"runtime.compile={mode}"])
        train_clap(cfg, tmp_path / mode)
        rows = (tmp_path / mode / "metrics.csv").read_text().splitlines()
        import csv

        losses = [(float(r["train_loss"]), float(r["val_loss"])) for r in csv.DictReader(rows)]
        weights = {**load_file(tmp_path / mode / "last" / "model.safetensors"),
                   **{f"text.{k}": v for k, v in load_file(tmp_path / mode / "last" / "text" / "model.safetensors").items()}}
        return losses, weights, json.loads((tmp_path / mode / "summary.json").read_text())

    losses, weights, summary = run("none")
    c_losses, c_weights, c_summary = run("default")
    np.testing.assert_allclose(c_losses, losses, rtol=RTOL, atol=ATOL)
    assert c_weights.keys() == weights.keys()
    # an attention key's bias adds one constant to a query's every logit, which softmax ignores: its
    # gradient is zero up to rounding, which Adam's normalised step amplifies (the two runs' biases
    # were seen 1.2e-5 apart, near zero, past atol): only it is left out
    noise = {k for k in weights if k.endswith("attention.self.key.bias")}
    assert len(noise) == 2  # the tiny BERT's two layers
    for k in sorted(weights.keys() - noise):
        torch.testing.assert_close(c_weights[k], weights[k], rtol=RTOL, atol=WEIGHTS_ATOL, msg=lambda m, k=k: f"{k}: {m}")
    assert "compile" not in summary
    s = c_summary["compile"]
    assert s["mode"] == "default" and s["compiled"] is True and s["fell_back"] is None
    assert 1 <= s["compiles"] <= 3 and s["recompiles"] == s["compiles"] - 1  # the smaller last batch: once
    assert s["compiles"] + s["runs"] == 14 and s["compile_seconds"] > 0 and s["run_seconds_mean"] > 0


def test_compiled_embeddings_are_cached_apart_from_eager_ones(tmp_path, tiny_checkpoint, tiny_synthetic):
    """An eager run after a compiled one with the same --cache computes its own embeddings
    (compiled equals eager within rounding, not bit for bit), and bf16 texts are kept apart too."""
    from clapkit.inference.cache import EmbeddingCache
    from clapkit.inference.embed import inference_compile, inference_precision, store_tag
    from clapkit.models.dual import DualEncoder

    assert store_tag() == ""
    with inference_compile("default"):
        assert store_tag() == "+compiled"
        with inference_precision("bf16", "cpu"):
            assert store_tag() == "+bf16+compiled"
    texts = _captions(tiny_synthetic, 6)
    with inference_compile("default"):
        compiled_e = EmbeddingCache(tmp_path / "cache", tiny_checkpoint).text(texts)
    eager = EmbeddingCache(tmp_path / "cache", tiny_checkpoint)
    eager_e = eager.text(texts)
    assert eager.stats["text_computed"] == 6  # nothing taken from the compiled store
    from clapkit.inference.embed import embed_text

    np.testing.assert_array_equal(eager_e, embed_text(DualEncoder.load(tiny_checkpoint), texts))
    np.testing.assert_allclose(compiled_e, eager_e, rtol=1e-4, atol=1e-5)
    stores = sorted(p.name for p in next((tmp_path / "cache").iterdir()).iterdir())
    assert {"text", "text+compiled"} <= set(stores), stores


def test_a_bench_reuses_no_cell_of_another_compile_mode_and_a_card_names_it(tmp_path, tiny_checkpoint):
    """A bench cell records --compile; a run with another mode refuses to mix it into its
    table (as it refuses another precision), and a reproduction lists it as a departure."""
    from clapkit.experiments.bench import run_bench
    from clapkit.experiments.reproduce import departures

    bench = {"models": [{"name": "ours", "model": str(tiny_checkpoint)}], "seed": 0, "bootstrap": 10,
             "tasks": [{"name": "esc50", "type": "zeroshot", "data": "esc50:nowhere"}]}
    (tmp_path / "out" / "cells").mkdir(parents=True)
    (tmp_path / "out" / "cells" / "ours__esc50.json").write_text(json.dumps({"precision": "fp32", "compile": "default"}))
    with pytest.raises(ConfigError, match=r"ours__esc50.json: a cell computed with --compile default; this run asks "
                                          r"for --compile none .*Give another --out"):
        run_bench(bench, tmp_path / "out", progress=False)
    assert departures({"model": {"name": "m"}}, {"compile": "default"}) == [
        "--compile default (equal to eager within rounding)"]
    assert departures({"model": {"name": "m"}}, {"compile": "none"}) == []
