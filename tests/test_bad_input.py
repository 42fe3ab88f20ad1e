"""Bad input, every time: one clear line naming the bad value and what is allowed, exit status 2, and no run folder
or record for a run that never started. The settings are checked in-process over a table of bad values; a few of
them, and a bad data file, also go through the command line."""

import itertools
import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from runner.data import DataError, read_glue_tsv
from runner.methods import check_options
from runner.settings import ConfigError, check_settings
from tests.conftest import ROOT, compose_config

BAD_SETTINGS = [  # (override, what the message must say)
    ("seed=abc", "seed='abc': must be an integer in [0, 4294967295]"),
    ("seed=-1", "seed=-1: must be an integer"),
    ("seed=1.5", "seed=1.5: must be an integer"),
    ("train.lr=-1", "train.lr=-1: must be a number in (0, 1]"),
    ("train.lr=0", "train.lr=0: must be a number in (0, 1]"),
    ("train.lr=1e9", "train.lr=1000000000.0: must be a number in (0, 1]"),
    ("train.lr=abc", "train.lr='abc'"),
    ("train.lr=nan", "train.lr=nan"),
    ("train.max_steps=0", "train.max_steps=0: must be an integer >= 1, or null"),
    ("train.max_steps=-10", "train.max_steps=-10"),
    ("train.batch_size=0", "train.batch_size=0: must be an integer >= 1"),
    ("train.batch_size=true", "train.batch_size=True"),
    ("train.grad_accum=-2", "train.grad_accum=-2"),
    ("train.eval_batch_size=0", "train.eval_batch_size=0"),
    ("train.eval_every=0", "train.eval_every=0: must be an integer >= 1, or null"),
    ("train.checkpoint_every=-1", "train.checkpoint_every=-1"),
    ("train.threads=0", "train.threads=0: must be an integer in [1, 1024], auto (the idle cores at the start) or null"),
    ("train.threads=many", "train.threads='many': must be an integer in [1, 1024], auto"),
    ("train.threads=100000", "train.threads=100000"),
    ("train.warmup_steps=-1", "train.warmup_steps=-1: must be an integer >= 0"),
    ("train.warmup_ratio=1.5", "train.warmup_ratio=1.5: must be a number in [0, 1), or null"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1: must be a number in [0, 1]"),
    ("train.max_grad_norm=0", "train.max_grad_norm=0: must be a number in (0, inf)"),
    ("method.r_ref=0", "method.r_ref=0: must be an integer >= 1"),
    ("method.r_ref=-3", "method.r_ref=-3: must be an integer >= 1"),
    ("method.r_ref=2.5", "method.r_ref=2.5: must be an integer >= 1"),
    ("method.r_init=9", "method.r_ref=8: must be >= method.r_init=9"),
    ("method.delta_r=0", "method.delta_r=0"),
    ("method.interval=-5", "method.interval=-5"),
    ("method.fixed_k=0", "method.fixed_k=0"),
    ("method.t0=-1", "method.t0=-1: must be an integer >= 0"),
    ("method.alpha=0", "method.alpha=0: must be a number in (0, inf)"),
    ("method.dropout=1", "method.dropout=1: must be a number in [0, 1)"),
    ("method.dropout=-0.1", "method.dropout=-0.1"),
    ("method.orth_reg_weight=-1", "method.orth_reg_weight=-1"),
    ("task.max_seq_length=0", "task.max_seq_length=0"),
    ("task.cls_dropout=2", "task.cls_dropout=2"),
]


@pytest.mark.parametrize("override, message", BAD_SETTINGS, ids=[c[0] for c in BAD_SETTINGS])
def test_each_bad_setting_is_named_with_what_is_allowed(override, message):
    cfg = compose_config("method=triadapt_linear", "task=rte", "model=minilm", override)
    with pytest.raises(ConfigError) as error:
        check_settings(OmegaConf.to_container(cfg, resolve=True))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_every_bad_setting_is_reported_at_once():
    cfg = compose_config("method=adalora", "task=rte", "model=minilm", "train.lr=0", "method.target_r=20",
                         "method.beta1=1", "seed=x")
    with pytest.raises(ConfigError, match="^4 invalid settings: ") as error:
        check_settings(OmegaConf.to_container(cfg, resolve=True))
    for key in ("seed='x'", "train.lr=0", "method.beta1=1", "method.target_r=20: must be <= method.init_r=12"):
        assert key in str(error.value)


def test_every_shipped_method_and_task_passes():
    """The rules admit what we ship: each method on RTE and SQuAD, each task with TriAdaptLoRA, under both protocols."""
    methods, tasks = ([p.stem for p in (ROOT / "conf" / group).glob("*.yaml")] for group in ("method", "task"))
    pairs = [(m, t) for m in methods for t in ("rte", "squad_v2")] + [("triadapt_linear", t) for t in tasks]
    for (method, task), extra in itertools.product(pairs, ([], ["+experiment=cpu_protocol"])):
        cfg = compose_config(f"method={method}", f"task={task}", "model=minilm", *extra)
        check_settings(OmegaConf.to_container(cfg, resolve=True))
        check_options(cfg.method)


BAD_OPTIONS = [  # a method's named options: (override, what the message must say)
    ("+method.dropout_sampler=gauss", "dropout_sampler='gauss' is not valid; choose one of: bernoulli, uniform"),
    ("+method.preserve_function_at_growth=yes", "preserve_function_at_growth='yes' must be True or False"),
    ("method.mode=linaer", "mode='linaer' is not valid; choose one of: linear, nonlinear, fixed_k"),
    ("method.normalization=l2", "normalization='l2' is not valid; choose one of: r, sqrt_r, none"),
    ("method.rounding=round", "rounding='round' is not valid; choose one of: ceil, floor"),
    ("+method.middle_init=ones", "middle_init='ones' is not valid; choose one of: gaussian, identity"),
    ("method.kind=triadpt", "kind='triadpt' is not valid; choose one of: full_ft, bitfit, lora, triadapt, "),
]


@pytest.mark.parametrize("override, message", BAD_OPTIONS, ids=[c[0] for c in BAD_OPTIONS])
def test_a_bad_method_option_stops_the_run_before_data_or_model_load(override, message, tmp_path, monkeypatch):
    """The named choice is checked right after the settings, so neither the tokenizer, the data nor the model (nor
    the Hub, for the default DeBERTaV3-base) is touched first."""
    import runner.train

    def must_not_load(*args, **kwargs):
        raise AssertionError("loaded before the method's options were checked")

    for name in ("load_tokenizer", "build_task", "load_model"):
        monkeypatch.setattr(runner.train, name, must_not_load)
    cfg = compose_config("method=triadapt_linear", "task=rte", override, f"results_dir={tmp_path}")
    with pytest.raises(ConfigError) as error:
        runner.train.run(cfg, tmp_path / "run")
    assert str(error.value).startswith(f"method {cfg.method.name}: ") and message in str(error.value)


def cli(tmp_path, *args):
    """run.py from tmp_path (so any folder it makes lands there), offline, on the real data."""
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "model=minilm", "task=rte",
                           f"results_dir={tmp_path / 'records'}", *args], cwd=tmp_path, capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    return done.returncode, done.stderr.strip().splitlines()


@pytest.mark.parametrize("args, message", [
    (["method=triadapt_linear", "train.lr=-1"], "train.lr=-1: must be a number in (0, 1]"),
    (["method=triadapt_linear", "method.r_ref=0"], "method.r_ref=0: must be an integer >= 1"),
    (["method=triadapt_linear", "seed=abc"], "seed='abc'"),
    (["method=nonexistent"], "method='nonexistent' is not a config in method/; choose one of: adalora, "),
    (["-m", "method=lora,lorra", "seed=0,1"], "method='lorra' is not a config in method/"),
    (["task=nonexistent"], "task='nonexistent' is not a config in task/; choose one of: cola, "),
    (["method.r_ref=0"], "method.r_ref: the method config 'lora' has no key 'r_ref'; its keys: alpha, "),
    (["train.learning_rate=1e-3"], "train.learning_rate: the train config has no key 'learning_rate'; its keys: "),
    (["method=lora", "hydra.run.dir=/proc/no-such/run"], "hydra.run.dir='/proc/no-such/run': no run folder can be "
                                                         "made there (No such file or directory: /proc/no-such)"),
])
def test_command_line_errors_are_one_line_exit_2_and_leave_nothing(tmp_path, args, message):
    status, lines = cli(tmp_path, *args)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert list(tmp_path.iterdir()) == []  # no outputs/ or multirun/ folder, no record


def test_a_run_that_never_started_keeps_the_users_own_empty_folder(tmp_path):
    """Hydra's run folder goes, and the empty folders it made inside the working directory, but not an empty folder
    outside it that the user made for the run (it used to be removed with every empty parent up to the first full one)."""
    mine = tmp_path / "mine"
    (mine / "empty").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    status, _ = cli(work, "method=triadapt_linear", "train.lr=-1", f"hydra.run.dir={mine / 'empty' / 'run'}")
    assert status == 2 and list((mine / "empty").iterdir()) == [] and list(work.iterdir()) == []


def test_a_run_folder_under_a_file_is_one_line_exit_2(tmp_path):
    (tmp_path / "a-file").write_text("")
    status, lines = cli(tmp_path, "method=lora", f"hydra.run.dir={tmp_path / 'a-file' / 'run'}")
    assert status == 2 and len(lines) == 1 and "no run folder can be made there (Not a directory" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_budget_no_matrix_set_can_hold_is_refused(tiny_model):
    """r_ref x M beyond the sum of min(d_in, d_out) of the adapted matrices: refused, naming the largest r_ref."""
    from triadapt import TriAdaptConfig, TriAdaptModel

    with pytest.raises(ValueError, match=r"r_ref=100000: the budget r_ref x 12 matrices = 1200000 ranks is more than "
                                         r"the adapted matrices can hold .*choose r_ref <= \d+"):
        TriAdaptModel(tiny_model, TriAdaptConfig(r_ref=100000))


def test_bad_data_on_the_command_line_is_one_line_exit_2_and_leaves_nothing(tmp_path, data_dir):
    rte = tmp_path / "data" / "glue" / "RTE"
    rte.mkdir(parents=True)
    (rte / "train.tsv").write_text("")
    (rte / "dev.tsv").write_text((data_dir / "glue" / "RTE" / "dev.tsv").read_text())
    status, lines = cli(tmp_path, "method=triadapt_linear", f"data.dir={tmp_path / 'data'}")
    assert status == 2 and lines == [f"error: {rte / 'train.tsv'}: the file is empty (0 bytes)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


GLUE_TASKS = ["cola", "sst2", "mrpc", "stsb", "qnli", "rte"]


def real_lines(data_dir, task_cfg, count):
    return (data_dir / "glue" / task_cfg.glue_dir / "dev.tsv").read_text().splitlines(keepends=True)[:count]


@pytest.mark.parametrize("task", GLUE_TASKS)
def test_empty_and_truncated_files_of_every_glue_task(task, tmp_path, data_dir):
    task_cfg = compose_config(f"task={task}").task
    lines = real_lines(data_dir, task_cfg, 4)
    cases = {"empty": ("", "the file is empty"),
             "truncated": ("".join(lines[:-1]) + lines[-1][: lines[-1].rindex("\t")], "with a missing or empty field"),
             "header only": (lines[0] if task_cfg.columns is None else "", "empty")}
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.tsv"
        path.write_text(text)
        with pytest.raises(DataError, match=message):
            read_glue_tsv(path, task_cfg)


def test_malformed_squad_json_is_named(tmp_path):
    from runner.squad import read_squad_json

    for text, message in [("", "not an official SQuAD 2.0 JSON"), ('{"data": [', "not an official SQuAD 2.0 JSON"),
                          (json.dumps({"data": []}), "holds no questions"),
                          (json.dumps({"data": [{"title": "t", "paragraphs": [{"qas": []}]}]}), "KeyError")]:
        path = tmp_path / "dev-v2.0.json"
        path.write_text(text)
        with pytest.raises(DataError, match=message):
            read_squad_json(path)
