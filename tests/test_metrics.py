"""GLUE metrics against values computed by hand."""

import math

import pytest

from runner.metrics import glue_metrics


def test_accuracy_and_f1():
    # labels 1 1 0 0 1, predictions 1 0 0 1 1: 3/5 correct; TP=2, FP=1, FN=1 -> F1 = 2*2/(2*2+1+1) = 2/3.
    m = glue_metrics("mrpc", [1, 0, 0, 1, 1], [1, 1, 0, 0, 1])
    assert m == {"accuracy": pytest.approx(0.6), "f1": pytest.approx(2 / 3)}
    assert glue_metrics("rte", [1, 0, 0, 1, 1], [1, 1, 0, 0, 1]) == {"accuracy": pytest.approx(0.6)}


def test_matthews_correlation():
    # TP=2, TN=1, FP=1, FN=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6.
    m = glue_metrics("cola", [1, 0, 0, 1, 1], [1, 1, 0, 0, 1])
    assert m["mcc"] == pytest.approx(1 / 6)
    assert glue_metrics("cola", [1, 1, 1, 1], [1, 0, 1, 0])["mcc"] == 0.0  # majority class only


def test_pearson_and_spearman():
    # x = 1,2,3 ; y = 1,2,4: Pearson = 3 / sqrt(2 * 4.6667) = 0.98198; ranks equal -> Spearman 1.
    m = glue_metrics("stsb", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert m["pearson"] == pytest.approx(3 / math.sqrt(2 * 14 / 3))
    assert m["spearman"] == pytest.approx(1.0)
