"""TriAdaptLoRA inside the Hugging Face Trainer: growth at the scheduled steps, new parameters registered with the
Trainer's optimizer and schedule, the regulariser in the training loss, and a clear error for a wrong T."""

import pytest
import torch
import transformers

from triadapt import TriAdaptConfig, TriAdaptModel
from triadapt.schedule import growth_steps
from triadapt.trainer import TriAdaptTrainer


def tiny_classifier():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                     num_attention_heads=4, num_labels=2, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    return transformers.AutoModelForSequenceClassification.from_config(config)


def dataset(n=48):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 64, (n, 8), generator=g)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": int(ids[i, 0] % 2)}
            for i in range(n)]


def arguments(tmp_path, steps):
    return transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=4,
                                          learning_rate=1e-2, lr_scheduler_type="linear", warmup_steps=2,
                                          report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                                          seed=0, disable_tqdm=True)


class LearningRates(transformers.TrainerCallback):
    """Every group's learning rate as the optimizer step is taken."""

    def __init__(self):
        self.seen = []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.seen.append([group["lr"] for group in optimizer.param_groups])


def test_growth_events_happen_at_the_scheduled_steps_and_new_parameters_train(tmp_path):
    tri = TriAdaptModel(tiny_classifier(), TriAdaptConfig(r_ref=4, delta_r=2, total_steps=12, t0=2, interval=2))
    tri.model.classifier.requires_grad_(True)
    rates, births = LearningRates(), {}
    original_grow = tri.grow

    def grow(step):  # keep a copy of each event's new parameters as drawn
        new = original_grow(step)
        births.update({id(p): p.detach().clone() for p in new})
        return new

    tri.grow = grow
    trainer = TriAdaptTrainer(tri, args=arguments(tmp_path, 12), train_dataset=dataset(), callbacks=[rates])
    trainer.train()
    events = [e["step"] for e in tri.growth_history]
    assert events == growth_steps(2, 2, 12)[:len(events)] and len(events) >= 2  # 4, 6, ... until the budget is spent
    assert tri.total_rank() == 4 * len(tri.layer_names)
    groups = trainer.optimizer.param_groups
    registered = {id(p) for g in groups for p in g["params"]}
    assert all(id(p) in registered for n, p in tri.named_parameters() if ".tri_" in n)
    assert len(groups) == 2 + len(events)  # the Trainer's two groups (decay, no decay), then one per event
    for step, lrs in enumerate(rates.seen):  # each new group runs at the schedule's rate from the step it is born
        born = [g for g, event in enumerate(events) if event <= step]
        assert all(lrs[2 + g] == pytest.approx(lrs[0]) for g in born) and len(lrs) == 2 + len(born)
    # every parameter born at an event was then trained by the Trainer's optimizer
    trained = [p for g in groups[2:] for p in g["params"]]
    assert trained and all(not torch.equal(p.detach(), births[id(p)]) for p in trained)


def test_the_regulariser_enters_the_training_loss(tmp_path):
    tri = TriAdaptModel(tiny_classifier(), TriAdaptConfig(r_ref=4, delta_r=2, total_steps=12, t0=2, interval=2,
                                                          orth_reg_weight=5.0))
    trainer = TriAdaptTrainer(tri, args=arguments(tmp_path, 12), train_dataset=dataset())
    batch = transformers.default_data_collator(dataset()[:4])
    tri.model.train()
    with torch.no_grad():
        plain = tri.model(**batch).loss
        with_reg = trainer.compute_loss(tri.model, batch)
    assert with_reg.item() == pytest.approx(plain.item() + tri.orthogonal_regularizer().item(), rel=1e-6)
    assert tri.orthogonal_regularizer().item() > 0.1


def test_a_trainer_with_another_step_count_is_refused(tmp_path):
    tri = TriAdaptModel(tiny_classifier(), TriAdaptConfig(r_ref=4, delta_r=2, total_steps=50, t0=2, interval=2))
    trainer = TriAdaptTrainer(tri, args=arguments(tmp_path, 12), train_dataset=dataset())
    with pytest.raises(ValueError, match="total_steps=50 but the Trainer runs 12"):
        trainer.train()


class Losses(transformers.TrainerCallback):
    def __init__(self):
        self.seen = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.seen.append(logs["loss"])


def test_the_preallocated_layout_trains_in_the_trainer_as_the_growing_one(tmp_path):
    """Same data, same base, same growth: the Trainer's logged losses and the final update agree, and the preallocated
    run's optimizer never gains a group."""
    runs = {}
    for layout in ("growing", "preallocated"):
        steps = 12
        config = TriAdaptConfig(r_ref=4, delta_r=2, total_steps=steps, t0=2, interval=2, layout=layout,
                                **({"capacity": 12} if layout == "preallocated" else {}))
        tri = TriAdaptModel(tiny_classifier(), config)
        tri.model.classifier.requires_grad_(True)
        args = transformers.TrainingArguments(output_dir=str(tmp_path / layout), max_steps=steps,
                                              per_device_train_batch_size=4, learning_rate=1e-2,
                                              lr_scheduler_type="linear", warmup_steps=2, report_to=[],
                                              save_strategy="no", logging_steps=1, use_cpu=True, seed=0,
                                              disable_tqdm=True, optim="adamw_torch")
        losses = Losses()
        trainer = TriAdaptTrainer(tri, args=args, train_dataset=dataset(), callbacks=[losses])
        trainer.train()
        runs[layout] = (tri, losses.seen, len(trainer.optimizer.param_groups))
    (grown, grown_losses, _), (fixed, fixed_losses, groups) = runs["growing"], runs["preallocated"]
    assert len(grown.growth_history) >= 3 and fixed.rank_pattern() == grown.rank_pattern()
    assert fixed_losses == pytest.approx(grown_losses, abs=1e-5) and groups == 2
    for a, b in zip(fixed.layers(), grown.layers()):
        torch.testing.assert_close(a.delta_weight(), b.delta_weight(), atol=1e-5, rtol=1e-4)
