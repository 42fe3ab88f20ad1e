"""AdamW for the preallocated layout: each adapter unit with its own Adam clock and LR schedule (issue 47).

With the growing layout, the units born at an event become a new optimizer group: fresh moments, bias correction
counted from their first update, their own LR schedule (e.g. IncreLoRA's warm-up from birth), their own weight decay.
``UnitAdamW`` computes exactly that inside fixed tensors: for an entry of unit u born at step b (b = -1: from the
start), at optimizer step s it is updated only when s > b, as AdamW step n = s - b, with LR ``lr_factor(s, b)`` times
the group's peak LR (the group's own LR, i.e. the run's schedule, for b = -1 or without ``lr_factor``) and weight
decay ``new_weight_decay`` (b >= 0) or the group's. Moments are zeroed when a unit is (re)born. Every other parameter is plain AdamW.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .preallocated import PreallocatedTriAdaptLinear, local_part, unit_of_entries


class UnitAdamW(torch.optim.Optimizer):
    def __init__(self, params, layers: list[PreallocatedTriAdaptLinear], lr: float,
                 lr_factor: Callable[[int, int], float] | None,
                 betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
                 new_weight_decay: float | None = None):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.lr_factor, self.new_weight_decay = lr_factor, new_weight_decay
        self.units = {p: (layer, index) for layer in layers for p, index in unit_of_entries(layer).items()}
        self.param_groups[0].setdefault("steps_taken", 0)  # in the state dict, so a resumed run keeps its clock

    @property
    def steps_taken(self) -> int:
        """Optimizer steps so far: s of the step being taken."""
        return self.param_groups[0]["steps_taken"]

    @torch.no_grad()
    def step(self, closure=None):
        s = self.steps_taken
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            peak = group.get("initial_lr", group["lr"])
            for param in group["params"]:
                if param.grad is None:
                    continue
                p, offset = local_part(param)  # under FSDP2: this process's shard, updated in place
                grad = local_part(param.grad)[0]
                state = self.state[param]
                if not state:
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
                    state["step"] = torch.zeros(())
                if param in self.units:
                    layer, index = self.units[param]
                    if index.shape[0] == param.shape[0] and index.shape[0] > 1:  # units along the sharded dim
                        index = index[offset:offset + p.shape[0]]
                    self._unit_update(p, grad, layer, index, state, group, peak, s, beta1, beta2)
                else:
                    self._plain_update(p, grad, state, group, beta1, beta2)
        self.param_groups[0]["steps_taken"] += 1

    def _plain_update(self, p, grad, state, group, beta1, beta2) -> None:
        state["step"] += 1
        n = state["step"].item()
        p.mul_(1 - group["lr"] * group["weight_decay"])
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (state["exp_avg_sq"].sqrt() / (1 - beta2 ** n) ** 0.5).add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - beta1 ** n))

    def _unit_update(self, p, g, layer, index, state, group, peak, s, beta1, beta2) -> None:
        births = layer.birth
        if "births" not in state or not torch.equal(state["births"], births):  # (re)born units: fresh moments
            reborn = births != state["births"] if "births" in state else torch.ones_like(births, dtype=torch.bool)
            keep = (~reborn)[index].to(p.dtype)
            state["exp_avg"].mul_(keep)
            state["exp_avg_sq"].mul_(keep)
            state["births"] = births.clone()
        birth = births.tolist()
        lr = [group["lr"] if b < 0 or self.lr_factor is None else peak * self.lr_factor(s, b) for b in birth]
        decay = [group["weight_decay"] if b < 0 or self.new_weight_decay is None else self.new_weight_decay
                 for b in birth]
        n = [max(s - b, 1) for b in birth]
        per_unit = torch.tensor([[r * w for r, w in zip(lr, decay)], [r / (1 - beta1 ** k) for r, k in zip(lr, n)],
                                 [(1 - beta2 ** k) ** 0.5 for k in n], [float(s > b) for b in birth]],
                                dtype=p.dtype, device=p.device)
        decayed, step_size, bias2_sqrt, active = (row[index] for row in per_unit)
        p.mul_(1 - decayed * active)
        state["exp_avg"].add_((g - state["exp_avg"]) * (1 - beta1) * active)
        state["exp_avg_sq"].add_((state["exp_avg_sq"] * (beta2 - 1) + (1 - beta2) * g * g) * active)
        denom = state["exp_avg_sq"].sqrt() / bias2_sqrt + group["eps"]
        p.sub_(step_size * active * state["exp_avg"] / denom)
