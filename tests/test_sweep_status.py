"""scripts/sweep_status.py finds, for each cell of an experiment's grid, the record the runner would skip on."""

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT, compose_config

WARMUPS = [100, 200, 400, 600, 800]  # conf/experiment/fig3.yaml: 2 methods x 5 warm-ups x seed 0


def write_record(runs, method, warmup, *extra, task="stsb"):
    cfg = compose_config("+experiment=fig3", f"method={method}", f"task={task}", f"task.warmup_steps={warmup}",
                         "seed=0", *extra)
    config = OmegaConf.to_container(cfg, resolve=True)
    folder = runs / "minilm"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{task}--{method}--seed0"
    path = folder / f"{stem}-{len(list(folder.glob(stem + '*')))}.json"
    path.write_text(json.dumps({"config": config}))


def status(runs, *overrides):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep_status.py"), "fig3", *overrides,
                           "--runs", str(runs)], capture_output=True, text=True)


def test_counts_matching_records_and_lists_the_missing_cells(tmp_path):
    runs = tmp_path / "runs"
    for method in ("triadapt_linear", "increlora"):
        for warmup in WARMUPS:
            if (method, warmup) != ("increlora", 400):
                write_record(runs, method, warmup, "tag=other-experiment")  # tag does not matter
    write_record(runs, "increlora", 400, "train.lr=1e-4")  # another run: not this cell
    out = status(runs)
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines() == ["fig3: 9 of 10 runs have a record",
                                       "missing: method=increlora task=stsb task.warmup_steps=400 seed=0"]
    write_record(runs, "increlora", 400, "data.dir=/elsewhere")  # the data's location does not matter
    out = status(runs)
    assert out.returncode == 0 and out.stdout.splitlines() == ["fig3: 10 of 10 runs have a record"]


def test_a_command_line_key_replaces_the_experiments_axis_as_hydras_sweeper_does(tmp_path):
    runs = tmp_path / "runs"
    for method in ("triadapt_linear", "increlora"):
        for warmup in WARMUPS:
            write_record(runs, method, warmup)  # the experiment's own task, STS-B: complete
    write_record(runs, "increlora", 800, task="rte")
    out = status(runs, "task=rte")  # the paper's task instead: one cell of ten
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "fig3: 1 of 10 runs have a record" and len(lines) == 10
    assert "missing: method=triadapt_linear task=rte task.warmup_steps=100 seed=0" in lines
    assert not any("stsb" in line for line in lines)


def test_unknown_experiment_names_the_choices(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep_status.py"), "tabel1"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "unknown experiment 'tabel1'" in out.stderr and "table1" in out.stderr


@pytest.mark.parametrize("override, message", [
    ("trian.threads=1", "trian.threads=1: Could not override 'trian.threads'. To append to your config use +trian.threads=1"),
    ("method=lorra", "method=lorra: In 'config': Could not find 'method/lorra'; choose one of: adalora, bitfit,")])
def test_a_bad_override_names_itself_and_the_choices(override, message):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep_status.py"), "fig3", override],
                         capture_output=True, text=True)
    assert out.returncode == 2 and f"sweep_status.py: error: {message}" in out.stderr and "Traceback" not in out.stderr


def test_each_stage_of_the_schedule_length_study_lists_its_own_cells(tmp_path):
    """Stage A: 2 methods x MRPC, STS-B x 3 seeds at the paper's T; B: 5 methods x 3 tasks x 3 seeds at 3 x cpu_steps
    (a record at the paper's T is not a stage-B cell); C: AdaLoRA, IncreLoRA x MRPC, STS-B at seed 0."""
    cfg = compose_config("+experiment=schedule_length", "method=lora", "task=mrpc", "seed=0", "train.threads=1")
    folder = tmp_path / "runs" / "minilm"
    folder.mkdir(parents=True)
    (folder / "mrpc--lora--seed0.json").write_text(json.dumps({"config": OmegaConf.to_container(cfg, resolve=True)}))
    counts = {}
    for stage in ("schedule_length", "schedule_length_3x", "schedule_length_c"):
        out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep_status.py"), stage, "train.threads=1",
                              "--runs", str(tmp_path / "runs")], capture_output=True, text=True)
        counts[stage] = out.stdout.splitlines()[0]
    assert counts == {"schedule_length": "schedule_length: 1 of 12 runs have a record",
                      "schedule_length_3x": "schedule_length_3x: 0 of 45 runs have a record",
                      "schedule_length_c": "schedule_length_c: 0 of 4 runs have a record"}


def test_an_interrupted_cell_of_a_fixed_folder_sweep_shows_the_step_it_resumes_from(tmp_path):
    """schedule_length's run folders are fixed (outputs/schedule_length/.../paper_T), so a missing cell whose folder
    holds a checkpoint is listed with its step; a pointer to a checkpoint that is gone counts as none."""
    cell = tmp_path / "outputs" / "schedule_length" / "minilm" / "stsb" / "lora" / "seed1" / "paper_T" / "checkpoints"
    (cell / "step-360").mkdir(parents=True)
    (cell / "latest").write_text("step-360")
    broken = tmp_path / "outputs" / "schedule_length" / "minilm" / "mrpc" / "lora" / "seed2" / "paper_T" / "checkpoints"
    broken.mkdir(parents=True)
    (broken / "latest").write_text("step-115")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep_status.py"), "schedule_length",
                          "--runs", str(tmp_path / "runs"), "--launched-from", str(tmp_path)],
                         capture_output=True, text=True)
    lines = out.stdout.splitlines()
    assert out.returncode == 1 and lines[0] == "schedule_length: 0 of 12 runs have a record", out.stderr
    assert f"missing: method=lora task=stsb seed=1 (resumes from step 360: {cell.parent})" in lines
    assert "missing: method=lora task=mrpc seed=2" in lines
    assert sum("resumes from" in line for line in lines) == 1
