"""TLoRA (Islam 2025, ../shared/paper/tlora-abstract.md), after the official code (itanvir/tlora):

dW x = s * C_rand K A_rand x, with A_rand (r x n) and C_rand (d x r) fixed random (Kaiming-normal,
a = sqrt(5)), K (r x r) trainable and zero-initialised (so dW = 0 at start), s a learnable scalar per
adapted layer (initially 1), and dropout on the adapter output. Trainable entries per layer: r^2 + 1.
Not in the TriAdaptLoRA paper's tables: our addition, as a small-budget reference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .method import Method
from triadapt.model import matches_target, unit_generator


class TLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, dropout: float, generator: torch.Generator):
        super().__init__()
        self.base_layer = base
        d, n = base.weight.shape
        a_rand, c_rand = torch.empty(r, n), torch.empty(d, r)
        for t in (a_rand, c_rand):  # kaiming_normal_(a=sqrt(5)), drawn from our own generator
            fan_in = t.shape[1]
            t.normal_(0.0, math.sqrt(2.0 / (1 + 5)) / math.sqrt(fan_in), generator=generator)
        self.register_buffer("a_rand", a_rand.to(base.weight))
        self.register_buffer("c_rand", c_rand.to(base.weight))
        self.tlora_k = nn.Parameter(torch.zeros(r, r, device=base.weight.device, dtype=base.weight.dtype))
        self.tlora_scale = nn.Parameter(torch.ones((), device=base.weight.device, dtype=base.weight.dtype))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        update = ((x @ self.a_rand.t()) @ self.tlora_k.t()) @ self.c_rand.t()
        return self.base_layer(x) + self.dropout(self.tlora_scale * update)


class TLoRA(Method):
    name = "tlora"

    def __init__(self, model: nn.Module, target_modules, r: int, dropout: float, seed: int):
        for p in model.parameters():
            p.requires_grad_(False)
        targets = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and matches_target(n, target_modules)]
        for index, name in enumerate(targets):
            parent, _, child = name.rpartition(".")
            holder = model.get_submodule(parent)
            setattr(holder, child, TLoRALinear(getattr(holder, child), r, dropout, unit_generator(seed, -1, index)))
        super().__init__(model)
