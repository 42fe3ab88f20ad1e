"""Reliability: a SIGKILLed run resumes to the identical record, bad input fails early and clearly with
nothing written, non-finite losses stop the run, and checkpoints never unpickle."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import runner.train
from runner import checkpoint
from runner.data import DataError
from runner.settings import ConfigError
from baselines.method import Method
from tests.conftest import ROOT, compose_config

RUN_ARGS = ["task=rte", "model=tiny_deberta", "train.max_steps=30", "train.batch_size=16", "task.max_seq_length=64",
            "train.eval_every=10", "train.checkpoint_every=10", "train.eval_batch_size=300",
            "train.threads=1"]  # one thread each: the uninterrupted run goes beside the killed one
TIME_FIELDS = {"wall_time_s", "train_time_s", "train_time_at_evaluations_s", "finished_at", "command", "resumed_at",
               "output_dir"}


def launch(method, run_dir, results, data_dir, extra=()):
    args = [sys.executable, "run.py", f"method={method}", *RUN_ARGS, *extra, f"results_dir={results}",
            f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "TRIADAPT_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


# The last case covers two options at once: the function-preserving growth (it rescales B at each event) under bf16.
@pytest.mark.parametrize("method, extra", [("triadapt_linear", []), ("increlora", []), ("adalora", []),
                                           ("triadapt_linear_preserving", ["train.precision=bf16"])])
def test_sigkill_between_checkpoints_then_resume_gives_the_same_record(method, extra, tmp_path, data_dir):
    straight_run = launch(method, tmp_path / "uninterrupted", tmp_path / "results-straight", data_dir, extra)
    killed = launch(method, tmp_path / "killed", tmp_path / "results", data_dir, extra)
    pointer = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not pointer.is_file() and killed.poll() is None:  # the first checkpoint (step 10) is written
        assert time.time() < deadline
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)  # ... and the run dies between it and the next one
    killed.wait()
    assert not (tmp_path / "results").exists()  # no record from the killed run
    latest = pointer.read_text()
    assert latest in ("step-10", "step-20")
    state = json.loads((pointer.parent / latest / "state.json").read_text())
    if method != "adalora":
        assert state["growth_steps"]  # growth happened before the kill
    resumed_run = launch(method, tmp_path / "killed", tmp_path / "results", data_dir, extra)  # the killed folder resumes
    for process in (straight_run, resumed_run):
        assert process.wait() == 0, process.stderr.read()
    (resumed,), (straight,) = ([json.loads(p.read_text()) for p in (tmp_path / d).rglob("*.json")]
                               for d in ("results", "results-straight"))
    assert resumed["resumed_at"][0] >= 10 and straight["resumed_at"] == []
    assert {k: v for k, v in resumed.items() if k not in TIME_FIELDS | {"config"}} == \
        {k: v for k, v in straight.items() if k not in TIME_FIELDS | {"config"}}
    assert {**resumed["config"], "results_dir": None} == {**straight["config"], "results_dir": None}


def nothing_written(tmp_path):
    """No record under results/ and no checkpoint under the run folder."""
    written = [p for d in ("results", "res", "out") for p in (tmp_path / d).rglob("*")
               if p.suffix == ".json" or p.name == "checkpoints"]
    return not written


def rte_dir(tmp_path, data_dir, train_text=None):
    target = tmp_path / "data" / "glue" / "RTE"
    target.mkdir(parents=True)
    shutil.copy(data_dir / "glue" / "RTE" / "dev.tsv", target / "dev.tsv")
    if train_text is None:
        shutil.copy(data_dir / "glue" / "RTE" / "train.tsv", target / "train.tsv")
    else:
        (target / "train.tsv").write_text(train_text)
    return tmp_path / "data"


HEADER = "index\tsentence1\tsentence2\tlabel\n"
BAD_TSV = [
    ("missing column", "index\tsentence1\tlabel\n0\ta\tentailment\n", r"missing column\(s\) \['sentence2'\]"),
    ("wrong delimiter", "index,sentence1,sentence2,label\n0,a,b,entailment\n", "delimiter"),
    ("truncated last line", HEADER + "0\ta\tb\tentailment\n1\ta\tb\tentail", r"\['entail'\] outside the label set"),
    ("label outside the set", HEADER + "0\ta\tb\tcontradiction\n", r"\['contradiction'\] outside the label set"),
    ("empty split", HEADER, "the split is empty"),
]


@pytest.mark.parametrize("case, text, message", BAD_TSV, ids=[c[0] for c in BAD_TSV])
def test_bad_tsv_fails_before_anything_is_written(case, text, message, tmp_path, data_dir):
    cfg = compose_config("model=tiny_deberta", "task=rte", f"data.dir={rte_dir(tmp_path, data_dir, text)}",
                         f"results_dir={tmp_path / 'results'}")
    with pytest.raises(DataError, match=message):
        runner.train.run(cfg, tmp_path / "out")
    assert nothing_written(tmp_path)


BAD_VALUES = [  # what only the run can check, with T known (the rest: tests/test_bad_input.py)
    ("method=triadapt_linear", "method.t0=100000", ConfigError, "no growth event fits: total_steps T=20"),
    ("method=increlora", "method.init_warmup=100000", ConfigError, "init_warmup=.* >= total_steps=20"),
    ("method=adalora", "method.tinit=100000", ConfigError, "tinit=.*total_steps=20"),
    ("method=triadapt_linear", "+method.scaling=current", ConfigError, "scaling='current' is not valid; choose one of"),
    ("method=triadapt_linear", "method.r_ref=0", ConfigError, "method.r_ref=0: must be an integer >= 1"),
]


@pytest.mark.parametrize("method, override, error, message", BAD_VALUES, ids=[v[1] for v in BAD_VALUES])
def test_out_of_range_values_fail_at_start(method, override, error, message, tmp_path, data_dir):
    cfg = compose_config(method, override, "model=tiny_deberta", "task=rte", f"data.dir={data_dir}",
                         f"results_dir={tmp_path / 'results'}", "train.max_steps=20", "train.scale_schedule=false")
    with pytest.raises(error, match=message):
        runner.train.run(cfg, tmp_path / "out")
    assert nothing_written(tmp_path)


def test_bad_squad_json_fails_with_nothing_written(tmp_path):
    (tmp_path / "data" / "squad_v2").mkdir(parents=True)
    (tmp_path / "data" / "squad_v2" / "dev-v2.0.json").write_text('{"data": [{"title": "t"}]}')
    cfg = compose_config("model=tiny_deberta", "task=squad_v2", f"data.dir={tmp_path / 'data'}",
                         f"results_dir={tmp_path / 'results'}")
    with pytest.raises(DataError, match="dev-v2.0.json is not an official SQuAD 2.0 JSON"):
        runner.train.run(cfg, tmp_path / "out")
    assert nothing_written(tmp_path)


def test_missing_split_fails_with_nothing_written(tmp_path, data_dir):
    data = rte_dir(tmp_path, data_dir)
    (data / "glue" / "RTE" / "dev.tsv").unlink()
    cfg = compose_config("model=tiny_deberta", "task=rte", f"data.dir={data}", f"results_dir={tmp_path / 'results'}")
    with pytest.raises(DataError, match=r"missing GLUE file .*RTE/dev.tsv"):
        runner.train.run(cfg, tmp_path / "out")
    assert nothing_written(tmp_path)


def test_missing_data_directory_fails_with_nothing_written(tmp_path):
    cfg = compose_config("model=tiny_deberta", "task=rte", f"data.dir={tmp_path / 'nowhere'}",
                         f"results_dir={tmp_path / 'results'}")
    with pytest.raises(DataError, match="nowhere"):
        runner.train.run(cfg, tmp_path / "out")
    assert nothing_written(tmp_path)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, data_dir, monkeypatch):
    class Exploding(Method):
        def regularizer(self):
            return None

        def before_optimizer_step(self, step):
            if step == 6:  # poison the weights: the next forward gives NaN
                with torch.no_grad():
                    for p in self.model.parameters():
                        p.fill_(float("nan"))
            return []

    monkeypatch.setattr(runner.train, "build_method", lambda cfg, model, ctx: Exploding(model))
    cfg = compose_config("model=tiny_deberta", "task=rte", f"data.dir={data_dir}", f"results_dir={tmp_path / 'res'}",
                         "train.max_steps=12", "train.batch_size=4", "train.checkpoint_every=5",
                         "task.max_seq_length=32", "train.eval_every=12")
    with pytest.raises(FloatingPointError, match="at step 7"):
        runner.train.run(cfg, tmp_path / "out")
    assert checkpoint.latest_checkpoint(tmp_path / "out").name == "step-5"
    assert not (tmp_path / "res").exists()


def test_checkpoint_loading_never_unpickles(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    folder = tmp_path / "step-1"
    folder.mkdir()
    (folder / "tensors.safetensors").write_bytes(pickle.dumps({"model.x": Payload()}))
    (folder / "state.json").write_text("{}")
    with pytest.raises(Exception) as error:
        checkpoint.load(folder)
    assert not isinstance(error.value, AssertionError) and not marker.exists()


def test_no_code_path_unpickles_or_trusts_remote_code():
    sources = [p for d in ("runner", "triadapt", "baselines", "scripts") for p in (ROOT / d).rglob("*.py")]
    sources.append(ROOT / "run.py")
    for path in sources:
        text = path.read_text()
        for forbidden in ("pickle.load", "trust_remote_code=True", "torch.load("):
            assert forbidden not in text, f"{path.name} uses {forbidden}"


def test_resume_refuses_another_config(tmp_path):
    with pytest.raises(checkpoint.ResumeError, match="train.lr: 0.001 -> 0.002"):
        checkpoint.check_same_config({"train": {"lr": 0.001}, "resume": False}, {"train": {"lr": 0.002}, "resume": True})
    checkpoint.check_same_config({"a": 1, "resume": False}, {"a": 1, "resume": True})
    started = {"train": {"lr": 0.001, "checkpoint_every": None}, "data": {"dir": "a"}, "resume": False}
    checkpoint.check_same_config(started, {"train": {"lr": 0.001, "checkpoint_every": 100}, "data": {"dir": "b"},
                                           "resume": True})  # the cadence and the data's place compute nothing


def test_resume_true_picks_the_interrupted_run_of_the_same_config(tmp_path):
    def fake_run(name, config, finished=False):
        step = tmp_path / name / "checkpoints" / "step-5"
        step.mkdir(parents=True)
        (step / "state.json").write_text(json.dumps({"config": config}))
        (step.parent / "latest").write_text("step-5")
        if finished:
            (tmp_path / name / runner.train.FINISHED).write_text("record.json")

    fake_run("1-same", {"train": {"lr": 0.1}, "resume": False})
    fake_run("2-other", {"train": {"lr": 0.2}, "resume": False})
    fake_run("3-same-finished", {"train": {"lr": 0.1}, "resume": False}, finished=True)
    here = tmp_path / "4-new"
    here.mkdir()
    found = runner.train.find_resumable(here, True, {"train": {"lr": 0.1}, "resume": True})
    assert found == tmp_path / "1-same"
    assert runner.train.find_resumable(here, False, {"train": {"lr": 0.1}, "resume": True}) is None


def test_ctrl_c_writes_a_checkpoint_and_resume_true_finishes_the_same_run(tmp_path, data_dir):
    """Ctrl-C: the step in progress ends, a checkpoint is written, one line says how to continue (exit 130);
    ``resume=true`` from a new folder continues it there (saying from which step), leaves no stray folder, and
    ends with the uninterrupted run's record. With the preallocated layout, whose units and optimizer clocks come
    back from the state dicts alone (the SIGKILL tests above resume the growing one)."""
    layout = ["+method.layout=preallocated", "+method.capacity=25"]  # the fixed-shape layout's resume on the way
    straight_run = launch("triadapt_linear", tmp_path / "straight", tmp_path / "results-straight", data_dir, layout)
    stopped = launch("triadapt_linear", tmp_path / "stopped", tmp_path / "results", data_dir, layout)
    run_log = tmp_path / "stopped" / "run.log"
    deadline = time.time() + 300
    while stopped.poll() is None and not (run_log.is_file() and "growth" in run_log.read_text()):  # a unit was born
        assert time.time() < deadline
        time.sleep(0.01)
    stopped.send_signal(signal.SIGINT)
    assert stopped.wait() == 130
    lines = [line for line in stopped.stderr.read().splitlines() if line.startswith(("interrupted", "Traceback"))]
    assert len(lines) == 1 and lines[0].startswith("interrupted after step "), lines
    step = int(lines[0].split()[3])
    assert lines[0].endswith(f"hydra.run.dir={tmp_path / 'stopped'} resume=true")
    assert (tmp_path / "stopped" / "checkpoints" / "latest").read_text() == f"step-{step}" and step < 30
    state = json.loads((tmp_path / "stopped" / "checkpoints" / f"step-{step}" / "state.json").read_text())
    assert state["growth_steps"]  # the checkpoint holds grown units
    resumed_run = launch("triadapt_linear", tmp_path / "new-folder", tmp_path / "results", data_dir,
                         [*layout, "resume=true"])
    for process in (straight_run, resumed_run):
        assert process.wait() == 0, process.stderr.read()
    assert f"resumed from step {step} of 30" in (tmp_path / "stopped" / "run.log").read_text()
    assert not (tmp_path / "new-folder").exists()
    (resumed,), (straight,) = ([json.loads(p.read_text()) for p in (tmp_path / d).rglob("*.json")]
                               for d in ("results", "results-straight"))
    assert resumed["resumed_at"] == [step]
    assert {k: v for k, v in resumed.items() if k not in TIME_FIELDS | {"config"}} == \
        {k: v for k, v in straight.items() if k not in TIME_FIELDS | {"config"}}
