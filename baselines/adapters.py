"""Bottleneck adapters: Houlsby (HAdapter: after the attention output and after the FFN) and
Pfeiffer (PAdapter: after the FFN only). Written here because the maintained ``adapters`` package
requires transformers 4.x, and this project runs on transformers 5.

Each adapter maps the sublayer output y to y + W_up relu(W_down y + b_down) + b_up, inserted before
the residual connection and LayerNorm. W_up starts at zero, so training starts from the backbone.
Trainable entries per adapter: 2 h b + b + h.
"""

from __future__ import annotations

from torch import nn

from .method import Method
from triadapt.model import matches_target

PLACEMENTS = {"houlsby": ("attention.output.dense", "output.dense"), "pfeiffer": ("output.dense",)}


class AdaptedSublayer(nn.Module):
    def __init__(self, base: nn.Linear, bottleneck: int, init_std: float = 0.02):
        super().__init__()
        self.base_layer = base
        hidden = base.out_features
        self.adapter_down = nn.Linear(hidden, bottleneck)
        self.adapter_up = nn.Linear(bottleneck, hidden)
        nn.init.normal_(self.adapter_down.weight, std=init_std)
        nn.init.zeros_(self.adapter_down.bias)
        nn.init.zeros_(self.adapter_up.weight)
        nn.init.zeros_(self.adapter_up.bias)
        self.to(base.weight.device)

    def forward(self, x):
        y = self.base_layer(x)
        return y + self.adapter_up(nn.functional.relu(self.adapter_down(y)))


class BottleneckAdapters(Method):
    def __init__(self, model: nn.Module, placement: str, bottleneck: int):
        if placement not in PLACEMENTS:
            raise ValueError(f"adapter placement {placement!r}; valid: {', '.join(PLACEMENTS)}")
        for p in model.parameters():
            p.requires_grad_(False)
        targets = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layer." in n
                   and matches_target(n, PLACEMENTS[placement])
                   and (placement == "houlsby" or "attention" not in n)]
        for name in targets:
            parent, _, child = name.rpartition(".")
            holder = model.get_submodule(parent)
            setattr(holder, child, AdaptedSublayer(getattr(holder, child), bottleneck))
        self.name = "hadapter" if placement == "houlsby" else "padapter"
        self.adapted = targets
        super().__init__(model)

    def summary(self) -> dict:
        return {"adapted_modules": self.adapted}
