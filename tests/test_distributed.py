"""Data-parallel training: two gloo processes on CPU against one process with the same global batch,
for every growing or pruning method; the divergence check; batch sharding; the Hydra launchers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from runner.distributed import ReplicaDivergence, Replicas
from tests.conftest import ROOT, compose_config

# Dropout off everywhere: each replica draws its own masks, so only a dropout-free run can equal one process.
RUN = ["model=tiny_deberta", "task=rte", "train.batch_size=8", "task.max_seq_length=64", "train.eval_batch_size=128",
       "train.eval_every=10", "task.cls_dropout=0", "method.dropout=0",
       "+model.tiny_config.hidden_dropout_prob=0", "+model.tiny_config.attention_probs_dropout_prob=0"]
STEPS = {"triadapt_linear": 30, "increlora": 30, "adalora": 40}


def start(tmp_path, name, method, processes, data_dir):
    """Starts one run (``processes`` > 1: under torchrun) in the background; its output goes to a file."""
    out = tmp_path / name
    out.mkdir()
    args = [*RUN, f"method={method}", f"train.max_steps={STEPS[method]}", f"data.dir={data_dir}",
            f"results_dir={out / 'results'}", f"hydra.run.dir={out / 'run'}"]
    prefix = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
              if processes > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with open(out / "output.txt", "w") as output:
        return subprocess.Popen([*prefix, str(ROOT / "run.py"), *args], cwd=ROOT, env=env, stdout=output,
                                stderr=subprocess.STDOUT), out


def finish(process, out):
    """Waits for a run of ``start``; its record, final trainable weights and logged rows."""
    assert process.wait() == 0, (out / "output.txt").read_text()[-3000:]
    [record_path] = (out / "results").rglob("*.json")
    record = json.loads(record_path.read_text())
    final = load_file(str(Path(record["output_dir"]) / "trainable.safetensors"))  # what a finished run keeps
    log = (Path(record["output_dir"]) / "log.csv").read_text().splitlines()[1:]
    return record, final, [row.split(",") for row in log]


@pytest.mark.parametrize("method", ["triadapt_linear", "increlora", "adalora"])
def test_two_replicas_equal_one_process_with_the_same_global_batch(tmp_path, data_dir, method):
    runs = [start(tmp_path, "single", method, 1, data_dir), start(tmp_path, "ddp", method, 2, data_dir)]  # side by side
    (single, single_weights, single_log), (ddp, ddp_weights, ddp_log) = (finish(*run) for run in runs)

    assert single["distributed"] is None
    assert ddp["distributed"]["world_size"] == 2 and ddp["command"].startswith("torchrun --nnodes=1 --nproc_per_node=2")
    # Every growth event and every evaluation was checked identical across replicas (or the run would have failed).
    growth = [e["step"] for e in ddp["method_state"].get("growth_history", [])]
    checked = [c["step"] for c in ddp["distributed"]["replica_checks"]]
    assert checked == sorted(growth + [e["step"] for e in ddp["evaluations"]])
    if method != "adalora":
        assert growth, "the run must hold growth events to test anything"
    # Same decisions, same weights, same metrics as one process.
    assert ddp["method_state"]["rank_pattern"] == single["method_state"]["rank_pattern"]
    assert growth == [e["step"] for e in single["method_state"].get("growth_history", [])]
    assert single_weights.keys() == ddp_weights.keys()
    for name, value in single_weights.items():
        torch.testing.assert_close(ddp_weights[name], value, atol=2e-5, rtol=1e-4, msg=name)
    for a, b in zip(ddp["evaluations"], single["evaluations"]):
        assert a["step"] == b["step"]
        assert a["metrics"]["dev"] == pytest.approx(b["metrics"]["dev"], abs=1e-6)
    assert len(ddp_log) == len(single_log)
    for a, b in zip(ddp_log, single_log):
        assert float(a[1]) == pytest.approx(float(b[1]), rel=1e-4)  # the global batch mean loss


def _diverging_replica(rank: int, init_file: str, result_file: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    model = torch.nn.Linear(3, 2)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    if rank == 1:
        with torch.no_grad():
            model.weight[0, 0] = 1e-7  # a difference DDP's broadcast at construction would hide
    try:
        Replicas(rank, 2).check_identical(model, 5, {"rank_pattern": {"layer": 4}})
        message = "no error"
    except ReplicaDivergence as e:
        message = str(e)
    if rank == 0:
        Path(result_file).write_text(message)
    dist.destroy_process_group()


def test_a_replica_that_diverges_is_caught(tmp_path):
    mp.spawn(_diverging_replica, args=(str(tmp_path / "init"), str(tmp_path / "result")), nprocs=2)
    assert (tmp_path / "result").read_text() == "replica 1 differs from replica 0 after step 5: weight"


def test_shards_split_the_global_batch_and_weight_the_mean():
    batch = {"input_ids": torch.arange(5)[:, None], "labels": torch.arange(5)}
    shards = [Replicas(rank, 3).shard(batch) for rank in range(3)]
    assert [s["labels"].tolist() for s, _ in shards] == [[0], [1, 2], [3, 4]]
    # sum over replicas of weight * local mean / world == global mean, for any per-example losses
    losses = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0])
    mean_of_weighted = sum(w * losses[s["labels"]].mean() for s, w in shards) / 3
    assert mean_of_weighted.item() == pytest.approx(losses.mean().item())
    # fewer examples than replicas: the empty replica runs one example at weight 0
    small = {"labels": torch.tensor([7])}
    assert [(s["labels"].tolist(), w) for s, w in (Replicas(r, 2).shard(small) for r in range(2))] == \
        [([7], 0.0), ([7], 2.0)]
    assert Replicas().shard(batch) == (batch, 1.0)


def test_joblib_launcher_sweeps_two_seeds_in_parallel(tmp_path, data_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = ["-m", "hydra/launcher=parallel", "seed=0,1", "method=bitfit", *RUN[:5], "train.max_steps=2",
            "train.threads=1", f"data.dir={data_dir}", f"results_dir={tmp_path / 'results'}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2," in done.stdout + done.stderr
    records = sorted((json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*.json")),
                     key=lambda r: r["seed"])
    assert [r["seed"] for r in records] == [0, 1]
    # each record stores the command of its own job, not the sweep's
    assert records[1]["command"].startswith("python run.py ") and " seed=1 " in records[1]["command"]
    assert " -m " not in records[1]["command"] and records[1]["command"].endswith(" skip_existing=false")


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    compose_config()  # clears any earlier Hydra state
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm", "+experiment=table1"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1 and launcher.timeout_min == 720
