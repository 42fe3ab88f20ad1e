"""Step time, peak memory, allocation cost and eval throughput of every method, side by side.

    python scripts/bench.py --quick                       # MiniLM, length 64: a few minutes on a CPU
    python scripts/bench.py --models minilm deberta_base_shape --lengths 64 128 256 --dropouts 0 0.1
    TRIADAPT_DATA_DIR=../shared/data python scripts/bench.py --models minilm --lengths 128 --tasks sst2 mrpc

Each training step (forward, backward, the method's hooks, AdamW) is timed in train mode (the backbone's own
dropout on, as in training), methods interleaved step by step in one process, after warm-up steps: on fixed
random batches of each length, and on the real length-grouped batches of each GLUE task of ``--tasks`` (the
runner's batching, the same batches for every method). Each step's time is divided by the *floor*'s (the frozen
model, backward for input gradients only) on the same batch, and by PEFT LoRA's at the same dropout; the median of
these paired ratios is reported with their interquartile range, which says how far a difference can be read.
Every adapter method is measured at its final budget (rank 8 per matrix; AdaLoRA at its initial 12). ``fused_lora`` is
the least a rank-8 factorised adapter costs in this code (``FusedLoRALinear``). Peak memory: each method's step runs
in a fresh process, and the peak resident memory during two steps above that after loading is reported. Also
timed: one TriAdaptLoRA and one IncreLoRA growth event, the per-step bookkeeping of AdaLoRA and IncreLoRA, and
eval throughput of the bare model, TriAdaptLoRA unmerged and merged. The bench refuses to start while the
1-minute load average says other work shares the CPU (``--allow-busy`` runs anyway and marks the record).
Writes results/bench/<time>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import transformers

from baselines.adalora import AdaLoRA
from baselines.increlora import IncreLoRA
from baselines.lora import LoRA
from baselines.method import Method
from runner import records
from runner.models import load_tokenizer, minilm_path
from runner.optim import add_param_group, build_optimizer
from runner.tasks import build_task
from runner.train import batches_forever
from triadapt import TriAdaptConfig, TriAdaptModel
from triadapt.layer import _FusedAdapterLinear, make_dropout
from triadapt.targets import target_modules_for

ROOT = Path(__file__).resolve().parent.parent
BUSY_LOAD = 0.5  # a 1-minute load average above this means other work is running
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")

SHAPES = {"deberta_base_shape": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
          "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)}


def backbone(name: str):
    """MiniLM (real weights), or a random DebertaV2 of DeBERTaV3-base shape (or tiny, for tests)."""
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    if name == "minilm":
        return transformers.AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    config = transformers.DebertaV2Config(
        vocab_size=30522, **SHAPES[name], relative_attention=True, position_buckets=256, pos_att_type=["p2c", "c2p"], position_biased_input=False,
        norm_rel_ebd="layer_norm", share_att_key=True, max_relative_positions=-1, type_vocab_size=0, num_labels=2)
    return transformers.AutoModelForSequenceClassification.from_config(config)


class Floor(Method):
    """The frozen model with input gradients: the least any adapter method can cost."""

    def __init__(self, model):
        for p in model.parameters():
            p.requires_grad_(False)
        model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.requires_grad_(True))
        super().__init__(model)


class FusedLoRALinear(torch.nn.Module):
    """The least a rank-r factorised adapter costs in this code: the frozen layer plus one A (r x n) and one M
    (d x r), in TriAdaptLoRA's fused node and with its input dropout, without triangles, scale or growth blocks.
    The bench's ``fused_lora`` column: floor -> fused_lora prices the rank-r products themselves (and AdamW over
    two tensors per matrix), fused_lora -> triadapt_one_block the triangles, one_block -> triadapt the blocks."""

    def __init__(self, base: torch.nn.Linear, rank: int, dropout: float):
        super().__init__()
        self.base_layer, self.dropout = base, make_dropout(dropout)
        out_features, in_features = base.weight.shape
        self.a = torch.nn.Parameter(torch.randn(rank, in_features) * 0.02)
        self.m = torch.nn.Parameter(torch.randn(out_features, rank) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped = self.dropout(x)
        return _FusedAdapterLinear.apply(x, None if dropped is x else dropped, self.base_layer.weight,
                                         self.base_layer.bias, self.a, self.m)


def fused_lora(model, targets: list[str], rank: int, dropout: float) -> Method:
    for p in model.parameters():
        p.requires_grad_(False)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and any(n.endswith("." + t) for t in targets)]
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, FusedLoRALinear(model.get_submodule(name), rank, dropout))
    return Method(model)


TRIADAPT_METHODS = ("triadapt", "triadapt_one_block", "triadapt_shared_dropout", "triadapt_uniform_dropout",
                    "triadapt_preallocated")
# --compile adds these under torch.compile (inductor), beside their eager columns
COMPILED = ("floor_compiled", "peft_lora_compiled", "triadapt_preallocated_compiled")
METHODS = ("floor", "full_ft", "peft_lora", "fused_lora", *TRIADAPT_METHODS, "adalora", "increlora", *COMPILED)
REAL_RUN_BLOCKS = [1, 4, 3]  # rank 8 in 3 growth blocks: a Table I linear run ends with 2.75 blocks per matrix on average


def build(method: str, name: str, dropout: float, T: int, blocks: list[int] = REAL_RUN_BLOCKS,
          varying_shapes: bool = False) -> Method:
    """``blocks``: each TriAdaptLoRA matrix's growth blocks at the final budget; ``triadapt_one_block`` holds the same
    rank in one block per factor (what packing the blocks at each growth event would leave). ``varying_shapes``: the
    batches' lengths differ (real batches), so a compiled model is compiled once for any length instead of once per
    new length."""
    if method in COMPILED:  # the optimizer reads the same parameters through the compiled module
        inner = build(method.removesuffix("_compiled"), name, dropout, T, blocks)
        inner.model = torch.compile(inner.model, dynamic=True if varying_shapes else None)
        return inner
    model = backbone(name)
    targets = target_modules_for(model)
    if method == "floor":
        return Floor(model)
    if method == "full_ft":
        return Method(model)
    if method == "peft_lora":
        return LoRA(model, targets, r=8, alpha=16, dropout=dropout)
    if method == "fused_lora":
        return fused_lora(model, targets, rank=sum(blocks), dropout=dropout)
    if method in TRIADAPT_METHODS:  # final budget, the same rank everywhere
        names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                 and any(n.endswith("." + t) for t in targets)]
        blocks = [sum(blocks)] if method == "triadapt_one_block" else list(blocks)
        preallocated = method == "triadapt_preallocated"  # the fixed-shape layout at full capacity, all units born
        config = TriAdaptConfig(target_modules=targets, total_steps=T, dropout=dropout, alpha=16,
                                growth_blocks={n: blocks for n in names},
                                share_dropout_masks=method == "triadapt_shared_dropout",
                                dropout_sampler="uniform" if method == "triadapt_uniform_dropout" else "bernoulli",
                                layout="preallocated" if preallocated else "growing",
                                capacity=sum(blocks) if preallocated else 0)
        tri = TriAdaptModel(model, config)
        method_obj = Method(tri)
        method_obj.regularizer = tri.orthogonal_regularizer
        method_obj.unit_layers = tri.layers if preallocated else list
        return method_obj
    if method == "adalora":
        return AdaLoRA(model, targets, T, 12, 8, 16, dropout, 1, 1, 1, 0.85, 0.85, 0.1)
    if method == "increlora":  # rank 8 plus its reserve, importance tracked every step, no growth
        return IncreLoRA(model, targets, 10 ** 9, 8, 16, 4, 1, 10 ** 8, 10 ** 8, 16, dropout, 0.85, 0.85, 0.1)
    raise ValueError(f"method={method!r} is not valid; choose one of: {', '.join(METHODS)}")


def batch(length: int, batch_size: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (batch_size, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (batch_size,), generator=g)}


def train_step(method: Method, optimizer, inputs: dict, step: int) -> float:
    start = time.perf_counter()
    loss = method.model(**inputs).loss
    reg = method.regularizer()
    (loss if reg is None else loss + reg).backward()
    method.before_optimizer_step(step)
    if optimizer is not None:
        optimizer.step()
    method.after_optimizer_step(step)
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def task_batches(task: str, count: int, batch_size: int) -> list[dict]:
    """The first ``count`` length-grouped training batches of a GLUE task, as the runner draws them (seed 0)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"task={task}", "model=minilm"])
    tokenizer = load_tokenizer(cfg.model)
    data = build_task(cfg.task, cfg.data.dir, tokenizer, batch_size)
    batches = batches_forever(data.train_set, tokenizer, batch_size, seed=0, group_by_length=True)
    return [next(batches) for _ in range(count)]


def step_times(name: str, inputs: list[dict], dropout: float, args) -> dict:
    """Median step time of every method over ``inputs`` (one batch per step), in train mode."""
    varying = len({tuple(b["input_ids"].shape) for b in inputs}) > 1
    methods = {m: build(m, name, dropout, T=args.steps + args.warmup + 10, blocks=args.blocks, varying_shapes=varying)
               for m in args.methods}
    for meth in methods.values():
        meth.model.train()
    optimizers = {m: (build_optimizer(meth.model, 1e-4, 0.0, 1, 10 ** 6, fused=args.fused_adamw,
                                      unit_layers=meth.unit_layers())[0]
                      if any(p.requires_grad for p in meth.model.parameters()) else None) for m, meth in methods.items()}
    times, compiled_before_timing = {m: [] for m in methods}, 0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            compiled_before_timing = compiled_graphs()
        for m, meth in methods.items():  # interleaved: every method sees the same machine state
            elapsed = train_step(meth, optimizers[m], inputs[step], step)
            if step >= args.warmup:
                times[m].append(elapsed)
    result = {"seconds": {m: statistics.median(t) for m, t in times.items()}, "step_seconds": times}
    if any(m in COMPILED for m in methods):  # a compilation inside the timed steps would inflate a median
        result["graphs_compiled_while_timing"] = compiled_graphs() - compiled_before_timing
    for reference in ("floor", "peft_lora"):
        if reference in times:
            ratios = paired_ratios(times, reference)
            result[f"vs_{reference}"] = {m: r["median"] for m, r in ratios.items()}
            result[f"vs_{reference}_iqr"] = {m: r["iqr"] for m, r in ratios.items()}
    return result


def compiled_graphs() -> int:
    """How many graphs torch.compile has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def paired_ratios(times: dict[str, list[float]], reference: str) -> dict[str, dict]:
    """Each method's step time over ``reference``'s on the same step (the same batch, moments apart): the median of
    these ratios and their interquartile range. Pairing removes what the batches' lengths and the machine's drift
    add to a ratio of two medians."""
    out = {}
    for method, seconds in times.items():
        ratios = [t / r for t, r in zip(seconds, times[reference])]
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
        out[method] = {"median": statistics.median(ratios), "iqr": [q1, q3]}
    return out


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peak_step_memory(name: str, length: int, dropout: float, method: str, batch_size: int, blocks: list[int]) -> float:
    """In a fresh process: the peak resident memory of two training steps above the memory after loading (MB)."""
    torch.set_num_threads(1)
    meth = build(method, name, dropout, T=100, blocks=blocks)
    meth.model.train()
    optimizer = (build_optimizer(meth.model, 1e-4, 0.0, 1, 10 ** 6, unit_layers=meth.unit_layers())[0]
                 if any(p.requires_grad for p in meth.model.parameters()) else None)
    inputs, baseline, peak, done = batch(length, batch_size), resident_mb(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], resident_mb())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    for step in range(2):
        train_step(meth, optimizer, inputs, step)
    done.set()
    sampler.join()
    return max(peak[0], resident_mb()) - baseline


def peak_memory(name: str, length: int, dropout: float, args) -> dict:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1, maxtasksperchild=1) as pool:
        return {m: pool.apply(_peak_step_memory, (name, length, dropout, m, args.batch_size, args.blocks)) for m in args.methods}


def allocation_costs(name: str, length: int, args) -> dict:
    """One growth event of TriAdaptLoRA and IncreLoRA; the per-step bookkeeping of AdaLoRA and IncreLoRA."""
    inputs, out = batch(length, args.batch_size), {}
    model = backbone(name)
    targets = target_modules_for(model)
    tri = TriAdaptModel(model, TriAdaptConfig(target_modules=targets, total_steps=1000, t0=0, interval=1))
    optimizer, scheduler = build_optimizer(tri, 1e-4, 0.0, 1, 1000)
    tri(**inputs).loss.backward()
    start = time.perf_counter()
    new = tri.grow(1)
    add_param_group(optimizer, scheduler, new, 1, 0.0, 1, 1000)
    out["triadapt_event_s"] = time.perf_counter() - start
    out["triadapt_M"] = len(tri.layer_names)
    incre = build("increlora", name, 0.0, 1000)
    incre.settings.update(init_warmup=0, interval=1)
    incre.model(**inputs).loss.backward()
    start = time.perf_counter()
    incre.update_importance()
    out["increlora_bookkeeping_s"] = time.perf_counter() - start
    incre.model(**inputs).loss.backward()
    optimizer, scheduler = build_optimizer(incre.model, 1e-4, 0.0, 1, 1000)
    start = time.perf_counter()
    new = incre.before_optimizer_step(2)  # importance update plus a growth event
    add_param_group(optimizer, scheduler, new, 2, 0.0, 1, 1000)
    out["increlora_event_s"] = time.perf_counter() - start
    ada = build("adalora", name, 0.0, 1000)
    ada.model(**inputs).loss.backward()
    start = time.perf_counter()
    ada.after_optimizer_step(5)
    out["adalora_bookkeeping_s"] = time.perf_counter() - start
    return out


@torch.no_grad()
def eval_throughput(name: str, length: int, args) -> dict:
    inputs = {k: v for k, v in batch(length, args.batch_size).items() if k != "labels"}
    bare = backbone(name).eval()
    tri = build("triadapt", name, 0.0, 10).model.eval()
    for p in tri.parameters():
        if p.requires_grad:
            p.normal_(0, 0.02)
    merged = build("triadapt", name, 0.0, 10).model.eval()
    merged.load_state_dict(tri.state_dict())
    merged.merge()
    models, times = {"bare": bare, "unmerged": tri, "merged": merged}, {"bare": [], "unmerged": [], "merged": []}
    for rep in range(args.warmup + args.steps):
        for key, model in models.items():
            start = time.perf_counter()
            model(**inputs)
            if rep >= args.warmup:
                times[key].append(time.perf_counter() - start)
    eps = {k: args.batch_size / statistics.median(v) for k, v in times.items()}
    return {"examples_per_s": eps, "vs_bare": {k: eps["bare"] / v for k, v in eps.items()}}


PAPER_MIN_INTERVAL = 100  # Table V's shortest rank-update interval (CoLA, MRPC, RTE, STS-B)


def markdown(result: dict) -> str:
    methods = result["settings"]["methods"]
    busy = (f"**Taken on a busy machine (1-minute load average {result['load_average_at_start']:.2f} at the start): "
            f"the timings are not comparable to a quiet machine's.**") if result.get("busy") else \
        f"Load average at the start: {result.get('load_average_at_start', float('nan')):.2f} (a quiet machine)."
    lines = [f"Command: `{result['command']}`  ", f"Machine: {result['machine']['platform']}, "
             f"{result['machine']['cpus']} CPUs, torch threads {result['machine']['torch_threads']}; batch "
             f"{result['settings']['batch_size']}, {result['settings']['steps']} timed steps after "
             f"{result['settings']['warmup']} warm-up steps, train mode; TriAdaptLoRA's growth blocks per matrix: "
             f"{result['settings'].get('blocks', [1, 7])}. {busy}", "",
             "Step time as a multiple of the floor (frozen model, input gradients only) on the same batch: the median "
             "of the per-step ratios, and their interquartile range below; length \"(real)\": the task's "
             "length-grouped training batches:", "",
             "| model | length | dropout | floor (s) | " + " | ".join(methods) + " |",
             "|---|---|---|---|" + "---|" * len(methods)]
    for row in result["step_times"]:
        lines.append(f"| {row['model']} | {row['length']} | {row['dropout']} | {row['seconds']['floor']:.2f} | "
                     + " | ".join(f"{row['vs_floor'][m]:.2f}" for m in methods) + " |")
        if "vs_floor_iqr" in row:
            spreads = (f"{low:.2f}–{high:.2f}" for low, high in (row["vs_floor_iqr"][m] for m in methods))
            lines.append("|  |  |  | (IQR) | " + " | ".join(spreads) + " |")
    if "peft_lora" in methods:
        lines += ["", "The same step times as a multiple of PEFT LoRA at the same dropout:", "",
                  "| model | length | dropout | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
        for row in result["step_times"]:
            lines.append(f"| {row['model']} | {row['length']} | {row['dropout']} | "
                         + " | ".join(f"{row['vs_peft_lora'][m]:.2f}" for m in methods) + " |")
    compiled = [row for row in result["step_times"] if "graphs_compiled_while_timing" in row]
    if compiled:
        lines += ["", "Compiled columns (`*_compiled`: torch.compile, inductor; compiled once for any length on real "
                  "batches): graphs compiled during the timed steps, which would inflate a median: "
                  + ", ".join(f"{row['model']} {row['length']} dropout {row['dropout']}: "
                              f"{row['graphs_compiled_while_timing']}" for row in compiled) + "."]
    if result.get("memory"):
        lines += ["", "Peak resident memory of a training step above the loaded model (MB; each method in a fresh "
                  "process):", "", "| model | length | dropout | " + " | ".join(methods) + " |",
                  "|---|---|---|" + "---|" * len(methods)]
        for row in result["memory"]:
            lines.append(f"| {row['model']} | {row['length']} | {row['dropout']} | "
                         + " | ".join(f"{row['peak_mb'][m]:.0f}" for m in methods) + " |")
    lines += ["", "Rank allocation, against one training step of the same model (TriAdaptLoRA, dropout 0); "
              f"'amortised' spreads one event over the paper's shortest interval ({PAPER_MIN_INTERVAL} steps):", "",
              "| model | M | TriAdaptLoRA event (s) | × step | amortised | IncreLoRA event (s) | "
              "IncreLoRA per step (s) | × step | AdaLoRA per step (s) | × step |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["allocation"]:
        step = next((r["seconds"].get("triadapt", math.nan) for r in result["step_times"]
                     if r["model"] == row["model"] and r["length"] == row["length"] and r["dropout"] == 0.0), math.nan)
        lines.append(f"| {row['model']} | {row['triadapt_M']} | {row['triadapt_event_s']:.4f} | "
                     f"{row['triadapt_event_s'] / step:.3f} | "
                     f"{row['triadapt_event_s'] / (PAPER_MIN_INTERVAL * step):.4%} | {row['increlora_event_s']:.4f} | "
                     f"{row['increlora_bookkeeping_s']:.4f} | {row['increlora_bookkeeping_s'] / step:.3f} | "
                     f"{row['adalora_bookkeeping_s']:.4f} | {row['adalora_bookkeeping_s'] / step:.3f} |")
    lines += ["", "TriAdaptLoRA has no per-step bookkeeping: its importance (Eq. 11) is read only at events.", "",
              "Eval forward time as a multiple of the bare model's:", "",
              "| model | length | bare (examples/s) | unmerged | merged |", "|---|---|---|---|---|"]
    for row in result["eval"]:
        lines.append(f"| {row['model']} | {row['length']} | {row['examples_per_s']['bare']:.1f} | "
                     f"{row['vs_bare']['unmerged']:.3f} | {row['vs_bare']['merged']:.3f} |")
    return "\n".join(lines) + "\n"


def measurement_header(script: str, argv, args) -> dict:
    """What a timing record starts with (command, commit, versions, machine, settings, load); refuses a busy machine
    unless ``args.allow_busy``, and then marks the record. Shared with scripts/race.py."""
    load = os.getloadavg()[0]
    if load > BUSY_LOAD and not args.allow_busy:
        raise SystemExit(f"error: the 1-minute load average is {load:.2f} (> {BUSY_LOAD}): other work shares the CPU "
                         f"and would distort every timing; wait until it is done, or pass --allow-busy to mark the record")
    return {"command": " ".join(["python", f"scripts/{script}", *(argv if argv is not None else sys.argv[1:])]),
            "git": records.git_state(ROOT), "packages": records.package_versions(), "machine": records.machine(),
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "load_average_at_start": load, "busy": load > BUSY_LOAD}


def write_measurement(result: dict, out: Path, suffix: str, table: str) -> Path:
    """<out>/<UTC time><suffix>.json and its Markdown table beside it; prints the table."""
    out.mkdir(parents=True, exist_ok=True)
    path = records.write_new_json(result, out, datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + suffix)
    (out / f"{path.stem}.md").write_text(table)
    print(table)
    return path


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="MiniLM, length 64, 3 timed steps")
    parser.add_argument("--models", nargs="+", default=["minilm", "deberta_base_shape"], choices=["minilm", *SHAPES])
    parser.add_argument("--lengths", nargs="+", type=int, default=[64, 128, 256])
    parser.add_argument("--dropouts", nargs="+", type=float, default=[0.0, 0.1])
    parser.add_argument("--methods", nargs="+", default=[m for m in METHODS if m not in COMPILED], choices=METHODS)
    parser.add_argument("--compile", action="store_true", help=f"also time {', '.join(COMPILED)}: torch.compile "
                        "(inductor) of those models, warmed up past their compilation")
    parser.add_argument("--blocks", nargs="+", type=int, default=REAL_RUN_BLOCKS,
                        help="each TriAdaptLoRA matrix's growth blocks at the final budget (default: rank 8 in 3 "
                        "blocks, as a Table I linear run ends); triadapt_one_block puts their sum in one block")
    parser.add_argument("--fused-adamw", action="store_true", help="every method's AdamW as torch's fused kernel "
                        "(train.fused_adamw=true); default: foreach, as the runner")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tasks", nargs="*", default=[], choices=GLUE_TASKS, help="also time real length-grouped batches of these GLUE "
                        "tasks (data from TRIADAPT_DATA_DIR, as the runner reads it)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="peak memory per method, each in a fresh process (first length, every dropout)")
    parser.add_argument("--allow-busy", action="store_true", help="run even if the load average says the CPU is "
                        "shared, and mark the record so")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    args = parser.parse_args(argv)
    if "floor" not in args.methods:
        parser.error(f"--methods {' '.join(args.methods)}: add floor, the reference of every ratio")
    if any(size < 1 for size in args.blocks):
        parser.error(f"--blocks {' '.join(map(str, args.blocks))}: every block holds at least one rank-1 unit")
    for flag, values, low in (("--steps", [args.steps], 1), ("--warmup", [args.warmup], 0),
                              ("--batch-size", [args.batch_size], 1), ("--lengths", args.lengths, 1)):
        if any(v < low for v in values):
            parser.error(f"{flag} {' '.join(map(str, values))}: each must be an integer >= {low}")
    if any(not 0 <= p < 1 for p in args.dropouts):
        parser.error(f"--dropouts {' '.join(map(str, args.dropouts))}: each must be in [0, 1)")
    if args.quick:
        args.models, args.lengths, args.steps, args.warmup = ["minilm"], [64], 3, 1
    if args.compile:
        args.methods += [m for m in COMPILED if m not in args.methods]
        args.warmup = max(args.warmup, 3)  # the first calls compile
    started = time.time()
    result = {**measurement_header("bench.py", argv, args), "step_times": [], "memory": [], "allocation": [], "eval": []}
    count = args.warmup + args.steps
    for name in args.models:
        inputs = {length: [batch(length, args.batch_size)] * count for length in args.lengths}
        inputs.update({f"{task} (real)": task_batches(task, count, args.batch_size) for task in args.tasks})
        for length, batches in inputs.items():
            for dropout in args.dropouts:
                result["step_times"].append({"model": name, "length": length, "dropout": dropout,
                                             **step_times(name, batches, dropout, args)})
        for dropout in args.dropouts if args.memory else []:
            result["memory"].append({"model": name, "length": args.lengths[0], "dropout": dropout,
                                     "peak_mb": peak_memory(name, args.lengths[0], dropout, args)})
        result["allocation"].append({"model": name, "length": args.lengths[0], **allocation_costs(name, args.lengths[0], args)})
        result["eval"].append({"model": name, "length": args.lengths[0], **eval_throughput(name, args.lengths[0], args)})
    result["wall_time_s"] = round(time.time() - started, 1)
    return write_measurement(result, args.out, "-quick" if args.quick else "", markdown(result))


if __name__ == "__main__":
    main()
