"""The baselines under the shared runner: trainable counts against each method's formula, AdaLoRA's
allocator and regulariser, IncreLoRA's importance, reserve and budget, TLoRA's frozen projections."""

import math

import pytest
import torch

import runner.train
from baselines.adalora import AdaLoRA
from baselines.increlora import IncreLoRA, IncreLoRALinear
from baselines.tlora import TLoRA
from runner.models import count_trainable, load_model, set_trainable
from tests.conftest import compose_config

TINY_TARGETS = list(compose_config("model=tiny_deberta").model.target_modules)
ALL_METHODS = ["lora", "adalora", "increlora", "triadapt_linear", "hadapter", "padapter", "tlora", "bitfit", "full_ft"]


def tiny_shapes(model):
    """(n + d) of every adapted matrix of the tiny DeBERTa (hidden 64, FFN 128, 2 layers)."""
    return [m.in_features + m.out_features for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and any(n.endswith("." + t) for t in TINY_TARGETS)]


def expected_trainable(method, model):
    head = sum(p.numel() for n, p in model.named_parameters() if "pooler" in n or "classifier" in n)
    sizes = tiny_shapes(model)
    hidden, layers = 64, 2
    adapter = lambda b: 2 * hidden * b + b + hidden  # noqa: E731
    return {
        "lora": sum(8 * s for s in sizes) + head,
        "adalora": sum(12 * s + 12 for s in sizes) + head,
        "triadapt_linear": sum(s + 2 for s in sizes) + head,  # r(n+d) + r(r+1) at r = 1
        "increlora": sum(s + 1 + 4 * s for s in sizes) + head,  # one active (a, b, e) + a 4-unit reserve (a, b)
        "hadapter": layers * 2 * adapter(32) + head,
        "padapter": layers * adapter(64) + head,
        "tlora": len(sizes) * (32 ** 2 + 1) + head,
        "bitfit": sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias")) + head
        - sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias") and ("pooler" in n or "classifier" in n)),
        "full_ft": sum(p.numel() for p in model.parameters()),
    }[method]


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_trains_on_tiny_deberta_stsb(method, tmp_path, data_dir):
    cfg = compose_config(f"method={method}", "model=tiny_deberta", "task=stsb", f"data.dir={data_dir}",
                         f"results_dir={tmp_path}", "train.max_steps=40", "train.batch_size=8",
                         "task.max_seq_length=48", "train.eval_batch_size=256")
    fresh = load_model(cfg.model, "classification", 1, cls_dropout=0.0, seed=0)
    record, _ = runner.train.run(cfg, tmp_path / "out")
    assert record["trainable_parameters"]["at_start"] == expected_trainable(method, fresh)
    assert record["data"]["eval_examples"] == {"dev": 1500}
    assert math.isfinite(record["last"]["main"])
    if method in ("adalora", "increlora", "triadapt_linear"):
        ranks = record["method_state"]["rank_pattern"]
        assert sum(ranks.values()) == 8 * 12 and len(set(ranks.values())) > 1  # budget spent, unevenly


@pytest.mark.parametrize("method", ALL_METHODS + ["triadapt_nonlinear", "triadapt_fixed_k"])
def test_every_method_trains_on_minilm_rte(method, tmp_path, data_dir):
    growing = method.startswith("triadapt") or method in ("increlora", "adalora")
    cfg = compose_config(f"method={method}", "model=minilm", "task=rte", f"data.dir={data_dir}",
                         f"results_dir={tmp_path}", f"train.max_steps={12 if growing else 3}", "train.batch_size=2",
                         "task.max_seq_length=32", "train.eval_batch_size=280")
    record, _ = runner.train.run(cfg, tmp_path / "out")
    assert record["data"]["eval_examples"] == {"dev": 277}
    assert record["trainable_parameters"]["at_start"] > 0
    if growing:  # MiniLM: 6 layers x 6 matrices; the budget r_ref * M = 288 is spent exactly
        state = record["method_state"]
        assert len(state["rank_pattern"]) == 36 and state["total_rank"] == state["budget"] == 288
        assert all(name.startswith("bert.encoder.layer.") for name in state["rank_pattern"])


def batch():
    g = torch.Generator().manual_seed(3)
    return {"input_ids": torch.randint(5, 1000, (4, 10), generator=g), "attention_mask": torch.ones(4, 10, dtype=torch.long),
            "labels": torch.tensor([0, 1, 1, 0])}


def test_adalora_regulariser_reaches_the_loss():
    losses, penalty = [], None
    for weight in (0.0, 0.3):
        model = load_model(compose_config("model=tiny_deberta").model, "classification", 2, 0.0, seed=0)
        method = AdaLoRA(model, TINY_TARGETS, 100, 12, 8, 32, 0.0, 10, 20, 1, 0.85, 0.85, weight)
        losses.append(method.model.eval()(**batch()).loss.item())  # eval: no dropout noise
        terms = []
        for name, p in method.model.named_parameters():
            if "lora_A" in name:
                terms.append(torch.linalg.matrix_norm(p @ p.T - torch.eye(p.shape[0])).item())
            elif "lora_B" in name:
                terms.append(torch.linalg.matrix_norm(p.T @ p - torch.eye(p.shape[1])).item())
        penalty = sum(terms) / len(terms)
    assert losses[1] - losses[0] == pytest.approx(0.3 * penalty, rel=1e-4)


def test_increlora_importance_is_gradient_times_weight():
    torch.manual_seed(0)
    layer = IncreLoRALinear(torch.nn.Linear(5, 3), alpha=2.0, r_init=2)
    with torch.no_grad():
        layer.inc_e[0].copy_(torch.tensor([0.5, -1.0]))
    x = torch.randn(7, 5)
    for _ in range(2):  # two micro-batches: the gradients add up
        layer(x).square().sum().backward()
    delta = layer.delta_weight().detach()
    grad = 2 * (2 * (layer.base_layer(x) + x @ delta.T)).T @ x  # d/d(dW) of sum(y^2), twice
    expected = (delta * grad).abs().sum().item() / math.sqrt(15)
    assert layer.take_importance() == pytest.approx(expected, rel=1e-4)
    assert layer.take_importance() == 0.0  # reset after reading


def test_increlora_smoothing_by_hand(tiny_model):
    method = IncreLoRA(tiny_model, TINY_TARGETS, 100, 1, 8, 4, 2, 10, 10, 16, 0.0, 0.85, 0.85, 0.1)
    for value in (1.0, 3.0, 2.0):  # the raw importance I of every matrix at three steps
        for layer in method.layers:
            layer.take_importance = lambda value=value: value
        method.update_importance()
    # I_bar: 0.15*1 = 0.15 ; 0.85*0.15 + 0.15*3 = 0.5775 ; 0.85*0.5775 + 0.15*2 = 0.790875
    # U_bar: 0.15*|1 - 0.15| = 0.1275 ; 0.85*0.1275 + 0.15*|3 - 0.5775| = 0.47175 ;
    #        0.85*0.47175 + 0.15*|2 - 0.790875| = 0.58235625
    assert method.ema_importance == [pytest.approx(0.790875)] * 12
    assert method.ema_uncertainty == [pytest.approx(0.58235625)] * 12


def test_increlora_growth_reserve_and_exact_budget(tiny_model, tiny_batch):
    method = IncreLoRA(tiny_model, TINY_TARGETS, 100, 1, 8, 4, 5, 2, 2, 16, 0.0, 0.85, 0.85, 0.1)
    set_trainable(method.model, ["classifier", "pooler"])
    optimizer = torch.optim.AdamW([p for p in method.model.parameters() if p.requires_grad], lr=1e-2)
    reserve_a = [layer.inc_a[-1].detach().clone() for layer in method.layers]
    ranks_before = method.rank_pattern()
    grown = None
    for step in range(5):  # growth events at t > 2 with t % 2 == 0: the first is step 4
        (method.model(**tiny_batch).loss + method.regularizer()).backward()
        new = method.before_optimizer_step(step)
        if new:
            grown = method.growth_history[-1]["grown"]
            optimizer.add_param_group({"params": new})
            break
        optimizer.step(); optimizer.zero_grad()
    # Steps 0-3 trained the reserves' A while their E stayed frozen at 1e-5.
    assert all(not torch.equal(a, layer.inc_a[1].detach()) for a, layer in zip(reserve_a, method.layers))
    assert len(grown) == 5 and all(v == 4 for v in grown.values())
    for name, layer in zip(method.layer_names, method.layers):
        activated = name in grown
        assert layer.ranknum == ranks_before[name] + (4 if activated else 0)
        assert len(layer.inc_e) == (3 if activated else 2)  # initial unit, [switched-on reserve], new reserve
        assert all(e.requires_grad for e in layer.inc_e[:-1]) and not layer.inc_e[-1].requires_grad
    for step in range(6, 40, 2):
        method.before_optimizer_step(step)
    assert method.budget - method.remaining == 96 and method.remaining == 0  # exact: 84 = 21 grants of 4
    assert all(layer.inc_e[-1].abs().sum() == 0 for layer in method.layers)  # reserves retired


def test_increlora_official_mode_can_overshoot(tiny_model):
    # top_h = 12 > remaining // 4 at the end: the official selection grows min(12, remaining ranks) matrices.
    method = IncreLoRA(tiny_model, TINY_TARGETS, 100, 1, 8, 4, 12, 0, 1, 16, 0.0, 0.85, 0.85, 0.1,
                       budget_exact=False)
    for step in range(1, 5):
        method.before_optimizer_step(step)
    assert method.remaining < 0  # 84 to hand out: 48 + 48 = 96 granted after two events
    assert [e["budget_after"] for e in method.growth_history] == [36, -12]


def test_tlora_projections_stay_fixed(tiny_model, tiny_batch):
    method = TLoRA(tiny_model, TINY_TARGETS, r=4, dropout=0.0, seed=0)
    layers = [m for m in method.model.modules() if hasattr(m, "a_rand")]
    frozen = [(m.a_rand.clone(), m.c_rand.clone()) for m in layers]
    assert count_trainable(method.model) == len(layers) * (4 * 4 + 1)
    optimizer = torch.optim.AdamW([p for p in method.model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        method.model(**tiny_batch).loss.backward()
        optimizer.step(); optimizer.zero_grad()
    assert all(torch.equal(a, m.a_rand) and torch.equal(c, m.c_rand) for (a, c), m in zip(frozen, layers))
    assert any(m.tlora_k.abs().sum() > 0 for m in layers)


def test_increlora_factorised_forward_equals_materialised():
    torch.manual_seed(0)
    layer = IncreLoRALinear(torch.nn.Linear(6, 4), alpha=8.0, r_init=3)
    layer.add_reserve(2)
    with torch.no_grad():
        layer.inc_e[0].normal_()
    x = torch.randn(5, 6)
    tracked = layer(x)  # training mode, importance tracked: dW materialised
    layer.retire_reserve()
    with torch.no_grad():
        layer.inc_e[1].fill_(1e-5)  # undo the retirement's zeroing to compare the same weights
    factorised = layer(x)
    torch.testing.assert_close(factorised, tracked, atol=1e-6, rtol=1e-5)
    factorised.sum().backward()
    assert layer.delta_grad is None  # the factorised path records no gradient of dW


def test_increlora_growth_records_each_matrix_change_as_the_dense_update_gives_it(tiny_model, tiny_batch):
    method = IncreLoRA(tiny_model, TINY_TARGETS, 100, 1, 8, 4, 5, 2, 2, 16, 0.0, 0.85, 0.85, 0.1)
    optimizer = torch.optim.AdamW([p for p in method.model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(5):
        (method.model(**tiny_batch).loss + method.regularizer()).backward()
        dense = {n: layer.delta_weight().detach().double() for n, layer in zip(method.layer_names, method.layers)}
        if method.before_optimizer_step(step):
            break
        optimizer.step(); optimizer.zero_grad()
    changes = method.growth_history[-1]["delta_w_change"]
    assert set(changes) == set(method.growth_history[-1]["grown"])
    for name, layer in zip(method.layer_names, method.layers):
        if name in changes:
            after = layer.delta_weight().detach().double()
            assert changes[name] == pytest.approx(((after - dense[name]).norm() / dense[name].norm()).item(), rel=1e-4)
            assert changes[name] == pytest.approx(4 / 5, abs=0.05)  # ranknum 1 -> 5: the rescale keeps 1/5
