"""The method library stands alone: torch and safetensors only, nothing from the runner, the baselines or Hydra."""

import subprocess
import sys

from tests.conftest import ROOT

CORE_MODULES = ["triadapt", "triadapt.config", "triadapt.layer", "triadapt.model", "triadapt.importance",
                "triadapt.schedule", "triadapt.perturbation", "triadapt.targets", "triadapt.export"]
FORBIDDEN = ["transformers", "peft", "hydra", "omegaconf", "runner", "baselines", "pandas", "datasets", "sklearn"]


def blocker(modules: list[str]) -> str:
    return f"""
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {FORBIDDEN!r}:
            raise ImportError(f"the method library imported {{name}}")
sys.meta_path.insert(0, Blocker())
import importlib
for module in {modules!r}:
    importlib.import_module(module)
print("ok")
"""


def test_the_method_library_imports_with_torch_and_safetensors_only():
    done = subprocess.run([sys.executable, "-c", blocker(CORE_MODULES)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_blocker_can_fail():
    done = subprocess.run([sys.executable, "-c", blocker([*CORE_MODULES, "runner.data"])], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "imported runner" in done.stderr


def test_no_layer_imports_upwards():
    """scripts -> runner -> baselines -> triadapt: the method library imports no layer above it, the baselines
    not the runner."""
    for package, above in (("triadapt", ("runner", "baselines", "hydra", "omegaconf")), ("baselines", ("runner", "hydra"))):
        for path in (ROOT / package).glob("*.py"):
            for line in path.read_text().splitlines():
                words = line.split()
                if words[:1] in (["import"], ["from"]) and len(words) > 1:
                    assert words[1].split(".")[0] not in above, f"{path.name}: {line}"
