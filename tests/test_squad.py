"""SQuAD 2.0: the official evaluation by hand, post-processing on known logits, the official dev file."""

import json

import numpy as np
import pytest

from runner import squad
from runner.data import DataError


def test_normalisation():
    assert squad.normalize_answer("The  Cat, sat!  on a MAT.") == "cat sat on mat"
    assert squad.normalize_answer("An apple") == "apple"


def test_partial_overlap_f1():
    # gold "the big red dog" -> [big, red, dog]; prediction "red dog barked" -> [red, dog, barked]
    # overlap 2: precision 2/3, recall 2/3 -> F1 = 2/3; EM 0.
    assert squad.token_f1("the big red dog", "red dog barked") == pytest.approx(2 / 3)
    assert squad.exact_match("the big red dog", "red dog barked") == 0


def test_multiple_gold_answers_take_the_maximum():
    examples = [{"id": "q", "answers": ["Denver Broncos", "Broncos", "the Broncos"]}]
    scores = squad.squad_v2_scores(examples, {"q": "broncos"})
    assert scores["exact"] == 100.0 and scores["f1"] == 100.0
    scores = squad.squad_v2_scores(examples, {"q": "Denver"})  # F1 vs "Denver Broncos" = 2*(1*0.5)/1.5 = 2/3
    assert scores["exact"] == 0.0 and scores["f1"] == pytest.approx(100 * 2 / 3)


def test_unanswerable_questions_and_has_no_splits():
    examples = [{"id": "a", "answers": ["Paris"]}, {"id": "b", "answers": []}, {"id": "c", "answers": []}]
    preds = {"a": "Paris", "b": "", "c": "London"}  # b left empty (right), c answered (wrong)
    s = squad.squad_v2_scores(examples, preds)
    assert (s["HasAns_exact"], s["HasAns_total"]) == (100.0, 1)
    assert (s["NoAns_exact"], s["NoAns_f1"], s["NoAns_total"]) == (50.0, 50.0, 2)
    assert s["exact"] == pytest.approx(200 / 3) and s["total"] == 3


def test_best_threshold_search():
    examples = [{"id": "a", "answers": ["Paris"]}, {"id": "b", "answers": []}, {"id": "c", "answers": []}]
    preds = {"a": "Paris", "b": "Rome", "c": "London"}  # every question answered
    na = {"a": -2.0, "b": 1.0, "c": 3.0}  # higher = more likely unanswerable
    s = squad.squad_v2_scores(examples, preds, na)
    # Threshold below -2: all "no answer" -> 2/3. At -2: a answered (+1) -> 3/3, b and c empty. Best 100 at -2.
    assert (s["best_exact"], s["best_exact_thresh"]) == (100.0, -2.0)
    assert s["exact"] == pytest.approx(100 / 3)
    # Predictions already thresholded to "" everywhere: the search cuts the best spans instead.
    s = squad.squad_v2_scores(examples, {"a": "", "b": "", "c": ""}, na, spans=preds)
    assert (s["exact"], s["best_exact"], s["best_exact_thresh"]) == (pytest.approx(200 / 3), 100.0, -2.0)


def constructed(context, null_bonus):
    """One window: token 0 is [CLS], 1-2 the question, 3.. one token per context character."""
    offsets = [None, None, None] + [(i, i + 1) for i in range(len(context))]
    features = squad.EvalFeatures(inputs=[{}], example_index=[0], offsets=[offsets])
    starts = np.full(len(offsets), -5.0)
    ends = np.full(len(offsets), -5.0)
    starts[3 + context.index("blue")] = 4.0  # the span "blue sky" gets 4 + 4
    ends[3 + context.index("sky") + 2] = 4.0
    starts[0] = ends[0] = 4.0 + null_bonus  # null score: start[CLS] + end[CLS]
    starts[1] = ends[1] = 9.0  # question tokens: never an answer
    return features, starts[None], ends[None]


def test_postprocess_returns_the_span_with_exact_characters():
    context = "the blue sky is wide"
    features, starts, ends = constructed(context, null_bonus=-1.0)
    preds, na, spans = squad.postprocess([{"id": "q", "context": context}], features, starts, ends)
    assert preds == spans == {"q": "blue sky"} and na["q"] == pytest.approx(6.0 - 8.0)


def test_postprocess_chooses_null_when_it_wins():
    context = "the blue sky is wide"
    features, starts, ends = constructed(context, null_bonus=+1.0)
    preds, na, spans = squad.postprocess([{"id": "q", "context": context}], features, starts, ends)
    assert preds == {"q": ""} and spans == {"q": "blue sky"} and na["q"] == pytest.approx(10.0 - 8.0)
    preds, _, _ = squad.postprocess([{"id": "q", "context": context}], features, starts, ends, null_threshold=5.0)
    assert preds == {"q": "blue sky"}  # a higher threshold keeps the span


def test_postprocess_respects_max_answer_length():
    context = "the blue sky is wide"
    features, starts, ends = constructed(context, null_bonus=-10.0)
    preds, _, _ = squad.postprocess([{"id": "q", "context": context}], features, starts, ends, max_answer_length=3)
    assert preds["q"] != "blue sky" and len(preds["q"]) <= 3


@pytest.fixture
def dev_examples(data_dir):
    return squad.read_squad_json(data_dir / "squad_v2" / "dev-v2.0.json")


def test_official_dev_gold_scores_100_and_empty_scores_noans_share(dev_examples):
    assert len(dev_examples) == 11873
    gold = {ex["id"]: (ex["answers"][0] if ex["answers"] else "") for ex in dev_examples}
    s = squad.squad_v2_scores(dev_examples, gold)
    assert s["exact"] == s["f1"] == 100.0
    empty = squad.squad_v2_scores(dev_examples, {ex["id"]: "" for ex in dev_examples})
    assert empty["exact"] == empty["f1"] == pytest.approx(100 * 5945 / 11873)  # 50.07


def test_dev_split_is_by_article_and_seeded(dev_examples):
    train, held, titles = squad.split_by_article(dev_examples, 0.2, seed=0)
    assert len(titles) == 7 and {ex["title"] for ex in held} == set(titles)
    assert not {ex["title"] for ex in train} & set(titles) and len(train) + len(held) == 11873
    assert squad.split_by_article(dev_examples, 0.2, seed=0)[2] == titles


@pytest.mark.parametrize("content", ['{"version": "v2.0"}', '{"data": [{"title": "x", "paragraphs": [{"qas": []}]}]}',
                                     "not json"])
def test_non_official_json_is_refused(tmp_path, content):
    path = tmp_path / "dev.json"
    path.write_text(content)
    with pytest.raises(DataError, match="not an official SQuAD 2.0 JSON"):
        squad.read_squad_json(path)


def test_squad_trains_through_the_runner(tmp_path, data_dir):
    import runner.train
    from tests.conftest import compose_config

    cfg = compose_config("method=triadapt_linear", "model=tiny_deberta", "task=squad_v2", f"data.dir={data_dir}",
                         f"results_dir={tmp_path}", "train.max_steps=6", "train.batch_size=4",
                         "task.max_seq_length=128", "task.doc_stride=64", "task.dev_split.eval_fraction=0.03")
    record, _ = runner.train.run(cfg, tmp_path / "out")
    dev = record["last"]["metrics"]["dev"]
    assert dev["total"] == 515 and dev["HasAns_total"] + dev["NoAns_total"] == 515
    assert record["data"]["protocol"]["name"] == "dev_split" and record["metric"] == "f1"
    assert record["method_state"]["growth_history"]
