"""The command line, end to end, on the shared data and the tiny synthetic set."""

import contextlib
import io
import json
import subprocess
import sys
import traceback
import warnings

import numpy as np
import pytest


def clapkit(*args, check=True) -> subprocess.CompletedProcess:
    """``clapkit ARGS`` through the command line's own ``main`` (the exit codes, the
    ``error:`` line of a ClapkitError), in this process, so torch's and transformers'
    imports (about 7 s a process here) are paid once per suite, not once per command.
    Warnings print to its stderr as they would in a process of its own (Python's default
    filters, each shown afresh). The ``python -m clapkit.cli`` entry point itself runs as
    a process in test_specs (``formats``) and in the torchrun tests."""
    from clapkit.cli.common import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    argv = sys.argv
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)  # in front of "default", as in a new process
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(m, c, f, n, line))
        sys.argv = ["clapkit", *map(str, args)]
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:  # what a process would die of: its traceback, exit status 1
            traceback.print_exc()
            code = 1
        finally:
            sys.argv = argv
    proc = subprocess.CompletedProcess(["clapkit", *map(str, args)], code, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"clapkit {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc


def test_eval_zeroshot_on_shared_esc50(tmp_path, tiny_checkpoint, shared_data):
    out = tmp_path / "zs.json"
    proc = clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", f"esc50:{shared_data / 'esc50'}", "--out", out)
    m = json.loads(out.read_text())
    assert m["clips"] == 414 and m["classes"] == 50
    assert sum(v["clips"] for v in m["per_class"].values()) == 414
    assert np.array(m["confusion"]).sum() == 414
    assert m["templates"] == ["This is a sound of {label}."]
    # top-1/top-5 recomputed here from the model's embeddings (pessimistic ties: count >=)
    from clapkit.data.audio.labelled import load_labelled
    from clapkit.evaluation.zeroshot import class_text_embeddings
    from clapkit.inference.embed import embed_media
    from clapkit.models.dual import DualEncoder

    model = DualEncoder.load(tiny_checkpoint)
    data = load_labelled(f"esc50:{shared_data / 'esc50'}")
    sim = embed_media(model, data.clips) @ class_text_embeddings(model, data.label_texts(), m["templates"]).T
    y = np.array([c.label for c in data.clips])
    others_ahead = np.array([(np.delete(sim[i], y[i]) >= sim[i, y[i]]).sum() for i in range(len(y))])
    assert m["top1"] == pytest.approx((others_ahead == 0).mean(), abs=1e-12)
    assert m["top5"] == pytest.approx((others_ahead < 5).mean(), abs=1e-12)
    assert (tmp_path / "zs.confusion.png").stat().st_size > 1000
    assert "top-1" in proc.stdout
    # fold and class selection; evaluation is deterministic
    out4 = tmp_path / "zs4.json"
    clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", f"esc50:{shared_data / 'esc50'}", "--folds", "4",
            "--classes", "dog,rooster,door_wood_knock", "--ensemble", "--out", out4)
    m4 = json.loads(out4.read_text())
    assert m4["clips"] == 24 and m4["classes"] == 3 and len(m4["templates"]) > 1
    clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", f"esc50:{shared_data / 'esc50'}", "--folds", "4",
            "--classes", "dog,rooster,door_wood_knock", "--ensemble", "--out", tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text())["per_class"] == m4["per_class"]


def test_eval_retrieval_and_embed(tmp_path, tiny_checkpoint, tiny_synthetic):
    out = tmp_path / "r.json"
    clapkit("eval", "retrieval", "--model", tiny_checkpoint, "--data", f"csv:{tiny_synthetic / 'test.csv'}", "--out", out)
    m = json.loads(out.read_text())
    assert m["audio"] == 24 and m["captions"] == 48
    assert m["text_to_audio"]["queries"] == 48 and m["audio_to_text"]["queries"] == 24
    assert m["skipped"]["count"] == 0
    emb = tmp_path / "a.npz"
    clapkit("embed", "--model", tiny_checkpoint, "--audio", f"folder:{tiny_synthetic / 'unseen'}", "--out", emb)
    z = np.load(emb)
    assert z["embeddings"].shape == (16, 16) and len(z["ids"]) == 16
    np.testing.assert_allclose(np.linalg.norm(z["embeddings"], axis=1), 1.0, atol=1e-5)
    (tmp_path / "t.txt").write_text("a dog barks\nrain on a roof\n")
    clapkit("embed", "--model", tiny_checkpoint, "--text", tmp_path / "t.txt", "--backbone", "--out", tmp_path / "t.npz")
    assert np.load(tmp_path / "t.npz")["embeddings"].shape == (2, 32)


def test_bad_input_errors_name_the_row_and_skip_counts(tmp_path, tiny_checkpoint, tiny_synthetic):
    good = (tiny_synthetic / "test.csv").read_text().splitlines()
    rows = [good[0]] + [f"{tiny_synthetic}/{r}" for r in good[1:5]] + ["nowhere.wav,a caption", f"{tiny_synthetic}/{good[1]}".rsplit(",", 1)[0] + ","]
    manifest = tmp_path / "bad.csv"
    manifest.write_text("\n".join(rows) + "\n")
    proc = clapkit("eval", "retrieval", "--model", tiny_checkpoint, "--data", f"csv:{manifest}", check=False)
    assert proc.returncode == 2
    assert "bad.csv line 6" in proc.stderr and "audio file not found" in proc.stderr and "Traceback" not in proc.stderr
    out = tmp_path / "r.json"
    clapkit("eval", "retrieval", "--model", tiny_checkpoint, "--data", f"csv:{manifest}", "--skip-bad", "--out", out)
    m = json.loads(out.read_text())
    assert m["captions"] == 4 and m["skipped"]["count"] == 2
    assert m["skipped"]["by_reason"] == {"audio file not found": 1, "empty caption": 1}


def test_cli_usage_errors(tmp_path, tiny_checkpoint):
    proc = clapkit("eval", "zeroshot", "--model", tmp_path, "--data", "esc50:/nope", check=False)
    assert proc.returncode == 2 and "not a model clapkit reads" in proc.stderr and "train cse" in proc.stderr
    proc = clapkit("train", "clap", "--config", "demo", "--set", "train.nope=1", "--out", tmp_path / "x", check=False)
    assert proc.returncode == 2 and "unknown config key 'train.nope'" in proc.stderr
    proc = clapkit("train", "clap", "--config", "demo", "--out", tmp_path / "x", check=False)
    assert proc.returncode == 2 and "data.train is empty" in proc.stderr
    proc = clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", "wav:/x", check=False)
    assert proc.returncode == 2 and "expected KIND:PATH" in proc.stderr


def test_train_clap_command(tmp_path, tiny_bert, tiny_synthetic):
    from conftest import tiny_overrides

    args = [a for o in tiny_overrides(tiny_bert) for a in ("--set", o)]
    clapkit("train", "clap", *args, "--set", f"data.train=[csv:{tiny_synthetic / 'train.csv'}]", "--set", "train.epochs=1",
            "--out", tmp_path / "run")
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["epochs_run"] == 1 and s["train_pairs"] + s["val_pairs"] == 144
    clapkit("train", "clap", *args, "--set", "train.epochs=2", "--out", tmp_path / "run", "--resume")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs_run"] == 2


@pytest.mark.slow
def test_demo_meets_its_promise(tmp_path):
    """`clapkit demo`: never-seen-class zero-shot accuracy at least twice chance."""
    proc = clapkit("demo", "--out", tmp_path / "demo")
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    zs = m["zeroshot_unseen"]
    assert zs["clips"] == 80 and len(zs["classes"]) == 8 and zs["chance"] == 0.125
    assert zs["accuracy"] >= 2 * zs["chance"], zs
    # the never-seen classes really are absent from training
    train_text = (tmp_path / "demo" / "data" / "train.csv").read_text()
    assert not any(c.replace(" ", "_") in train_text for c in zs["classes"])
    assert m["retrieval_heldout"]["audio"] == 96
    for f in ("checkpoint/model.safetensors", "confusion_unseen.png", "training_curve.png"):
        assert (tmp_path / "demo" / f).exists()
    assert "never-seen classes" in proc.stdout


@pytest.mark.slow
def test_train_cse_unsup_and_image_on_shared_data_then_eval(tmp_path, shared_data):
    """`train cse` with MiniLM on the STS-B training sentences (unsup) and MNIST (image);
    the result loads in sentence-transformers and `eval sts` / `eval transfer` read it."""
    from sentence_transformers import SentenceTransformer

    stsb = shared_data / "sts" / "stsbenchmark"
    common = ["--set", f"cse.corpus=stsb:{stsb}", "--set", "cse.steps=3", "--set", "cse.eval_steps=3",
              "--set", "cse.batch_size=16", "--set", "cse.other_batch_size=16", "--set", "runtime.progress=false"]
    runs = {"unsup": [], "image": ["--set", "cse.mode=image", "--set", f"cse.images=mnist:{shared_data / 'images' / 'mnist'}",
                                   "--set", "cse.model.image.size=28", "--set", "cse.model.image.patch=4"]}
    for mode, extra in runs.items():
        out = tmp_path / mode
        proc = clapkit("train", "cse", "--out", out, *common, *extra)
        s = json.loads((out / "summary.json").read_text())
        assert s["mode"] == mode and s["steps"] == 3 and s["text_examples"] == 10536
        assert s["other_examples"] == (10000 if mode == "image" else 0)
        assert f"{mode}: 3 steps" in proc.stdout
        emb = SentenceTransformer(str(out / "checkpoint"), device="cpu").encode(["A plane is taking off."])
        assert emb.shape == (1, 384) and np.isfinite(emb).all()
    # no dev set given: the checkpoint is the last model; its STS-B test score is a real number
    clapkit("eval", "sts", "--model", tmp_path / "image" / "checkpoint", "--data", f"stsb:{stsb}", "--out", tmp_path / "sts.json")
    r = json.loads((tmp_path / "sts.json").read_text())["tasks"]["STSB-test"]
    from scipy.stats import spearmanr

    from clapkit.data.text.sts import load_sts

    test = load_sts(f"stsb:{stsb}")[0]
    st = SentenceTransformer(str(tmp_path / "image" / "checkpoint"), device="cpu")
    a, b = (st.encode(x, normalize_embeddings=True) for x in (test.s1, test.s2))
    assert r["pairs"] == 1379
    assert r["spearman"] == pytest.approx(100 * spearmanr((a * b).sum(1), test.scores).correlation, abs=1e-3)
    genre = tmp_path / "genre.csv"
    lines = (stsb / "sts-dev.csv").read_text(encoding="utf-8").splitlines()[::5]  # all three genres
    genre.write_text("text,label\n" + "\n".join(f'"{c[5].replace(chr(34), "")}",{c[0]}' for c in (x.split("\t") for x in lines)) + "\n")
    proc = clapkit("eval", "transfer", "--model", tmp_path / "unsup" / "checkpoint", "--data", genre, "--folds", "3",
                   "--out", tmp_path / "t.json")
    t = json.loads((tmp_path / "t.json").read_text())["tasks"]["genre"]
    assert len(t["folds"]) == 3 and t["n"] == 300 and t["accuracy"] > t["majority"]
    bad = clapkit("train", "cse", "--out", tmp_path / "bad", "--set", "cse.mode=sup", check=False)
    assert bad.returncode == 2 and "cse.nli is empty" in bad.stderr


def test_eval_sts_seven_task_table_from_original_layouts(tmp_path, tiny_bert, shared_data):
    """SentEval STS12-16, SICK and STS-B in their published layouts, filled with real STS-B
    dev pairs: the CLI's table has the seven tasks, their average, and scores equal to
    Spearman of cosines computed here."""
    from scipy.stats import spearmanr

    from clapkit.data.text.sts import SENTEVAL_SETS, load_sts
    from clapkit.evaluation.sts import SentenceEncoder

    stsb = shared_data / "sts" / "stsbenchmark"
    dev = load_sts(f"stsb:{stsb}", "dev")[0]
    pairs = iter(zip(dev.s1, dev.s2, dev.scores, strict=True))
    expected = {}
    for year, names in SENTEVAL_SETS.items():
        d = tmp_path / "senteval" / f"{year}-en-test"
        d.mkdir(parents=True)
        rows = []
        for name in names:
            chunk = [next(pairs) for _ in range(8)]
            (d / f"STS.input.{name}.txt").write_text("".join(f"{a}\t{b}\n" for a, b, _ in chunk), encoding="utf-8")
            gold = [f"{g:.2f}" for _, _, g in chunk]
            if year == "STS16":
                gold[0] = ""  # an unscored pair, dropped
                chunk = chunk[1:]
            (d / f"STS.gs.{name}.txt").write_text("\n".join(gold) + "\n")
            rows += chunk
        expected[year] = rows
    sick = [next(pairs) for _ in range(20)]
    (tmp_path / "sick").mkdir()
    (tmp_path / "sick" / "SICK_test_annotated.txt").write_text(
        "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
        + "".join(f"{i}\t{a}\t{b}\t{1 + g * 0.8:.1f}\tNEUTRAL\n" for i, (a, b, g) in enumerate(sick)))
    expected["SICK-R-test"] = [(a, b, round(1 + g * 0.8, 1)) for a, b, g in sick]
    out = tmp_path / "sts.json"
    clapkit("eval", "sts", "--model", tiny_bert, "--pooling", "cls", "--data", f"senteval:{tmp_path / 'senteval'}",
            "--data", f"sick:{tmp_path / 'sick'}", "--data", f"stsb:{stsb}", "--device", "cpu", "--out", out)
    r = json.loads(out.read_text())
    assert list(r["table"]) == ["STS12", "STS13", "STS14", "STS15", "STS16", "STSB-test", "SICK-R-test"]
    assert r["avg"] == pytest.approx(np.mean(list(r["table"].values())), abs=1e-9)
    assert r["tasks"]["STS16"]["pairs"] == 5 * 7 and r["tasks"]["STSB-test"]["pairs"] == 1379
    assert set(r["tasks"]["STS12"]["subsets"]) == set(SENTEVAL_SETS["STS12"])
    enc = SentenceEncoder(tiny_bert, pooling="cls")
    for task, rows in expected.items():
        a, b, gold = zip(*rows, strict=True)
        cos = (enc.encode(list(a)) * enc.encode(list(b))).sum(1)
        assert r["table"][task] == pytest.approx(100 * spearmanr(cos, gold).correlation, abs=1e-4), task


def test_help_is_wrapped_by_the_renderer_and_shown_as_written(monkeypatch):
    """Docstrings are joined into paragraphs for the help renderer, which wraps them to
    the terminal (Rich would keep a docstring's own line breaks), and Rich markup is
    escaped (it ate "[wds:PATTERN]")."""
    monkeypatch.setenv("COLUMNS", "220")
    top = clapkit("--help").stdout
    assert "(every key of them, with the preset and overrides applied)" in top
    assert "train on them with data.train=[wds:PATTERN]." in top
    shards = clapkit("shards", "--help").stdout
    assert "+ .txt when it has one), the format LAION-CLAP" in shards
    from clapkit.cli.common import plain_text

    assert plain_text("a [b]\n    c\n\n    d") == "a \\[b] c\n\nd"
