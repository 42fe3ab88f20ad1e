"""Full fine-tuning and BitFit: methods that only choose what trains."""

from __future__ import annotations

from .method import Method


class FullFineTuning(Method):
    name = "full_ft"

    def __init__(self, model):
        super().__init__(model)
        for p in model.parameters():
            p.requires_grad_(True)


class BitFit(Method):
    """Only the bias terms train (Ben Zaken et al. 2022); the runner also trains the head."""

    name = "bitfit"

    def __init__(self, model):
        super().__init__(model)
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(".bias"))
