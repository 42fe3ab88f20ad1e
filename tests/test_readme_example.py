"""The README's library example runs as printed, reaches the budget, and its reload gives the same logits."""

import os
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "the README holds one Python example"
    return blocks[0]


def test_readme_example_grows_to_the_budget_and_reloads_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(readme_python_block(), str(README), "exec"), namespace)
    model, reloaded, batch = namespace["model"], namespace["reloaded"], namespace["batch"]
    assert model.total_rank() == 8 * 36 and len(model.growth_history) > 1
    assert reloaded.rank_pattern() == model.rank_pattern()
    assert os.path.exists(tmp_path / "outputs" / "adapter" / "adapter_config.json")
    model.eval(), reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
