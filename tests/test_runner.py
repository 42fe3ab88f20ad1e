"""The shared loop end to end on real RTE data with small models: hook order, records, determinism,
and TriAdaptLoRA's growth through the runner."""

import json

import pytest
import torch

import runner.optim
import runner.train
from runner import records
from baselines.method import Method
from tests.conftest import compose_config

SHORT = ["train.max_steps=12", "train.batch_size=8", "task.max_seq_length=64", "train.eval_batch_size=128"]


def short_run(tmp_path, *overrides, data_dir, out="out"):
    cfg = compose_config("model=tiny_deberta", "task=rte", f"data.dir={data_dir}",
                         f"results_dir={tmp_path / 'results'}", *SHORT, *overrides)
    return runner.train.run(cfg, tmp_path / out)


def test_hooks_are_called_in_the_documented_order(tmp_path, data_dir, monkeypatch):
    calls = []

    class Recording(Method):
        def regularizer(self):
            calls.append("regularizer")
            return None

        def before_optimizer_step(self, step):
            calls.append(f"before:{step}")
            return []

        def after_optimizer_step(self, step):
            calls.append(f"after:{step}")

    class RecordingAdamW(torch.optim.AdamW):
        def step(self, closure=None):
            calls.append("optimizer.step")
            return super().step(closure)

        def zero_grad(self, set_to_none=True):
            calls.append("zero_grad")
            return super().zero_grad(set_to_none)

    monkeypatch.setattr(runner.train, "build_method", lambda cfg, model, ctx: Recording(model))
    monkeypatch.setattr(runner.optim, "AdamW", RecordingAdamW)
    short_run(tmp_path, "train.max_steps=2", "train.grad_accum=2", data_dir=data_dir)
    one_step = ["regularizer", "regularizer", "before:{s}", "optimizer.step", "after:{s}", "zero_grad"]
    assert calls == [c.format(s=s) for s in (0, 1) for c in one_step]


def test_record_schema_and_full_dev_set(tmp_path, data_dir):
    record, path = short_run(tmp_path, "method=lora", data_dir=data_dir)
    saved = json.loads(path.read_text())
    assert saved == json.loads(json.dumps(record))
    for field in records.REQUIRED_FIELDS:
        assert field in saved
    assert saved["data"]["eval_examples"] == {"dev": 277} and saved["steps"] == 12
    assert saved["config"]["method"]["name"] == "lora" and saved["git"]["commit"]
    assert saved["packages"]["torch"].startswith("2.") and saved["machine"]["cpus"] >= 1
    assert saved["best"]["main"] == max(e["main"] for e in saved["evaluations"])
    assert (tmp_path / "out" / "log.csv").read_text().count("\n") == 13  # header + one row per step


def test_same_seed_same_metrics_and_no_overwrite(tmp_path, data_dir):
    first, p1 = short_run(tmp_path, "method=triadapt_linear", data_dir=data_dir)
    second, p2 = short_run(tmp_path, "method=triadapt_linear", data_dir=data_dir, out="out2")
    assert p1 != p2 and p1.exists() and p2.exists()  # a second record never replaces the first
    differing = {k for k in first if first[k] != second[k]}
    assert differing <= {"wall_time_s", "train_time_s", "train_time_at_evaluations_s", "finished_at", "output_dir"}
    assert first["method_state"]["growth_history"]


@pytest.mark.parametrize("method", ["triadapt_linear", "triadapt_nonlinear", "triadapt_fixed_k"])
def test_triadapt_grows_to_the_budget_on_deberta_names(tmp_path, data_dir, method):
    record, _ = short_run(tmp_path, f"method={method}", "train.max_steps=40", data_dir=data_dir)
    state = record["method_state"]
    assert len(state["rank_pattern"]) == 12 and state["budget"] == 8 * 12
    assert state["growth_history"] and state["total_rank"] == 96
    assert all("deberta.encoder.layer." in name for name in state["rank_pattern"])
    grown = sum(sum(e["grown"].values()) for e in state["growth_history"])
    assert grown == 96 - 12
    # Trainable entries follow r(n+d) + r(r+1) per matrix; n+d is 128 in attention, 192 in the FFN.
    def entries(name, r):
        ffn = name.endswith("intermediate.dense") or (name.endswith("output.dense") and "attention" not in name)
        return r * (192 if ffn else 128) + r * (r + 1)

    pattern = state["rank_pattern"]
    gained = sum(entries(n, r) - entries(n, 1) for n, r in pattern.items())
    counts = record["trainable_parameters"]
    assert counts["at_end"] - counts["at_start"] == gained
    # What each event did: every grown matrix's relative change of dW, and the loss around the event
    first = state["growth_history"][0]
    assert set(first["delta_w_change"]) == set(first["grown"]) and all(c > 0 for c in first["delta_w_change"].values())
    assert [e["step"] for e in record["growth_losses"]] == [e["step"] for e in state["growth_history"]]
    assert all(e["loss_before"] > 0 for e in record["growth_losses"])


def test_losses_around_growth_by_hand(tmp_path):
    from runner.train import losses_around

    log = tmp_path / "log.csv"
    log.write_text("step,loss,regularizer,lr,grad_norm\n" + "".join(f"{t},{t + 1},0,0,0\n" for t in range(10)))
    # loss = step + 1: up to step 4 (steps 3, 4) -> 4.5; after (5, 6) -> 6.5; after step 9 nothing is logged
    assert losses_around(log, [4, 9], window=2) == [{"step": 4, "loss_before": 4.5, "loss_after": 6.5},
                                                   {"step": 9, "loss_before": 9.5, "loss_after": None}]


def test_write_record_is_atomic_and_refuses_incomplete(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        records.write_record({"command": "x"}, tmp_path, "a")
    assert list(tmp_path.iterdir()) == []
    full = {f: 1 for f in records.REQUIRED_FIELDS}
    with pytest.raises(TypeError):
        records.write_record({**full, "bad": object()}, tmp_path, "a")
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    p1 = records.write_record(full, tmp_path, "a")
    p2 = records.write_record({**full, "seed": 2}, tmp_path, "a")
    assert (p1.name, p2.name) == ("a.json", "a-2.json") and json.loads(p1.read_text())["seed"] == 1


def test_skip_existing_reuses_the_record_of_the_same_config(tmp_path, data_dir):
    first, p1 = short_run(tmp_path, "method=bitfit", "train.max_steps=2", data_dir=data_dir)
    again, p2 = short_run(tmp_path, "method=bitfit", "train.max_steps=2", "skip_existing=true", data_dir=data_dir,
                          out="again")
    assert p2 == p1 and again == json.loads(p1.read_text())
    (tmp_path / "data_elsewhere").symlink_to(data_dir, target_is_directory=True)  # same data, another path
    moved, p4 = short_run(tmp_path, "method=bitfit", "train.max_steps=2", "skip_existing=true",
                          data_dir=tmp_path / "data_elsewhere", out="moved")
    assert p4 == p1
    other, p3 = short_run(tmp_path, "method=bitfit", "train.max_steps=3", "skip_existing=true", data_dir=data_dir,
                          out="other")
    assert p3 != p1 and other["steps"] == 3


def test_a_record_is_found_under_another_checkpoint_cadence_but_not_another_lr(tmp_path):
    config = {"seed": 0, "tag": "table4", "train": {"lr": 0.001, "checkpoint_every": 100}}
    (tmp_path / "squad_v2--lora--seed0.json").write_text(json.dumps({"config": config}))
    cadence = {**config, "tag": None, "train": {"lr": 0.001, "checkpoint_every": None}}
    assert records.find_record(tmp_path, "squad_v2--lora--seed0", cadence) == tmp_path / "squad_v2--lora--seed0.json"
    other_lr = {**config, "train": {"lr": 0.002, "checkpoint_every": 100}}
    assert records.find_record(tmp_path, "squad_v2--lora--seed0", other_lr) is None
    assert records.run_identity(cadence) == {"seed": 0, "train": {"lr": 0.001}}


def test_mnli_evaluates_matched_and_mismatched(tmp_path):
    folder = tmp_path / "data" / "glue" / "MNLI"
    folder.mkdir(parents=True)
    header = "index\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    rows = [("a cat sleeps", "an animal rests", "entailment"), ("it is raining", "it is dry", "contradiction"),
            ("he left early", "he was tired", "neutral")]
    body = "".join(f"{i}\tfiction\t{a}\t{b}\t{g}\t{g}\n" for i, (a, b, g) in enumerate(rows * 4))
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        (folder / name).write_text(header + body)
    cfg = compose_config("model=tiny_deberta", "task=mnli", "method=lora", f"data.dir={tmp_path / 'data'}",
                         f"results_dir={tmp_path / 'results'}", "train.max_steps=2", "train.batch_size=4")
    record, _ = runner.train.run(cfg, tmp_path / "out")
    assert record["data"]["eval_examples"] == {"dev_matched": 12, "dev_mismatched": 12}
    metrics = record["last"]["metrics"]
    assert set(metrics) == {"dev_matched", "dev_mismatched"} and record["last"]["main"] == metrics["dev_matched"]["accuracy"]


def test_peft_wrapping_prints_no_warning_a_user_cannot_act_on():
    """PEFT's read of transformers' deprecated `is_gradient_checkpointing` warned on every LoRA and AdaLoRA run."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import runner, transformers\n"
            "from peft import LoraConfig, get_peft_model\n"
            "model = transformers.BertForSequenceClassification(transformers.BertConfig(hidden_size=8, "
            "num_hidden_layers=1, num_attention_heads=2, intermediate_size=8))\n"
            "get_peft_model(model, LoraConfig(target_modules=['query']))\n")
    done = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr[-2000:]


def test_auto_threads_are_the_idle_cores(monkeypatch):
    """One core busy beside the run: one thread (torch's default, two, slows such a run many times over)."""
    import runner.threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    samples = iter([[(100, 1000), (100, 1000)], [(198, 1100), (102, 1100)]])  # cpu0 idle 98%, cpu1 busy (2%)
    monkeypatch.setattr(runner.threads, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(runner.threads.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(runner.threads.os, "cpu_count", lambda: 2)
    assert runner.threads.auto_threads() == (1, "1.0 of 2 cores idle at the start")
    monkeypatch.setattr(runner.threads, "idle_cores", lambda: 1.8)
    assert runner.threads.auto_threads()[0] == 2
    monkeypatch.setattr(runner.threads, "idle_cores", lambda: 0.1)
    assert runner.threads.auto_threads()[0] == 1  # never 0
    monkeypatch.setattr(runner.threads, "idle_cores", lambda: 2.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's count, or torchrun's per replica: two replicas, two cores
    assert runner.threads.auto_threads() == (1, "OMP_NUM_THREADS=1")
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert runner.threads.auto_threads()[0] == 2
    assert records.run_identity({"train": {"threads": "auto"}}) == records.run_identity({"train": {"threads": None}})
