"""The contract between the training loop and a fine-tuning method.

The loop calls these hooks, in this order, once per optimizer step ("step" always means an
optimizer step, whatever the gradient accumulation):

    loss = task loss + method.regularizer()      # for every micro-batch, before backward
    backward, gradient clipping
    new = method.before_optimizer_step(step)     # growth (TriAdaptLoRA, IncreLoRA); returns new parameters,
                                                 # which the loop gives the optimizer and scheduler
    optimizer.step()
    method.after_optimizer_step(step)            # AdaLoRA's rank allocator
    scheduler.step(); optimizer.zero_grad()

``summary()`` goes into the run record at the end (ranks, growth history).
"""

from __future__ import annotations

import torch
from torch import nn


class Method:
    """A method with nothing to do at any hook: full fine-tuning, BitFit, LoRA."""

    name = "method"

    def __init__(self, model: nn.Module):
        self.model = model  # what the loop calls forward on

    def regularizer(self) -> torch.Tensor | None:
        return None

    def before_optimizer_step(self, step: int) -> list[nn.Parameter]:
        return []

    def after_optimizer_step(self, step: int) -> None:
        return None

    def summary(self) -> dict:
        return {}
