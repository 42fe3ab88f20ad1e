"""Which matrices TriAdaptLoRA adapts in each model family, matched by module-name suffix as PEFT does.

The paper adapts every weight matrix of attention and feed-forward (Wq, Wk, Wv, Wa, Wm, Wo); these are the
same matrices under each family's names. ``target_modules_for`` reads ``model.config.model_type``.
"""

from __future__ import annotations

from torch import nn

_LLAMA_STYLE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGET_PRESETS: dict[str, list[str]] = {
    "bert": ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "intermediate.dense", "output.dense"],
    "roberta": ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                "intermediate.dense", "output.dense"],
    "deberta-v2": ["attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj",
                   "attention.output.dense", "intermediate.dense", "output.dense"],
    "llama": _LLAMA_STYLE,
    "mistral": _LLAMA_STYLE,
    "qwen2": _LLAMA_STYLE,
    "gpt2": ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],  # Conv1D: weights stored transposed
}


def target_modules_for(model: nn.Module) -> list[str]:
    """The preset of the model's family; a clear error naming the known families otherwise."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in TARGET_PRESETS:
        raise ValueError(f"no target-module preset for model_type={model_type!r}; known: "
                         f"{', '.join(sorted(TARGET_PRESETS))}. Pass TriAdaptConfig(target_modules=[...]) instead")
    return list(TARGET_PRESETS[model_type])


def is_transposed_linear(module: nn.Module) -> bool:
    """GPT-2's ``transformers.pytorch_utils.Conv1D``: y = x W + b with W stored n x d (recognised by name, so the
    method library does not import transformers)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and module.weight.dim() == 2


def is_adaptable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_transposed_linear(module)
