"""Retrieval with several relevant clips per query and graded relevance: DCASE 2025 task 6's
mAP@16, nDCG@k (MTEB's pytrec_eval, scikit-learn's ndcg_score), R@k over all relevant
clips; the relevance file readers; ``eval retrieval --relevance`` and a bench task's
``relevance``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from clapkit.data.audio.relevance import Judgement, match_relevance, read_relevance
from clapkit.data.files import Skipped
from clapkit.data.records import Pair, clip_index
from clapkit.errors import DataError
from clapkit.evaluation.metrics import (
    average_precision_at_k,
    graded_retrieval_metrics,
    graded_retrieval_scores,
    retrieval_metrics,
)

# the layout of DCASE 2025 task 6's resources/metadata_eval.csv (its header as published), on made-up rows:
# a caption with a comma (quoted), a one-clip list, and a file name with an HTML entity as the file spells them
DCASE_FIXTURE = """query,audio_filenames
"Rain falls on a roof, then thunder rolls.","['roof rain.wav', 'storm_02.wav', 'gutter.wav']"
A dog barks twice in a yard.,['dog&#39;s bark.wav']
Footsteps on gravel slowly fade away.,"['gravel walk.wav', 'storm_02.wav']"
"""


def test_ndcg_is_scikit_learns_on_random_graded_data_without_ties():
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(0)
    sim = rng.standard_normal((40, 25))  # continuous: no ties
    grades = np.where(rng.random((40, 25)) < 0.2, rng.integers(1, 4, (40, 25)), 0)
    grades[3] = 0  # a query with no relevant clip: 0, as scikit-learn gives it
    relevance = [{int(c): float(grades[q, c]) for c in np.flatnonzero(grades[q])} for q in range(40)]
    for k in (1, 3, 10, 25):
        ours = graded_retrieval_scores(sim, relevance, ndcg_ks=(k,))[f"nDCG@{k}"]
        assert ours.mean() == pytest.approx(ndcg_score(grades, sim, k=k), abs=1e-12)
        assert ours[3] == 0.0
        for q in (0, 7, 19):  # per query too
            assert ours[q] == pytest.approx(ndcg_score(grades[q:q + 1], sim[q:q + 1], k=k), abs=1e-12)


def test_map16_hand_computed_dcase_definition():
    # 20 clips scored 20, 19, ..., 1: clip c ranks c + 1. Query 0: relevant clips ranked 2, 5 and 18.
    # AP@16 = (1/2 + 2/5) / 3 = 0.3 (rank 18 is past 16 but still counts in the 3 relevant); AP@10 the same;
    # R@5 = 2/3 of the relevant clips, hit@1 = 0, hit@5 = 1.
    sim = np.tile(np.arange(20, 0, -1, dtype=float), (2, 1))
    # query 1: 12 relevant clips ranked 1..10 and 15, 20. AP@16 = (10 * 1 + 11/15) / 12 (DCASE divides by the
    # 12 relevant clips; the capped convention of average_precision_at_k would divide by min(12, 10) at k=10):
    # AP@10 = 10 / 12 where average_precision_at_k gives 10 / 10
    relevance = [{1: 1.0, 4: 1.0, 17: 1.0}, {**{c: 1.0 for c in range(10)}, 14: 1.0, 19: 1.0}]
    s = graded_retrieval_scores(sim, relevance, map_ks=(16, 10))
    assert s["mAP@16"][0] == pytest.approx((1 / 2 + 2 / 5) / 3) == pytest.approx(0.3)
    assert s["mAP@10"][0] == pytest.approx(0.3)
    assert s["R@5"][0] == pytest.approx(2 / 3) and s["hit@1"][0] == 0 and s["hit@5"][0] == 1
    assert s["rank"][0] == 2 and s["relevant"][0] == 3
    assert s["mAP@16"][1] == pytest.approx((10 + 11 / 15) / 12)
    assert s["mAP@10"][1] == pytest.approx(10 / 12)
    assert average_precision_at_k(sim[1:], [np.array(sorted(relevance[1]))], 10)[0] == pytest.approx(1.0)
    assert s["R@10"][1] == pytest.approx(10 / 12)


def test_map_is_the_dcase_baselines_formula_on_random_rankings():
    # the baseline's rule written from its description: the relevant clips' 0-based ranks sorted, i / (rank + 1)
    # summed while rank < k, over the number of relevant clips
    def dcase_ap(ranks0, k):
        total = 0.0
        for i, r in enumerate(sorted(ranks0), 1):
            if r >= k:
                break
            total += i / (r + 1)
        return total / len(ranks0)

    rng = np.random.default_rng(1)
    sim = rng.standard_normal((30, 40))
    relevance = [{int(c): 1.0 for c in rng.choice(40, size=rng.integers(1, 14), replace=False)} for _ in range(30)]
    s = graded_retrieval_scores(sim, relevance, map_ks=(16, 10))
    for q in range(30):
        ranks0 = [int((sim[q] > sim[q, c]).sum()) for c in relevance[q]]
        assert s["mAP@16"][q] == pytest.approx(dcase_ap(ranks0, 16))
        assert s["mAP@10"][q] == pytest.approx(dcase_ap(ranks0, 10))


def test_ties_are_pessimistic_and_lower_grades_rank_first():
    # all five clips tie: the three non-relevant first, then grade 1, then grade 3 (ranks 4 and 5)
    sim = np.zeros((1, 5))
    s = graded_retrieval_scores(sim, [{0: 3.0, 1: 1.0, 2: 0.0}], ks=(3, 5), map_ks=(16,), ndcg_ks=(5,))
    assert s["rank"][0] == 4 and s["hit@3"][0] == 0 and s["R@5"][0] == 1.0
    assert s["mAP@16"][0] == pytest.approx((1 / 4 + 2 / 5) / 2)
    ideal = 3 / np.log2(2) + 1 / np.log2(3)
    assert s["nDCG@5"][0] == pytest.approx((1 / np.log2(5) + 3 / np.log2(6)) / ideal)


def test_one_relevant_clip_of_grade_1_is_retrieval_metrics():
    rng = np.random.default_rng(2)
    sim = np.round(rng.standard_normal((60, 30)), 1)  # rounded: ties, broken the same pessimistic way
    targets = rng.integers(0, 30, 60)
    old = retrieval_metrics(sim, [np.array([t]) for t in targets], bootstrap=300, seed=4)
    new = graded_retrieval_metrics(sim, [{int(t): 1.0} for t in targets], bootstrap=300, seed=4)
    for key in ("R@1", "R@5", "R@10", "mAP@10"):
        assert new[key] == old[key]
        assert new["ci"][key] == old["ci"][key]
    assert all(new[f"hit@{k}"] == old[f"R@{k}"] for k in (1, 5, 10))
    assert new["queries"] == old["queries"] == 60 and new["relevant_per_query"] == 1.0


def test_reader_reads_the_dcase_2025_layout(tmp_path):
    path = tmp_path / "metadata_eval.csv"
    path.write_text(DCASE_FIXTURE)
    rows = read_relevance(path)
    assert [(j.query, j.item, j.relevance) for j in rows[:4]] == [
        ("Rain falls on a roof, then thunder rolls.", "roof rain.wav", 1.0),
        ("Rain falls on a roof, then thunder rolls.", "storm_02.wav", 1.0),
        ("Rain falls on a roof, then thunder rolls.", "gutter.wav", 1.0),
        ("A dog barks twice in a yard.", "dog&#39;s bark.wav", 1.0)]
    assert len(rows) == 6 and rows[5].where == f"{path} line 4"
    # matched to pairs: captions by text, clips by file name (the entity read as the clip's name on disk)
    pairs = [Pair(Path(f"/a/{name}"), cap, name, "x") for name, cap in [
        ("roof rain.wav", "Rain falls on a roof, then thunder rolls."), ("storm_02.wav", "A storm."),
        ("gutter.wav", "Water in a gutter."), ("dog's bark.wav", "A dog barks twice in a yard."),
        ("gravel walk.wav", "Footsteps on gravel slowly fade away."), ("other.wav", "Something else.")]]
    clips, _ = clip_index(pairs)
    queries, grades = match_relevance(rows, pairs, clips)
    assert queries == [0, 3, 4]
    assert grades == [{0: 1.0, 1: 1.0, 2: 1.0}, {3: 1.0}, {4: 1.0, 1: 1.0}]


def test_reader_reads_beir_and_trec_qrels(tmp_path):
    beir = tmp_path / "test.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nA dog, barking.\tdog.wav\t2\nA dog, barking.\tcat.wav\t0\n"
                    "Rain.\train.wav\t1\n")
    rows = read_relevance(beir)
    assert [(j.query, j.item, j.relevance) for j in rows] == [
        ("A dog, barking.", "dog.wav", 2.0), ("A dog, barking.", "cat.wav", 0.0), ("Rain.", "rain.wav", 1.0)]
    trec = tmp_path / "qrels.txt"
    trec.write_text("q1 0 dog.wav 2\n\nq1\t0\tcat.wav\t0\nq2 0 rain.wav 1\n")  # spaces or tabs
    assert [(j.query, j.item, j.relevance, j.where) for j in read_relevance(trec)][1] == (
        "q1", "cat.wav", 0.0, f"{trec} line 3")


@pytest.mark.parametrize("text, line, message", [
    ("query,audio_files\nA dog.,['a.wav']\n", 1, "missing column.*audio_filenames"),
    ("query,audio_filenames\nA dog.,['a.wav']\nA cat.,\"['b.wav', 'a.wav', 'b.wav']\"\n", 3, "judged twice.*line 3"),
    ("query,audio_filenames\nA dog.,['a.wav', 'b.wav']\n", 2, "3 fields but the header has 2 .a field with commas"),
    ("query,audio_filenames\nA dog.,['a.wav']\nA dog.,\"['c.wav', 'a.wav']\"\n", 3, "judged twice .first at .* line 2"),
    ("query,audio_filenames\nA dog.,['a.wav'\n", 2, "not a list of file names"),
    ("query,audio_filenames\nA dog.,[]\n", 2, "names no file"),
    ("query-id\tcorpus-id\tscore\nq1\ta.wav\thigh\n", 2, "relevance 'high' is not a number"),
    ("query-id\tcorpus-id\n", 1, "missing column.*score"),
    ("query-id\tcorpus-id\tscore\nq1\ta.wav\n", 2, "2 tab-separated fields but the header has 3"),
    ("q1 0 a.wav 1\nq1 0 a.wav nan\n", 2, "not a finite number"),
    ("q1 0 a.wav 1\nq1 a.wav 1\n", 2, "3 fields; a TREC qrels line"),
    ("q1 0 a.wav 1\nq1 0 a.wav 2\n", 2, "judged twice"),
    ("hello there\n", 1, "not a relevance file"),
])
def test_bad_relevance_rows_name_the_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "rel.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_relevance(path)
    assert err.value.where == f"{path} line {line}"


def test_rows_naming_no_caption_or_clip_of_the_data_raise_or_are_counted():
    pairs = [Pair(Path("/a/x.wav"), "A dog.", "x.wav", "m line 2"), Pair(Path("/b/x.wav"), "A cat.", "x2", "m line 3"),
             Pair(Path("/a/y.wav"), "Rain.", "y.wav", "m line 4")]
    clips, _ = clip_index(pairs)
    bad = [Judgement("A dog.", "y.wav", 1.0, "rel line 2"), Judgement("A bird.", "y.wav", 1.0, "rel line 3"),
           Judgement("A dog.", "z.wav", 1.0, "rel line 4"), Judgement("Rain.", "x.wav", 1.0, "rel line 5"),
           Judgement("Rain.", "/a/y.wav", 2.0, "rel line 6"), Judgement("Rain.", "y.wav", 1.0, "rel line 7")]
    for row, message in [(1, "'A bird.' is no caption of the data"), (2, "clip 'z.wav' is not in the data"),
                         (3, "clip 'x.wav' names 2 clips"), (5, "judges clip /a/y.wav twice")]:
        with pytest.raises(DataError, match=message) as err:
            match_relevance(bad[:1] + bad[4:5] + [bad[row]], pairs, clips)
        assert err.value.where == bad[row].where
    skipped = Skipped()
    queries, grades = match_relevance(bad, pairs, clips, skip_bad=True, skipped=skipped)
    assert queries == [0, 2] and grades == [{2: 1.0}, {2: 2.0}]
    assert skipped.to_dict()["by_reason"] == {"relevance query not in the data": 1, "relevance clip not in the data": 1,
                                              "ambiguous relevance clip": 1, "duplicate judgement": 1}


def _unique_caption_pairs(tiny_synthetic: Path, tmp_path: Path) -> tuple[Path, list[tuple[str, str]]]:
    """The tiny synthetic test set, each caption once (its first clip), with absolute paths."""
    import csv

    rows, seen = [], set()
    with open(tiny_synthetic / "test.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["caption"] not in seen:
                seen.add(row["caption"])
                rows.append((str(tiny_synthetic / row["audio"]), row["caption"]))
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([("audio", "caption"), *rows])
    return path, rows


def _dcase_file(path: Path, rows: list[tuple[str, list[str]]]) -> Path:
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["query", "audio_filenames"])
        w.writerows([(q, repr(names)) for q, names in rows])
    return path


def test_retrieval_eval_with_a_relevance_file(tmp_path, tiny_checkpoint, tiny_synthetic):
    from clapkit.data.audio.captions import load_pairs
    from clapkit.evaluation.retrieval import retrieval_eval
    from clapkit.models.public.loader import load_model

    manifest, rows = _unique_caption_pairs(tiny_synthetic, tmp_path)
    pairs, net = load_pairs(f"csv:{manifest}"), load_model(tiny_checkpoint)
    names = sorted({Path(a).name for a, _ in rows})
    assert len(names) == 24 and len(pairs) == len(rows) == 48
    # every caption with its own clip alone (grade 1): the graded R@k and mAP@10 are the one-relevant numbers
    own = _dcase_file(tmp_path / "own.csv", [(c, [Path(a).name]) for a, c in rows])
    m = retrieval_eval(net, pairs, bootstrap=100, seed=1, relevance=own)
    graded, paired = m["text_to_audio"], m["text_to_audio_paired"]
    for key in ("R@1", "R@5", "R@10", "mAP@10"):
        assert graded[key] == paired[key] and graded["ci"][key] == paired["ci"][key]
    assert graded["queries"] == 48 and m["relevance"]["judgements"] == 48 and m["relevance"]["skipped"]["count"] == 0
    # one caption with all 24 clips relevant: whatever the model, its top 16 are all relevant
    all_clips = _dcase_file(tmp_path / "all.csv", [(rows[0][1], names)])
    g = retrieval_eval(net, pairs, relevance=all_clips)["text_to_audio"]
    assert g["mAP@16"] == pytest.approx(16 / 24) and g["mAP@10"] == pytest.approx(10 / 24)
    assert g["nDCG@10"] == pytest.approx(1.0) and g["R@1"] == pytest.approx(1 / 24) and g["hit@1"] == 1.0
    assert g["R@10"] == pytest.approx(10 / 24) and g["queries"] == 1 and g["relevant_per_query"] == 24
    # without the file: unchanged
    plain = retrieval_eval(net, pairs, bootstrap=100, seed=1)
    assert plain["text_to_audio"] == paired and "relevance" not in plain


def test_cli_relevance_option_and_bench_task(tmp_path, tiny_checkpoint, tiny_synthetic):
    from typer.testing import CliRunner

    from clapkit.cli import app
    from clapkit.experiments.bench import load_bench, run_bench

    manifest, rows = _unique_caption_pairs(tiny_synthetic, tmp_path)
    names = sorted({Path(a).name for a, _ in rows})
    rel = _dcase_file(tmp_path / "rel.csv", [(rows[0][1], names), (rows[1][1], [Path(rows[1][0]).name])])
    out = tmp_path / "r.json"
    args = ["eval", "retrieval", "--model", str(tiny_checkpoint), "--data", f"csv:{manifest}", "--bootstrap", "50"]
    run = CliRunner().invoke(app, [*args, "--relevance", str(rel), "--out", str(out)])
    assert run.exit_code == 0, run.output
    m = json.loads(out.read_text())
    t2a = m["text_to_audio"]
    assert t2a["queries"] == 2 and set(t2a["ci"]) >= {"mAP@16", "mAP@10", "nDCG@10", "R@1", "R@5", "R@10"}
    assert t2a["R@10"] >= (10 / 24) / 2 and "mAP@16" in run.output
    assert m["text_to_audio_paired"]["queries"] == 48 and m["audio_to_text"]["queries"] == 24
    # a row naming a clip the data lacks: an error naming the row, or counted with --skip-bad
    bad = _dcase_file(tmp_path / "bad.csv", [(rows[0][1], names), (rows[1][1], ["nowhere.wav"])])
    run = CliRunner().invoke(app, [*args, "--relevance", str(bad)])
    assert isinstance(run.exception, DataError)  # the CLI's entry point prints it without a traceback, exit 2
    assert str(run.exception) == f"{bad} line 3: clip 'nowhere.wav' is not in the data"
    run = CliRunner().invoke(app, [*args, "--relevance", str(bad), "--skip-bad", "--out", str(out)])
    assert run.exit_code == 0, run.output
    m = json.loads(out.read_text())
    assert m["relevance"]["skipped"]["by_reason"] == {"relevance clip not in the data": 1}
    assert m["text_to_audio"]["queries"] == 1 and m["text_to_audio"]["mAP@16"] == pytest.approx(16 / 24)
    # a bench retrieval task with the file: text_to_audio_mAP@16 ... rows, and a paired comparison on it
    bench = tmp_path / "bench.yaml"
    bench.write_text(yaml.safe_dump({
        "models": [{"name": "a", "model": str(tiny_checkpoint)}, {"name": "b", "model": str(tiny_checkpoint)}],
        "tasks": [{"name": "graded", "type": "retrieval", "data": f"csv:{manifest}", "relevance": str(rel)}],
        "bootstrap": 50, "seed": 0}))
    run_bench(load_bench(bench), tmp_path / "bench", progress=False)
    cell = json.loads((tmp_path / "bench" / "cells" / "a__graded.json").read_text())
    values = {r["metric"]: r for r in cell["metrics"]}
    assert values["text_to_audio_mAP@16"]["value"] == pytest.approx(t2a["mAP@16"])  # eval retrieval's number
    assert values["text_to_audio_nDCG@10"]["n"] == 2 and values["text_to_audio_R@1"]["ci_low"] is not None
    assert values["audio_to_text_R@1"]["n"] == 24 and cell["main_metric"] == "text_to_audio_mAP@16"
    assert cell["relevance"]["queries"] == 2
    pairs_csv = (tmp_path / "bench" / "pairs.csv").read_text()
    assert "text_to_audio_mAP@16" in pairs_csv
