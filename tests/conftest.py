"""Shared fixtures: offline Hub, the GLUE data directory, Hydra composition, a tiny DeBERTa."""

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import runner  # noqa: F401 - registers the config resolvers (${times:...}) before any compose

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA_DIR = Path(os.environ.get("TRIADAPT_DATA_DIR", ROOT.parent / "shared" / "data"))


def load_script(name: str):
    """A module of scripts/ (not a package), e.g. load_script("make_tables"), for tests of its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def data_dir():
    if not (DATA_DIR / "glue").is_dir():
        pytest.skip(f"no GLUE data at {DATA_DIR} (set TRIADAPT_DATA_DIR)")
    return DATA_DIR


def compose_config(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def tiny_model():
    """A 2-layer random DebertaV2 classifier (12 adapted matrices), fixed seed."""
    from runner.models import load_model

    cfg = compose_config("model=tiny_deberta")
    return load_model(cfg.model, "classification", 2, cls_dropout=0.0, seed=0)


@pytest.fixture
def tiny_batch():
    g = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(5, 1000, (4, 12), generator=g),
            "attention_mask": torch.ones(4, 12, dtype=torch.long), "labels": torch.tensor([0, 1, 1, 0])}
