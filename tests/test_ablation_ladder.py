"""The ablation ladder (ours) and the authors' code's parametrisation: the ladder's rungs differ by one setting
each, its last rung computes PEFT LoRA's function from the same A and B, and each option does what it says."""

import copy
import math

import pytest
import torch
from omegaconf import OmegaConf
from peft import LoraConfig, get_peft_model
from torch import nn

from tests.conftest import compose_config
from triadapt import TriAdaptConfig, TriAdaptLinear, TriAdaptModel

TARGETS = ["attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj",
           "attention.output.dense", "intermediate.dense", "output.dense"]
RUNGS = ["triadapt_linear", "ladder1_fixed_scale", "ladder2_no_growth", "ladder3_no_orth", "ladder4_identity_middle",
         "ladder5_lora_a_init"]
LAST_RUNG = dict(r_init=8, r_ref=8, alpha=32.0, orth_reg_weight=0.0, scaling="reference_rank", middle_init="identity",
                 a_init="kaiming_uniform")


def method_settings(name: str) -> dict:
    cfg = compose_config(f"method={name}", "task=mrpc", "model=minilm", "+experiment=cpu_protocol")
    settings = OmegaConf.to_container(cfg.method, resolve=True)
    settings.pop("name")
    return settings


def test_each_rung_changes_exactly_one_setting():
    changes = []
    previous = method_settings(RUNGS[0])
    for name in RUNGS[1:]:
        current = method_settings(name)
        changed = {k: current.get(k) for k in set(current) | set(previous) if current.get(k) != previous.get(k)}
        changes.append(changed)
        previous = current
    assert changes == [{"scaling": "reference_rank"}, {"r_init": 8}, {"orth_reg_weight": 0.0},
                       {"middle_init": "identity"}, {"a_init": "kaiming_uniform"}]


def triadapt_and_lora(model, **settings):
    """TriAdaptLoRA with ``settings`` and PEFT LoRA (alpha 32, TriAdaptLoRA's rank) on copies of ``model``, LoRA's
    A and B copied from TriAdaptLoRA's, with B made non-zero so that the adapters matter."""
    tri = TriAdaptModel(copy.deepcopy(model), TriAdaptConfig(target_modules=TARGETS, total_steps=10, **settings))
    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=settings["r_init"], lora_alpha=32, target_modules=TARGETS))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, layer in zip(tri.layer_names, tri.layers()):
            layer.tri_b[0].copy_(torch.randn(layer.tri_b[0].shape, generator=g))
            peft_layer = lora.base_model.model.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(layer.factor_a())
            peft_layer.lora_B["default"].weight.copy_(layer.factor_b())
    return tri.eval(), lora.eval()


@pytest.mark.parametrize("change, matches", [
    ({}, True),
    ({"middle_init": "gaussian"}, False),  # the paper's N(0, 0.02) middle factor
    ({"alpha": 64.0}, False),  # twice LoRA's scale
    ({"r_init": 2}, False),  # rank 2 at alpha / r_ref = 4, against LoRA's alpha / 2 = 16
    ({"r_init": 2, "scaling": "current_rank"}, True),  # alpha / (2 + eps), LoRA's scale up to eps
])
def test_last_rung_computes_lora_from_the_same_factors(tiny_model, tiny_batch, change, matches):
    tri, lora = triadapt_and_lora(tiny_model, **{**LAST_RUNG, **change})
    inputs = {k: v for k, v in tiny_batch.items() if k != "labels"}
    with torch.no_grad():
        ours, theirs, plain = tri(**inputs).logits, lora(**inputs).logits, tiny_model.eval()(**inputs).logits
    assert (theirs - plain).abs().max() > 1e-3  # the adapters change the logits
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5) == matches


def test_kaiming_a_is_peft_loras_distribution():
    n = 384
    layer = TriAdaptLinear(nn.Linear(n, 64), 8, 32.0, a_init="kaiming_uniform", generator=torch.Generator().manual_seed(0))
    peft_a = nn.Linear(n, 64 * 8, bias=False)
    nn.init.kaiming_uniform_(peft_a.weight, a=math.sqrt(5))  # what PEFT's LoRA does to lora_A
    ours, theirs = layer.factor_a().detach(), peft_a.weight.detach()
    assert ours.abs().max() <= 1 / math.sqrt(n) and theirs.abs().max() <= 1 / math.sqrt(n)
    assert ours.std().item() == pytest.approx(theirs.std().item(), rel=0.05)
    assert ours.std().item() == pytest.approx(1 / math.sqrt(3 * n), rel=0.05)


def test_identity_middle_after_growth():
    config = TriAdaptConfig(target_modules=["x"], middle_init="identity")
    layer = TriAdaptLinear(nn.Linear(6, 5), 1, 8.0, **config.layer_options())
    layer.grow(3)
    assert torch.equal(layer.transform().detach(), torch.eye(4))  # L, U diagonals 1/2: D = I, new units too


def test_authors_code_parametrization(tiny_model, tiny_batch):
    """parametrization="authors_code" alone (identity on each unit's own diagonal): D = 2I at birth, a constant scale 2,
    new B columns zero, so growth leaves the function unchanged. The full authors' code: tests/test_authors_code.py."""
    config = TriAdaptConfig(target_modules=TARGETS, total_steps=10, parametrization="authors_code")
    tri = TriAdaptModel(tiny_model, config).eval()
    layer = tri.layers()[0]
    assert layer.scale == 2.0 and torch.equal(layer.transform().detach(), 2 * torch.eye(1))
    with torch.no_grad():
        for layer in tri.layers():
            layer.tri_b[0].normal_()
        before = tri(**tiny_batch).logits
        new = tri._apply_growth(5, {name: 4 for name in tri.layer_names})
        after = tri(**tiny_batch).logits
    assert torch.equal(layer.transform().detach(), 2 * torch.eye(5))
    assert all(torch.all(p == 0) for p in new[1::4])  # every new B block
    assert torch.allclose(before, after, atol=1e-6)
    assert TriAdaptLinear(nn.Linear(6, 5), 1, 32.0).scale == pytest.approx(32.0 / (1 + 1e-5))  # the paper's


@pytest.mark.parametrize("settings", [
    {"parametrization": "authors_code", "scaling": "reference_rank"},
    {"parametrization": "authors_code", "middle_init": "identity"},
    {"parametrization": "author"},
    {"a_init": "kaiming"},
])
def test_conflicting_or_unknown_options_are_refused(settings):
    with pytest.raises(ValueError, match="|".join(settings)):
        TriAdaptConfig(target_modules=TARGETS, **settings)
