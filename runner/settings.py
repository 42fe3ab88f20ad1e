"""The run's settings, checked before anything heavy is imported, loaded or written.

``check_settings(cfg)`` checks the type and range of every numeric setting of the resolved config (the seed, the
training settings, the method's and the task's numbers) and raises one ``ConfigError`` that lists every violation
with its key, its value and what is allowed. Settings that need the data to check (a growth schedule that must fit
in T steps) are checked when the method is built; the choices of a method's named options (e.g. ``mode``) by the
method's own config class, right after these checks and before any data or model loads
(``runner.methods.check_options``). This module imports only the standard library, so that a typo costs no torch
import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path


class ConfigError(ValueError):
    """A setting the user gave is of the wrong type, out of range, or inconsistent with another."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def integer(low: int, high: int | None = None, optional: bool = False) -> tuple[Callable, str]:
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    return (lambda v: (optional and v is None) or (_is_int(v) and v >= low and (high is None or v <= high)),
            allowed + (", or null" if optional else ""))


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False,
           optional: bool = False) -> tuple[Callable, str]:
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    allowed = f"a number in {left}{low}, {'inf' if high is None else high}{')' if high is None else right}"

    def check(v):
        if optional and v is None:
            return True
        if not _is_number(v):
            return False
        above = v > low if low_open else v >= low
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    return check, allowed + (", or null" if optional else "")


def boolean() -> tuple[Callable, str]:
    return (lambda v: isinstance(v, bool)), "true or false"


def choice(*values) -> tuple[Callable, str]:
    return (lambda v: v in values), "one of " + ", ".join(map(str, values))


PRECISIONS = ("fp32", "bf16", "fp16")
NEW_GROUP_SCHEDULES = ("own_warmup", "own_warmup_capped", "global")  # runner.optim.add_param_group

# Settings outside a method or task, by their dotted key.
RUN_RULES = {
    "seed": integer(0, 2**32 - 1),
    "train.max_steps": integer(1, optional=True),
    "train.batch_size": integer(1),
    "train.grad_accum": integer(1),
    "train.lr": number(0, 1, low_open=True),
    "train.weight_decay": number(0, 1),
    "train.warmup_steps": integer(0),
    "train.warmup_ratio": number(0, 1, high_open=True, optional=True),
    "train.max_grad_norm": number(0, low_open=True),
    "train.eval_every": integer(1, optional=True),
    "train.validation_fraction": number(0, 0.5),
    "train.validation_seed": integer(0, 2**32 - 1),
    "train.eval_batch_size": integer(1),
    "train.eval_by_length": boolean(),
    "train.checkpoint_every": integer(1, optional=True),
    "train.threads": ((lambda v: v in (None, "auto") or (_is_int(v) and 1 <= v <= 1024)),
                      "an integer in [1, 1024], auto (the idle cores at the start) or null (torch's default: every core)"),
    "train.precision": choice(*PRECISIONS),
    "train.fused_adamw": boolean(),
}
# A method's or task's numeric settings, by key, wherever that method or task has them.
METHOD_RULES = {
    **{key: integer(1) for key in ("r", "r_init", "r_ref", "delta_r", "interval", "fixed_k", "init_r", "target_r",
                                   "incre_rank_num", "top_h", "bottleneck", "delta_t")},
    **{key: integer(0) for key in ("t0", "tinit", "tfinal", "init_warmup")},
    "alpha": number(0, low_open=True),
    "dropout": number(0, 1, high_open=True),
    "beta1": number(0, 1, high_open=True),
    "beta2": number(0, 1, high_open=True),
    "orth_reg_weight": number(0),
    "lr": number(0, 1, low_open=True),
    "new_group_weight_decay": number(0, 1, optional=True),
    "new_group_schedule": choice(*NEW_GROUP_SCHEDULES),
}
TASK_RULES = {
    **{key: integer(1) for key in ("batch_size", "epochs", "max_seq_length", "cpu_steps", "r_ref", "delta_r",
                                   "interval", "top_h")},
    "warmup_steps": integer(0),
    "lr": number(0, 1, low_open=True),
    "cpu_lr": number(0, 1, low_open=True),
    "alpha": number(0, low_open=True),
    "lora_dropout": number(0, 1, high_open=True),
    "cls_dropout": number(0, 1, high_open=True),
    "weight_decay": number(0, 1),
    "orth_reg_weight": number(0),
}


def _get(cfg: Mapping, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = value[part]
    return value


def violations(cfg: Mapping) -> list[str]:
    """Every setting of the resolved config ``cfg`` that breaks a rule, as "key=value: allowed"."""
    found = []

    def check(key: str, value, rule: tuple[Callable, str]) -> None:
        test, allowed = rule
        if not test(value):
            found.append(f"{key}={value!r}: must be {allowed}")

    for key, rule in RUN_RULES.items():
        check(key, _get(cfg, key), rule)
    for group, rules in (("method", METHOD_RULES), ("task", TASK_RULES)):
        for key, rule in rules.items():
            if key in cfg[group]:
                check(f"{group}.{key}", cfg[group][key], rule)
    method, valid = cfg["method"], lambda key: _is_int(cfg["method"].get(key)) and cfg["method"][key] >= 1
    if valid("r_init") and valid("r_ref") and method["r_ref"] < method["r_init"]:
        found.append(f"method.r_ref={method['r_ref']!r}: must be >= method.r_init={method['r_init']!r}")
    if valid("target_r") and valid("init_r") and method["target_r"] > method["init_r"]:
        found.append(f"method.target_r={method['target_r']!r}: must be <= method.init_r={method['init_r']!r}")
    return found


def check_choices(choices: list[tuple[str, str]], conf_dir: Path) -> None:
    """Raise a ``ConfigError`` for a (group, name) pair of the command line, e.g. ("method", "lorra"), that names no
    config file under ``conf_dir/group``, with the group's valid names."""
    for group, name in choices:
        folder = conf_dir / group
        if folder.is_dir() and not (folder / f"{name}.yaml").is_file():
            valid = sorted(p.stem for p in folder.glob("*.yaml"))
            raise ConfigError(f"{group}={name!r} is not a config in {folder.name}/; choose one of: {', '.join(valid)}")


def check_settings(cfg: Mapping) -> None:
    """Raise one ``ConfigError`` naming every bad setting of the resolved config ``cfg``."""
    found = violations(cfg)
    if found:
        raise ConfigError(f"{len(found)} invalid setting{'s' if len(found) > 1 else ''}: " + "; ".join(found))
