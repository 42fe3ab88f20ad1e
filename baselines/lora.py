"""LoRA through Hugging Face PEFT, on the paper's six matrices per layer."""

from __future__ import annotations

from peft import LoraConfig, get_peft_model

from .method import Method


class LoRA(Method):
    name = "lora"

    def __init__(self, model, target_modules, r: int, alpha: float, dropout: float):
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules))
        super().__init__(get_peft_model(model, config))
