"""The training loop: one run from a resolved config to a run record, top to bottom."""

from __future__ import annotations

import csv
import functools
import itertools
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import set_seed

from . import checkpoint, records
from .data import train_loader
from .distributed import init_from_environment
from .methods import RunContext, build_method, check_options
from .settings import ConfigError, check_settings
from .models import count_trainable, load_model, load_tokenizer, set_trainable
from .optim import add_param_group, build_optimizer
from .tasks import build_task, to_device
from .threads import auto_threads

PROJECT_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("runner")


def batches_forever(dataset, tokenizer, batch_size: int, seed: int, group_by_length: bool, skip: int = 0,
                    collator=None):
    """Micro-batches epoch after epoch, after skipping ``skip``; epoch e's order depends only on (seed, e)."""
    per_epoch = math.ceil(len(dataset) / batch_size)
    epoch, offset = divmod(skip, per_epoch)
    while True:
        yield from itertools.islice(train_loader(dataset, tokenizer, batch_size, seed, epoch, group_by_length,
                                                 collator), offset, None)
        epoch, offset = epoch + 1, 0


FINISHED = "record.txt"  # written into a run folder once its record exists


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped the run after a whole step, whose checkpoint was written."""

    def __init__(self, step: int, total: int, folder: Path):
        super().__init__(f"interrupted after step {step} of {total}; checkpoint in {folder}")
        self.step, self.total, self.folder = step, total, folder


class StopRequests:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the step it is in (``requested``); a second one stops
    at once. Installed in the main thread of a one-process run only: replicas would stop at different steps."""

    def __init__(self, active: bool):
        self.active, self.requested, self.previous = active, False, {}

    def __enter__(self):
        if self.active:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self.ask)
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def ask(self, signum, frame) -> None:
        if self.requested:
            self.restore()
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step, with a checkpoint (press Ctrl-C again to stop at once)", file=sys.stderr)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}


def move_log(folder: Path) -> None:
    """Send this run's log (Hydra's run.log file handler) to ``folder``/run.log, appended: a resumed run logs into
    the folder it continues, and the new folder Hydra made for it is left with nothing of its own."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.close()
            handler.baseFilename, handler.mode = str(Path(folder).resolve() / "run.log"), "a"


def find_resumable(output_dir: Path, search_siblings: bool, config: dict) -> Path | None:
    """The unfinished run folder to continue: this one if it holds a checkpoint, else (``resume=true``)
    the newest sibling whose checkpoint was made with this very config, i.e. the same command's earlier,
    interrupted run."""
    if (output_dir / FINISHED).is_file():
        raise checkpoint.ResumeError(f"{output_dir} holds a finished run: {(output_dir / FINISHED).read_text()}")
    if checkpoint.latest_checkpoint(output_dir):
        return output_dir
    if not search_siblings:
        return None
    for folder in sorted(output_dir.parent.iterdir(), reverse=True):
        latest = checkpoint.latest_checkpoint(folder) if folder.is_dir() else None
        if latest is None or (folder / FINISHED).is_file():
            continue
        saved = json.loads((latest / "state.json").read_text())["config"]
        if checkpoint.same_config(saved, config):
            return folder
    return None


def _log_rows_before(path: Path, step: int) -> list[list[str]]:
    """The per-step log kept from an earlier segment of this run, up to the resumed step."""
    header = ["step", "loss", "regularizer", "lr", "grad_norm"]
    if not path.is_file():
        return [header]
    with path.open(newline="") as f:
        return [header] + [row for row in list(csv.reader(f))[1:] if int(row[0]) < step]


def losses_around(log_path: Path, steps: list[int], window: int = 5) -> list[dict]:
    """Mean training loss over the ``window`` steps up to each growth event (its own step included: that loss came
    before the growth) and over the ``window`` steps after it: what an event does to training (issue 25)."""
    with log_path.open(newline="") as f:
        loss = {int(row["step"]): float(row["loss"]) for row in csv.DictReader(f)}

    def mean(span) -> float | None:
        values = [loss[t] for t in span if t in loss]
        return sum(values) / len(values) if values else None

    return [{"step": s, "loss_before": mean(range(s - window + 1, s + 1)), "loss_after": mean(range(s + 1, s + window + 1))}
            for s in steps]


def run(cfg, output_dir: str | Path) -> tuple[dict, Path]:
    started, git = time.time(), records.git_state(PROJECT_ROOT)  # the code that runs, read before it runs
    replicas = init_from_environment()  # torchrun / accelerate launch: one process per replica
    task, train_cfg = cfg.task, cfg.train
    check_settings(OmegaConf.to_container(cfg, resolve=True))
    try:
        check_options(cfg.method)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"method {cfg.method.name}: {e}") from None
    record_dir, stem = Path(cfg.results_dir) / cfg.model.name, records.record_stem(cfg)
    if cfg.skip_existing:
        done = records.find_record(record_dir, stem, OmegaConf.to_container(cfg, resolve=True))
        if done is not None:
            log.info(f"skipped: {done} holds this run already")
            return json.loads(done.read_text()), done
    if train_cfg.threads == "auto":
        threads, why = auto_threads()
        torch.set_num_threads(threads)
        log.info(f"torch threads: {threads} ({why}; train.threads=N sets it)")
    elif train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    set_seed(cfg.seed)

    # 1. Data: tokenized once, truncated to the task's max length, padded per batch.
    tokenizer = load_tokenizer(cfg.model)
    data = build_task(task, cfg.data.dir, tokenizer, train_cfg.eval_batch_size, train_cfg.validation_fraction,
                      train_cfg.validation_seed, train_cfg.eval_by_length)
    train_set = data.train_set

    # 2. Step budget. T counts optimizer steps. The paper's step settings (warm-up, t0, intervals) refer
    #    to T_paper = epochs at the paper's batch size; they are scaled by T / T_paper (scale_schedule).
    steps_per_epoch = math.ceil(len(train_set) / (train_cfg.batch_size * train_cfg.grad_accum))
    paper_steps = task.epochs * math.ceil(len(train_set) / task.batch_size)
    total_steps = train_cfg.max_steps or task.epochs * steps_per_epoch
    factor = total_steps / paper_steps if train_cfg.scale_schedule else 1.0

    def scale(steps: int) -> int:
        """A paper step count in this run; a positive count stays >= 1, anything else is left for validation."""
        return max(1, round(steps * factor)) if steps > 0 else steps

    warmup = round(train_cfg.warmup_ratio * total_steps) if train_cfg.warmup_ratio else scale(train_cfg.warmup_steps)
    eval_every = train_cfg.eval_every or min(steps_per_epoch, total_steps)

    # 3. Model and method. Every method but full fine-tuning also trains the classifier and pooler.
    device = replicas.device(cfg.device)
    model = load_model(cfg.model, data.head, data.num_labels, task.cls_dropout, cfg.seed).to(device)
    try:  # a method's settings that need T (its schedule) are checked here; its choices were checked above
        method = build_method(cfg.method, model, RunContext(total_steps, scale, cfg.seed, list(cfg.model.target_modules)))
    except ValueError as e:
        raise ConfigError(f"method {cfg.method.name}: {e}") from None
    method.replica_mean = replicas.mean
    set_trainable(method.model, list(cfg.model.head_modules))
    trainable_at_start = count_trainable(method.model)
    new_group_decay = train_cfg.weight_decay if method.new_group_weight_decay is None else method.new_group_weight_decay
    optimizer, scheduler = build_optimizer(method.model, train_cfg.lr, train_cfg.weight_decay, warmup, total_steps,
                                           train_cfg.fused_adamw, method.unit_layers(), method.new_group_schedule,
                                           new_group_decay)

    # 4. Resume: a folder holding a checkpoint of this very config continues from it, bit for bit.
    #    Replicas share rank 0's folder; only rank 0 writes to it.
    output_dir = Path(replicas.broadcast_object(str(output_dir)))
    meta = {"command": records.command_line(), "config": OmegaConf.to_container(cfg, resolve=True),
            "evaluations": [], "growth_steps": [], "wall_time_s": 0.0, "train_time_s": 0.0,
            "train_time_at_evaluations_s": [], "resumed_at": [], "replica_checks": [], "grad_scaler": {}}
    start_step = 0
    resume_dir = find_resumable(output_dir, cfg.resume, meta["config"])
    if cfg.resume and resume_dir is None:
        raise checkpoint.ResumeError(f"resume=true but no checkpoint under {output_dir.parent}")
    if not cfg.resume and resume_dir is None and replicas.is_main:
        earlier = find_resumable(output_dir, True, meta["config"])
        if earlier is not None:
            log.info(f"an interrupted run of this config has a checkpoint in {earlier}; this run starts over at step "
                     f"0 (add resume=true to continue that one)")
        existing = records.find_record(record_dir, stem, meta["config"])
        if existing is not None:
            log.info(f"{existing} already holds a run of this config; this run writes another record beside it "
                     f"(skip_existing=true would reuse it)")
    if resume_dir is not None:
        tensors, state = checkpoint.load(checkpoint.latest_checkpoint(resume_dir))
        checkpoint.check_same_config(state["config"], meta["config"])
        method.load_extra_state(state["method"], checkpoint.method_tensors(tensors))
        for birth in state["growth_steps"]:  # rebuild the grown parameters and their optimizer groups
            new_params = method.replay_growth(birth)
            if new_params:  # the preallocated layout adds none: its units and clocks come with the state dicts
                add_param_group(optimizer, scheduler, new_params, birth, new_group_decay, warmup, total_steps,
                                method.new_group_schedule)
        checkpoint.restore(tensors, state, method.model, optimizer, scheduler)
        meta = {k: state.get(k, meta[k]) for k in meta}
        start_step = state["step"]
        meta["resumed_at"].append(start_step)
        if resume_dir != output_dir and replicas.is_main:
            move_log(resume_dir)
        output_dir = resume_dir
        log.info(f"resumed from step {start_step} of {total_steps} (checkpoint in {resume_dir})")
    if replicas.distributed:  # each replica its own dropout stream (growth draws from its own generators)
        torch.manual_seed((cfg.seed * 1_000_003 + start_step) * 1_009 + replicas.rank)
    if replicas.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    log_rows = _log_rows_before(output_dir / "log.csv", start_step)

    # 5. The loop. Hook order per optimizer step (see baselines/method.py):
    #    regularizer -> backward (DDP averages gradients) -> clip -> before_optimizer_step (growth)
    #    -> optimizer.step -> after_optimizer_step (AdaLoRA) -> scheduler.step -> zero_grad
    #    Each replica trains on its slice of the global batch (runner/distributed.py).
    forward_model = replicas.wrap(method.model)
    batches = batches_forever(train_set, tokenizer, train_cfg.batch_size, cfg.seed, train_cfg.group_by_length,
                              skip=start_step * train_cfg.grad_accum, collator=getattr(data, "collator", None))
    evaluations = meta["evaluations"]
    checkpoint_every = train_cfg.checkpoint_every or eval_every
    # Precision: autocast of forward, loss and evaluation; fp16 scales the loss (a gradient scaler) so that small
    # gradients survive; TF32 matmuls on GPUs in the reduced-precision modes. fp32 leaves everything as it was.
    low_precision = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train_cfg.precision)
    autocast = functools.partial(torch.autocast, device_type=device.type, dtype=low_precision or torch.float32,
                                 enabled=low_precision is not None)
    scaler = torch.amp.GradScaler(device.type, enabled=train_cfg.precision == "fp16")
    if meta["grad_scaler"]:
        scaler.load_state_dict(meta["grad_scaler"])
    if device.type == "cuda" and low_precision is not None:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    method.model.train()
    progress = tqdm(range(start_step, total_steps), desc=f"{cfg.method.name}/{task.name}", mininterval=2.0,
                    initial=start_step, total=total_steps, disable=not replicas.is_main)
    def evaluate(done: int) -> None:
        method.model.eval()
        with autocast():
            metrics = data.evaluate(method.model, replicas)
        method.model.train()
        main = metrics[next(iter(metrics))][task.metric]
        evaluations.append({"step": done, "epoch": done / steps_per_epoch, "metrics": metrics, "main": main})
        meta["train_time_at_evaluations_s"].append(round(meta["train_time_s"], 2))
        held_out = metrics.get("validation", {}).get(task.metric)
        log.info(f"step {done}/{total_steps}: dev {task.metric} {main:.4f}"
                 + ("" if held_out is None else f", validation {held_out:.4f}"))

    if task.get("evaluate_before_training") and start_step == 0:  # the untrained model: a zero-shot row
        evaluate(0)
    # Log lines (evaluations, growth) print above the progress bar, and go to run.log; Ctrl-C stops after a whole step.
    one_process = not replicas.distributed and threading.current_thread() is threading.main_thread()
    with logging_redirect_tqdm(), StopRequests(active=one_process) as stop:
        log_file = (output_dir / "log.csv").open("w", newline="") if replicas.is_main else open(os.devnull, "w")
        step_log = csv.writer(log_file)
        step_log.writerows(log_rows)
        for step in progress:
            step_started = time.perf_counter()  # training time, evaluation and checkpoints excluded (scripts/race.py)
            losses = torch.zeros(2, dtype=torch.float64)  # task loss, regularizer: this step's means
            for micro in range(train_cfg.grad_accum):
                batch, weight = replicas.shard(next(batches))
                with replicas.no_sync(forward_model, last_micro_batch=micro == train_cfg.grad_accum - 1):
                    with autocast():
                        loss = forward_model(**to_device(batch, device)).loss
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"non-finite training loss ({loss.item()}) at step {step}; "
                                                 f"the last good checkpoint is kept under {output_dir / 'checkpoints'}")
                    reg = method.regularizer()  # in float32, outside autocast
                    total = loss * weight if reg is None else loss * weight + reg
                    scaler.scale(total / train_cfg.grad_accum).backward()
                losses += torch.tensor([loss.item() * weight, 0.0 if reg is None else reg.item()],
                                       dtype=torch.float64) / train_cfg.grad_accum
            loss_sum, reg_sum = replicas.mean(losses).tolist()
            trainable = [p for g in optimizer.param_groups for p in g["params"]]
            scaler.unscale_(optimizer)  # fp16: true gradients before clipping and growth
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, train_cfg.max_grad_norm).item()
            events_before = method.growth_events
            new_params = method.before_optimizer_step(step)
            if new_params or method.growth_events > events_before:
                meta["growth_steps"].append(step)
                if replicas.distributed:  # same units everywhere, proven before DDP's rebuild could mask a difference
                    meta["replica_checks"].append(replicas.check_identical(method.model, step, method.summary()))
            if new_params:
                add_param_group(optimizer, scheduler, new_params, step, new_group_decay, warmup, total_steps,
                                method.new_group_schedule)
                log.info(f"step {step}: growth, {sum(p.numel() for p in new_params)} new trainable parameters")
                if replicas.distributed:
                    forward_model = replicas.wrap(method.model)
            elif method.growth_events > events_before:
                log.info(f"step {step}: growth in place (preallocated units), no new parameter")
            scaler.step(optimizer)  # optimizer.step(), skipped by fp16's scaler on an overflow
            scaler.update()
            method.after_optimizer_step(step)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_log.writerow([step, f"{loss_sum:.6f}", f"{reg_sum:.6f}", f"{lr:.6g}", f"{grad_norm:.4f}"])
            meta["train_time_s"] += time.perf_counter() - step_started

            done = step + 1
            if done % eval_every == 0 or done == total_steps:
                if replicas.distributed:  # also catches AdaLoRA's masking, which creates no parameters
                    meta["replica_checks"].append(replicas.check_identical(method.model, done, method.summary()))
                evaluate(done)
            if replicas.is_main and (done % checkpoint_every == 0 or done == total_steps or stop.requested):
                log_file.flush()
                checkpoint.save(output_dir, done, method.model, optimizer, scheduler, method,
                                {**meta, "wall_time_s": meta["wall_time_s"] + time.time() - started,
                                 "grad_scaler": scaler.state_dict()})
            if stop.requested and done < total_steps:
                progress.close()
                log_file.close()
                raise Interrupted(done, total_steps, output_dir / "checkpoints")
            dev = {"dev": f"{evaluations[-1]['main']:.4f}"} if evaluations else {}  # none before the first evaluation
            progress.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{lr:.2e}", **dev)
    log_file.close()

    # 6. The record: everything needed to know how this number was made.
    best = max(evaluations, key=lambda e: -np.inf if np.isnan(e["main"]) else e["main"])
    # With a validation split, the checkpoint a run reports is chosen there (the earliest of equal scores), never on dev.
    selected = None if "validation" not in data.eval_sizes else max(
        evaluations, key=lambda e: -np.inf if np.isnan(v := e["metrics"]["validation"][task.metric]) else v)
    record = {
        "command": meta["command"],
        "resumed_at": meta["resumed_at"],
        "config": meta["config"],
        "git": git,
        "packages": records.package_versions(),
        "machine": records.machine(),
        "determinism": ("bit-identical on CPU for a fixed seed" if device.type == "cpu" else
                        "GPU kernels (e.g. atomic adds in backward) are not bit-reproducible; expect small run-to-run "
                        "differences"),
        "seed": cfg.seed,
        "tag": cfg.tag,
        "method": cfg.method.name, "task": task.name, "model": cfg.model.name,
        "data": {"source": data.source, "train_features": len(train_set), "eval_examples": data.eval_sizes,
                 "protocol": data.protocol, "majority_class": data.majority_baseline},
        "steps": total_steps,
        "schedule": {"paper_steps": paper_steps, "steps_per_epoch": steps_per_epoch, "scale": factor,
                     "warmup_steps": warmup, "eval_every": eval_every},
        "wall_time_s": round(meta["wall_time_s"] + time.time() - started, 1),  # this process plus earlier segments
        # seconds spent in training steps (evaluations, checkpoints and loading excluded), in all, and by each evaluation
        "train_time_s": round(meta["train_time_s"], 1),
        "train_time_at_evaluations_s": meta["train_time_at_evaluations_s"],
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "trainable_parameters": {"at_start": trainable_at_start, "at_end": count_trainable(method.model)},
        "metric": task.metric,
        "evaluations": evaluations,
        "best": best, "last": evaluations[-1],
        "selected": None if selected is None else {"by": "validation", **selected},
        "method_state": method.summary(),
        "growth_losses": losses_around(output_dir / "log.csv", meta["growth_steps"]) if replicas.is_main else [],
        "output_dir": str(output_dir),
        "distributed": {"world_size": replicas.world_size, "backend": dist.get_backend(),
                        "replica_checks": meta["replica_checks"]} if replicas.distributed else None,
    }
    path = None
    if replicas.is_main:
        path = records.write_record(record, record_dir, stem)
        (output_dir / FINISHED).write_text(str(path))
        if not train_cfg.keep_checkpoints:
            checkpoint.keep_trained_weights_only(output_dir, method.model)
    return record, Path(replicas.broadcast_object(str(path)))
