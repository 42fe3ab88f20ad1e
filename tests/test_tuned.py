"""The tuned comparison (issue 45): a held-out validation split that is seeded, recorded and disjoint from the
training rows and from dev; a choice of learning rate that never reads dev; intervals checked by hand."""

import copy
import json
from collections import Counter

import pytest

import runner.train
from runner.data import Split, hold_out, load_glue
from tests.conftest import compose_config, load_script
from tests.test_runner import SHORT

selection = load_script("selection")


def test_hold_out_is_seeded_stratified_and_disjoint():
    labels = [0] * 80 + [1] * 20
    split = Split([f"a{i}" for i in range(100)], [f"b{i}" for i in range(100)], labels)
    train, held, rows = hold_out(split, 0.1, seed=3, stratify=True)
    assert len(held) == 10 and len(train) == 90 and sorted(held.labels) == [0] * 8 + [1] * 2  # the class balance kept
    assert held.text_a == [f"a{i}" for i in rows] and held.text_b == [f"b{i}" for i in rows]
    assert set(train.text_a).isdisjoint(held.text_a) and set(train.text_a) | set(held.text_a) == set(split.text_a)
    assert hold_out(split, 0.1, seed=3, stratify=True)[2] == rows  # the same rows again
    assert hold_out(split, 0.1, seed=4, stratify=True)[2] != rows


@pytest.mark.parametrize("task, size", [("rte", 249), ("mrpc", 367), ("stsb", 575), ("cola", 856)])
def test_validation_rows_are_neither_trained_on_nor_in_dev(task, size, data_dir):
    """On the real files: 10% of the train file is held out, and a held-out example is also in the training rest
    only where the train file itself repeats it (STS-B and CoLA repeat some)."""
    splits, _ = load_glue(compose_config(f"task={task}").task, data_dir)
    train, held, rows = hold_out(splits["train"], 0.1, seed=0, stratify=task != "stsb")
    assert len(held) == size == len(rows) and len(train) + len(held) == len(splits["train"])
    examples = lambda s: list(zip(s.text_a, s.text_b or [None] * len(s)))  # noqa: E731
    original = Counter(examples(splits["train"]))
    assert set(examples(held)) & set(examples(train)) <= {e for e, n in original.items() if n > 1}
    assert examples(held) == [examples(splits["train"])[i] for i in rows]  # carved from train; dev stays whole


def test_a_run_records_its_split_and_selects_on_validation(tmp_path, data_dir):
    cfg = compose_config("model=tiny_deberta", "task=rte", f"data.dir={data_dir}", f"results_dir={tmp_path / 'r'}",
                         *SHORT, "method=lora", "train.validation_fraction=0.1", "train.eval_every=3",
                         "train.eval_by_length=true")
    record, _ = runner.train.run(cfg, tmp_path / "out")
    split = record["data"]["protocol"]["validation"]
    assert split["examples"] == 249 and split["train_examples"] == 2490 - 249 and split["seed"] == 0
    assert len(split["rows"]) == 249 and record["data"]["train_features"] == 2490 - 249
    assert record["data"]["eval_examples"] == {"dev": 277, "validation": 249}
    assert [e["step"] for e in record["evaluations"]] == [3, 6, 9, 12]
    scores = [e["metrics"]["validation"]["accuracy"] for e in record["evaluations"]]
    assert record["selected"]["step"] == record["evaluations"][scores.index(max(scores))]["step"]
    assert record["selected"]["main"] == record["selected"]["metrics"]["dev"]["accuracy"]


def fake_record(task, method, rate, seed, validation, dev, steps=300):
    chosen = {"step": 30, "main": dev / 100, "metrics": {"dev": {"accuracy": dev / 100},
                                                        "validation": {"accuracy": validation / 100}}}
    return {"model": "minilm", "task": task, "method": method, "seed": seed, "steps": steps, "metric": "accuracy",
            "config": {"train": {"lr": rate}}, "selected": {"by": "validation", **chosen},
            "last": {"step": 300, "main": (dev - 1) / 100}, "finished_at": f"2026-12-07T00:00:{seed:02d}"}


def test_selection_reads_validation_only_and_by_hand():
    validation = {2.5e-4: 70.0, 5e-4: 74.0, 1e-3: 76.0, 2e-3: 75.0, 4e-3: 60.0}
    records = [fake_record("rte", "lora", rate, 0, v, dev=50.0) for rate, v in validation.items()]
    runs = selection.tuned_runs(records)[("minilm", "rte", "lora", 300)]
    means = selection.validation_means(runs)
    assert means == pytest.approx(validation) and selection.select_rate(means) == 1e-3
    assert selection.next_rate(means) is None  # an interior winner: the choice is final
    altered = copy.deepcopy(records)  # dev scores that would pick another rate change nothing
    for record, dev in zip(altered, [99.0, 10.0, 5.0, 80.0, 98.0]):
        record["selected"]["main"] = dev / 100
        record["selected"]["metrics"]["dev"]["accuracy"] = dev / 100
    again = selection.validation_means(selection.tuned_runs(altered)[("minilm", "rte", "lora", 300)])
    assert selection.select_rate(again) == 1e-3
    edge = {**validation, 2.5e-4: 80.0}
    assert selection.select_rate(edge) == 2.5e-4 and selection.next_rate(edge) == 1.25e-4
    assert selection.next_rate({**edge, 1.25e-4: 81.0}) == 6.25e-5
    assert selection.next_rate({2.5e-4: 1.0}) == 5e-4  # the grid's missing rates come first
    assert selection.select_rate({5e-4: 1.0, 1e-3: 1.0}) == 5e-4  # a tie: the smaller rate


def test_a_choice_is_final_once_the_grid_and_the_winners_neighbours_are_tried():
    grid = {2.5e-4: 1.0, 5e-4: 2.0, 1e-3: 3.0, 2e-3: 2.0, 4e-3: 1.0}
    assert selection.is_final(grid)
    assert not selection.is_final({2.5e-4: 1.0, 5e-4: 2.0, 1e-3: 3.0})  # the grid is not complete
    assert not selection.is_final({**grid, 4e-3: 9.0})  # the winner on the edge: 8e-3 still to try
    assert selection.is_final({**grid, 4e-3: 9.0, 8e-3: 1.0})
    assert selection.is_final({5e-4: 1.0, 1e-3: 2.0, 2e-3: 1.0}, grid=())  # stage 3: three rates around a winner


def test_interval_by_hand():
    """Differences 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5) = 1.5811; t(0.975, 4) = 2.7764 -> half-width
    2.7764 * 1.5811 / sqrt(5) = 1.9632; t = 3 / (1.5811 / sqrt(5)) = 4.2426 -> p = 0.01324 (two-sided)."""
    result = selection.interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert result["mean"] == 3.0 and result["sd"] == pytest.approx(1.58114, abs=1e-5)
    assert result["half_width"] == pytest.approx(1.96324, abs=1e-5)
    assert result["p"] == pytest.approx(0.01324, abs=1e-5) and result["verdict"] == "ahead"
    assert selection.describe(result) == "+3.00 [+1.04, +4.96], p = 0.013, ahead"
    # -1, 0.5, 1, 1.5, 3: mean 1, sd 1.4577; half-width 2.7764 * 1.4577 / sqrt(5) = 1.8100 covers 0
    wide = selection.interval([-1.0, 0.5, 1.0, 1.5, 3.0])
    assert wide["half_width"] == pytest.approx(1.80999, abs=1e-4) and wide["verdict"] == "inconclusive"
    assert selection.interval([-3.0, -2.0, -1.0, -4.0, -5.0])["verdict"] == "behind"
    assert selection.interval([2.0])["verdict"] == "inconclusive (n < 2)"


def test_queue_runs_the_grid_then_the_winner_seeds(tmp_path):
    queue = load_script("tuned_queue")
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    validation = {2.5e-4: 70.0, 5e-4: 74.0, 1e-3: 76.0, 2e-3: 75.0}
    for i, (rate, v) in enumerate(validation.items()):
        (runs_dir / f"{i}.json").write_text(json.dumps(fake_record("cola", "lora", rate, 0, v, 50.0, steps=600)))
    cells = queue.plan(queue.read_runs(runs_dir), [1])
    assert cells[0]["jobs"] == [(4e-3, 0)] and cells[0]["winner"] is None
    (runs_dir / "4.json").write_text(json.dumps(fake_record("cola", "lora", 4e-3, 0, 10.0, 50.0, steps=600)))
    cells = queue.plan(queue.read_runs(runs_dir), [1, 3])
    assert cells[0]["winner"] == 1e-3 and cells[0]["jobs"] == [(1e-3, s) for s in (1, 2, 3, 4)]
    narrowed = next(c for c in cells if c["stage"] == 3 and c["task"] == "cola" and c["method"] == "lora")
    assert narrowed["steps"] == 1800 and narrowed["jobs"] == [(5e-4, 0), (1e-3, 0), (2e-3, 0)]
    assert queue.overrides(narrowed, 5e-4, 0) == ["method=lora", "task=cola", "train.lr=0.0005", "seed=0",
                                                  "train.max_steps=1800"]
    claims = tmp_path / "claims"
    out = [queue.main(["next", "--runs", str(runs_dir), "--claims", str(claims)]) for _ in range(2)]
    assert out == [0, 0] and len(list(claims.iterdir())) == 2  # two workers never get the same job
