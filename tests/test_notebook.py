"""The walkthrough notebook executes on the committed records and shows what the record says."""

import json

import nbformat
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "growth_walkthrough.ipynb"


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o["output_type"] == "stream")


def test_walkthrough_executes_and_reports_the_record():
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert all(c.outputs for c in committed.cells if c.cell_type == "code"), "commit the notebook with its outputs"
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()  # raises on any error
    code = [c for c in notebook.cells if c.cell_type == "code"]
    record = json.loads((ROOT / "results/runs/minilm/sst2--triadapt_linear--seed0.json").read_text())
    state = record["method_state"]
    assert f"total rank at the end: {state['total_rank']} of budget {state['budget']}" in _text(code[2])
    per_type = {}
    for name, rank in state["rank_pattern"].items():
        kind = ("Wa" if name.endswith("attention.output.dense") else "Wm" if name.endswith("intermediate.dense")
                else "Wo" if name.endswith("output.dense") else {"query": "Wq", "key": "Wk", "value": "Wv"}[
                    name.rsplit(".", 1)[1]])
        per_type[kind] = per_type.get(kind, 0) + rank
    assert f"ranks per matrix type: {dict(sorted(per_type.items(), key=lambda kv: 'WqWkWvWaWmWo'.index(kv[0])))}" \
        in _text(code[4])
    figures = [c for c in code if any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert len(figures) == 2
