"""TriAdaptModel on a tiny DeBERTa: injection, importance-driven growth, optimizer and scheduler
registration, the orthogonal regulariser, save/load at grown ranks, and merging."""

import pytest
import torch

from runner.models import set_trainable
from runner.optim import add_param_group, build_optimizer
from triadapt import TriAdaptConfig, TriAdaptModel

TARGETS = ["attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj",
           "attention.output.dense", "intermediate.dense", "output.dense"]


def make(model, **kw):
    config = TriAdaptConfig(**{**dict(target_modules=TARGETS, total_steps=12, r_ref=4, delta_r=2, t0=2, interval=2,
                                      alpha=16.0), **kw})
    return TriAdaptModel(model, config)


def test_injects_the_six_matrices_per_layer(tiny_model):
    tri = make(tiny_model)
    assert len(tri.layer_names) == 12  # 2 layers x 6; the pooler's dense is not adapted
    assert not any("pooler" in n for n in tri.layer_names)
    trainable = {n for n, p in tri.named_parameters() if p.requires_grad}
    assert trainable and all(".tri_" in n for n in trainable)


def test_growth_follows_scores_and_budget(tiny_model):
    tri = make(tiny_model, mode="linear")
    assert tri.grow(3) == []  # not an event step
    with torch.no_grad():  # make one matrix's D change the most
        tri.layers()[5].tri_l[0].add_(1.0)
    new = tri.grow(4)
    event = tri.growth_history[-1]
    # R(1) = (4-1)*12 = 36; alpha = 0.2, k = ceil(7.2) = 8 matrices, 2 ranks each.
    assert event["k"] == 8 and event["budget_before"] == 36 and event["budget_after"] == 20
    assert tri.layer_names[5] in event["grown"] and len(event["grown"]) == 8
    assert len(new) == 8 * 4
    assert tri.config.growth_blocks[tri.layer_names[5]] == [1, 2]
    for t in range(5, 12):
        tri.grow(t)
    assert tri.total_rank() == 4 * 12 and tri.remaining == 0


def test_orthogonal_regularizer_value(tiny_model):
    tri = make(tiny_model, orth_reg_weight=0.5)
    expected = []
    for layer in tri.layers():
        A, B = layer.factor_a().detach(), layer.factor_b().detach()  # rank 1: A A^T and B^T B are 1x1
        expected += [abs((A @ A.T).item() - 1.0), abs((B.T @ B).item() - 1.0)]
    assert tri.orthogonal_regularizer().item() == pytest.approx(0.5 * sum(expected) / len(expected), rel=1e-6)
    tri.config.orth_squared = True
    assert tri.orthogonal_regularizer().item() == pytest.approx(0.5 * sum(e * e for e in expected) / len(expected),
                                                                rel=1e-5)


def test_optimizer_and_scheduler_after_growth(tiny_model, tiny_batch):
    tri = make(tiny_model)
    optimizer, scheduler = build_optimizer(tri, lr=1e-2, weight_decay=0.01, warmup=2, total=12)
    for step in range(4):
        tri(**tiny_batch).loss.backward()
        new = tri.grow(step)
        assert new == []
        optimizer.step(); scheduler.step(); optimizer.zero_grad()
    old = [p for g in optimizer.param_groups for p in g["params"]]
    exp_avg = [optimizer.state[p]["exp_avg"].clone() for p in old]
    tri(**tiny_batch).loss.backward()
    new = tri.grow(4)
    assert new
    add_param_group(optimizer, scheduler, new, step=4, weight_decay=0.01, warmup=2, total=12)
    assert all(torch.equal(optimizer.state[p]["exp_avg"], e) for p, e in zip(old, exp_avg))
    optimizer.step(); scheduler.step(); optimizer.zero_grad()
    # New group: warm-up of 2 steps from its birth at step 4, then linear decay to 0 at step 12.
    assert optimizer.param_groups[-1]["lr"] == pytest.approx(1e-2 * 1 / 2)  # step 5
    before = [p.detach().clone() for p in new]
    tri(**tiny_batch).loss.backward()
    optimizer.step(); scheduler.step(); optimizer.zero_grad()
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, new))  # new parameters moved
    assert optimizer.param_groups[-1]["lr"] == pytest.approx(1e-2 * (12 - 6) / (12 - 4 - 2))  # step 6: peak
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * (12 - 6) / (12 - 2))  # global schedule
    scheduler.step()
    assert optimizer.param_groups[-1]["lr"] == pytest.approx(1e-2 * 5 / 6)


def test_save_after_growth_reloads_identical_logits(tiny_model, tiny_batch, tmp_path):
    from runner.models import load_model
    from tests.conftest import compose_config

    tri = make(tiny_model)
    set_trainable(tri, ["classifier", "pooler"])
    for t in (4, 6):
        tri.grow(t)
    with torch.no_grad():
        for p in tri.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    tri.eval()
    logits = tri(**tiny_batch).logits
    tri.save_pretrained(tmp_path)
    fresh = load_model(compose_config("model=tiny_deberta").model, "classification", 2, cls_dropout=0.0, seed=0)  # same base weights
    loaded = TriAdaptModel.from_pretrained(fresh, tmp_path).eval()
    assert loaded.rank_pattern() == tri.rank_pattern() and len(set(tri.rank_pattern().values())) > 1
    assert torch.equal(loaded(**tiny_batch).logits, logits)  # max |delta| = 0


def test_merged_logits_equal_unmerged(tiny_model, tiny_batch):
    tri = make(tiny_model)
    tri.grow(4)
    with torch.no_grad():
        for n, p in tri.named_parameters():
            if ".tri_b" in n:
                p.normal_(0, 0.5)
    tri.eval()
    unmerged = tri(**tiny_batch).logits
    tri.merge()
    torch.testing.assert_close(tri(**tiny_batch).logits, unmerged, atol=1e-5, rtol=0)
    with pytest.raises(RuntimeError, match="merged"):
        tri.grow(6)
    tri.unmerge()
    torch.testing.assert_close(tri(**tiny_batch).logits, unmerged, atol=1e-5, rtol=0)


def test_checkpoint_with_wrong_rank_pattern_is_refused(tiny_model, tmp_path):
    from runner.models import load_model
    from tests.conftest import compose_config

    tri = make(tiny_model)
    tri.grow(4)
    tri.save_pretrained(tmp_path)
    state_file = tmp_path / "adapter_config.json"
    import json
    saved = json.loads(state_file.read_text())
    name = next(iter(saved["growth_blocks"]))
    saved["growth_blocks"][name][-1] += 1
    state_file.write_text(json.dumps(saved))
    fresh = load_model(compose_config("model=tiny_deberta").model, "classification", 2, cls_dropout=0.0, seed=0)
    with pytest.raises(ValueError, match="does not fit"):
        TriAdaptModel.from_pretrained(fresh, tmp_path)


@pytest.mark.parametrize("bad, message", [
    (dict(r_ref=0), "r_ref=0"), (dict(delta_r=0), "delta_r=0"), (dict(interval=0), "interval=0"),
    (dict(dropout=1.0), r"dropout=1.0.*\[0, 1\)"), (dict(mode="cubic"), "mode='cubic'.*linear"),
    (dict(normalization="l1"), "normalization='l1'.*sqrt_r"),
])
def test_config_rejects_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        TriAdaptConfig(target_modules=TARGETS, **bad)


@pytest.mark.parametrize("bad, message", [
    (dict(r_ref="8"), "r_ref='8' must be an integer"), (dict(total_steps=10.0), "total_steps=10.0 must be an integer"),
    (dict(alpha="16"), "alpha='16' must be a number"), (dict(budget_exact=1), "budget_exact=1 must be True or False"),
    (dict(target_modules="query_proj"), "target_modules='query_proj' must be a list of module-name suffixes"),
])
def test_config_names_a_value_of_the_wrong_type(bad, message):
    with pytest.raises(TypeError, match=message):
        TriAdaptConfig(**{"target_modules": TARGETS, **bad})


@pytest.mark.parametrize("settings, message", [(dict(), r"total_steps=0: set it to the run's number of optimizer steps"),
                                               (dict(total_steps=150, t0=100, interval=100), "first event would be at step 200")])
def test_growing_under_a_schedule_with_no_event_says_so_at_the_first_call(tiny_model, settings, message):
    """A library user who never sets total_steps, or whose t0 and interval leave no event, used to grow nothing silently."""
    tri = TriAdaptModel(tiny_model, TriAdaptConfig(target_modules=TARGETS, **settings))
    with pytest.raises(ValueError, match=message):
        tri.grow(0)
    assert tri.total_rank() == 12


def test_wrapping_twice_and_loading_what_is_not_a_triadapt_adapter_are_named(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model

    from runner.models import load_model
    from tests.conftest import compose_config

    def fresh():
        return load_model(compose_config("model=tiny_deberta").model, "classification", 2, cls_dropout=0.0, seed=0)

    tri = make(tiny_model)
    with pytest.raises(ValueError, match="already holds TriAdaptLoRA layers: wrap the base model once"):
        TriAdaptModel(tri.model, tri.config)
    with pytest.raises(FileNotFoundError, match=f"no TriAdaptLoRA adapter at {tmp_path / 'none'}: adapter_config.json"):
        TriAdaptModel.from_pretrained(fresh(), tmp_path / "none")
    get_peft_model(fresh(), LoraConfig(r=4, target_modules=["query_proj"])).save_pretrained(tmp_path / "peft")
    with pytest.raises(ValueError, match=r"is not a TriAdaptLoRA config: .*PEFT adapter \(peft_type='LORA'\): load it "
                                         r"with peft.PeftModel.from_pretrained"):
        TriAdaptModel.from_pretrained(fresh(), tmp_path / "peft")


def test_schedule_that_cannot_grow_fails_at_start():
    config = TriAdaptConfig(target_modules=TARGETS, total_steps=150, t0=100, interval=100)
    with pytest.raises(ValueError, match="T=150.*first event would be at step 200"):
        config.check_schedule()


@pytest.mark.parametrize("mode", ["linear", "nonlinear", "fixed_k"])
def test_model_growth_follows_the_simulated_schedule(tiny_model, mode):
    from triadapt import schedule

    tri = make(tiny_model, mode=mode, fixed_k=5, total_steps=14)
    for t in range(14):
        tri.grow(t)
    expected = schedule.simulate(mode, M=12, r_init=1, r_ref=4, delta_r=2, t0=2, interval=2, T=14, fixed_k=5)
    assert [(e["step"], e["k"], e["budget_before"], e["budget_after"]) for e in tri.growth_history] == \
        [(e.step, e.k, e.remaining_before, e.remaining_after) for e in expected]
    assert all(sum(e["grown"].values()) == e["budget_before"] - e["budget_after"] for e in tri.growth_history)


@pytest.mark.parametrize("share", [False, True])
def test_shared_dropout_masks_only_across_matrices_reading_one_input(tiny_model, tiny_batch, share):
    tri = make(tiny_model, dropout=0.3, share_dropout_masks=share)
    calls = []  # (input, output) of every adapter's dropout call, in call order
    for module in {id(layer.dropout): layer.dropout for layer in tri.layers()}.values():
        module.register_forward_hook(lambda module, inputs, out: calls.append((inputs[0], out)))
    tri.train()
    tri(**tiny_batch)
    # DeBERTa also projects its relative-position embeddings with Wq and Wk: 8 calls per layer
    inputs, masks = {id(x) for x, _ in calls}, {id(out) for _, out in calls}
    assert len(calls) == 16 and len(inputs) < len(calls)  # Wq, Wk, Wv read one hidden-states tensor
    assert len(masks) == (len(inputs) if share else len(calls))
    tri(**tiny_batch)  # the next forward draws new masks
    assert not torch.equal(calls[16][1], calls[0][1])


def test_growth_records_each_matrix_change_as_the_dense_update_gives_it(tiny_model):
    """delta_w_change against ||dW_after - dW_before|| / ||dW_before|| from the d x n matrices themselves."""
    tri = make(tiny_model)
    with torch.no_grad():  # a trained-looking adapter: B no longer tiny
        for n, p in tri.named_parameters():
            if ".tri_" in n:
                p.add_(0.3 * torch.randn_like(p))
    dense_before = {n: tri.model.get_submodule(n).delta_weight().detach().double() for n in tri.layer_names}
    tri.grow(4)
    event = tri.growth_history[-1]
    assert set(event["delta_w_change"]) == set(event["grown"])
    for name, change in event["delta_w_change"].items():
        after = tri.model.get_submodule(name).delta_weight().detach().double()
        expected = ((after - dense_before[name]).norm() / dense_before[name].norm()).item()
        assert change == pytest.approx(expected, rel=1e-4)
        # rank 1 -> 3: the learned update is rescaled by 1/3, so it loses about 2/3 of its norm, plus the new units
        assert change == pytest.approx(2 / 3, abs=0.2)


def test_relative_change_by_hand():
    from triadapt.perturbation import frobenius_norm, relative_change

    b, m, a = torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0]]), torch.tensor([[1.0, 0.0, 2.0]])
    assert frobenius_norm(b, m, a) == pytest.approx(3 * 5 ** 0.5 * 5 ** 0.5)  # |b| |a| |m| = sqrt5 * sqrt5 * 3
    halved = (b, m / 2, a)  # the rescale alone: half the update is gone
    assert relative_change((b, m, a), halved) == pytest.approx(0.5)
    grown = (torch.cat([b, torch.zeros(2, 1)], 1), torch.block_diag(m, torch.ones(1, 1)), torch.cat([a, a]))
    assert relative_change((b, m, a), grown) == 0.0  # a new unit with B = 0 changes nothing
    assert relative_change((b, 0 * m, a), grown) is None


def test_reload_continues_growth_from_the_last_events_snapshot(tiny_model, tmp_path):
    """from_pretrained restores the importance baseline (Eq. 11's previous norms), not the random initial one."""
    from runner.models import load_model
    from tests.conftest import compose_config

    tri = make(tiny_model)
    with torch.no_grad():
        for n, p in tri.named_parameters():
            if ".tri_l" in n or ".tri_u" in n:
                p.add_(torch.randn_like(p))
    tri.grow(4)
    with torch.no_grad():  # training after the event moves every D
        for n, p in tri.named_parameters():
            if ".tri_l" in n:
                p.mul_(1.5)
    tri.save_pretrained(tmp_path)
    fresh = load_model(compose_config("model=tiny_deberta").model, "classification", 2, cls_dropout=0.0, seed=0)
    loaded = TriAdaptModel.from_pretrained(fresh, tmp_path)
    assert loaded.previous_norms == pytest.approx(tri.previous_norms, rel=1e-12)
    assert loaded.growth_history == tri.growth_history
    tri.grow(6), loaded.grow(6)
    assert loaded.growth_history[-1]["grown"] == tri.growth_history[-1]["grown"]
    assert loaded.growth_history[-1]["scores"] == pytest.approx(tri.growth_history[-1]["scores"])


def test_function_preserving_growth_keeps_the_logits_and_every_new_parameter_learns(tiny_model, tiny_batch, tmp_path):
    """Ours (issue 25): logits equal before and after an event, new parameters with gradient after one step, and a
    save -> load after growth gives the same logits."""
    from runner.models import load_model
    from tests.conftest import compose_config

    tri = make(tiny_model, preserve_function_at_growth=True, dropout=0.0)
    set_trainable(tri, ["classifier", "pooler"])
    with torch.no_grad():  # a trained-looking adapter
        for n, p in tri.named_parameters():
            if ".tri_" in n:
                p.add_(0.3 * torch.randn_like(p))
    tri.eval()
    before = tri(**tiny_batch).logits
    new = tri.grow(4)
    event = tri.growth_history[-1]
    torch.testing.assert_close(tri(**tiny_batch).logits, before, atol=1e-6, rtol=0)
    assert all(change < 1e-5 for change in event["delta_w_change"].values())  # the measurement agrees
    optimizer = torch.optim.AdamW([p for p in tri.parameters() if p.requires_grad], lr=1e-2)
    tri.train()
    for _ in range(2):  # U's new entries have gradient at once; the first step moves B's new columns, so by the
        # second every new tensor has gradient
        optimizer.zero_grad()
        tri(**tiny_batch).loss.backward()
        optimizer.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in new)
    tri.eval()
    logits = tri(**tiny_batch).logits
    tri.save_pretrained(tmp_path)
    fresh = load_model(compose_config("model=tiny_deberta").model, "classification", 2, cls_dropout=0.0, seed=0)
    assert torch.equal(TriAdaptModel.from_pretrained(fresh, tmp_path).eval()(**tiny_batch).logits, logits)


def test_the_papers_growth_changes_the_logits(tiny_model, tiny_batch):
    """The contrast: the same event without the option moves the logits (so the test above can fail)."""
    tri = make(tiny_model, dropout=0.0)
    with torch.no_grad():
        for n, p in tri.named_parameters():
            if ".tri_" in n:
                p.add_(0.3 * torch.randn_like(p))
    tri.eval()
    before = tri(**tiny_batch).logits
    tri.grow(4)
    assert (tri(**tiny_batch).logits - before).abs().max() > 1e-3


def test_a_capped_newborn_group_never_trains_hotter_than_the_run():
    """own_warmup_capped (ours): min(own warm-up then decay, the run's schedule). Warm-up 2, T = 12, birth at 4:
    own 1/2, 1, 5/6 at steps 5-7 against the run's 7/10, 6/10, 5/10 -> 1/2, 6/10, 5/10; own_warmup keeps 1, 5/6."""
    from torch import nn

    rates = {}
    for schedule in ("own_warmup", "own_warmup_capped"):
        old, new = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        optimizer, scheduler = build_optimizer(nn.ParameterList([old]), lr=1.0, weight_decay=0.0, warmup=2, total=12)
        for _ in range(4):
            optimizer.step(); scheduler.step()
        add_param_group(optimizer, scheduler, [new], step=4, weight_decay=0.0, warmup=2, total=12, schedule=schedule)
        rates[schedule] = []
        for _ in range(3):
            optimizer.step(); scheduler.step()
            rates[schedule] += [optimizer.param_groups[0]["lr"], optimizer.param_groups[-1]["lr"]]
    assert rates["own_warmup_capped"] == pytest.approx([0.7, 0.5, 0.6, 0.6, 0.5, 0.5])
    assert rates["own_warmup"][1::2] == pytest.approx([0.5, 1.0, 5 / 6])


def test_foreach_adamw_updates_bit_identically_to_the_per_tensor_loop_across_growth(tiny_model, tiny_batch):
    """build_optimizer's foreach AdamW (the default since records exist) must not move any record: after steps
    with decay groups, growth and a new group, every parameter equals the per-tensor loop's bit for bit; the fused
    kernel (train.fused_adamw=true) agrees to float error only."""
    import copy

    from torch.optim import AdamW

    results = {}
    for kind in ("loop", "foreach", "fused"):
        torch.manual_seed(0)  # the same dropout masks in every run
        tri = make(copy.deepcopy(tiny_model))
        optimizer, scheduler = build_optimizer(tri, lr=1e-2, weight_decay=0.01, warmup=2, total=12, fused=kind == "fused")
        if kind == "loop":  # the per-tensor implementation, same groups
            groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
            optimizer = AdamW(groups, lr=1e-2, foreach=False)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, scheduler.lr_lambdas[0])
        for step in range(6):
            tri(**tiny_batch).loss.backward()
            new = tri.grow(step)
            if new:
                add_param_group(optimizer, scheduler, new, step=step, weight_decay=0.01, warmup=2, total=12)
            optimizer.step(); scheduler.step(); optimizer.zero_grad()
        results[kind] = [p.detach().clone() for p in tri.parameters() if p.requires_grad]
    assert len(results["loop"]) > 4 * len(tri.layers())  # grown: more than one block per factor
    assert all(torch.equal(a, b) for a, b in zip(results["loop"], results["foreach"]))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(results["loop"], results["fused"]))
