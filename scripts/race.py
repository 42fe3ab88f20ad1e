"""A race on the same data and settings: a plain Hugging Face ``Trainer`` + PEFT LoRA fine-tune against our runner
(``method=lora`` and ``method=triadapt_linear``), one after the other, on a quiet CPU.

    TRIADAPT_DATA_DIR=../shared/data python scripts/race.py [--task sst2] [--steps 2105] [--eval-every 200]
                                                             [--target 0.85] [--threads 2]

Our runner's LoRA run goes first; its record fixes the settings the Trainer gets (MiniLM, the task's cpu_lr, batch,
warm-up, weight decay, clipping, LoRA r/alpha/dropout and target modules, the trainable head, length-grouped
batches, linear decay). Time is training time only (evaluations excluded): the runner's record keeps it per
evaluation (``train_time_at_evaluations_s``), and a Trainer callback sums the steps. Reported per contestant: the
time to the first evaluation at or above ``--target`` dev accuracy, the time to the end, the best and final
accuracy, and both times as ratios to the Trainer's. Writes results/race/<UTC time>.json and .md; refuses a busy
machine as scripts/bench.py does (its load threshold and record header).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

# The timing records' header and busy-machine rule, shared with the benchmark (a sibling script: on the path when run).
from bench import ROOT, measurement_header, write_measurement


def time_to_target(steps: list[int], scores: list[float], seconds: list[float], target: float) -> dict:
    """The first evaluation at or above ``target``: its step and training seconds (None if never reached)."""
    for step, score, second in zip(steps, scores, seconds):
        if score >= target:
            return {"step": step, "seconds": second}
    return {"step": None, "seconds": None}


def summary(name: str, steps: list[int], scores: list[float], seconds: list[float], total: float, target: float) -> dict:
    return {"contestant": name, "evaluations": [{"step": s, "accuracy": a, "train_time_s": t}
                                                for s, a, t in zip(steps, scores, seconds)],
            "to_target": time_to_target(steps, scores, seconds, target), "train_time_s": total,
            "best": max(scores), "final": scores[-1]}


def run_ours(method: str, args, out: Path) -> tuple[dict, dict]:
    """Our runner, as a user runs it; returns (summary, record)."""
    command = [sys.executable, "run.py", f"method={method}", f"task={args.task}", "model=minilm", "+experiment=cpu_protocol",
               f"train.max_steps={args.steps}", f"train.eval_every={args.eval_every}", f"train.threads={args.threads}",
               f"seed={args.seed}", "skip_existing=false", f"results_dir={out / 'records'}",
               f"hydra.run.dir={out / 'runs' / method}"]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    [path] = (out / "records").rglob(f"*--{method}--*.json")
    record = json.loads(path.read_text())
    steps = [e["step"] for e in record["evaluations"]]
    scores = [e["main"] for e in record["evaluations"]]
    return summary(f"ours, method={method}", steps, scores, record["train_time_at_evaluations_s"],
                   record["train_time_s"], args.target), record


def run_hf_trainer(record: dict, args, out: Path) -> dict:
    """A plain Trainer + PEFT LoRA with the settings of our LoRA run's record."""
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    from runner.data import encode_split, load_glue
    from runner.models import load_model, load_tokenizer

    torch.set_num_threads(args.threads)
    cfg = OmegaConf.create(record["config"])
    tokenizer = load_tokenizer(cfg.model)
    splits, _ = load_glue(cfg.task, cfg.data.dir)
    train_set = encode_split(splits["train"], tokenizer, cfg.task.max_seq_length)
    dev_set = encode_split(splits[next(iter(cfg.task.eval_files))], tokenizer, cfg.task.max_seq_length)
    num_labels = len(cfg.task.labels) if cfg.task.labels else 1
    model = load_model(cfg.model, "classification", num_labels, cfg.task.cls_dropout, cfg.seed)
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.method.r, lora_alpha=cfg.method.alpha,
                      lora_dropout=cfg.method.dropout, target_modules=list(cfg.model.target_modules),
                      modules_to_save=[m for m in cfg.model.head_modules if m != "qa_outputs"])
    model = get_peft_model(model, lora)

    class Clock(TrainerCallback):
        """Training seconds (steps only), and the accuracy and seconds at each evaluation."""

        def __init__(self):
            self.total, self.steps, self.scores, self.seconds = 0.0, [], [], []

        def on_step_begin(self, *_, **__):
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.total += time.perf_counter() - self.started

        def on_evaluate(self, _args, state, _control, metrics=None, **__):
            self.steps.append(state.global_step)
            self.scores.append(metrics["eval_accuracy"])
            self.seconds.append(round(self.total, 2))

    clock = Clock()
    training = TrainingArguments(
        output_dir=str(out / "hf_trainer"), max_steps=args.steps, per_device_train_batch_size=cfg.train.batch_size,
        per_device_eval_batch_size=cfg.train.eval_batch_size, learning_rate=cfg.train.lr,
        weight_decay=cfg.train.weight_decay, warmup_steps=record["schedule"]["warmup_steps"],
        lr_scheduler_type="linear", max_grad_norm=cfg.train.max_grad_norm, train_sampling_strategy="group_by_length",
        eval_strategy="steps", eval_steps=args.eval_every, save_strategy="no", logging_strategy="no",
        report_to=[], seed=args.seed, use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=training, train_dataset=train_set, eval_dataset=dev_set,
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=[clock],
                      compute_metrics=lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())})
    trainer.train()
    if not clock.steps or clock.steps[-1] != args.steps:
        trainer.evaluate()
    return summary("Hugging Face Trainer + PEFT LoRA", clock.steps, clock.scores, clock.seconds, round(clock.total, 1),
                   args.target)


def markdown(result: dict) -> str:
    rows = result["contestants"]
    reference = next(r for r in rows if r["contestant"].startswith("Hugging Face"))
    ratio = lambda a, b: "–" if a is None or b is None else f"{a / b:.2f}"  # noqa: E731
    lines = [f"Race on {result['settings']['task']}, {result['settings']['steps']} steps, target dev accuracy "
             f"{result['settings']['target']}, training time only; ratios to the Trainer's.", "",
             "| contestant | to target (step, s) | × Trainer | to the end (s) | × Trainer | best | final |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        hit = r["to_target"]
        lines.append(f"| {r['contestant']} | {hit['step']}, {hit['seconds']} | "
                     f"{ratio(hit['seconds'], reference['to_target']['seconds'])} | {r['train_time_s']} | "
                     f"{ratio(r['train_time_s'], reference['train_time_s'])} | {100 * r['best']:.2f} | "
                     f"{100 * r['final']:.2f} |")
    return "\n".join(lines) + "\n"


ACCURACY_TASKS = ("sst2", "mrpc", "rte", "qnli", "qqp", "mnli")


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sst2", choices=ACCURACY_TASKS, help="a GLUE task scored by accuracy")
    parser.add_argument("--steps", type=int, default=2105, help="default: one SST-2 epoch at batch 32")
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--target", type=float, default=0.85, help="dev accuracy that counts as arrived")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--allow-busy", action="store_true", help="run on a shared CPU and mark the record so")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "race")
    args = parser.parse_args(argv)
    for flag, value in (("--steps", args.steps), ("--eval-every", args.eval_every), ("--threads", args.threads)):
        if value < 1:
            parser.error(f"{flag} {value}: must be an integer >= 1")
    if not 0 < args.target <= 1:
        parser.error(f"--target {args.target}: a dev accuracy in (0, 1], e.g. 0.85")
    result = measurement_header("race.py", argv, args)
    scratch = ROOT / "outputs" / "race" / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    started = time.time()
    lora, record = run_ours("lora", args, scratch)
    result["contestants"] = [run_hf_trainer(record, args, scratch), lora, run_ours("triadapt_linear", args, scratch)[0]]
    result["wall_time_s"] = round(time.time() - started, 1)
    return write_measurement(result, args.out, "", markdown(result))


if __name__ == "__main__":
    main()
