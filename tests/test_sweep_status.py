"""scripts/sweep_status.py finds, for each cell of an experiment's grid, the record the runner would skip on."""

import json
import subprocess
import sys

from omegaconf import OmegaConf

from tests.conftest import ROOT, compose_config

WARMUPS = [100, 200, 400, 600, 800]  # conf/experiment/fig3.yaml: 2 methods x 5 warm-ups x seed 0


def write_record(runs, method, warmup, *extra):
    cfg = compose_config("+experiment=fig3", f"method={method}", "task=rte", f"task.warmup_steps={warmup}",
                         "seed=0", *extra)
    config = OmegaConf.to_container(cfg, resolve=True)
    folder = runs / "minilm"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"rte--{method}--seed0"
    path = folder / f"{stem}-{len(list(folder.glob(stem + '*')))}.json"
    path.write_text(json.dumps({"config": config}))


def status(runs):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep_status.py"), "fig3", "--runs", str(runs)],
                          capture_output=True, text=True)


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
                                       "missing: method=increlora task=rte task.warmup_steps=400 seed=0"]
    write_record(runs, "increlora", 400, "data.dir=/elsewhere")  # the data's location does not matter
    out = status(runs)
    assert out.returncode == 0 and out.stdout.splitlines() == ["fig3: 10 of 10 runs have a record"]


def test_unknown_experiment_names_the_choices(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep_status.py"), "tabel1"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "unknown experiment 'tabel1'" in out.stderr and "table1" in out.stderr
