"""IncreLoRA (Zhang et al. 2023), as the official code does it (FeiyuZhang98/IncreLoRA), in our loop.

- Rank-1 triplets in SVD form: dW = B diag(E) A * alpha / (ranknum + eps); E starts at 0, A and B
  are drawn from N(0, 0.02); ranknum counts the active units.
- Importance of a matrix, every optimizer step while budget remains: I = sum|dW * dL/d(dW)| / sqrt(d n),
  smoothed: I_bar <- b1 I_bar + (1-b1) I ; U_bar <- b2 U_bar + (1-b2) |I - I_bar| ; score = I_bar * U_bar.
  dW is materialised each forward to read its gradient, as the official code does. That gradient is
  not a parameter's, so DDP does not average it: under data parallelism it is averaged over replicas
  (``Method.replica_mean``) before the score, so every replica ranks the matrices alike.
- Every ``interval`` steps after ``init_warmup``, the ``top_h`` highest-scoring matrices grow by
  ``incre_rank_num`` units.
- "Advance learning" (on by default in the official scripts): each matrix holds ``incre_rank_num``
  reserve units whose A, B train from the start while their E stays frozen at 1e-5. Growing a matrix
  switches its reserve on (E trains) and appends a fresh reserve. When the budget is spent, the
  reserves' E are set to 0.
- ``budget_exact`` (default): strict top-k with at most remaining // incre_rank_num matrices, so the
  total ends at exactly r_ref * M, the variant shared with TriAdaptLoRA. ``budget_exact=false``
  reproduces the official code: k = min(top_h, remaining ranks) mixes a matrix count with a rank
  count, every score >= the k-th largest grows, and the last round can overshoot the budget.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .method import Method
from triadapt.importance import top_k
from triadapt.model import matches_target, orthogonality_terms, unit_generator
from triadapt.perturbation import relative_change

RESERVE_E = 1e-5


class IncreLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, alpha: float, r_init: int, dropout: float = 0.0, init_std: float = 0.02,
                 eps: float = 1e-5, generator: torch.Generator | None = None):
        super().__init__()
        self.base_layer = base
        self.alpha, self.eps, self.init_std = alpha, eps, init_std
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.inc_a, self.inc_b, self.inc_e = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        self.ranknum = 0  # active units
        self.reserve = 0  # trailing units in reserve (E frozen)
        # dL/d(dW) summed over the step's micro-batches (the official code keeps only the last one's)
        self.delta_grad: torch.Tensor | None = None
        self.track_importance = True
        self._add_block(r_init, 0.0, True, generator)
        self.ranknum = r_init

    def _add_block(self, count: int, e_value: float, e_trainable: bool, generator) -> list[nn.Parameter]:
        weight = self.base_layer.weight
        d, n = weight.shape

        def gaussian(*shape):
            t = torch.empty(*shape).normal_(0.0, self.init_std, generator=generator)
            return nn.Parameter(t.to(device=weight.device, dtype=weight.dtype))

        a, b = gaussian(count, n), gaussian(d, count)
        e = nn.Parameter(torch.full((count,), e_value, device=weight.device, dtype=weight.dtype),
                         requires_grad=e_trainable)
        self.inc_a.append(a)
        self.inc_b.append(b)
        self.inc_e.append(e)
        return [a, b, e] if e_trainable else [a, b]

    def add_reserve(self, count: int, generator=None) -> list[nn.Parameter]:
        """Reserve units: A, B train at once; E stays at 1e-5, frozen, until activation."""
        self.reserve = count
        return self._add_block(count, RESERVE_E, False, generator)

    def grow(self, count: int, advance_learning: bool, generator=None) -> list[nn.Parameter]:
        """Activate ``count`` new units; returns the parameters the optimizer must learn about."""
        if advance_learning:
            if self.reserve != count:
                raise ValueError(f"reserve holds {self.reserve} units, cannot activate {count}")
            e = self.inc_e[-1]
            e.requires_grad_(True)
            self.ranknum += count
            return [e, *self.add_reserve(count, generator)]
        self.ranknum += count
        return self._add_block(count, 0.0, True, generator)

    def retire_reserve(self) -> None:
        """Budget spent: the reserve stops contributing (E = 0) and importance stops being tracked."""
        if self.reserve:
            with torch.no_grad():
                self.inc_e[-1].zero_()
        self.track_importance = False

    def factor_a(self) -> torch.Tensor:
        return torch.cat(list(self.inc_a))

    def factor_b(self) -> torch.Tensor:
        return torch.cat(list(self.inc_b), dim=1)

    def update_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, diag(E) * alpha/(ranknum+eps), A), detached copies, reserve units included as in delta_weight."""
        with torch.no_grad():
            scale = self.alpha / (self.ranknum + self.eps)
            return self.factor_b().clone(), torch.diag(torch.cat(list(self.inc_e))) * scale, self.factor_a().clone()

    def delta_weight(self) -> torch.Tensor:
        e = torch.cat(list(self.inc_e))
        return self.factor_b() @ (e[:, None] * self.factor_a()) * (self.alpha / (self.ranknum + self.eps))

    def _accumulate(self, grad: torch.Tensor) -> None:
        self.delta_grad = grad if self.delta_grad is None else self.delta_grad + grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.track_importance:
            # As the official code: materialise dW so that its gradient, the importance input, exists.
            delta = self.delta_weight()
            delta.register_hook(self._accumulate)
            return self.base_layer(x) + self.dropout(x) @ delta.t()
        # Budget spent (or evaluating): the same update, factorised, with no d x n matrix.
        e = torch.cat(list(self.inc_e)) * (self.alpha / (self.ranknum + self.eps))
        return self.base_layer(x) + ((self.dropout(x) @ self.factor_a().t()) * e) @ self.factor_b().t()

    def take_importance(self) -> float:
        """sum |dW * dL/d(dW)| / sqrt(d n) for this step; resets the gradient sum."""
        if self.delta_grad is None:
            return 0.0
        with torch.no_grad():
            d, n = self.delta_grad.shape
            score = (self.delta_weight() * self.delta_grad).abs().sum().item() / math.sqrt(d * n)
        self.delta_grad = None
        return score


class IncreLoRA(Method):
    name = "increlora"

    def __init__(self, model: nn.Module, target_modules, total_steps: int, r_init: int, r_ref: int,
                 incre_rank_num: int, top_h: int, init_warmup: int, interval: int, alpha: float, dropout: float,
                 beta1: float, beta2: float, orth_reg_weight: float, advance_learning: bool = True,
                 budget_exact: bool = True, seed: int = 0):
        for p in model.parameters():
            p.requires_grad_(False)
        targets = [(n, m) for n, m in model.named_modules()
                   if isinstance(m, nn.Linear) and matches_target(n, target_modules)]
        self.layer_names = [n for n, _ in targets]
        M = len(targets)
        if budget_exact and ((r_ref - r_init) * M) % incre_rank_num:
            raise ValueError(f"budget (r_ref - r_init) * M = {(r_ref - r_init) * M} is not a multiple of "
                             f"incre_rank_num={incre_rank_num}; budget_exact cannot end on r_ref * M")
        if init_warmup >= total_steps:
            raise ValueError(f"no IncreLoRA growth fits: init_warmup={init_warmup} >= total_steps={total_steps}")
        self.layers: list[IncreLoRALinear] = []
        for index, (name, module) in enumerate(targets):
            layer = IncreLoRALinear(module, alpha, r_init, dropout, generator=unit_generator(seed, -1, index))
            if advance_learning:
                layer.add_reserve(incre_rank_num, unit_generator(seed, -2, index))
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer)
            self.layers.append(layer)
        super().__init__(model)
        self.budget = r_ref * M
        self.settings = dict(incre_rank_num=incre_rank_num, top_h=top_h, init_warmup=init_warmup, interval=interval,
                             advance_learning=advance_learning, budget_exact=budget_exact)
        self.beta1, self.beta2, self.orth_reg_weight, self.seed = beta1, beta2, orth_reg_weight, seed
        self.ema_importance = [0.0] * M
        self.ema_uncertainty = [0.0] * M
        self.growth_history: list[dict] = []

    @property
    def remaining(self) -> int:
        return self.budget - sum(layer.ranknum for layer in self.layers)

    def regularizer(self):
        if self.orth_reg_weight == 0:
            return None
        terms = [t for layer in self.layers for t in orthogonality_terms(layer.factor_a(), layer.factor_b())]
        return self.orth_reg_weight * torch.stack(terms).mean()

    def update_importance(self) -> None:
        """The beta-smoothed sensitivity and uncertainty of every matrix (official ``update_ipt``)."""
        for i, layer in enumerate(self.layers):
            if layer.delta_grad is not None:  # a local gradient, not a parameter's: DDP has not averaged it
                layer.delta_grad = self.replica_mean(layer.delta_grad)
            current = layer.take_importance()
            self.ema_importance[i] = self.beta1 * self.ema_importance[i] + (1 - self.beta1) * current
            self.ema_uncertainty[i] = (self.beta2 * self.ema_uncertainty[i]
                                       + (1 - self.beta2) * abs(current - self.ema_importance[i]))

    def before_optimizer_step(self, step: int) -> list[nn.Parameter]:
        s = self.settings
        if self.remaining <= 0:
            return []
        self.update_importance()
        if not (step > s["init_warmup"] and step % s["interval"] == 0):
            return []
        scores = [i * u for i, u in zip(self.ema_importance, self.ema_uncertainty)]
        if s["budget_exact"]:
            chosen = top_k(scores, min(s["top_h"], self.remaining // s["incre_rank_num"]))
        else:
            chosen = top_k(scores, min(s["top_h"], self.remaining), ties_at_threshold=True)
        before, grown = self.remaining, {self.layer_names[i]: s["incre_rank_num"] for i in chosen}
        factors_before = {i: self.layers[i].update_factors() for i in chosen}
        new = self._apply_growth(step, grown)
        self.growth_history.append({"step": step, "k": len(chosen), "budget_before": before,
                                    "budget_after": self.remaining, "grown": grown,
                                    "scores": dict(zip(self.layer_names, scores)),
                                    "delta_w_change": {self.layer_names[i]: relative_change(f, self.layers[i].update_factors())
                                                       for i, f in factors_before.items()}})
        return new

    def _apply_growth(self, step: int, grown: dict[str, int]) -> list[nn.Parameter]:
        index = {name: i for i, name in enumerate(self.layer_names)}
        new = []
        for name, count in grown.items():
            i = index[name]
            new += self.layers[i].grow(count, self.settings["advance_learning"], unit_generator(self.seed, step, i))
        if self.remaining <= 0:
            for layer in self.layers:
                layer.retire_reserve()
        return new

    def replay_growth(self, step: int) -> list[nn.Parameter]:
        return self._apply_growth(step, next(e["grown"] for e in self.growth_history if e["step"] == step))

    def extra_state(self):
        return {"ema_importance": self.ema_importance, "ema_uncertainty": self.ema_uncertainty,
                "growth_history": self.growth_history}, {}

    def load_extra_state(self, state, tensors):
        self.ema_importance, self.ema_uncertainty = state["ema_importance"], state["ema_uncertainty"]
        self.growth_history = state["growth_history"]

    def rank_pattern(self) -> dict[str, int]:
        return {n: layer.ranknum for n, layer in zip(self.layer_names, self.layers)}

    def summary(self) -> dict:
        return {"rank_pattern": self.rank_pattern(), "total_rank": self.budget - self.remaining,
                "budget": self.budget, "growth_history": self.growth_history, "schedule": self.settings}
