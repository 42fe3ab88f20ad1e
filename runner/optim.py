"""AdamW with linear warm-up and decay, and the registration of parameters born mid-training."""

from __future__ import annotations

from torch import nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import LambdaLR

from runner.settings import NEW_GROUP_SCHEDULES


def warmup_then_decay(warmup: int, total: int, start: int = 0):
    """LR factor: linear from 0 to 1 over ``warmup`` steps after ``start``, then linear to 0 at ``total``."""

    def factor(step: int) -> float:
        age = step - start
        if age < warmup:
            return age / warmup
        return max(0.0, (total - step) / max(1, total - start - warmup))

    return factor


def new_unit_factor(schedule: str, warmup: int, total: int):
    """The LR factor at step s of units born at step b: the schedule ``add_param_group`` gives a group born at b."""
    if schedule not in NEW_GROUP_SCHEDULES:
        raise ValueError(f"new-group schedule {schedule!r}; valid: {', '.join(NEW_GROUP_SCHEDULES)}")
    run = warmup_then_decay(warmup, total)

    def factor(step: int, birth: int) -> float:
        own = warmup_then_decay(warmup, total, start=birth)(step)
        return {"own_warmup": own, "global": run(step), "own_warmup_capped": min(own, run(step))}[schedule]

    return factor


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, warmup: int, total: int, fused: bool = False,
                    unit_layers=(), new_group_schedule: str = "own_warmup", new_group_decay: float | None = None):
    """AdamW over the trainable parameters; biases and LayerNorm weights get no weight decay (as HF). The foreach
    implementation (bit-identical to the per-tensor loop, cheaper over TriAdaptLoRA's many growth blocks), or with
    ``fused`` torch's fused kernel (cheaper still; the last bits of the update differ)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    if unit_layers:  # TriAdaptLoRA's preallocated layout: each unit its own Adam clock and schedule from birth
        from triadapt.optim import UnitAdamW

        optimizer = UnitAdamW(groups, list(unit_layers), lr=lr, lr_factor=new_unit_factor(new_group_schedule, warmup, total),
                              weight_decay=weight_decay, new_weight_decay=new_group_decay)
    else:
        optimizer = AdamW(groups, lr=lr, **({"fused": True} if fused else {"foreach": True}))
    scheduler = LambdaLR(optimizer, warmup_then_decay(warmup, total))
    return optimizer, scheduler


def add_param_group(optimizer, scheduler: LambdaLR, params: list[nn.Parameter], step: int,
                    weight_decay: float, warmup: int, total: int, schedule: str = "own_warmup") -> None:
    """Give parameters created at ``step`` to the optimizer as a new group, and teach the scheduler.

    ``own_warmup`` (IncreLoRA's schedule): a warm-up of ``warmup`` steps from the group's birth, then
    linear decay to 0 at ``total``. ``own_warmup_capped`` (ours): the same, but never above the run's schedule
    at that step, so a unit born late does not train hotter than the units already there. ``global``: the group
    follows the run's schedule. Existing groups and their AdamW state are untouched.
    """
    if schedule not in NEW_GROUP_SCHEDULES:
        raise ValueError(f"new-group schedule {schedule!r}; valid: {', '.join(NEW_GROUP_SCHEDULES)}")
    run_factor = warmup_then_decay(warmup, total)
    own_factor = warmup_then_decay(warmup, total, start=step)
    factor = {"own_warmup": own_factor, "global": run_factor,
              "own_warmup_capped": lambda t: min(own_factor(t), run_factor(t))}[schedule]
    peak = optimizer.defaults["lr"]
    optimizer.add_param_group({"params": params, "weight_decay": weight_decay,
                               "initial_lr": peak, "lr": peak * factor(scheduler.last_epoch)})
    scheduler.base_lrs.append(peak)
    scheduler.lr_lambdas.append(factor)
