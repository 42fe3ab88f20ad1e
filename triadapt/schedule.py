"""Rank budget and dynamic threshold of TriAdaptLoRA (paper Eqs. 12-14), as pure functions.

Steps are optimizer steps, counted from 0. ``t0`` is the initial warm-up, ``T`` the run's total
number of optimizer steps. None of this depends on the importance scores, so the whole growth
schedule of a run can be simulated before it starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MODES = ("linear", "nonlinear", "fixed_k")
ROUNDINGS = ("ceil", "floor")


def is_growth_step(t: int, t0: int, interval: int, T: int | None) -> bool:
    """Growth events fall at t > t0 with t % interval == 0, inside the run (t < T); with T None (the authors'
    code) at any later such step too, while budget remains."""
    return t0 < t and (T is None or t < T) and t % interval == 0


def growth_steps(t0: int, interval: int, T: int) -> list[int]:
    """All candidate growth steps of a run."""
    first = (t0 // interval + 1) * interval
    return list(range(first, T, interval))


def progress(t: int, t0: int, T: int) -> float:
    """alpha(t) = (t - t0) / (T - t0) of Eq. 13."""
    return (t - t0) / (T - t0)


def initial_budget(r_ref: int, r_init: int, M: int) -> int:
    """R(1) = R(0) - r*M with R(0) = r_ref*M (Eq. 12): the ranks still to hand out after init."""
    return (r_ref - r_init) * M


def num_modules_to_grow(
    mode: str,
    remaining: int,
    t: int,
    t0: int,
    T: int,
    M: int,
    delta_r: int,
    fixed_k: int = 1,
    rounding: str = "ceil",
    budget_exact: bool = True,
) -> int:
    """k(t): how many matrices grow at step t (Eqs. 13-14), clamped to 1 <= k <= M.

    linear: k = ceil(R * alpha); nonlinear: k = ceil(exp(alpha * log R)); fixed_k: k constant.
    ``rounding="floor"`` reproduces the authors' code (``int()``). With ``budget_exact`` k is
    also capped at ceil(R / delta_r), so that no event hands out more than the budget left.
    """
    if remaining <= 0:
        return 0
    if mode == "linear":
        num, den = remaining * (t - t0), T - t0  # exact integer arithmetic for R * alpha
        k = -(-num // den) if rounding == "ceil" else num // den
    elif mode == "nonlinear":
        raw = math.exp(progress(t, t0, T) * math.log(remaining))
        k = math.ceil(raw) if rounding == "ceil" else int(raw)
    elif mode == "fixed_k":
        k = fixed_k
    else:
        raise ValueError(f"unknown growth mode {mode!r}; valid: {', '.join(MODES)}")
    k = min(max(k, 1), M)
    if budget_exact:
        k = min(k, -(-remaining // delta_r))
    return k


@dataclass(frozen=True)
class ScheduledEvent:
    step: int
    k: int
    remaining_before: int
    remaining_after: int


def simulate(
    mode: str,
    M: int,
    r_init: int,
    r_ref: int,
    delta_r: int,
    t0: int,
    interval: int,
    T: int,
    fixed_k: int = 1,
    rounding: str = "ceil",
    budget_exact: bool = True,
) -> list[ScheduledEvent]:
    """The run's growth events and budget R(t) (Eq. 12), without training anything."""
    remaining = initial_budget(r_ref, r_init, M)
    events = []
    for t in growth_steps(t0, interval, T):
        if remaining <= 0:
            break
        k = num_modules_to_grow(mode, remaining, t, t0, T, M, delta_r, fixed_k, rounding, budget_exact)
        granted = min(k * delta_r, remaining) if budget_exact else k * delta_r
        events.append(ScheduledEvent(t, k, remaining, remaining - granted))
        remaining -= granted
    return events
