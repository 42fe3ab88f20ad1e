"""scripts/race.py's reading of a race: the first evaluation at or above the target, and ratios to the Trainer's."""

import pytest

from tests.conftest import load_script


def test_time_to_target_is_the_first_evaluation_at_or_above_it():
    race = load_script("race")
    steps, scores, seconds = [200, 400, 600], [0.80, 0.85, 0.90], [50.0, 101.0, 150.0]
    assert race.time_to_target(steps, scores, seconds, 0.85) == {"step": 400, "seconds": 101.0}
    assert race.time_to_target(steps, scores, seconds, 0.95) == {"step": None, "seconds": None}


def test_the_table_gives_each_contestant_its_times_as_ratios_to_the_trainers():
    """Trainer 100 s to the target and 300 s in all; ours 80 and 330 -> 0.80 and 1.10; one that never arrives: –."""
    race = load_script("race")
    hf = race.summary("Hugging Face Trainer + PEFT LoRA", [1, 2], [0.84, 0.86], [100.0, 300.0], 300.0, 0.85)
    hf["to_target"] = {"step": 2, "seconds": 100.0}
    ours = race.summary("ours, method=lora", [1, 2], [0.86, 0.87], [80.0, 330.0], 330.0, 0.85)
    slow = race.summary("ours, method=triadapt_linear", [1, 2], [0.80, 0.84], [90.0, 340.0], 340.0, 0.85)
    table = race.markdown({"settings": {"task": "sst2", "steps": 2, "target": 0.85}, "contestants": [hf, ours, slow]})
    assert "| ours, method=lora | 1, 80.0 | 0.80 | 330.0 | 1.10 | 87.00 | 87.00 |" in table
    assert "| ours, method=triadapt_linear | None, None | – | 340.0 | 1.13 | 84.00 | 84.00 |" in table


@pytest.mark.parametrize("argv, message", [(["--steps", "0"], "--steps 0: must be an integer >= 1"),
                                           (["--target", "85"], "--target 85.0: a dev accuracy in (0, 1]"),
                                           (["--task", "stsb"], "invalid choice: 'stsb'")])
def test_a_bad_argument_stops_before_the_busy_check_or_any_run(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        load_script("race").main([*argv, "--out", str(tmp_path)])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
