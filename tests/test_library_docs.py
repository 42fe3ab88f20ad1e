"""The causal-LM example of docs/library.md runs as printed, offline (a tiny random Qwen2 and the bundled tokenizer),
grows to the budget, and PEFT's reload of the export gives the same logits."""

import re

import torch

from tests.conftest import ROOT


def test_the_causal_lm_example_runs_and_the_export_reloads_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    [block] = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "library.md").read_text(), flags=re.S)
    namespace: dict = {}
    exec(compile(block, "docs/library.md", "exec"), namespace)
    tri, model, prompt = namespace["tri"], namespace["model"], namespace["prompt"]
    assert tri.total_rank() == 8 * 2 * 7 and len(tri.growth_history) > 1
    tri.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**prompt).logits, tri(**prompt).logits, atol=1e-5, rtol=0)
