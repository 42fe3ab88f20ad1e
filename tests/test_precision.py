"""train.precision: bf16 autocast on CPU trains as fp32 does within a stated tolerance, grows, and is recorded; old
records, made before the setting existed, are the same runs as fp32 ones. Resume under bf16: test_reliability."""

import csv
import math

import pytest

from runner.records import run_identity
from runner.settings import ConfigError, check_settings
from tests.conftest import compose_config
from tests.test_runner import short_run

BF16_LOSS_TOLERANCE = 0.05  # per-step training loss, bf16 against fp32, over a 30-step run of the tiny DeBERTa


def step_losses(record) -> list[float]:
    with open(f"{record['output_dir']}/log.csv", newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def test_bf16_trains_like_fp32_within_the_tolerance_and_grows(tmp_path, data_dir):
    fp32, _ = short_run(tmp_path, "method=triadapt_linear", "train.max_steps=30", data_dir=data_dir, out="fp32")
    bf16, _ = short_run(tmp_path, "method=triadapt_linear", "train.max_steps=30", "train.precision=bf16",
                        data_dir=data_dir, out="bf16")
    assert bf16["config"]["train"]["precision"] == "bf16" and bf16["method_state"]["growth_history"]
    a, b = step_losses(fp32), step_losses(bf16)
    assert len(a) == len(b) == 30 and all(math.isfinite(x) for x in b)
    gap = max(abs(x - y) for x, y in zip(a, b))
    assert 0 < gap < BF16_LOSS_TOLERANCE  # not bit-equal (autocast is on), but close


def test_a_record_without_precision_is_the_same_run_as_fp32():
    config = compose_config("model=tiny_deberta", "task=rte")
    from omegaconf import OmegaConf

    new = OmegaConf.to_container(config, resolve=True)
    old = {**new, "train": {k: v for k, v in new["train"].items() if k != "precision"}}
    assert run_identity(old) == run_identity(new)
    assert run_identity({**new, "train": {**new["train"], "precision": "bf16"}}) != run_identity(old)


def test_an_unknown_precision_is_refused_with_the_choices():
    config = compose_config("model=tiny_deberta", "task=rte", "train.precision=fp8")
    from omegaconf import OmegaConf

    with pytest.raises(ConfigError, match=r"train.precision='fp8': must be one of fp32, bf16, fp16"):
        check_settings(OmegaConf.to_container(config, resolve=True))
