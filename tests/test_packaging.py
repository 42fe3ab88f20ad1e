"""The method library stands alone: torch, safetensors and numpy only, nothing from the runner, the baselines or Hydra."""

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


SAVE_AND_LOAD = """
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):  # a venv holding only the declared dependencies
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top not in ALLOWED and top not in sys.stdlib_module_names and top != "triadapt":
            raise ModuleNotFoundError(f"No module named {top!r}")
sys.meta_path.insert(0, NotInstalled())
import tempfile, torch
from torch import nn
from triadapt import TriAdaptConfig, TriAdaptModel

def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))

config = TriAdaptConfig(target_modules=["0", "2"], r_ref=2, total_steps=10, t0=1, interval=2)
model, x = TriAdaptModel(net(), config), torch.randn(3, 8)
with tempfile.TemporaryDirectory() as folder:
    model.save_pretrained(folder)
    again = TriAdaptModel.from_pretrained(net(), folder)
assert torch.equal(model(x), again(x))
print("ok")
"""


def normalized(name: str) -> str:
    return name.lower().replace("_", "-")


def requirement_closure(names: list[str]) -> set[str]:
    """The distributions ``names`` install, with everything they require, transitively (extras left out)."""
    from importlib import metadata
    from packaging.requirements import Requirement

    seen, todo = set(), [normalized(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(normalized(requirement.name))
    return seen


def save_and_load_with_only(distributions: set[str]) -> subprocess.CompletedProcess:
    """save_pretrained / from_pretrained in a process that can import the standard library, triadapt and the modules
    of ``distributions`` only, as a venv holding nothing else would."""
    from importlib import metadata

    allowed = sorted(module for module, dists in metadata.packages_distributions().items()
                     if any(normalized(d) in distributions for d in dists))
    return subprocess.run([sys.executable, "-c", f"ALLOWED = {set(allowed)!r}\n" + SAVE_AND_LOAD], cwd=ROOT,
                          capture_output=True, text=True)


def test_the_declared_dependencies_cover_save_and_load():
    """A `pip install triadapt` beside torch alone can save and load: with only the declared dependencies (pyproject's
    `dependencies`) and what they require importable, save_pretrained and from_pretrained give the same outputs and
    torch warns of nothing (numpy, which safetensors' torch API needs, used to be missing)."""
    import tomllib
    from packaging.requirements import Requirement

    declared = [Requirement(r).name for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    done = save_and_load_with_only(requirement_closure(declared))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert "Failed to initialize NumPy" not in done.stderr  # torch's warning when numpy is absent
    without_numpy = save_and_load_with_only(requirement_closure(declared) - {"numpy"})
    assert without_numpy.returncode != 0 and "numpy" in without_numpy.stderr  # the check can fail
