"""The preallocated layout (issue 47) computes what the growing layout computes, optimizer included: the same losses
step by step, the same growth decisions, the same final update, with no parameter ever added."""

import copy

import pytest
import torch
from torch import nn

from runner.optim import add_param_group, build_optimizer, warmup_then_decay
from triadapt import TriAdaptConfig, TriAdaptModel
from triadapt.optim import UnitAdamW

T, WARMUP, LR, WD = 24, 4, 5e-3, 0.01


def base_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


def batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 12, generator=g), torch.randn(8, 3, generator=g)) for _ in range(T)]


def config(layout: str) -> TriAdaptConfig:
    return TriAdaptConfig(target_modules=["0", "2", "4"], r_ref=6, delta_r=2, total_steps=T, t0=3, interval=4,
                          alpha=8.0, orth_reg_weight=0.1, layout=layout, seed=3,
                          capacity=12 if layout == "preallocated" else 0)  # room for every event on every matrix


def train(layout: str, lr_factor=None, plain_adamw: bool = False):
    """The runner's loop in miniature: loss + Eq. 10, backward, clip, grow, step, schedule."""
    tri = TriAdaptModel(base_model(), config(layout))
    if layout == "growing" or plain_adamw:  # plain_adamw: one Adam clock and schedule for every unit of a tensor
        optimizer, scheduler = build_optimizer(tri, LR, WD, WARMUP, T, fused=False)
    else:
        own = lr_factor or (lambda s, birth: warmup_then_decay(WARMUP, T, start=birth)(s))
        optimizer = UnitAdamW([p for p in tri.parameters() if p.requires_grad], tri.layers(), lr=LR, lr_factor=own,
                              betas=(0.9, 0.999), eps=1e-8, weight_decay=WD, new_weight_decay=WD)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay(WARMUP, T))
    parameters_at_start = [id(p) for p in tri.parameters()]
    return tri, training_loop(tri, tri, optimizer, scheduler), parameters_at_start


def training_loop(tri, forward, optimizer, scheduler, before_step=lambda step: None) -> list[float]:
    """Each step: loss + Eq. 10 through ``forward``, backward, clip, grow (a new group if any), step, schedule."""
    losses = []
    for step, (x, y) in enumerate(batches()):
        before_step(step)
        loss = nn.functional.mse_loss(forward(x), y) + tri.orthogonal_regularizer()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
        new = tri.grow(step)
        if new:
            add_param_group(optimizer, scheduler, new, step, WD, WARMUP, T)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_preallocated_equals_growing_step_by_step():
    grown, grown_losses, _ = train("growing")
    fixed, fixed_losses, at_start = train("preallocated")
    assert len(grown.growth_history) >= 3
    assert [e["grown"] for e in fixed.growth_history] == [e["grown"] for e in grown.growth_history]
    assert fixed.rank_pattern() == grown.rank_pattern()
    assert fixed_losses == pytest.approx(grown_losses, abs=1e-5)
    for a, b in zip(fixed.layers(), grown.layers()):
        torch.testing.assert_close(a.delta_weight(), b.delta_weight(), atol=1e-5, rtol=1e-4)
    assert [id(p) for p in fixed.parameters()] == at_start  # the parameter set never changed


def test_the_check_fails_when_newborn_units_follow_the_wrong_schedule():
    """Newborn units on the run's schedule instead of their own warm-up from birth: the losses part."""
    _, grown_losses, _ = train("growing")
    _, wrong, _ = train("preallocated", lr_factor=lambda s, birth: warmup_then_decay(WARMUP, T)(s))
    assert wrong != pytest.approx(grown_losses, abs=1e-5)


def test_the_check_fails_with_one_adam_clock_for_every_unit():
    """Plain AdamW on the preallocated tensors: newborn units share the old units' step count (no bias correction from
    birth) and schedule; the losses part."""
    _, grown_losses, _ = train("growing")
    _, wrong, _ = train("preallocated", plain_adamw=True)
    assert wrong != pytest.approx(grown_losses, abs=1e-5)


def test_unborn_units_change_nothing_and_stay_untouched():
    tri = TriAdaptModel(base_model(), config("preallocated"))
    layer = tri.layers()[0]
    before = copy.deepcopy(layer.tri_a.detach()[layer.rank:])
    x = torch.randn(4, 12)
    out = tri(x)
    with torch.no_grad():
        layer.tri_a[layer.rank:] += 5.0  # an unborn unit's values do not reach the output
        layer.tri_b[:, layer.rank:] += 5.0
    assert torch.equal(tri(x), out)
    (tri(x) ** 2).sum().backward()
    assert torch.all(layer.tri_a.grad[layer.rank:] == 0) and torch.all(layer.tri_b.grad[:, layer.rank:] == 0)
    assert before.shape[0] == layer.capacity - layer.rank


def test_a_full_capacity_caps_growth_and_says_so():
    settings = dict(target_modules=["0", "2", "4"], r_ref=6, delta_r=2, total_steps=T, t0=3, interval=4,
                    layout="preallocated", capacity=2)
    tri = TriAdaptModel(base_model(), TriAdaptConfig(**settings))
    for step in range(T):
        tri.grow(step)
    assert all(rank <= 2 for rank in tri.rank_pattern().values())
    assert any("capped" in event for event in tri.growth_history)


def test_save_load_merge_and_export_from_the_preallocated_layout(tmp_path):
    """Only the born units are saved, in the growing layout's names: either layout reloads them to the same outputs;
    merging and the PEFT export give the same outputs too."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from triadapt.export import export_peft_lora

    fixed, _, _ = train("preallocated")
    grown, _, _ = train("growing")
    x = torch.randn(5, 12)
    fixed.save_pretrained(tmp_path / "fixed")
    saved = load_file(str(tmp_path / "fixed" / "adapter_model.safetensors"))
    assert set(saved) == set(grown.trainable_state_dict())  # the growing layout's names, born units only
    again = TriAdaptModel.from_pretrained(base_model(), tmp_path / "fixed")
    assert again.config.layout == "preallocated" and again.rank_pattern() == fixed.rank_pattern()
    torch.testing.assert_close(again(x), fixed(x), rtol=0, atol=0)
    config = (tmp_path / "fixed" / "adapter_config.json")
    config.write_text(config.read_text().replace('"preallocated"', '"growing"'))
    as_growing = TriAdaptModel.from_pretrained(base_model(), tmp_path / "fixed")
    assert as_growing.config.layout == "growing"
    torch.testing.assert_close(as_growing(x), fixed(x), atol=1e-6, rtol=0)
    out = fixed(x)
    fixed.merge()
    torch.testing.assert_close(fixed(x), out, atol=1e-5, rtol=0)
    fixed.unmerge()
    export_peft_lora(fixed, tmp_path / "peft")
    peft = PeftModel.from_pretrained(base_model(), tmp_path / "peft")
    torch.testing.assert_close(peft(x), out, atol=1e-5, rtol=0)


def compiled_training(layout: str) -> tuple[list[float], list[float]]:
    """Eager and torch.compile'd training of the same model; recompiling is an error after the first two steps."""
    import torch._dynamo

    def run(compiled: bool) -> list[float]:
        tri = TriAdaptModel(base_model(), config(layout))
        forward = torch.compile(tri, backend="aot_eager") if compiled else tri  # dynamo's guards, no C++ build
        if layout == "growing":
            optimizer, scheduler = build_optimizer(tri, LR, WD, WARMUP, T, fused=False)
        else:
            optimizer = UnitAdamW([p for p in tri.parameters() if p.requires_grad], tri.layers(), lr=LR,
                                  lr_factor=lambda s, birth: warmup_then_decay(WARMUP, T, start=birth)(s),
                                  weight_decay=WD, new_weight_decay=WD)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay(WARMUP, T))
        def forbid_recompiling(step: int) -> None:
            torch._dynamo.config.error_on_recompile = compiled and step >= 2

        try:
            return training_loop(tri, forward, optimizer, scheduler, forbid_recompiling)
        finally:
            torch._dynamo.config.error_on_recompile = False
            torch._dynamo.reset()

    return run(False), run(True)


def test_compiled_training_crosses_growth_events_without_recompiling():
    """The preallocated layout under torch.compile: four growth events, no recompilation after the first steps,
    the eager losses (inductor gave the same here, also without recompiling; this test uses aot_eager to skip its C++
    build). The growing layout recompiles at its first event: the check can fail."""
    eager, compiled = compiled_training("preallocated")
    assert compiled == pytest.approx(eager, abs=1e-6)
    with pytest.raises(Exception, match="[Rr]ecompil"):
        compiled_training("growing")


@pytest.mark.parametrize("layout", ["growing", "preallocated"])
def test_gradient_checkpointing_gives_the_same_gradients_dropout_included(layout):
    """A tiny random Llama with adapter dropout: the recomputed forward draws the same masks (checkpointing keeps the
    RNG state), so every adapter gradient equals the one without checkpointing."""
    import transformers

    calls = []

    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, use_cache=False))
        settings = dict(r_ref=4, delta_r=2, total_steps=10, t0=1, interval=2, dropout=0.1, layout=layout)
        tri = TriAdaptModel(llama, TriAdaptConfig(**settings, **({"capacity": 6} if layout == "preallocated" else {})))
        tri._apply_growth(2, {name: 2 for name in tri.layer_names[::3]})  # grown blocks take part too
        if checkpointing:
            llama.gradient_checkpointing_enable()
        tri.train()
        tri.layers()[0].register_forward_hook(lambda *args: calls.append(checkpointing))
        ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(5))
        torch.manual_seed(7)  # the dropout stream
        tri(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in tri.named_parameters() if p.requires_grad}

    plain, checkpointed = gradients(False), gradients(True)
    assert calls == [False, True, True]  # checkpointing ran the layer again in backward
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)



def _fsdp2_replica(rank: int, init_file: str, out_file: str):
    """One of two FSDP2 processes: the preallocated model sharded with fully_shard, its half of every global batch."""
    import json

    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    tri = TriAdaptModel(base_model(), config("preallocated"))
    fully_shard(tri.model)
    from torch.distributed.tensor import DTensor

    assert isinstance(tri.layers()[0].tri_a, DTensor) and tri.layers()[0].tri_a.to_local().shape[0] == 6  # 12 / 2
    optimizer = UnitAdamW([p for p in tri.parameters() if p.requires_grad], tri.layers(), lr=LR,
                          lr_factor=lambda s, birth: warmup_then_decay(WARMUP, T, start=birth)(s),
                          betas=(0.9, 0.999), eps=1e-8, weight_decay=WD, new_weight_decay=WD)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay(WARMUP, T))
    losses = []
    for step, (x, y) in enumerate(batches()):
        half = slice(4 * rank, 4 * rank + 4)
        loss = nn.functional.mse_loss(tri(x[half]), y[half]) + tri.orthogonal_regularizer()
        loss.backward()  # FSDP2 averages the two halves' gradients: the full batch's
        torch.nn.utils.clip_grad_norm_([p for p in tri.parameters() if p.requires_grad], 1.0)
        tri.grow(step)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        mean = torch.tensor([loss.item()])
        dist.all_reduce(mean)
        losses.append(mean.item() / 2)
    delta = [layer.delta_weight().detach().tolist() for layer in tri.layers()]
    if rank == 0:
        with open(out_file, "w") as f:
            json.dump({"losses": losses, "ranks": tri.rank_pattern(), "delta": delta}, f)
    dist.destroy_process_group()


def test_two_fsdp2_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    """fully_shard over two gloo processes on CPU, with growth: the same rank pattern, the same losses and updates
    as one process that sees each whole batch (the parameters never change, so the sharding is made once)."""
    import json

    import torch.multiprocessing as mp

    mp.spawn(_fsdp2_replica, args=(str(tmp_path / "init"), str(tmp_path / "out.json")), nprocs=2)
    sharded = json.loads((tmp_path / "out.json").read_text())
    single, losses, _ = train("preallocated")
    assert sharded["ranks"] == single.rank_pattern() and len(single.growth_history) >= 3
    assert sharded["losses"] == pytest.approx(losses, abs=1e-5)
    for delta, layer in zip(sharded["delta"], single.layers()):
        torch.testing.assert_close(torch.tensor(delta), layer.delta_weight().detach(), atol=1e-5, rtol=1e-4)


def test_the_runner_trains_the_preallocated_layout_as_the_growing_one(tmp_path, data_dir):
    """Through the runner (tiny DeBERTa, real RTE): the same evaluations, growth events and rank pattern, and the
    optimizer keeps its two groups (nothing is added at an event)."""
    import runner.train
    from tests.test_runner import short_run

    groups = []
    original = runner.train.build_optimizer

    def spy(*args, **kwargs):
        optimizer, scheduler = original(*args, **kwargs)
        groups.append(optimizer.param_groups)
        return optimizer, scheduler

    runner.train.build_optimizer = spy
    try:
        grown, _ = short_run(tmp_path, "method=triadapt_linear", data_dir=data_dir, out="grown")
        fixed, _ = short_run(tmp_path, "method=triadapt_linear", "+method.layout=preallocated", "+method.capacity=25",
                             data_dir=data_dir, out="fixed")
    finally:
        runner.train.build_optimizer = original
    assert fixed["method_state"]["rank_pattern"] == grown["method_state"]["rank_pattern"]
    assert [e["step"] for e in fixed["method_state"]["growth_history"]] == \
        [e["step"] for e in grown["method_state"]["growth_history"]] != []
    for a, b in zip(fixed["evaluations"], grown["evaluations"]):
        assert a["metrics"]["dev"] == pytest.approx(b["metrics"]["dev"], abs=1e-6)
    assert len(groups[1]) == 2 and len(groups[0]) > 2  # the growing layout added a group per event
