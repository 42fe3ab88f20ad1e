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

``summary()`` goes into the run record at the end (ranks, growth history). For checkpoints,
``extra_state()`` / ``load_extra_state()`` carry the method's own state (JSON plus tensors), and
``replay_growth(step)`` rebuilds the parameters a growth event created, in the same order, so that a
resumed run has the same shapes and optimizer groups before the saved values are loaded.
"""

from __future__ import annotations

import torch
from torch import nn


class Method:
    """A method with nothing to do at any hook: full fine-tuning, BitFit, LoRA."""

    name = "method"
    new_group_schedule = "own_warmup"  # LR schedule of parameters born mid-run (see runner.optim.add_param_group)
    new_group_weight_decay: float | None = None  # their weight decay; None: the run's (train.weight_decay)
    growth_events = 0  # growth events so far, for methods that grow without adding parameters (preallocated units)

    def __init__(self, model: nn.Module):
        self.model = model  # what the loop calls forward on

    @staticmethod
    def replica_mean(tensor: torch.Tensor) -> torch.Tensor:
        """Average over data-parallel replicas; the loop replaces it when it runs several. A method
        needs it only for state that DDP does not already average (anything but parameter gradients)."""
        return tensor

    def regularizer(self) -> torch.Tensor | None:
        return None

    def before_optimizer_step(self, step: int) -> list[nn.Parameter]:
        return []

    def after_optimizer_step(self, step: int) -> None:
        return None

    def summary(self) -> dict:
        return {}

    def extra_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        return {}, {}

    def load_extra_state(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        return None

    def unit_layers(self) -> list[nn.Module]:
        """Layers whose units carry their own optimizer clock (TriAdaptLoRA's preallocated layout); none here."""
        return []

    def replay_growth(self, step: int) -> list[nn.Parameter]:
        raise NotImplementedError(f"{type(self).__name__} never grows")
