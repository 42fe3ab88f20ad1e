"""Importance of an incremental matrix from its transformation matrix D = L + U (paper Eq. 11).

S_m(t) = ||D_m(t)||_F / r_m(t) - ||D_m(t-1)||_F / r_m(t-1), where t-1 is the previous growth event.
Cost: O(r^2) per matrix, evaluated only at growth events.
"""

from __future__ import annotations

import math

import torch

NORMALIZATIONS = ("r", "sqrt_r", "none", "blocks")


def normalized_norm(transform: torch.Tensor, normalization: str = "r", blocks: int | None = None) -> float:
    """||D||_F divided by r (default), by sqrt(r), or not at all (the paper's Table III), or by the number of growth
    blocks ``blocks`` (the authors' code divides by ``len(C_row)``, which is r only when every block has one unit)."""
    rank = transform.shape[0]
    fro = torch.linalg.matrix_norm(transform.detach().float(), ord="fro").item()
    if normalization == "blocks":
        return fro / blocks
    if normalization == "r":
        return fro / rank
    if normalization == "sqrt_r":
        return fro / math.sqrt(rank)
    if normalization == "none":
        return fro
    raise ValueError(f"unknown normalization {normalization!r}; valid: {', '.join(NORMALIZATIONS)}")


def importance_scores(current: list[float], previous: list[float]) -> list[float]:
    """Eq. 11: the change of each matrix's normalized norm since the previous event."""
    return [c - p for c, p in zip(current, previous, strict=True)]


def top_k(scores: list[float], k: int, ties_at_threshold: bool = False) -> list[int]:
    """Indices of the k largest scores; equal scores go to the lower index (stable).

    ``ties_at_threshold`` reproduces the authors' code: every score >= the k-th largest is picked,
    so ties can select more than k matrices.
    """
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    if not ties_at_threshold or k == 0:
        return order[:k]
    threshold = scores[order[k - 1]]
    return [i for i in order if scores[i] >= threshold]
