"""The tuned comparison's choices and verdicts (issue 45), from run records only; used by make_tables.py and
tuned_queue.py.

- A run's scores: validation at its best validation step (what choices read), dev at that step (what is reported),
  and dev at the last step. None of the choices below reads dev.
- A learning rate per (model, task, method, T): the rate of the grid with the best mean validation score over the
  selection seeds; a winner on the grid's edge asks for the next rate beyond it (``next_rate``).
- A verdict from paired per-seed differences: the mean with its 95% t-interval and the two-sided p-value of a
  one-sample t-test; "ahead"/"behind" only when the interval excludes 0.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from scipy import stats

GRID = (2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3)  # log-spaced, factor 2; extended by factors of 2 past a winning edge
RATE_LIMITS = (1e-5, 0.1)  # the grid is never extended beyond these
SELECTION_SEEDS = (0,)     # the seeds every rate of the grid runs with
REPORT_SEEDS = (0, 1, 2, 3, 4)  # the seeds at the selected rate that the comparison reports
CONFIDENCE = 0.95


def validation_score(record: dict) -> float:
    """The record's validation score (task metric, %) at its best validation step."""
    return 100 * record["selected"]["metrics"]["validation"][record["metric"]]


def reported_score(record: dict) -> float:
    """Dev (the reported set, %) at the step with the best validation score."""
    return 100 * record["selected"]["main"]


def last_score(record: dict) -> float:
    """Dev (%) at the run's last step."""
    return 100 * record["last"]["main"]


def rate_of(record: dict) -> float:
    return float(record["config"]["train"]["lr"])


def tuned_runs(records: list[dict]) -> dict:
    """(model, task, method, T) -> learning rate -> seed -> record, for the records that hold a validation choice
    (``selected``); of repeated runs, the newest (``finished_at``)."""
    runs = defaultdict(lambda: defaultdict(dict))
    for record in sorted(records, key=lambda r: r.get("finished_at", "")):
        if record.get("selected"):
            key = (record["model"], record["task"], record["method"], record["steps"])
            runs[key][rate_of(record)][record["seed"]] = record
    return runs


def validation_means(by_rate: dict, seeds=SELECTION_SEEDS) -> dict[float, float]:
    """Learning rate -> mean validation score over ``seeds``, for the rates that have every one of them."""
    return {rate: statistics.mean(validation_score(by_seed[s]) for s in seeds)
            for rate, by_seed in sorted(by_rate.items()) if all(s in by_seed for s in seeds)}


def select_rate(means: dict[float, float]) -> float | None:
    """The rate with the highest mean validation score (the smaller rate on a tie); None without any."""
    if not means:
        return None
    return max(sorted(means), key=lambda rate: means[rate])


def next_rate(means: dict[float, float], grid=GRID) -> float | None:
    """The rate still to try before the choice is final: a grid rate without a score, or, when the winner sits on
    the edge of the rates tried, the next one beyond it (×2 or ÷2, within ``RATE_LIMITS``); None when done."""
    missing = [rate for rate in grid if not any(math.isclose(rate, r) for r in means)]
    if missing:
        return missing[0]
    winner, tried = select_rate(means), sorted(means)
    beyond = winner / 2 if winner == tried[0] else winner * 2 if winner == tried[-1] else None
    if beyond is None or not RATE_LIMITS[0] <= beyond <= RATE_LIMITS[1]:
        return None
    return beyond


def is_final(means: dict[float, float], grid=GRID) -> bool:
    """The choice is made: every rate of ``grid`` was tried and the winner's neighbours (×2, ÷2) too, unless beyond
    ``RATE_LIMITS``; before that, a cell's scores are not reported."""
    tried = [r for r in means]
    has = lambda rate: any(math.isclose(rate, r) for r in tried)  # noqa: E731
    winner = select_rate(means)
    if winner is None or not all(has(rate) for rate in grid):
        return False
    return all(has(n) or not RATE_LIMITS[0] <= n <= RATE_LIMITS[1] for n in (winner / 2, winner * 2))


def interval(diffs: list[float], confidence: float = CONFIDENCE) -> dict:
    """Mean, std, the t-interval's half-width and the two-sided p-value of paired differences, and the verdict:
    "ahead" when the interval lies above 0, "behind" below, else "inconclusive" (too few seeds: n < 2)."""
    n = len(diffs)
    if n < 2:
        return {"n": n, "mean": diffs[0] if diffs else None, "sd": None, "half_width": None, "p": None,
                "verdict": "inconclusive (n < 2)"}
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    p = 1.0 if sd == 0 and mean == 0 else 0.0 if sd == 0 else float(stats.ttest_1samp(diffs, 0.0).pvalue)
    verdict = "ahead" if mean - half > 0 else "behind" if mean + half < 0 else "inconclusive"
    return {"n": n, "mean": mean, "sd": sd, "half_width": half, "p": p, "verdict": verdict}


def describe(result: dict) -> str:
    """An interval as a table cell: "+1.23 [0.45, 2.01], p = 0.012, ahead"."""
    if result["half_width"] is None:
        return "–" if result["mean"] is None else f"{result['mean']:+.2f} (n = 1)"
    low, high = result["mean"] - result["half_width"], result["mean"] + result["half_width"]
    return f"{result['mean']:+.2f} [{low:+.2f}, {high:+.2f}], p = {result['p']:.3f}, {result['verdict']}"
