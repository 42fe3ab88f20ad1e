"""scripts/reproduce.py re-runs a record's stored command and compares what it computes, exactly."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, load_script

RUN = ["model=tiny_deberta", "task=rte", "method=triadapt_linear", "train.max_steps=6", "train.batch_size=8",
       "task.max_seq_length=64", "train.eval_every=3", "train.eval_batch_size=128", "train.threads=1"]


def reproduce(record, *extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce.py"), str(record), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True)


def test_rerun_matches_and_a_changed_record_is_reported(tmp_path, data_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), *RUN, f"data.dir={data_dir}",
                           f"results_dir={tmp_path / 'results'}", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = (tmp_path / "results").rglob("*.json")
    record = json.loads(path.read_text())
    assert len(record["method_state"]["growth_history"]) >= 1  # a growth event happened inside the run

    again = reproduce(path, "--keep", str(tmp_path / "again"))
    assert again.returncode == 0 and "reproduced exactly" in again.stdout, again.stdout + again.stderr[-2000:]
    [rerun_path] = (tmp_path / "again" / "runs").rglob("*.json")  # the re-run went to --keep only
    assert len(list((tmp_path / "results").rglob("*.json"))) == 1

    # Against that re-run, in process (a re-run is the same each time): what the report says of altered records.
    report = load_script("reproduce").report
    rerun = json.loads(rerun_path.read_text())
    event = record["method_state"]["growth_history"][0]
    name = next(iter(event["scores"]))
    event["scores"][name] += 2e-7  # float noise in a score: reported as a drift, not a difference
    status, lines = report(path, record, rerun)
    assert status == 0 and "update changes equal up to 2.0e-07" in lines[0] and len(lines) == 1, lines

    for old_event in record["method_state"]["growth_history"]:  # a record made before the update changes were measured
        del old_event["delta_w_change"]
    status, lines = report(path, record, rerun)
    assert status == 0 and "update changes equal up to 2.0e-07" in lines[0], lines

    record["evaluations"][0]["main"] += 1e-9
    status, lines = report(path, record, rerun)
    assert status == 1 and "DIFFERS" in lines[0] and lines[1].startswith("  evaluations: recorded"), lines


@pytest.mark.parametrize("text, message", [(None, "no record at"), ("# a README", "is not a JSON run record"),
                                           ('{"best": 1}', "is not a run record: it stores no command"),
                                           ('{"command": "bash x.sh"}', "cannot re-run 'bash x.sh'")])
def test_what_is_not_a_record_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "record.json"
    if text is not None:
        path.write_text(text)
    out = reproduce(path)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_a_rerun_that_fails_says_so_without_a_traceback(tmp_path):
    path = tmp_path / "record.json"
    path.write_text(json.dumps({"command": "python run.py method=no_such_method task=rte"}))
    out = reproduce(path)
    assert out.returncode == 1 and "not reproduced: the re-run stopped with exit status 2" in out.stderr
    assert "Traceback" not in out.stderr and "method='no_such_method'" in out.stderr
