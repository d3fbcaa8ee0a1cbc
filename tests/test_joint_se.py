"""S0's joint training: CLIP/CLAP loss + lambda x a SimCSE loss on the text tower."""

import pytest
import torch
import yaml
from conftest import tiny_overrides
from safetensors.torch import load_file

from clapkit.config import load_config
from clapkit.errors import ConfigError, DataError
from clapkit.losses import clip_loss, simcse_loss, simcse_sup_loss
from clapkit.training.clap import ClapTrainer, train_clap


@pytest.fixture(scope="module")
def nli(tmp_path_factory):
    f = tmp_path_factory.mktemp("nli") / "triplets.csv"
    rows = [(f"a man plays guitar {i}", f"someone makes music {i}", f"nobody is playing {i}") for i in range(24)]
    f.write_text("sent0,sent1,hard_neg\n" + "".join(",".join(r) + "\n" for r in rows))
    return f


def _trainer(tmp_path, bert, synthetic, *extra):
    cfg = load_config(None, tiny_overrides(bert) + [f"data.train=[csv:{synthetic / 'train.csv'}]", "model.projector.dropout=0",
                                                    "model.audio.dropout=0", *extra])
    tr = ClapTrainer(cfg, tmp_path)
    tr._start_phase("unfrozen")
    tr.model.eval()  # BatchNorm running statistics: the same for both computations
    return tr


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["captions", "nli"])
def test_joint_loss_is_clip_plus_lambda_simcse_values_and_gradients(tmp_path, tiny_bert_no_dropout, tiny_synthetic, nli,
                                                                   kind):
    """The trainer's joint loss and its gradients equal the CLIP loss plus 0.7 x the
    SimCSE loss (unsupervised on [captions; captions], or supervised on the step's
    triplets), each computed here on its own."""
    tr = _trainer(tmp_path, tiny_bert_no_dropout, tiny_synthetic, "train.se.weight=0.7", f"train.se.loss={kind}",
                  f"train.se.nli={nli}", "train.se.batch_size=8")
    batch = tr._batches(0)[0]
    rows, n = tr._se_rows(batch, None)
    joint = tr._loss(**tr._inputs("train", batch), idx=batch, se=(rows, n))
    joint.backward()
    g_joint = _grads(tr.model)
    tr.model.zero_grad(set_to_none=True)
    e_m, e_t, scale = tr.model(**tr._inputs("train", batch))
    z = tr.model.text_backbone(tr.model.text.tokenize(rows))
    se = simcse_loss(z[:n], z[n:], 0.05) if kind == "captions" else simcse_sup_loss(z[:n], z[n : 2 * n], z[2 * n :], 0.05)
    separate = clip_loss(e_m, e_t, scale, tr.model.logit_clamp) + 0.7 * se
    separate.backward()
    g_sep = _grads(tr.model)
    assert joint.item() == pytest.approx(separate.item(), abs=1e-6)
    assert g_joint.keys() == g_sep.keys() and any(k.startswith("text.") for k in g_sep)
    for k in g_sep:
        torch.testing.assert_close(g_joint[k], g_sep[k], atol=1e-6, rtol=1e-5, msg=k)
    if kind == "captions":
        assert rows[:n] == rows[n:] == [tr.data.train[i].caption for i in batch]
    else:
        assert len(rows) == 3 * n == 24


def test_gradient_caching_of_the_se_term_equals_the_plain_step(tmp_path, tiny_bert_no_dropout, tiny_synthetic, nli):
    out = {}
    for chunk in (0, 5):
        tr = _trainer(tmp_path / str(chunk), tiny_bert_no_dropout, tiny_synthetic, "train.se.weight=0.5",
                      "train.se.loss=nli", f"train.se.nli={nli}", "train.se.batch_size=8", f"train.se.cache_chunk={chunk}")
        batch = tr._batches(0)[0]
        loss = tr._loss(**tr._inputs("train", batch), idx=batch, se=tr._se_rows(batch, None))
        loss.backward()
        out[chunk] = (loss.item(), _grads(tr.model))
    assert out[0][0] == pytest.approx(out[5][0], abs=1e-6)
    for k, g in out[0][1].items():
        torch.testing.assert_close(out[5][1][k], g, atol=1e-6, rtol=1e-5, msg=k)


def test_weight_zero_is_plain_training_and_joint_runs_resume_exactly(tmp_path, tiny_bert, tiny_synthetic, nli):
    base = tiny_overrides(tiny_bert) + [f"data.train=[csv:{tiny_synthetic / 'train.csv'}]"]
    train_clap(load_config(None, base + ["train.epochs=1"]), tmp_path / "plain")
    train_clap(load_config(None, base + ["train.epochs=1", "train.se.weight=0", "train.se.loss=nli"]), tmp_path / "zero")
    a, b = (load_file(tmp_path / n / "last" / "model.safetensors") for n in ("plain", "zero"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    joint = base + ["train.se.weight=0.3", "train.se.loss=nli", f"train.se.nli={nli}", "train.se.batch_size=8"]
    s = train_clap(load_config(None, joint + ["train.epochs=2"]), tmp_path / "straight")
    train_clap(load_config(None, joint + ["train.epochs=1"]), tmp_path / "resumed")
    train_clap(load_config(None, joint + ["train.epochs=2"]), tmp_path / "resumed", resume=True)
    a, b = (load_file(tmp_path / n / "last" / "text" / "model.safetensors") for n in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = load_file(tmp_path / "plain" / "last" / "text" / "model.safetensors")
    assert any(not torch.equal(a[k], plain[k]) for k in a)  # the SE term moved the text tower
    assert s["epochs_run"] == 2
    with pytest.raises(ConfigError, match=r"train.se.loss = corpus needs train.se.corpus"):
        load_config(None, base + ["train.se.weight=1", "train.se.loss=corpus"])


def test_a_sentence_encoder_becomes_the_text_tower_with_its_own_pooling(tmp_path, tiny_bert, tiny_synthetic):
    """model.text.pooling = auto: a sentence-transformers folder (mean; cls + the tanh
    Dense loaded into BERT's pooler) and a `train cse` output give x_t equal to their own
    (unnormalised) embeddings; the checkpoint records where its text tower came from."""
    import json

    from sentence_transformers import SentenceTransformer, models

    from clapkit.models.text import TextTower

    texts = ["a dog barks", "rain on a tin roof", "an engine idles while birds chirp"]
    for mode, dense in (("mean", False), ("cls", True), ("cls", False)):
        torch.manual_seed(0)
        mods = [models.Transformer(tiny_bert, max_seq_length=16), models.Pooling(32, mode)]
        if dense:
            mods.append(models.Dense(32, 32, activation_function=torch.nn.Tanh()))
        folder = tmp_path / f"st-{mode}-{dense}"
        SentenceTransformer(modules=mods, device="cpu").save(str(folder))
        expected = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True)
        tower = TextTower(str(folder), "auto", 16).eval()
        with torch.no_grad():
            torch.testing.assert_close(tower(tower.tokenize(texts)), expected, atol=1e-5, rtol=1e-5)
        pool, head = {"mean": ("mean", "none"), True: ("first", "pooler"), False: ("first", "none")}[
            mode if mode == "mean" else dense]
        assert tower.source == {"name": str(folder), "kind": "sentence-transformers", "pool": pool, "head": head}
    st = tmp_path / "st-cls-True"
    cfg = load_config(None, tiny_overrides(str(st)) + ["model.text.pooling=auto", f"data.train=[csv:{tiny_synthetic / 'train.csv'}]",
                                                       "train.epochs=1"])
    train_clap(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())["model"]["text"]
    assert (saved["pool"], saved["head"], saved["pooling"]) == ("first", "pooler", None)  # resolved, old name cleared
    assert saved["source"] == {"name": str(st), "kind": "sentence-transformers", "pool": "first", "head": "pooler"}
    from clapkit.models.dual import DualEncoder

    again = DualEncoder.load(tmp_path / "run" / "checkpoint")
    assert again.cfg["model"]["text"]["source"]["name"] == str(st)  # kept on reload
    with pytest.raises(ConfigError, match=r"pool = auto on .*st-max: pooling max; a text tower pools cls or mean"):
        torch.manual_seed(0)
        SentenceTransformer(modules=[models.Transformer(tiny_bert), models.Pooling(32, "max")], device="cpu").save(
            str(tmp_path / "st-max"))
        TextTower(str(tmp_path / "st-max"), "auto")


def test_a_train_cse_output_is_a_text_tower(tmp_path, tiny_bert):
    from test_cse import WORDS

    from clapkit.models.text import TextTower
    from clapkit.training.cse import train_cse

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(WORDS) + "\n")
    train_cse(load_config(None, [f"cse.model.name={tiny_bert}", f"cse.corpus=txt:{corpus}", "cse.batch_size=4",
                                 "cse.steps=2", "cse.eval_steps=2", "cse.model.max_length=16", "runtime.progress=false",
                                 "runtime.device=cpu"]), tmp_path / "cse")
    from clapkit.evaluation.sts import SentenceEncoder

    enc = SentenceEncoder(str(tmp_path / "cse" / "checkpoint"))
    tower = TextTower(str(tmp_path / "cse" / "checkpoint"), "auto", 16).eval()
    assert tower.source["kind"] == "train cse"
    with torch.no_grad():
        x = tower(tower.tokenize(list(WORDS[:4])))
    torch.testing.assert_close(x, torch.from_numpy(enc.encode(list(WORDS[:4]), normalize=False)), atol=1e-5, rtol=1e-5)


def test_eval_language_reports_s0s_measures_by_their_formulas(tmp_path, tiny_checkpoint, tiny_synthetic, shared_data):
    """uniformity, alignment and the modality gap in eval language equal the formulas
    computed here on the checkpoint's own embeddings; STS comes on x_t and on E_t."""
    import json

    import numpy as np
    from typer.testing import CliRunner

    from clapkit.cli import app
    from clapkit.data.audio.captions import load_pairs
    from clapkit.data.records import clip_index
    from clapkit.inference.embed import embed_media, embed_text
    from clapkit.models.dual import DualEncoder

    stsb = tmp_path / "stsb"
    stsb.mkdir()
    lines = (shared_data / "sts" / "stsbenchmark" / "sts-test.csv").read_text().splitlines()[:40]
    (stsb / "sts-test.csv").write_text("\n".join(lines) + "\n")
    from test_cse import WORDS

    task = tmp_path / "topics.jsonl"  # a transfer task file, as eval transfer takes it
    task.write_text("".join(json.dumps({"text": w, "label": "ab"[i % 2]}) + "\n" for i, w in enumerate(WORDS)))
    run = CliRunner().invoke(app, ["eval", "language", "--model", str(tiny_checkpoint), "--data",
                                   f"csv:{tiny_synthetic / 'test.csv'}", "--sts", f"stsb:{stsb}", "--transfer", str(task),
                                   "--folds", "4", "--out", str(tmp_path / "lang.json")])
    assert run.exit_code == 0, run.output
    r = json.loads((tmp_path / "lang.json").read_text())
    g = r["geometry"]
    model = DualEncoder.load(tiny_checkpoint)
    pairs = load_pairs(f"csv:{tiny_synthetic / 'test.csv'}")
    clips, rows = clip_index(pairs)
    e_m = embed_media(model, clips).astype(np.float64)
    e_t = embed_text(model, [p.caption for p in pairs]).astype(np.float64)
    assert g["pairs"] == len(pairs) and g["media"] == len(clips)
    assert g["alignment"] == pytest.approx(np.mean(np.sum((e_m[rows] - e_t) ** 2, axis=1)), abs=1e-5)
    distinct = {}
    for p, e in zip(pairs, e_t, strict=True):
        distinct.setdefault(p.caption, e)
    d = np.array(list(distinct.values()))
    assert g["captions"] == len(d)
    assert g["modality_gap"] == pytest.approx(np.linalg.norm(e_m.mean(0) - d.mean(0)), abs=1e-5)
    sq = np.sum((d[:, None] - d[None]) ** 2, axis=-1)[np.triu_indices(len(d), 1)]
    assert g["uniformity_E_t"] == pytest.approx(np.log(np.mean(np.exp(-2 * sq))), abs=1e-4)
    assert set(r["sts"]) == {"x_t", "E_t"} and r["sts"]["x_t"]["table"]["STSB-test"] != r["sts"]["E_t"]["table"]["STSB-test"]
    from clapkit.evaluation.sts import SentenceEncoder
    from clapkit.evaluation.transfer import linear_probe

    x_t = SentenceEncoder.of_model(model).encode(list(WORDS), normalize=False)
    expected = linear_probe(x_t, np.arange(len(WORDS)) % 2, folds=4)["accuracy"]
    assert r["transfer"]["tasks"]["topics"]["accuracy"] == pytest.approx(expected) and r["transfer"]["avg"] == pytest.approx(expected)


@pytest.mark.slow
def test_language_encoder_study_end_to_end(tmp_path, tiny_bert, tiny_synthetic, nli):
    """The five variants over two seeds on a tiny setting: each run trained and evaluated
    once, the init variants' text towers built from their train cse runs, the joint ones
    with their SE term; mean +- std per variant, the plot, a line per finding; a second
    call reuses every run."""
    import json

    import numpy as np
    from test_cse import WORDS
    from typer.testing import CliRunner

    from clapkit.cli import app

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"{w}, number {i}." for i, w in enumerate(WORDS * 2)) + "\n")
    stsb = tmp_path / "stsb"
    stsb.mkdir()
    (stsb / "sts-test.csv").write_text("".join(f"g\tf\ty\t{i}\t{(i * 7) % 6}.0\t{WORDS[i]}\t{WORDS[(i * 3) % 16]}\n"
                                               for i in range(16)))
    task = tmp_path / "task.csv"
    task.write_text("text,label\n" + "".join(f"{w},{'a' if i % 2 else 'b'}\n" for i, w in enumerate(WORDS)))
    pairs = tmp_path / "elsewhere" / "test.csv"  # its audio paths are relative to language.retrieval_dir
    pairs.parent.mkdir()
    pairs.write_text((tiny_synthetic / "test.csv").read_text())
    cfg = tmp_path / "study.yaml"
    cfg.write_text("\n".join([
        "model:", f"  text: {{name: {tiny_bert}, max_length: 16, pooling: cls}}", "  audio: {name: small_cnn, channels: [4, 8], n_fft: 256, "
        "hop_length: 128, n_mels: 16, fmax: 4000}", "  projector: {dim: 16, hidden: 32}",
        "audio: {sample_rate: 8000, segment_seconds: 0.5}",
        "train: {batch_size: 16, epochs: 1, frozen_epochs: 0, lr_unfrozen: 3.0e-3, early_stopping_patience: 0, progress: false,"
        " se: {batch_size: 8}}",
        "cse: {batch_size: 8, lr: 1.0e-3}",
        "language:", "  seeds: [0, 1]", f"  train: ['csv:{tiny_synthetic / 'train.csv'}']",
        f"  zeroshot: folder:{tiny_synthetic / 'unseen'}", f"  retrieval: csv:{pairs}", f"  retrieval_dir: {tiny_synthetic}",
        f"  corpus: txt:{corpus}", f"  nli: {nli}", f"  sts: ['stsb:{stsb}']", f"  transfer: [{{data: '{task}', folds: 4}}]",
        "  cse_steps: 2", "  cse_sup: {lr: 2.0e-3, steps: 3}", "  se_weight: 0.5", ""]))
    run = CliRunner().invoke(app, ["experiment", "language-encoder", "--config", str(cfg), "--out", str(tmp_path / "out")])
    assert run.exit_code == 0, run.output
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(r["table"]) == ["base", "init_unsup", "init_sup", "joint_unsup", "joint_sup"]
    for row in r["table"].values():
        assert set(row) == {"zeroshot", "retrieval", "sts", "transfer", "uniformity", "alignment", "modality_gap"}
        assert all(np.isfinite(x["mean"]) and x["std"] >= 0 for x in row.values())
    runs = r["runs"]["init_sup"]
    assert set(runs) == {"0", "1"} and runs["0"] != runs["1"]  # two seeds, two models
    base0 = json.loads((tmp_path / "out" / "seed0" / "base" / "metrics.json").read_text())
    assert r["table"]["base"]["zeroshot"]["mean"] == pytest.approx(np.mean([r["runs"]["base"][s]["zeroshot"] for s in "01"]))
    assert base0 == r["runs"]["base"]["0"]
    text = json.loads((tmp_path / "out" / "seed0" / "init_sup" / "checkpoint" / "config.json").read_text())["model"]["text"]
    assert text["source"]["kind"] == "train cse" and text["name"].endswith("cse_sup/checkpoint")
    # one pooling and head for every variant: BERT's pretrained pooler after [CLS] (the SE runs
    # trained through SimCSE's MLP head, which the variants drop)
    for seed in "01":
        for variant in r["table"]:
            cfg_v = json.loads((tmp_path / "out" / f"seed{seed}" / variant / "checkpoint" / "config.json").read_text())
            text_v = cfg_v["model"]["text"]
            assert (text_v["pool"], text_v["head"]) == ("first", "pooler"), (seed, variant)
    for kind in ("unsup", "sup"):
        cse_model = json.loads((tmp_path / "out" / "seed0" / f"cse_{kind}" / "checkpoint" / "cse_model.json").read_text())
        assert (cse_model["model"]["pool"], cse_model["model"]["head"]) == ("first", "mlp")  # named, not `cls`
        pooler = {k: v for k, v in load_file(str(tmp_path / "out" / "seed0" / f"cse_{kind}" / "checkpoint" /
                                                   "model.safetensors")).items() if "pooler" in k}
        start = {k: v for k, v in load_file(f"{tiny_bert}/model.safetensors").items() if "pooler" in k}
        assert pooler and all(torch.equal(pooler[k], start[k]) for k in start)  # the pretrained pooler, untouched
    for kind, (lr, steps) in {"sup": (2e-3, 3), "unsup": (1e-3, 2)}.items():  # language.cse_sup: init_sup's own recipe
        cse = yaml.safe_load((tmp_path / "out" / "seed0" / f"cse_{kind}" / "config.yaml").read_text())["cse"]
        assert (cse["lr"], cse["steps"], cse["batch_size"]) == (lr, steps, 8)
        assert json.loads((tmp_path / "out" / "seed0" / f"cse_{kind}" / "summary.json").read_text())["steps"] == steps
    se = json.loads((tmp_path / "out" / "seed1" / "joint_sup" / "checkpoint" / "config.json").read_text())["train"]["se"]
    assert (se["weight"], se["loss"]) == (0.5, "nli")
    assert len(r["findings"]) == 6 and all(": holds" in f or ": does not hold (" in f for f in r["findings"])
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| joint_sup |" in md and "## S0's findings in this run" in md
    assert (tmp_path / "out" / "uniformity_alignment.png").stat().st_size > 0
    stamp = (tmp_path / "out" / "seed0" / "base" / "metrics.json").stat().st_mtime_ns
    run = CliRunner().invoke(app, ["experiment", "language-encoder", "--config", str(cfg), "--out", str(tmp_path / "out")])
    assert run.exit_code == 0 and (tmp_path / "out" / "seed0" / "base" / "metrics.json").stat().st_mtime_ns == stamp


def test_findings_are_paired_by_seed():
    """Each seed's SE variants' mean minus that seed's base; the verdict says whether the
    effect points S0's way in every seed, in some, or not on average."""
    from clapkit.experiments.language import findings

    def run(sts, uniformity, alignment, zeroshot):
        return {"sts": sts, "uniformity": uniformity, "alignment": alignment, "zeroshot": zeroshot, "retrieval": 0.5}

    runs = {"base": {0: run(80.0, -2.0, 0.5, 0.9), 1: run(81.0, -2.0, 0.5, 0.9)},
            "init_unsup": {0: run(82.0, -2.2, 0.4, 0.9), 1: run(80.0, -2.1, 0.6, 0.8)},
            "joint_sup": {0: run(80.0, -2.0, 0.4, 0.9), 1: run(81.0, -2.3, 0.5, 0.8)}}
    lines = findings(runs, "image")
    # STS deltas by seed: (82 + 80) / 2 - 80 = +1, (80 + 81) / 2 - 81 = -0.5
    assert lines[0] == ("- SE training improves the language encoder: holds on average only (1 of 2 seeds) "
                        "(STS mean +0.2500 +- 0.7500 over 2 seeds, SE variants' mean - base)")
    assert lines[1] == "- SE training improves the language encoder (transfer): not measured here (transfer not evaluated)"
    assert ": does not hold (zero-shot top-1 -0.0500 +- 0.0500" in lines[2]
    assert ": does not hold (retrieval R@10 +0.0000 +- 0.0000" in lines[3]
    assert ": holds (uniformity -0.1500 +- 0.0500 over 2 seeds" in lines[4]  # -0.1 and -0.2: lower in both seeds
    assert ": does not hold (alignment -0.0250 +- 0.0750" in lines[5]  # -0.1 and +0.05
    assert findings({"base": runs["base"]}, "audio") == ["the findings compare the SE variants with base: run both"]


def test_study_presets_resolve(tmp_path):
    from clapkit.experiments.language import run_language_encoder

    for medium in ("image", "audio"):
        cfg = load_config(f"language-encoder-{medium}-cpu")
        assert cfg["model"]["modality"] == medium and cfg["language"]["synthetic"]
        assert cfg["language"]["variants"] == ["base", "init_unsup", "init_sup", "joint_unsup", "joint_sup"]
        assert cfg["train"]["frozen_backbones"] == ["text"] and cfg["train"]["frozen_epochs"] < cfg["train"]["epochs"]
        assert cfg["language"]["transfer"][0]["data"].endswith("images/emoji/emoji.json")
    image = load_config("language-encoder-image-paper", ["language.train=wds:/d/cc3m/{00000..00331}.tar",
                                                         "language.transfer=senteval:/d/downstream"])
    assert image["language"]["train"] == ["wds:/d/cc3m/{00000..00331}.tar"]  # one spec, brace range kept
    assert image["language"]["transfer"] == ["senteval:/d/downstream"] and image["model"]["modality"] == "image"
    assert (image["model"]["text"]["name"], image["train"]["batch_size"], image["train"]["epochs"]) == ("bert-base-uncased", 128, 64)
    audio = load_config("language-encoder-audio-paper")
    assert (audio["model"]["audio"]["name"], audio["audio"]["sample_rate"], audio["model"]["projector"]["dim"]) == ("cnn14", 44100, 1024)
    for cfg in (image, audio):
        assert (cfg["cse"]["batch_size"], cfg["cse"]["lr"], cfg["language"]["cse_steps"]) == (64, 3e-5, 15625)
        assert cfg["language"]["cse_sup"] == {"batch_size": 512, "lr": 5e-5, "steps": 1615, "model": {"head_at_eval": True}}
        assert not cfg["language"]["synthetic"]
    typo = {**audio, "language": {**audio["language"], "cse_sup": {"batch": 512}}}
    with pytest.raises(ConfigError, match=r"language.cse_sup: batch are not cse.\* options"):
        run_language_encoder(typo, tmp_path)
    with pytest.raises(ConfigError, match=r"language: set language.train, language.zeroshot, language.retrieval, language.corpus, language.nli \("):
        run_language_encoder(audio, tmp_path)


def test_a_sigterm_stops_the_study_and_the_next_call_resumes_the_run(tmp_path, monkeypatch, tiny_synthetic):
    """A training run stopped by SIGTERM (it saved last/) stops the study rather than
    evaluating a half-trained model and going on; the next call resumes that run from
    last/, and a finished run is not trained again (experiments.train_once, which the
    improvement and leakage experiments share)."""
    import json

    import clapkit.training.clap as clap
    from clapkit.experiments import ExperimentStopped, train_once
    from clapkit.experiments.language import run_language_encoder

    calls = []

    def fake_train(cfg, out, resume=False):
        calls.append(resume)
        (out / "last").mkdir(parents=True, exist_ok=True)
        summary = {"stopped": "SIGTERM"} if len(calls) == 1 else {"best_epoch": 2}
        (out / "summary.json").write_text(json.dumps(summary))
        return summary

    monkeypatch.setattr(clap, "train_clap", fake_train)
    cfg = load_config(None, ["language.train=[csv:x.csv]", f"language.zeroshot=folder:{tiny_synthetic / 'unseen'}",
                             f"language.retrieval=csv:{tiny_synthetic / 'test.csv'}", "language.variants=[base]"])
    with pytest.raises(DataError, match=r"missing/task.csv: file not found"):  # read before any training
        run_language_encoder({**cfg, "language": {**cfg["language"], "transfer": [str(tmp_path / "missing" / "task.csv")]}},
                             tmp_path)
    assert calls == []
    with pytest.raises(ExperimentStopped, match=r"seed0/base: stopped by SIGTERM; run the experiment again with the same"):
        run_language_encoder(cfg, tmp_path)
    assert not (tmp_path / "seed0" / "base" / "metrics.json").exists() and calls == [False]
    run = tmp_path / "seed0" / "base"
    assert train_once(fake_train, cfg, run) == {"best_epoch": 2} and calls == [False, True]  # resumed from last/
    assert train_once(fake_train, cfg, run) == {"best_epoch": 2} and calls == [False, True]  # finished: kept
