"""Checkpoints of a run whose shapes change while it trains: written atomically, loaded safely.

A checkpoint is a folder ``step-<N>/`` holding ``tensors.safetensors`` (model, optimizer state,
torch RNG, method tensors) and ``state.json`` (step, scheduler, evaluations, method state, Python and
NumPy RNG, growth events, the resolved config). It is written under a temporary name and renamed
into place, then ``latest`` is replaced atomically; a crash leaves the previous checkpoint intact.
Nothing is unpickled: tensors come only through safetensors, everything else is JSON.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .records import run_identity

LATEST = "latest"
TRAINED_WEIGHTS = "trainable.safetensors"


class ResumeError(RuntimeError):
    pass


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _differences(saved: dict, current: dict) -> list[str]:
    a, b = _flat(run_identity(saved)), _flat(run_identity(current))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def same_config(saved: dict, current: dict) -> bool:
    return not _differences(saved, current)


def check_same_config(saved: dict, current: dict) -> None:
    """A run resumes only under the config it started with, but for what does not change what it computes
    (``records.IGNORED_FOR_IDENTITY``: ``resume`` itself, the checkpoint cadence, where data and records live)."""
    differ = _differences(saved, current)
    if differ:
        a, b = _flat(saved), _flat(current)
        raise ResumeError("the checkpoint was made with another config; differing keys: "
                          + ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in differ[:5]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if path.is_dir() else None


def _optimizer_tensors(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors = {f"optimizer.{index}.{key}": value.detach().clone().contiguous()
               for index, entry in state["state"].items() for key, value in entry.items()}
    return tensors, {"param_groups": state["param_groups"]}


def _scheduler_state(scheduler) -> dict:
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def save(run_dir: Path, step: int, model, optimizer, scheduler, method, meta: dict, keep: int = 1) -> Path:
    """Write the checkpoint taken after ``step`` optimizer steps, atomically."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final, tmp = folder / f"step-{step}", folder / f".step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    method_meta, method_tensors = method.extra_state()
    tensors.update(opt_tensors)
    tensors.update({f"method.{k}": v.detach().clone().contiguous() for k, v in method_tensors.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(tmp / "tensors.safetensors"))
    numpy_state = np.random.get_state()
    state = {
        **meta, "step": step, "optimizer": opt_meta, "scheduler": _scheduler_state(scheduler), "method": method_meta,
        "rng": {"python": list(random.getstate()[1]), "python_version": random.getstate()[0],
                "python_gauss": random.getstate()[2],
                "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]]},
    }
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer_tmp = folder / f".{LATEST}.tmp"
    pointer_tmp.write_text(final.name)
    os.replace(pointer_tmp, folder / LATEST)
    for old in sorted(folder.glob("step-*"), key=lambda p: int(p.name[5:]))[:-keep]:
        shutil.rmtree(old)
    return final


def keep_trained_weights_only(run_dir: Path, model) -> Path:
    """A finished run's folder: its trained weights (every trainable tensor, adapters and head) in
    ``trainable.safetensors``, and no checkpoint (a full checkpoint holds the frozen backbone and the optimizer)."""
    path = Path(run_dir) / TRAINED_WEIGHTS
    save_file({n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}, str(path))
    shutil.rmtree(Path(run_dir) / "checkpoints", ignore_errors=True)
    return path


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The checkpoint's tensors (safetensors only) and its JSON state."""
    return load_file(str(Path(path) / "tensors.safetensors")), json.loads((Path(path) / "state.json").read_text())


def method_tensors(tensors: dict) -> dict[str, torch.Tensor]:
    return {k[len("method."):]: v for k, v in tensors.items() if k.startswith("method.")}


def restore(tensors: dict, state: dict, model, optimizer, scheduler) -> None:
    """Load a checkpoint into a model whose growth has been replayed (same shapes, same groups)."""
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    own = model.state_dict()
    mismatched = [k for k, v in model_state.items() if k not in own or own[k].shape != v.shape]
    if mismatched or set(own) - set(model_state):
        raise ValueError(f"checkpoint does not fit the model: {(mismatched or sorted(set(own) - set(model_state)))[:3]}")
    model.load_state_dict(model_state)
    opt_state = {"state": {}, "param_groups": state["optimizer"]["param_groups"]}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            opt_state["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(scheduler.lr_lambdas)})
    torch.set_rng_state(tensors["rng.torch"])
    rng = state["rng"]
    random.setstate((rng["python_version"], tuple(rng["python"]), rng["python_gauss"]))
    numpy_state = rng["numpy"]
    np.random.set_state((numpy_state[0], np.array(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
