"""Eq. 11 on toy matrices under each normalization, and the top-k selection."""

import math

import pytest
import torch

from triadapt import importance

D = torch.tensor([[3.0, 0.0], [4.0, 0.0]])  # ||D||_F = 5, r = 2


@pytest.mark.parametrize("normalization, expected", [("r", 2.5), ("sqrt_r", 5 / math.sqrt(2)), ("none", 5.0)])
def test_normalized_norm(normalization, expected):
    assert importance.normalized_norm(D, normalization) == pytest.approx(expected)


def test_scores_are_changes_since_previous_event():
    # A rank-1 matrix with D=[[2]] before (2/1 = 2.0), grown to D above (5/2 = 2.5): S = 0.5.
    previous = [importance.normalized_norm(torch.tensor([[2.0]]))]
    current = [importance.normalized_norm(D)]
    assert importance.importance_scores(current, previous) == [pytest.approx(0.5)]
    # The same growth under no normalization: 5 - 2 = 3; under sqrt_r: 5/sqrt(2) - 2.
    assert importance.normalized_norm(D, "none") - importance.normalized_norm(torch.tensor([[2.0]]), "none") == 3.0


def test_top_k_strict_and_ties():
    scores = [0.1, 0.5, 0.5, -0.2, 0.5]
    assert importance.top_k(scores, 2) == [1, 2]  # stable: ties go to the lower index
    assert importance.top_k(scores, 2, ties_at_threshold=True) == [1, 2, 4]  # the authors' code


def test_unknown_normalization():
    with pytest.raises(ValueError, match="'log'.*r, sqrt_r, none"):
        importance.normalized_norm(D, "log")
