"""How much a growth event changes an adapter's update (issue 25), from its factors alone.

An adapter's update is a product dW = B M A (B: d x r, M: r x r with the scale folded in, A: r x n). Growth
changes it twice: Eq. 5's scale alpha/(r+eps) follows the new rank, so the learned update is multiplied by
r/(r+dr), and the new units add their own terms. ``relative_change`` measures both at once as
||dW_after - dW_before||_F / ||dW_before||_F, through r x r Gram matrices: no d x n matrix is built.
"""

from __future__ import annotations

import torch

Factors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (B, M, A) with dW = B @ M @ A


def frobenius_norm(b: torch.Tensor, m: torch.Tensor, a: torch.Tensor) -> float:
    """||B M A||_F = sqrt(trace(M^T (B^T B) M (A A^T))), in float64."""
    b, m, a = (t.detach().double() for t in (b, m, a))
    squared = ((m.t() @ (b.t() @ b) @ m) * (a @ a.t())).sum()  # trace(X Y) = sum(X * Y^T), Y symmetric
    return squared.clamp_min(0).sqrt().item()


def relative_change(before: Factors, after: Factors) -> float | None:
    """||dW_after - dW_before||_F / ||dW_before||_F; None when dW_before is zero (nothing learned to change)."""
    reference = frobenius_norm(*before)
    if reference == 0.0:
        return None
    (b0, m0, a0), (b1, m1, a1) = before, after
    difference = frobenius_norm(torch.cat([b1, b0], dim=1), torch.block_diag(m1, -m0), torch.cat([a1, a0], dim=0))
    return difference / reference
