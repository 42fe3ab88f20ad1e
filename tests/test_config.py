"""Every method x task x model composes; unknown choices fail with Hydra's list of valid ones."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from hydra.errors import MissingConfigException

from tests.conftest import ROOT, compose_config

METHODS = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))
TASKS = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))
MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))


def test_the_groups_hold_what_the_paper_needs():
    assert {"lora", "full_ft", "bitfit", "triadapt_linear", "triadapt_nonlinear", "triadapt_fixed_k"} <= set(METHODS)
    assert {"mnli", "sst2", "cola", "qqp", "qnli", "rte", "mrpc", "stsb"} <= set(TASKS)
    assert {"deberta_v3_base", "minilm", "tiny_deberta"} <= set(MODELS)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_task_composes(method):
    for task in TASKS:
        cfg = compose_config(f"method={method}", f"task={task}", "model=minilm")
        resolved = {k: cfg.method[k] for k in cfg.method}  # resolves every interpolation
        assert resolved["name"] == method and cfg.task.name == task
        if method.startswith("triadapt"):
            assert resolved["r_ref"] == 8 and resolved["t0"] == cfg.task.warmup_steps


def test_table_v_values_reach_the_method():
    cfg = compose_config("method=triadapt_linear", "task=rte")
    assert (cfg.method.delta_r, cfg.method.alpha, cfg.method.interval, cfg.method.orth_reg_weight) == (4, 32, 100, 0.3)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.task.max_seq_length) == (1.2e-3, 0.01, 320)
    assert compose_config("method=triadapt_fixed_k", "task=mnli").method.fixed_k == 18


def test_full_fine_tuning_pins_its_own_learning_rate_and_the_others_keep_the_tasks():
    for protocol in ([], ["+experiment=cpu_protocol"]):
        assert compose_config("method=full_ft", "task=stsb", *protocol).train.lr == 5e-5
        assert compose_config("method=bitfit", "task=stsb", *protocol).train.lr == (1e-3 if protocol else 2.2e-3)
    assert compose_config("method=full_ft", "task=rte", "train.lr=1e-4").train.lr == 1e-4  # the command line wins


def test_default_model_is_the_papers():
    assert compose_config().model.pretrained == "microsoft/deberta-v3-base"


@pytest.mark.parametrize("group", ["method", "task", "model"])
def test_unknown_choice_lists_the_valid_ones(group):
    with pytest.raises(MissingConfigException) as error:
        compose_config(f"{group}=nonsense")
    message = str(error.value)
    assert f"Could not find '{group}/nonsense'" in message
    valid = {"method": METHODS, "task": TASKS, "model": MODELS}[group]
    assert all(name in message for name in valid)


EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")
                     if p.stem not in ("cpu_protocol", "first_run", "smollm2_squad"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_on_the_cpu_protocol(experiment):
    cfg = compose_config(f"+experiment={experiment}")
    assert cfg.model.name == "minilm" and cfg.skip_existing and cfg.train.group_by_length
    if experiment.startswith("schedule_length"):  # the paper's T or 3 x cpu_steps, records kept apart
        expected_steps = 3 * cfg.task.cpu_steps if experiment == "schedule_length_3x" else None
        assert cfg.train.max_steps == expected_steps and cfg.results_dir == "results/runs/schedule_length"
        assert cfg.tag == "schedule_length"  # make_tables counts a T other than the protocol's by this tag
        sweep = lambda name: OmegaConf.to_container(  # noqa: E731
            OmegaConf.load(ROOT / "conf" / "experiment" / f"{name}.yaml")).get("hydra", {}).get("sweep", {})
        subdir = sweep(experiment).get("subdir") or sweep("schedule_length")["subdir"]
        assert "seed" in subdir and "job" not in subdir  # one fixed folder per cell: a relaunch resumes it
        assert experiment != "schedule_length_3x" or "max_steps" in subdir  # and no T shares a folder
    else:
        assert cfg.train.max_steps == cfg.task.cpu_steps and cfg.results_dir.startswith("results/runs")
    assert {"table1", "table2", "table3", "table4", "fig2", "fig3", "fig4", "fig5"} <= set(EXPERIMENTS)


def test_the_decoder_experiment_runs_smollm2_on_generation_in_fixed_folders():
    cfg = compose_config("+experiment=smollm2_squad")
    assert (cfg.model.name, cfg.task.name, cfg.task.kind) == ("smollm2", "squad_v2_gen", "squad_v2_gen")
    assert cfg.skip_existing and cfg.results_dir == "results/runs" and cfg.task.evaluate_before_training
    assert list(cfg.model.target_modules) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    subdir = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "experiment" / "smollm2_squad.yaml"))["hydra"]["sweep"]
    assert "seed" in subdir["subdir"] and "job" not in subdir["subdir"]


def test_first_run_is_offline_short_and_kept_apart_from_the_protocol_records():
    cfg = compose_config("+experiment=first_run")
    assert (cfg.model.name, cfg.task.name, cfg.method.name) == ("minilm", "sst2", "triadapt_linear")
    assert cfg.train.max_steps == 200 and cfg.train.lr == cfg.task.cpu_lr
    assert cfg.results_dir == "outputs/records" and not cfg.skip_existing
