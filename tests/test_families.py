"""TriAdaptLoRA on each model family's own module names: BERT, DeBERTa-v2, Llama, Mistral, Qwen2 and GPT-2
(whose Conv1D stores weights transposed), on tiny random configs. Each: the preset picks the matrices, a few
training steps grow them to the budget, save -> load and merge give the same logits, generate() works, and the
export to a PEFT LoRA adapter loads in PEFT with the same logits."""

import pytest
import torch
import transformers
from peft import PeftModel

from triadapt import TriAdaptConfig, TriAdaptModel
from triadapt.export import export_peft_lora
from triadapt.targets import TARGET_PRESETS

DECODERS = {
    "llama": transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2),
    "mistral": transformers.MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2),
    "qwen2": transformers.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2),
    "gpt2": transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64),
}
ENCODERS = {
    "bert": transformers.BertConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                    num_attention_heads=4, num_labels=2),
    "deberta-v2": transformers.DebertaV2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                               num_attention_heads=4, num_labels=2),
}
MATRICES_PER_LAYER = {"llama": 7, "mistral": 7, "qwen2": 7, "gpt2": 4, "bert": 6, "deberta-v2": 6}


def build(family: str) -> torch.nn.Module:
    torch.manual_seed(0)  # the same base weights every time
    if family in DECODERS:
        return transformers.AutoModelForCausalLM.from_config(DECODERS[family]).eval()
    return transformers.AutoModelForSequenceClassification.from_config(ENCODERS[family]).eval()


def train_a_little(family: str) -> tuple[TriAdaptModel, dict]:
    model = build(family)
    tri = TriAdaptModel(model, TriAdaptConfig(r_ref=4, delta_r=2, total_steps=12, t0=2, interval=2, alpha=8.0))
    batch = {"input_ids": torch.randint(3, 64, (2, 10), generator=torch.Generator().manual_seed(1))}
    if family in DECODERS:
        batch["labels"] = batch["input_ids"]
    else:
        batch["labels"] = torch.tensor([0, 1])
        model.classifier.requires_grad_(True)
    optimizer = torch.optim.AdamW([p for p in tri.parameters() if p.requires_grad], lr=1e-2)
    tri.train()
    for step in range(1, 12):
        (tri(**batch).loss + tri.orthogonal_regularizer()).backward()
        new = tri.grow(step)
        if new:
            optimizer.add_param_group({"params": new})
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():  # a few steps move B little; make the adapters' effect on the logits large
        for name, p in tri.named_parameters():
            if ".tri_" in name:
                p.add_(0.1 * torch.randn_like(p))
    tri.eval()
    return tri, {k: v for k, v in batch.items() if k != "labels"}


@pytest.fixture(scope="module", params=[*DECODERS, *ENCODERS])
def trained(request):
    return request.param, *train_a_little(request.param)


def test_the_preset_adapts_every_family_matrix_and_growth_reaches_the_budget(trained):
    family, tri, _ = trained
    assert tri.config.target_modules == TARGET_PRESETS[family]
    assert len(tri.layer_names) == 2 * MATRICES_PER_LAYER[family]
    assert tri.total_rank() == 4 * len(tri.layer_names) and len(tri.growth_history) > 1
    if family == "gpt2":  # Conv1D: the adapter sees its weight as d x n
        attn = tri.model.get_submodule("transformer.h.0.attn.c_attn")
        assert attn.fan_in_fan_out and attn.base_weight().shape == (96, 32) and attn.factor_a().shape[1] == 32


def test_save_load_and_merge_give_the_same_logits(trained, tmp_path):
    family, tri, batch = trained
    with torch.no_grad():
        logits = tri(**batch).logits
        tri.save_pretrained(tmp_path)
        loaded = TriAdaptModel.from_pretrained(build(family), tmp_path).eval()
        assert torch.equal(loaded(**batch).logits, logits)
        tri.merge()
        torch.testing.assert_close(tri(**batch).logits, logits, atol=1e-5, rtol=0)
        tri.unmerge()
        torch.testing.assert_close(tri(**batch).logits, logits, atol=1e-5, rtol=0)


def test_generate_runs_with_the_adapters(trained):
    family, tri, batch = trained
    if family not in DECODERS:
        pytest.skip("encoders do not generate")
    out = tri.model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 13)
    with torch.no_grad():  # greedy decoding with the KV cache picks what a full forward with the adapters picks
        full = tri(input_ids=out[:, :-1]).logits.argmax(-1)
    assert torch.equal(full[:, 9:], out[:, 10:])


def test_export_loads_in_peft_with_the_same_logits(trained, tmp_path):
    family, tri, batch = trained
    with torch.no_grad():
        logits = tri(**batch).logits
    export_peft_lora(tri, tmp_path)
    peft_model = PeftModel.from_pretrained(build(family), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**batch).logits, logits, atol=1e-5, rtol=0)
        assert (build(family)(**batch).logits - logits).abs().max() > 0.02  # the adapters do matter
