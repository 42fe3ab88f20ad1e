"""k(t) and R(t) of Eqs. 12-14 against hand-worked examples, and budget properties."""

import random

import pytest

from triadapt import schedule

# M=4 matrices, r_init=1, r_ref=4: R(0)=16, R(1)=12. delta_r=2, t0=2, interval=2, T=12:
# events may fall at t = 4, 6, 8, 10 with alpha = 0.2, 0.4, 0.6, 0.8.
SETTING = dict(M=4, r_init=1, r_ref=4, delta_r=2, t0=2, interval=2, T=12)


def events(mode, **kw):
    return [(e.step, e.k, e.remaining_before, e.remaining_after)
            for e in schedule.simulate(mode, **{**SETTING, **kw})]


def test_growth_steps_and_alpha():
    assert schedule.growth_steps(2, 2, 12) == [4, 6, 8, 10]
    assert schedule.growth_steps(100, 100, 401) == [200, 300, 400]
    assert schedule.progress(6, 2, 12) == pytest.approx(0.4)
    assert schedule.initial_budget(8, 1, 72) == 504


def test_linear_ceil():
    # t=4: ceil(12*0.2)=ceil(2.4)=3 -> 6 ranks, R=6; t=6: ceil(6*0.4)=3 -> 6 ranks, R=0.
    assert events("linear") == [(4, 3, 12, 6), (6, 3, 6, 0)]


def test_linear_floor_as_in_authors_code():
    # t=4: floor(2.4)=2 -> R=8; t=6: floor(3.2)=3 -> R=2; t=8: floor(1.2)=1, the last grant clamped to 2 -> R=0.
    assert events("linear", rounding="floor") == [(4, 2, 12, 8), (6, 3, 8, 2), (8, 1, 2, 0)]


def test_nonlinear_ceil():
    # t=4: 12**0.2=1.644 -> 2, R=8; t=6: 8**0.4=2.297 -> 3, R=2; t=8: 2**0.6=1.516 -> 2, capped at ceil(2/2)=1, R=0.
    assert events("nonlinear") == [(4, 2, 12, 8), (6, 3, 8, 2), (8, 1, 2, 0)]


def test_fixed_k_runs_out_of_events():
    # k=1: 2 ranks per event, four events hand out 8 of the 12: T leaves no room for the rest.
    assert events("fixed_k", fixed_k=1) == [(4, 1, 12, 10), (6, 1, 10, 8), (8, 1, 8, 6), (10, 1, 6, 4)]


def test_k_is_clamped_to_one_and_to_M():
    # alpha tiny: R*alpha < 1 still grows one matrix; alpha near 1 with a large R is capped at M.
    assert schedule.num_modules_to_grow("linear", 5, t=3, t0=2, T=1000, M=10, delta_r=1) == 1
    assert schedule.num_modules_to_grow("linear", 500, t=999, t0=2, T=1000, M=10, delta_r=1) == 10
    assert schedule.num_modules_to_grow("fixed_k", 500, t=3, t0=2, T=10, M=4, delta_r=1, fixed_k=9) == 4


def test_budget_exact_off_reproduces_overshoot():
    # delta_r=5, fixed k=1: 12 -> 7 -> 2 -> 0 exact; the authors' code grants the full 5 and ends at -3.
    assert [e.remaining_after for e in schedule.simulate("fixed_k", **{**SETTING, "delta_r": 5}, fixed_k=1)] == [7, 2, 0]
    overshoot = schedule.simulate("fixed_k", **{**SETTING, "delta_r": 5}, fixed_k=1, budget_exact=False)
    assert [e.remaining_after for e in overshoot] == [7, 2, -3]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="'cubic'.*linear, nonlinear, fixed_k"):
        schedule.num_modules_to_grow("cubic", 5, 3, 2, 10, 4, 1)


@pytest.mark.parametrize("mode", schedule.MODES)
def test_budget_property_random(mode):
    """Total rank never exceeds r_ref*M, and equals it at the end whenever T leaves room.

    "Room": at least ceil(R(1)/delta_r) events fit, enough even if every event grew one matrix.
    """
    rng = random.Random(0)
    finished = 0
    for _ in range(400):
        M, r_init = rng.randint(1, 40), rng.randint(1, 3)
        r_ref, delta_r = r_init + rng.randint(0, 12), rng.randint(1, 5)
        t0, interval = rng.randint(0, 50), rng.randint(1, 30)
        T = t0 + rng.randint(1, 800)
        evs = schedule.simulate(mode, M, r_init, r_ref, delta_r, t0, interval, T, fixed_k=rng.randint(1, 30))
        budget = (r_ref - r_init) * M
        spent = budget - (evs[-1].remaining_after if evs else budget)
        assert 0 <= spent <= budget
        assert all(1 <= e.k <= M for e in evs)
        assert all(e.remaining_before - e.remaining_after <= e.k * delta_r for e in evs)
        if len(schedule.growth_steps(t0, interval, T)) >= -(-budget // delta_r):
            assert spent == budget
            finished += 1
    assert finished > 50  # the property was exercised, not vacuous
