"""Evaluation per language: caption records with a language (``csv:``/``jsonl:`` columns,
XTD10 and Crossmodal-3600 in their published layouts), retrieval per language with the
difference from English, the text tokenizer's coverage of each language, and zero-shot
per language (``eval zeroshot --language-prompts``)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import published
import pytest
from typer.testing import CliRunner

from clapkit.cli import app
from clapkit.data.audio.captions import load_pairs
from clapkit.data.image.captions import load_image_pairs
from clapkit.errors import DataError

# one clip of the tiny synthetic set per row: its English, German, Japanese and Russian captions (English twice)
WORDS = {"low": ("low", "tief", "低い", "низкий"), "high": ("high", "hoch", "高い", "высокий"),
         "buzz": ("buzz", "Summen", "ブザー音", "гул"), "hiss": ("hiss", "Zischen", "シューという音", "шипение"),
         "bell": ("bell", "Glocke", "鐘の音", "звон"), "beep": ("beep", "Piepton", "ビープ音", "писк")}
CLIPS = ["low_steady_buzz_00", "low_steady_hiss_00", "low_steady_bell_00", "high_steady_beep_00",
         "high_steady_bell_00", "high_steady_buzz_00"]


def _captions(clip: str) -> list[tuple[str, str]]:
    pitch, _, sound, _ = clip.split("_")
    p, s = WORDS[pitch], WORDS[sound]
    return [(f"a {p[0]} steady {s[0]}", "en"), (f"a {s[0]} sound, {p[0]} and steady", "en"),
            (f"{s[1]}, {p[1]} und gleichmäßig", "de"), (f"{p[2]}一定の{s[2]}", "ja"), (f"{p[3]} ровный {s[3]}", "ru")]


def _multilingual_csv(tiny_synthetic: Path, path: Path, languages=("en", "de", "ja", "ru")) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["audio", "caption", "language"])
        for clip in CLIPS:
            w.writerows((tiny_synthetic / "audio" / f"{clip}.wav", c, lang) for c, lang in _captions(clip)
                        if lang in languages)
    return path


# --- readers -------------------------------------------------------------------------------------------------


def test_csv_and_jsonl_read_an_optional_language(tmp_path, tiny_synthetic):
    pairs = load_pairs(f"csv:{_multilingual_csv(tiny_synthetic, tmp_path / 'm.csv')}")
    assert len(pairs) == 30 and {p.language for p in pairs} == {"en", "de", "ja", "ru"}
    assert pairs[3].caption == "低い一定のブザー音" and pairs[3].language == "ja"
    assert all(p.language is None for p in load_pairs(f"csv:{tiny_synthetic / 'test.csv'}"))  # no column: as before
    wav = tiny_synthetic / "audio" / f"{CLIPS[0]}.wav"
    (tmp_path / "blank.csv").write_text(f"audio,caption,language\n{wav},a buzz,en\n{wav},ein Summen, \n")
    with pytest.raises(DataError, match=r"blank\.csv line 3: empty language"):
        load_pairs(f"csv:{tmp_path / 'blank.csv'}")
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio": str(wav), "caption": ["гул", "ровный гул"],
                                                  "language": "ru"}, ensure_ascii=False) + "\n"
                                      + json.dumps({"audio": str(wav), "caption": "a buzz"}) + "\n")
    got = load_pairs(f"jsonl:{tmp_path / 'm.jsonl'}")
    assert [(p.caption, p.language) for p in got] == [("гул", "ru"), ("ровный гул", "ru"), ("a buzz", None)]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"audio": str(wav), "caption": "x", "language": ""}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl line 1: empty language"):
        load_pairs(f"jsonl:{tmp_path / 'bad.jsonl'}")
    # images read the same column
    published._png(tmp_path / "p.jpg")
    (tmp_path / "i.csv").write_text("image,caption,language\np.jpg,a grey square,en\np.jpg,серый квадрат,ru\n")
    assert [p.language for p in load_image_pairs(f"csv:{tmp_path / 'i.csv'}")] == ["en", "ru"]


def test_xtd10_in_its_published_layout(tmp_path):
    spec = published.xtd10(tmp_path / "xtd")
    pairs = load_image_pairs(spec)
    assert len(pairs) == 3 * 6 and sorted({p.language for p in pairs}) == ["de", "en", "es", "jp", "ru", "zh"]
    by = {(p.media_id, p.language): p for p in pairs}
    first = "COCO_train2014_000000061844.jpg"
    assert by[(first, "en")].caption.startswith("major league baseball game")
    assert by[(first, "de")].where.endswith("MIC/test_1kcaptions_de.txt line 1")  # de from MIC/, as CLIP_benchmark
    assert by[("COCO_train2014_000000061849.jpg", "jp")].caption == "マウスの上に猫の手が乗っている"  # STAIR/
    # CRLF lines and a last line without a newline read as the others
    last = by[("COCO_train2014_000000061850.jpg", "ru")].caption
    assert last == "стая птиц взлетает с воды возле длинного пирса в открытом море"
    assert not any("\r" in p.caption for p in pairs)
    assert all(p.media.parent == tmp_path / "xtd" / "images" for p in pairs)
    # a caption file one line short of the image list is named
    (tmp_path / "xtd" / "XTD10" / "test_1kcaptions_zh.txt").write_text("棒球\r\n猫\r\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test_1kcaptions_zh\.txt: 2 captions for the 3 images"):
        load_image_pairs(spec)
    # a missing image names the image list's line; with skip_bad that image's captions go in every language
    spec = published.xtd10(tmp_path / "x2")
    (tmp_path / "x2" / "images" / "COCO_train2014_000000061849.jpg").unlink()
    with pytest.raises(DataError, match=r"test_image_names\.txt line 2.*image file not found"):
        load_image_pairs(spec)
    assert len(load_image_pairs(spec, skip_bad=True)) == 2 * 6


def test_crossmodal3600_in_its_published_layout(tmp_path):
    spec = published.crossmodal3600(tmp_path / "xm3600")
    pairs = load_image_pairs(spec)
    assert len(pairs) == sum(len(c) for by in published.XM3600_CAPTIONS for c in by.values()) == 15
    assert {p.language for p in pairs} == {"en", "de", "ja", "ru"}
    assert [p.caption for p in pairs if p.media_id == "eb4cdfd93268c52c" and p.language == "ja"] == [
        "市場の新鮮な野菜。", "野菜が並ぶ屋台。"]
    assert all(p.media == tmp_path / "xm3600" / "images" / f"{p.media_id}.jpg" for p in pairs)
    lines = (tmp_path / "xm3600" / "captions.jsonl").read_text(encoding="utf-8").splitlines()
    broken = json.loads(lines[1])
    broken["ru"] = {"caption/tokenized": ["собака"]}
    (tmp_path / "xm3600" / "captions.jsonl").write_text("\n".join([lines[0], json.dumps(broken), lines[2]]) + "\n")
    with pytest.raises(DataError, match=r"captions\.jsonl line 2 \(image/key 74f94963ee1e135d\): language 'ru': needs"):
        load_image_pairs(spec)


# --- retrieval per language ----------------------------------------------------------------------------------


def test_per_language_retrieval_equals_each_languages_own_run(tmp_path, tiny_checkpoint, tiny_synthetic):
    from clapkit.evaluation.retrieval import retrieval_eval
    from clapkit.models.public.loader import load_model

    net = load_model(tiny_checkpoint)
    pairs = load_pairs(f"csv:{_multilingual_csv(tiny_synthetic, tmp_path / 'm.csv')}")
    m = retrieval_eval(net, pairs, bootstrap=200, seed=3)
    per = m["per_language"]
    assert list(per) == ["en", "de", "ja", "ru"] and m["captions"] == 30 and m["audio"] == 6
    for lang in per:
        alone = retrieval_eval(net, [p for p in pairs if p.language == lang], bootstrap=200, seed=3)
        for direction in ("text_to_audio", "audio_to_text"):
            got, want = per[lang][direction], alone[direction]
            for k in ("R@1", "R@5", "R@10", "median_rank", "queries"):
                assert got[k] == want[k], (lang, direction, k)
            assert got["ci"] == want["ci"] and got["mAP@10"] == pytest.approx(want["mAP@10"], abs=1e-6)
        assert per[lang]["captions"] == alone["captions"] and per[lang]["media_without_captions"] == 0
    # the English-relative drop: text->audio unpaired (other queries), audio->text paired over the same clips
    assert "vs_en" not in per["en"]
    for lang in ("de", "ja", "ru"):
        vs = per[lang]["vs_en"]
        t2a, a2t = vs["text_to_audio"], vs["audio_to_text"]
        assert t2a["difference"] == pytest.approx(per[lang]["text_to_audio"]["R@1"] - per["en"]["text_to_audio"]["R@1"])
        assert t2a["paired"] is False and "p_value" not in t2a
        assert a2t["difference"] == pytest.approx(per[lang]["audio_to_text"]["R@1"] - per["en"]["audio_to_text"]["R@1"])
        assert a2t["paired"] and a2t["test"] == "paired_bootstrap" and a2t["items"] == 6
        assert 0 <= a2t["p_value"] <= 1 and a2t["ci"][0] <= a2t["difference"] <= a2t["ci"][1]
    # the tokenizer's coverage of each language's captions
    assert per["en"]["tokenizer"]["byte_level"] is False and per["en"]["tokenizer"]["texts"] == 12
    # without languages the result is as before: no per_language
    plain = retrieval_eval(net, load_pairs(f"csv:{tiny_synthetic / 'test.csv'}"), bootstrap=50)
    assert "per_language" not in plain


def test_a_language_missing_from_some_clips_and_a_set_without_english():
    from clapkit.evaluation.retrieval import language_retrieval

    rng = np.random.default_rng(0)
    media, text = rng.standard_normal((3, 8)), rng.standard_normal((5, 8))
    rows, langs = [0, 1, 2, 0, 1], ["de", "de", "de", "ja", "ja"]
    out = language_retrieval(media, text, rows, langs, "image", bootstrap=0)
    assert list(out) == ["de", "ja"] and "vs_en" not in out["ja"]
    assert out["ja"]["media"] == 2 and out["ja"]["media_without_captions"] == 1
    assert out["ja"]["text_to_image"]["queries"] == 2 and out["ja"]["image_to_text"]["queries"] == 2
    # text->image ranks each ja caption against all three images
    sim = media @ text.T
    ranks = [1 + int((np.delete(sim[:, j], row) >= sim[row, j]).sum()) for j, row in ((3, 0), (4, 1))]
    assert out["ja"]["text_to_image"]["mean_rank"] == pytest.approx(np.mean(ranks))
    out = language_retrieval(media, text, rows, ["en", "en", "en", "ja", "ja"], "image", bootstrap=0)
    assert out["ja"]["vs_en"]["image_to_text"]["items"] == 2  # paired over the clips with captions in both


def test_a_set_where_only_some_captions_carry_a_language(tiny_synthetic):
    from clapkit.data.records import Pair
    from clapkit.evaluation.retrieval import caption_languages

    wav = tiny_synthetic / "audio" / f"{CLIPS[0]}.wav"
    pairs = [Pair(wav, "a buzz", "a", "m.csv line 2", language="en"), Pair(wav, "Summen", "a", "m.csv line 3")]
    with pytest.raises(DataError, match=r"m\.csv line 3: some captions carry a language"):
        caption_languages(pairs)


# --- tokenizer coverage --------------------------------------------------------------------------------------


def test_tokenizer_coverage_against_a_hand_count(tiny_bert):
    from transformers import AutoTokenizer

    from clapkit.evaluation.retrieval import tokenizer_coverage

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    model = SimpleNamespace(text=SimpleNamespace(tokenizer=tok))
    texts = {"en": ["a dog barks in the rain", "an engine idles"], "ja": ["雨の中で犬が吠える", "エンジンがアイドリングしている"],
             "zh": ["雨中狗在叫", "发动机在空转"], "ru": ["собака лает под дождём", "двигатель работает"]}
    for lang, ts in texts.items():
        pieces = [t for text in ts for t in tok.tokenize(text)]
        got = tokenizer_coverage(model, ts)
        assert got["tokens"] == len(pieces) and got["unknown_tokens"] == pieces.count("[UNK]"), lang
        assert got["unk_share"] == pytest.approx(pieces.count("[UNK]") / len(pieces))
        assert got["tokens_per_word"] == pytest.approx(len(pieces) / sum(len(t.split()) for t in ts))
        assert got["unk_token"] == "[UNK]" and got["byte_level"] is False
    assert tokenizer_coverage(model, texts["en"])["unk_share"] == 0
    assert tokenizer_coverage(model, texts["ja"])["unk_share"] > 0  # MiniLM's WordPiece lacks some of these kana/kanji


def test_a_byte_level_bpe_tokenizer_never_emits_unknown_tokens():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from clapkit.evaluation.retrieval import tokenizer_coverage

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(["a dog barks", "a cat sleeps on a mat"] * 20,
                             trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"],
                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")
    got = tokenizer_coverage(SimpleNamespace(text=SimpleNamespace(tokenizer=tok)), ["собака лает", "犬が吠える"])
    assert got["byte_level"] is True and got["unknown_tokens"] == 0 and "no token is unknown" in got["note"]
    assert got["tokens"] == len(tok("собака лает", add_special_tokens=False)["input_ids"]) + len(
        tok("犬が吠える", add_special_tokens=False)["input_ids"])
    assert got["tokens_per_word"] > 3  # bytes: many tokens per word of a script it never saw


# --- zero-shot per language ----------------------------------------------------------------------------------

ESC_NAMES = {"de": {"cow": "Kuh", "thunderstorm": "Gewitter", "keyboard_typing": "Tippen auf einer Tastatur",
                    "clock_alarm": "Wecker", "wind": "Wind"},
             "ja": {"cow": "牛", "thunderstorm": "雷雨", "keyboard_typing": "キーボードのタイピング", "clock_alarm": "目覚まし時計",
                    "wind": "風"},
             "ru": {"cow": "корова", "thunderstorm": "гроза", "keyboard_typing": "набор на клавиатуре",
                    "clock_alarm": "будильник", "wind": "ветер"}}
TEMPLATES = {"en": ["This is a sound of {label}."], "de": ["Das ist ein Geräusch von {label}.", "{label}"],
             "ja": ["これは{label}の音です。"], "ru": ["Это звук: {label}."]}


def _zeroshot(*args):
    return CliRunner().invoke(app, ["eval", "zeroshot", "--device", "cpu", "--bootstrap", "200", *map(str, args)])


def test_zero_shot_per_language_equals_each_languages_own_run(tmp_path, tiny_checkpoint):
    import yaml

    data = f"esc50:{published.esc50(tmp_path / 'E')}"
    spec = {"en": {"templates": TEMPLATES["en"]},
            **{lang: {"templates": TEMPLATES[lang], "classnames": ESC_NAMES[lang]} for lang in ("de", "ja", "ru")}}
    (tmp_path / "langs.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "z.json"
    result = _zeroshot("--model", tiny_checkpoint, "--data", data, "--language-prompts", tmp_path / "langs.yaml",
                       "--out", out)
    assert result.exit_code == 0, result.output
    sweep = json.loads(out.read_text())["per_language"]
    assert sweep["metric"] == "top1" and sweep["reference"] == "en"
    assert list(sweep["languages"]) == ["en", "de", "ja", "ru"]
    langs = sweep["languages"]
    for lang in ("de", "ja", "ru"):
        (tmp_path / f"{lang}.json").write_text(json.dumps(ESC_NAMES[lang], ensure_ascii=False), encoding="utf-8")
        args = [a for t in TEMPLATES[lang] for a in ("--template", t)]
        alone = _zeroshot("--model", tiny_checkpoint, "--data", data, *args, "--classnames", tmp_path / f"{lang}.json",
                          "--out", tmp_path / f"{lang}-alone.json")
        assert alone.exit_code == 0, alone.output
        own = json.loads((tmp_path / f"{lang}-alone.json").read_text())
        assert langs[lang]["top1"] == own["top1"] and langs[lang]["ci"] == own["ci"]["top1"]
        vs = langs[lang]["vs_en"]
        assert vs["test"] == "mcnemar_exact" and 0 <= vs["p_value"] <= 1
        assert vs["difference"] == pytest.approx(langs[lang]["top1"] - langs["en"]["top1"])
        assert langs[lang]["tokenizer"]["texts"] == 5 * len(TEMPLATES[lang])
    assert json.loads(out.read_text())["top1"] == langs["en"]["top1"]  # en's prompts are the default ones here
    assert "vs en, p = " in result.output and "tokens/word" in result.output


def test_language_prompts_file_errors(tmp_path, tiny_checkpoint):
    data = f"esc50:{published.esc50(tmp_path / 'E')}"

    def fails(text: str, *needles: str):
        (tmp_path / "l.yaml").write_text(text, encoding="utf-8")
        r = _zeroshot("--model", tiny_checkpoint, "--data", data, "--language-prompts", tmp_path / "l.yaml")
        said = f"{r.output} {r.exception}"
        assert r.exit_code != 0 and all(n in said for n in needles), said

    fails("en: {templates: ['a {label}']}\nde: {classnames: {cow: Kuh}}\n", "language 'de': no templates", "l.yaml")
    names = {k: v for k, v in ESC_NAMES["de"].items() if k != "wind"}
    fails("en: {templates: ['a {label}']}\nde:\n  templates: ['ein {label}']\n  classnames: " + json.dumps(names)
          + "\n", "language 'de': class 'wind' of the data has no name")
    fails("ru: {templates: ['звук {label}']}\n", "language 'ru': needs classnames")
    fails("en: {templates: ['no placeholder']}\n", "language 'en': template 'no placeholder' has no {label}")
    fails("no: {templates: ['{label}'], classnames: {}}\n", "a language key read as False", "'no'")


def test_language_prompts_on_a_multilabel_set_pair_by_bootstrap(tiny_image_checkpoint):
    from clapkit.data.files import Skipped
    from clapkit.data.records import LabelledClip, LabelledSet
    from clapkit.evaluation.zeroshot import language_sweep
    from clapkit.inference.embed import embed_text
    from clapkit.models.public.loader import load_model

    net = load_model(tiny_image_checkpoint)
    labels = [(i % 2,) if i % 3 else (0, 1) for i in range(8)]
    clips = [LabelledClip(Path(f"x{i}"), ls[0], None, f"x{i}", labels=ls) for i, ls in enumerate(labels)]
    data = LabelledSet(clips, ["red_square", "blue_circle"], Skipped(), multilabel=True)
    emb = np.random.default_rng(1).standard_normal((8, embed_text(net, ["a"]).shape[1]))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)  # the items' embeddings, given (as the command passes its own)
    spec = {"en": {"templates": ["a photo of a {label}."]},
            "es": {"templates": ["una foto de {label}."], "classnames": {"red square": "un cuadrado rojo",
                                                                        "Blue_Circle": "un círculo azul"}}}
    got = language_sweep(net, data, emb.astype(np.float32), spec, bootstrap=100)
    assert got["metric"] == "mAP"
    assert got["languages"]["es"]["class_names_used"] == ["un cuadrado rojo", "un círculo azul"]
    vs = got["languages"]["es"]["vs_en"]
    assert vs["test"] == "paired_bootstrap" and vs["difference"] == pytest.approx(
        got["languages"]["es"]["mAP"] - got["languages"]["en"]["mAP"])


# --- the command line ----------------------------------------------------------------------------------------


def test_eval_retrieval_per_language_on_xtd10_and_crossmodal3600(tmp_path, tiny_image_checkpoint):
    for name, spec, langs in (("xtd", published.xtd10(tmp_path / "xtd"), ["en", "de", "es", "jp", "ru", "zh"]),
                              ("xm", published.crossmodal3600(tmp_path / "xm"), ["en", "de", "ja", "ru"])):
        out = tmp_path / f"{name}.json"
        r = CliRunner().invoke(app, ["eval", "retrieval", "--model", str(tiny_image_checkpoint), "--data", spec,
                                     "--device", "cpu", "--bootstrap", "50", "--out", str(out)])
        assert r.exit_code == 0, r.output
        m = json.loads(out.read_text())
        assert list(m["per_language"]) == langs and m["images"] == 3
        assert sum(d["captions"] for d in m["per_language"].values()) == m["captions"]
        lines = [line for line in r.output.splitlines() if line.startswith("  ") and "captions: text->image" in line]
        assert [line.split()[0] for line in lines] == langs
        assert all("R@1 vs en" in line for line in lines[1:]) and "(paired, p = " in lines[1]
