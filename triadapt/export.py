"""Write a trained TriAdaptLoRA adapter as a standard PEFT LoRA adapter (no PEFT needed to write it).

dW = alpha/(r+eps) * B (L+U) A (Eq. 5) is a rank-r LoRA update dW = s * lora_B lora_A with lora_A = A and
lora_B = alpha/(r+eps) * B (L+U), at PEFT scaling s = lora_alpha / r = 1: every matrix gets its own rank in
``rank_pattern`` and the same value in ``alpha_pattern``. Trainable modules that are not adapters (e.g. a
classifier head) are saved as PEFT's ``modules_to_save``. Load with ``PeftModel.from_pretrained(base, directory)``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from .layer import ADAPTER_PREFIX


def export_peft_lora(model, directory: str | os.PathLike, task_type: str | None = None) -> Path:
    """Save ``model`` (a TriAdaptModel, unmerged) as PEFT LoRA files in ``directory``; returns the directory."""
    layers = dict(zip(model.layer_names, model.layers()))
    if any(layer.merged for layer in layers.values()):
        raise RuntimeError("unmerge() before exporting: a merged adapter would be counted twice")
    transposed = {layer.fan_in_fan_out for layer in layers.values()}
    if len(transposed) > 1:
        raise ValueError("PEFT has one fan_in_fan_out per adapter; this model mixes nn.Linear and Conv1D targets")
    prefix = "base_model.model."
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, layer in layers.items():
            tensors[f"{prefix}{name}.lora_A.weight"] = layer.factor_a().detach().contiguous().clone()
            tensors[f"{prefix}{name}.lora_B.weight"] = (layer.scale * layer.factor_b() @ layer.transform()).contiguous()
    extra = {n: p for n, p in model.model.named_parameters() if p.requires_grad and f".{ADAPTER_PREFIX}" not in n}
    for name, p in extra.items():
        tensors[prefix + name] = p.detach().contiguous().clone()
    ranks = {re.escape(name): layer.rank for name, layer in layers.items()}
    config = {
        "peft_type": "LORA", "task_type": task_type,
        "base_model_name_or_path": getattr(getattr(model.model, "config", None), "_name_or_path", None) or None,
        "r": max(ranks.values()), "lora_alpha": max(ranks.values()), "rank_pattern": ranks, "alpha_pattern": ranks,
        "target_modules": sorted(layers), "lora_dropout": model.config.dropout, "bias": "none",
        "fan_in_fan_out": transposed.pop(), "use_rslora": False, "use_dora": False, "inference_mode": True,
        "modules_to_save": sorted({name.rpartition(".")[0] for name in extra}) or None,
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "adapter_model.safetensors.tmp"))
    (directory / "adapter_config.json.tmp").write_text(json.dumps(config, indent=2))
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        os.replace(directory / f"{name}.tmp", directory / name)
    return directory
