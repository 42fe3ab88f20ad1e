"""Rebuild the paper's Tables I-IV from our run records, beside the paper's own numbers, and Figs. 3-5 as
numbers (each swept value's score and each curve's range).

    python scripts/make_tables.py [--runs results/runs] [--paper results/paper_reported.json] [--out results/tables]
                                  [--readme [FILE ...]]

With --readme, every block between ``<!-- include <path of a table> -->`` and ``<!-- end include -->`` of README.md
and docs/*.md (or of the files named) is replaced by that freshly written table (the path is relative to the file
holding the block), so the documents show the records' numbers.

Reads only JSON records (never a model) and conf/ (to know each protocol's settings). A record counts for
a table when its config is the one a protocol gives its cell: ``cpu`` (conf/experiment/cpu_protocol.yaml;
for SQuAD, conf/experiment/table4.yaml, which adds its sequence length) or ``paper`` (the task's full
epochs, Table V). Ad-hoc runs (other settings) are left out. Each cell is the mean ± std over seeds of
the best dev score of each run, in percent. The schedule-length study (conf/experiment/schedule_length*.yaml)
gets its own two tables, one row per task and T: the CPU protocol's config but for T, never mixed with Table I.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from runner.records import run_identity
from selection import (GRID, REPORT_SEEDS, describe, interval, is_final, reported_score, select_rate, tuned_runs,
                       validation_means)
from selection import last_score as tuned_last_score

ROOT = Path(__file__).resolve().parent.parent

CONF = ROOT / "conf"
GLUE = ["mnli", "sst2", "cola", "qqp", "qnli", "rte", "mrpc", "stsb"]
TABLE1 = ["full_ft", "bitfit", "hadapter", "padapter", "lora", "adalora", "increlora", "triadapt_fixed_k",
          "triadapt_linear", "triadapt_linear_authors_code", "triadapt_linear_preserving", "triadapt_nonlinear", "tlora"]
OURS = {"triadapt_linear_preserving"}  # variants of ours beyond the paper: labelled "(ours)" in every table
TABLE2 = ["triadapt_nonlinear", "triadapt_nonlinear_no_orth"]
TABLE3 = ["triadapt_nonlinear", "triadapt_nonlinear_sqrt_r", "triadapt_nonlinear_no_norm"]
TABLE4 = ["full_ft", "hadapter", "lora", "increlora", "triadapt_linear", "triadapt_nonlinear", "triadapt_fixed_k"]
# (ours, other): Table I's claims against the baselines, then the modes against each other, then the ablations
# of Table II (orthogonal constraint) and Table III (dividing the F-norm by r against sqrt(r) and nothing).
CLAIMS = [("triadapt_linear", "increlora"), ("triadapt_nonlinear", "increlora"), ("triadapt_linear", "adalora"),
          ("triadapt_nonlinear", "adalora"), ("triadapt_linear", "lora"), ("triadapt_nonlinear", "lora"),
          ("triadapt_linear", "triadapt_nonlinear"), ("triadapt_linear", "triadapt_fixed_k"),
          ("triadapt_nonlinear", "triadapt_nonlinear_no_orth"), ("triadapt_nonlinear", "triadapt_nonlinear_sqrt_r"),
          ("triadapt_nonlinear", "triadapt_nonlinear_no_norm"),
          ("triadapt_linear_authors_code", "lora"), ("triadapt_linear_authors_code", "triadapt_linear"),
          ("triadapt_linear_preserving", "triadapt_linear"), ("triadapt_linear_preserving", "lora")]
# The ablation ladder (ours, conf/experiment/ablation_ladder.yaml): TriAdaptLoRA linear -> LoRA, one change a rung.
LADDER = [("triadapt_linear", "TriAdaptLoRA linear (the paper's)"),
          ("ladder1_fixed_scale", "scale alpha/r_ref instead of alpha/(r+eps)"),
          ("ladder2_no_growth", "no growth: rank r_ref from step 0"),
          ("ladder3_no_orth", "no orthogonal regulariser (Eq. 10)"),
          ("ladder4_identity_middle", "middle factor L+U starts at I, not N(0, 0.02)"),
          ("ladder5_lora_a_init", "A drawn as PEFT LoRA's (Kaiming-uniform)"),
          ("lora", "LoRA (PEFT): no middle factor")]
LADDER_TASKS = ["mrpc", "stsb", "cola"]
# The schedule-length study (issue 24, conf/experiment/schedule_length*.yaml): the CPU protocol at other Ts, these
# methods, each paired with LoRA at the same T and seed. The protocol's own T comes from Table I's records.
SCHEDULE_METHODS = ["lora", "triadapt_linear", "adalora", "increlora", "triadapt_linear_preserving"]
# Options of ours tried against the protocol's value, one sweep each (conf/experiment/<tag>.yaml): tag -> the
# dotted key the sweep sets. Each run is paired per seed with the protocol's cell of the same method and task.
OPTION_SWEEPS = {"lr_cap": "method.new_group_schedule", "dropout_sampler": "method.dropout_sampler"}
# Figs. 3-5: the task setting each sensitivity sweep varies (conf/experiment/fig3.yaml ... fig5.yaml).
SWEEPS = {"fig3": "warmup_steps", "fig4": "interval", "fig5": "r_ref"}
MODEL_LABELS = {"minilm": "all-MiniLM-L6-v2 on CPU", "deberta_v3_base": "DeBERTaV3-base",
                "tiny_deberta": "tiny random DeBERTa (test model; numbers meaningless)"}


# The experiment that defines a task's cpu-protocol cell, where it is not cpu_protocol itself.
CPU_EXPERIMENT = {"squad_v2": "table4"}


def comparable(config: dict) -> dict:
    """What a record is matched to a protocol on: the run's identity (``runner.records.run_identity``) less the
    hardware, the device and the thread count, which may move the last digits but not the protocol."""
    kept = run_identity(config)
    kept.pop("device", None)
    kept["train"] = {k: v for k, v in kept["train"].items() if k != "threads"}
    return kept


def protocol_config(kind: str, model: str, method: str, task: str, seed: int) -> dict | None:
    """The resolved config the ``kind`` protocol gives this cell today (None if conf/ no longer has it)."""
    config = seedless_protocol_config(kind, model, method, task)
    return None if config is None else {**config, "seed": seed}


@functools.cache
def seedless_protocol_config(kind: str, model: str, method: str, task: str) -> dict | None:
    """One Hydra compose per (protocol, model, method, task): the seed is a top-level key no other value refers to,
    so the cells of one row differ only there (composing per seed made the scripts take a minute)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    overrides = [f"model={model}", f"method={method}", f"task={task}"]
    overrides += [f"+experiment={CPU_EXPERIMENT.get(task, 'cpu_protocol')}"] if kind == "cpu" else []
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return comparable(OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True))
    except HydraException:
        return None


def protocol(record: dict) -> str | None:
    """The protocol whose config this record's config equals, bookkeeping aside: ``cpu`` (conf/experiment/
    cpu_protocol.yaml: T = cpu_steps, lr = cpu_lr, length-grouped batches) or ``paper`` (the task's full
    epochs at Table V's settings). Anything else (another step count or lr, a swept hyperparameter, an added
    ``+method.<key>``) is ad hoc: None."""
    if record["task"] not in (*GLUE, "squad_v2"):  # the tasks of Tables I-IV; the decoder study has its own table
        return None
    for kind in ("cpu", "paper"):
        expected = protocol_config(kind, record["model"], record["method"], record["task"], record["seed"])
        if expected is not None and comparable(record["config"]) == expected:
            return kind
    return None


def fail(message: str):
    """Stop with one line on stderr and exit status 2, as the runner does on bad input; nothing is written."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def read_records(runs_dir: Path) -> list[dict]:
    """Every run record (``*.json``) under ``runs_dir``; stops naming the folder if it is missing or holds no record,
    or naming the file that is not JSON, before any table or figure is touched."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        fail(f"--runs {runs_dir}: no such folder (the committed records are under results/runs/)")
    paths = sorted(runs_dir.rglob("*.json"))
    if not paths:
        fail(f"--runs {runs_dir}: no run record (*.json) under it; run a sweep first, e.g. python run.py -m "
             f"+experiment=table1")
    records = []
    for path in paths:
        try:
            records.append(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            fail(f"{path} is not a JSON run record ({err}); move it out of {runs_dir}")
    return records


def runs_by_protocol(records: list[dict]) -> dict:
    """(model, protocol) -> method -> task -> seed -> record; of repeated runs, the newest (``finished_at``)."""
    runs = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for record in sorted(records, key=lambda r: r.get("finished_at", "")):
        kind = protocol(record)
        if kind is not None:
            runs[(record["model"], kind)][record["method"]][record["task"]][record["seed"]] = record
    return runs


def without_steps(config: dict) -> dict:
    """A comparable config less T (``train.max_steps``), the one setting the schedule-length study varies."""
    return {**config, "train": {k: v for k, v in config["train"].items() if k != "max_steps"}}


def schedule_runs(records: list[dict]) -> dict:
    """(model, task) -> T -> method -> seed -> record for the schedule-length study: runs of its methods whose config
    is the CPU protocol's but for T, made by the study's sweeps (tag ``schedule_length``) or, at T = cpu_steps, Table
    I's own records; of repeated runs, the newest. Only tasks with a run at a T other than the protocol's."""
    runs = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for record in sorted(records, key=lambda r: r.get("finished_at", "")):
        if record["method"] not in SCHEDULE_METHODS:
            continue
        expected = protocol_config("cpu", record["model"], record["method"], record["task"], record["seed"])
        if expected is None or without_steps(comparable(record["config"])) != without_steps(expected):
            continue
        if record.get("tag") == "schedule_length" or record["steps"] == expected["train"]["max_steps"]:
            runs[(record["model"], record["task"])][record["steps"]][record["method"]][record["seed"]] = record
    return {key: by_steps for key, by_steps in runs.items() if len(by_steps) > 1}


def steps_label(steps: int, cpu_steps: int, paper_steps: int) -> str:
    """T with what it is: the CPU protocol's, a multiple of it, or the paper's (Table V's epochs, unscaled)."""
    what = ("CPU protocol" if steps == cpu_steps else "paper" if steps == paper_steps
            else f"{steps / cpu_steps:g} × CPU")
    return f"{steps} ({what})"


def paired_gap(runs: dict, method: str, value=None) -> list[float]:
    """``method`` minus LoRA per seed both ran, at one T, by ``value`` of a record (default: its best score)."""
    value = value or score
    a, b = runs.get(method, {}), runs.get("lora", {})
    return [value(a[s]) - value(b[s]) for s in sorted(set(a) & set(b))]


def last_score(record: dict) -> float:
    """The dev score of a run's last evaluation in percent (GLUE)."""
    return 100 * record["last"]["main"]


def schedule_tables(study: dict, model: str) -> tuple[tuple, tuple]:
    """(scores, gaps) of one model's schedule-length study: the score of each method per task and T, mean ± std
    over seeds; and each method's paired per-seed difference to LoRA at the same T with the verdict."""
    tasks = [t for t in GLUE if (model, t) in study]
    methods = [m for m in SCHEDULE_METHODS if any(m in by_method for t in tasks for by_method in study[(model, t)].values())]
    scores, gaps = [], []
    for task in tasks:
        by_steps = study[(model, task)]
        any_record = next(iter(next(iter(next(iter(by_steps.values())).values())).values()))
        cpu_steps = protocol_config("cpu", model, any_record["method"], task, 0)["task"]["cpu_steps"]
        paper_steps = any_record["schedule"]["paper_steps"]
        for steps, by_method in sorted(by_steps.items()):
            when = steps_label(steps, cpu_steps, paper_steps)
            scores.append([task, when, f"{steps / paper_steps:.2f}",
                           *[cell([score(r) for r in by_method.get(m, {}).values()], 3) for m in methods]])
            for method in methods[1:]:
                diffs = paired_gap(by_method, method)
                if diffs:
                    said = verdict(diffs).replace("does not hold", "behind").replace("holds", "ahead")
                    gaps.append([task, when, label(method), ", ".join(f"{d:+.2f}" for d in diffs), cell(diffs), said,
                                 cell(paired_gap(by_method, method, last_score))])
    return ((["task", "T (steps)", "T / T_paper", *[label(m) for m in methods]], scores),
            (["task", "T (steps)", "method", "per-seed difference to LoRA", "mean ± std", "verdict",
              "at the last evaluation"], gaps))


TUNED_METHODS = ["lora", "triadapt_linear", "adalora", "increlora", "triadapt_linear_authors_code"]
TUNED_VARIED = ("lr", "max_steps", "eval_every")  # what the tuned study sets per run (conf/experiment/tuned.yaml)


@functools.cache
def tuned_config(model: str, method: str, task: str) -> dict | None:
    """conf/experiment/tuned.yaml's config of a cell, less the settings it varies per run."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            config = compose(config_name="config", overrides=[f"model={model}", f"method={method}", f"task={task}",
                                                              "+experiment=tuned", "seed=0"])
    except HydraException:
        return None
    return tuned_identity(comparable(OmegaConf.to_container(config, resolve=True)))


def tuned_identity(config: dict) -> dict:
    return {**{k: v for k, v in config.items() if k != "seed"},
            "train": {k: v for k, v in config["train"].items() if k not in TUNED_VARIED}}


def tuned_study(records: list[dict]) -> dict:
    """(model, task, method, T) -> learning rate -> seed -> record: the runs whose config is the tuned study's but
    for the rate, T and evaluation cadence (``selection.tuned_runs``)."""
    return tuned_runs([r for r in records if r["method"] in TUNED_METHODS and r.get("selected")
                       and tuned_identity(comparable(r["config"])) == tuned_config(r["model"], r["method"], r["task"])])


def tuned_tables(study: dict, model: str, factor: int) -> tuple[tuple, tuple, int]:
    """(scores and paired intervals, the rate choice, the number of comparisons) of one model's tuned study at
    T = ``factor`` × the CPU protocol's T: each method at its selected rate, dev at the best validation step over
    the report seeds, and TriAdaptLoRA linear minus each other method, paired per seed, with a 95% t-interval."""
    cells = {}
    for (m, task, method, steps), by_rate in study.items():
        base = tuned_config(m, method, task)
        if m == model and base is not None and steps == factor * base["task"]["cpu_steps"]:
            cells[(task, method)] = (steps, by_rate)
    tasks = [t for t in GLUE if any(t == task for task, _ in cells)]
    methods = [m for m in TUNED_METHODS if any(m == method for _, method in cells)]
    choice, chosen = [], {}
    for task in tasks:
        for method in methods:
            if (task, method) not in cells:
                continue
            steps, by_rate = cells[(task, method)]
            means = validation_means(by_rate)
            final = is_final(means, GRID if factor == 1 else ())
            winner = select_rate(means) if final else None
            chosen[(task, method)] = by_rate.get(winner, {})
            rates = ", ".join(f"{'**' if r == winner else ''}{r:g}: {v:.2f}{'**' if r == winner else ''}"
                              for r, v in means.items())
            choice.append([task, str(steps), label(method), rates, f"{winner:g}" if final else "open (rates to try)",
                           str(len(chosen[(task, method)]))])
    header = ["", *[f"{t} (T = {cells[next(k for k in cells if k[0] == t)][0]})" for t in tasks]]
    rows, comparisons = [], 0
    for method in methods:
        runs = [chosen.get((t, method), {}) for t in tasks]
        rows.append([f"{label(method)} (dev at best validation)",
                     *[cell([reported_score(r) for r in by_seed.values()], len(REPORT_SEEDS)) for by_seed in runs]])
        rows.append([f"{label(method)} (dev at the last step)",
                     *[cell([tuned_last_score(r) for r in by_seed.values()], len(REPORT_SEEDS)) for by_seed in runs]])
    ours = HEADLINE[0]
    for other in [m for m in methods if m != ours]:
        for name, value in (("", reported_score), (", last step", tuned_last_score)):
            row = [f"{ours} − {label(other)}{name}"]
            for t in tasks:
                a, b = chosen.get((t, ours), {}), chosen.get((t, other), {})
                diffs = [value(a[s]) - value(b[s]) for s in sorted(set(a) & set(b))]
                comparisons += len(diffs) >= 2
                row.append(describe(interval(diffs)) if diffs else "–")
            rows.append(row)
    return (header, rows), (["task", "T", "method", "validation score per rate (seed 0), the winner in bold",
                             "selected rate", "seeds at it"], choice), comparisons


GENERATION_METHODS = ["lora", "triadapt_linear", "adalora"]  # conf/experiment/smollm2_squad.yaml


@functools.cache
def generation_config(method: str) -> dict | None:
    """conf/experiment/smollm2_squad.yaml's config of a method, seed left out."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            config = compose(config_name="config", overrides=[f"method={method}", "+experiment=smollm2_squad", "seed=0"])
    except HydraException:
        return None
    return {k: v for k, v in comparable(OmegaConf.to_container(config, resolve=True)).items() if k != "seed"}


def generation_runs(records: list[dict]) -> dict:
    """method -> seed -> record of the decoder study (issue 48), the newest of repeated runs."""
    runs = defaultdict(dict)
    for record in sorted(records, key=lambda r: r.get("finished_at", "")):
        if record["task"] == "squad_v2_gen" and record["method"] in GENERATION_METHODS and \
                {k: v for k, v in comparable(record["config"]).items() if k != "seed"} == generation_config(record["method"]):
            runs[record["method"]][record["seed"]] = record
    return runs


GENERATION_COLUMNS = [("EM", "exact"), ("F1", "f1"), ("HasAns F1", "HasAns_f1"), ("NoAns F1", "NoAns_f1")]


def generation_table(runs: dict) -> tuple[str, tuple[list[str], list[list[str]]]]:
    """(caption, table): the untrained model's row, then each method at its last evaluation, mean ± std over seeds."""
    every = [r for by_seed in runs.values() for r in by_seed.values()]
    seeds = sorted({r["seed"] for r in every})
    first = lambda r: r["evaluations"][0]["metrics"]["dev"]  # noqa: E731 - step 0: before training
    last = lambda r: r["last"]["metrics"]["dev"]  # noqa: E731
    rows = [["SmolLM2-135M-Instruct, zero-shot (step 0)",
             *[cell([first(r)[key] for r in every if r["evaluations"][0]["step"] == 0]) for _, key in GENERATION_COLUMNS]]]
    floor = every[0]["data"]["protocol"].get("all_empty_baseline")
    if floor is not None:  # the no-answer phrase to every question: EM = F1 = the unanswerable share
        rows.append([f"\"{every[0]['config']['task']['no_answer']}\" to every question", f"{floor:.2f}", f"{floor:.2f}",
                     "0.00", "100.00"])
    for method in GENERATION_METHODS:
        if method in runs:
            rows.append([label(method), *[cell([last(r)[key] for r in runs[method].values()], len(seeds))
                                          for _, key in GENERATION_COLUMNS]])
    ours = runs.get("triadapt_linear", {})
    for other in (m for m in GENERATION_METHODS if m != "triadapt_linear" and m in runs):
        paired = sorted(set(ours) & set(runs[other]))
        if len(paired) > 1:  # paired per seed: 95% t-interval, "ahead"/"behind" only when it excludes 0
            rows.append([f"{label('triadapt_linear')} − {label(other)} (paired, {len(paired)} seeds)",
                         *[describe(interval([last(ours[s])[key] - last(runs[other][s])[key] for s in paired]))
                           for _, key in GENERATION_COLUMNS]])
    protocol = every[0]["data"]["protocol"]
    caption = (f"**SQuAD 2.0 as generation, a real pretrained decoder (issue 48).** SmolLM2-135M-Instruct (GGUF, "
               f"dequantised to float32) on CPU; trained on {protocol['train_features']} questions of the training "
               f"articles, T = {every[0]['steps']}; greedy answers to {protocol['eval_questions']} questions of held-out "
               f"articles of the official dev set (conf/task/squad_v2_gen.yaml), official EM/F1 at the last step, mean ± "
               f"std over seeds {seeds}. The zero-shot row: the same questions before training (every run's step 0). "
               f"Paired rows: TriAdaptLoRA minus the other method seed by seed, mean with its 95% t-interval; \"ahead\" "
               f"or \"behind\" only when the interval excludes 0. No choice is made on these questions.")
    return caption, (["", *[name for name, _ in GENERATION_COLUMNS]], rows)


def option_runs(records: list[dict], tag: str) -> dict:
    """(model, method, task, value) -> seed -> record of sweep ``tag``: its runs whose config is the CPU protocol's
    but for the sweep's key; of repeated runs, the newest."""
    group, key = OPTION_SWEEPS[tag].split(".")
    runs = defaultdict(dict)
    for record in sorted(records, key=lambda r: r.get("finished_at", "")):
        expected = protocol_config("cpu", record["model"], record["method"], record["task"], record["seed"])
        if record.get("tag") != tag or expected is None:
            continue
        config = comparable(record["config"])
        value = config[group].get(key)
        others = {k: v for k, v in config[group].items() if k != key}  # the key may be one the protocol's config lacks
        if {**config, group: {**others, **({key: expected[group][key]} if key in expected[group] else {})}} == expected:
            runs[(record["model"], record["method"], record["task"], value)][record["seed"]] = record
    return runs


def option_table(option: dict, protocol_runs: dict, key: str) -> tuple[list[str], list[list[str]]]:
    """Each (method, task, value) of an option sweep: its score, the protocol cell's, and the per-seed difference."""
    rows = []
    for (model, method, task, value), runs in sorted(option.items()):
        base = protocol_runs.get((model, "cpu"), {}).get(method, {}).get(task, {})
        diffs = [score(runs[s]) - score(base[s]) for s in sorted(set(runs) & set(base))]
        rows.append([method, task, f"{key}={value}", cell([score(r) for r in runs.values()]),
                     cell([score(base[s]) for s in sorted(set(runs) & set(base))]),
                     ", ".join(f"{d:+.2f}" for d in diffs) or "–", cell(diffs), verdict(diffs) if diffs else "–"])
    return ["method", "task", "option (ours)", "score", "protocol's score, same seeds", "per-seed difference",
            "mean ± std", "verdict"], rows


def perturbation_runs(records: list[dict]) -> dict:
    """(model, method as labelled, task, T) -> seed -> record, for every record that measured what its growth events
    change (issue 25): the protocol's, the schedule-length study's and the option sweeps' runs."""
    study = {id(r) for by_steps in schedule_runs(records).values() for by_method in by_steps.values()
             for runs in by_method.values() for r in runs.values()}
    options = {id(r): tag for tag in OPTION_SWEEPS for runs in option_runs(records, tag).values() for r in runs.values()}
    runs = defaultdict(dict)
    for record in sorted(records, key=lambda r: r.get("finished_at", "")):
        history = record.get("method_state", {}).get("growth_history") or []
        if not any("delta_w_change" in e for e in history):
            continue
        if id(record) in options:
            name = f"{label(record['method'])}, {options[id(record)]} (ours)"
        elif id(record) in study or protocol(record) == "cpu":
            name = label(record["method"])
        else:
            continue
        runs[(record["model"], name, record["task"], record["steps"])][record["seed"]] = record
    return runs


def perturbation_table(runs: dict) -> tuple[list[str], list[list[str]]]:
    """Per (method, task, T): what a growth event does, averaged over the grown matrices of an event and then over
    seeds: the relative change of each grown matrix's update ||dW' - dW|| / ||dW|| at the first event and at the
    median event, and the mean training loss over the steps after an event minus the steps before it."""
    rows = []
    for (model, name, task, steps), by_seed in sorted(runs.items()):
        firsts, medians, jumps, events = [], [], [], []
        for record in by_seed.values():
            changes = [statistics.mean(v for v in e["delta_w_change"].values() if v is not None)
                       for e in record["method_state"]["growth_history"]
                       if any(v is not None for v in e.get("delta_w_change", {}).values())]
            firsts.append(changes[0])
            medians.append(statistics.median(changes))
            events.append(len(changes))
            losses = record.get("growth_losses") or []
            jumps += [e["loss_after"] - e["loss_before"] for e in losses if e["loss_before"] is not None
                      and e["loss_after"] is not None]
        rows.append([name, task, str(steps), f"{statistics.mean(events):g}", cell(firsts), cell(medians),
                     f"{statistics.mean(jumps):+.3f}" if jumps else "–", str(len(by_seed))])
    return ["method", "task", "T", "events per run", "ΔW change, first event", "ΔW change, median event",
            "loss after − before an event (mean)", "runs"], rows


def sensitivity_points(records: list[dict], tag: str) -> dict:
    """(model, task, method) -> swept value -> scores (%) of sweep ``tag``: the sweep's own runs, plus the
    protocol's runs of the same methods, tasks and seeds (a point at the default value is the protocol's cell,
    which the sweep skips when Table I already holds it)."""
    key = SWEEPS[tag]
    swept = [r for r in records if r.get("tag") == tag]
    methods, tasks, seeds = ({r[field] for r in swept} for field in ("method", "task", "seed"))
    runs = {(r["model"], r["task"], r["method"], r["config"]["task"][key], r["seed"]): r for r in records
            if r in swept or (r["method"] in methods and r["task"] in tasks and r["seed"] in seeds
                              and protocol(r) == "cpu")}
    points = defaultdict(lambda: defaultdict(list))
    for (model, task, method, value, _), r in runs.items():
        points[(model, task, method)][value].append(score(r))
    return points


def score(record: dict, metric: str | None = None) -> float:
    """Best dev score in percent (GLUE metrics are fractions, SQuAD's are percentages already)."""
    best = record["best"]
    value = best["metrics"][next(iter(best["metrics"]))][metric] if metric else best["main"]
    return value if record["task"] == "squad_v2" else 100 * value


def cell(values: list[float], seeds: int = 0) -> str:
    """mean ± std; a cell with fewer runs than the table's ``seeds`` says how many it has."""
    if not values:
        return "–"
    missing = f" (n={len(values)})" if len(values) < seeds else ""
    if len(values) == 1:
        return f"{values[0]:.2f}{missing}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}{missing}"


def paper_cell(entry: dict | None) -> str:
    if entry is None:
        return "–"
    return f"{entry['mean']:.2f}" + ("" if entry["std"] is None else f" ± {entry['std']:.1f}")


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def latex(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: s.replace("±", r"$\pm$").replace("_", r"\_").replace("–", "--")  # noqa: E731
    body = [" & ".join(esc(c) for c in r) + r" \\" for r in rows]
    return "\n".join([r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
                      " & ".join(esc(h) for h in header) + r" \\", r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}"]) + "\n"


def label(method: str) -> str:
    return f"{method} (ours)" if method in OURS else method


def glue_table(methods: list[str], by_method: dict, paper_rows: dict, seeds: int) -> tuple[list[str], list[list[str]]]:
    tasks = [t for t in GLUE if any(by_method.get(m, {}).get(t) for m in methods)]
    header = ["method", *tasks, "avg"]
    rows = []
    for m in methods:
        if m not in by_method:
            continue
        means = [statistics.mean([score(r) for r in by_method[m][t].values()]) for t in tasks if by_method[m].get(t)]
        cells = [cell([score(r) for r in by_method[m].get(t, {}).values()], seeds) for t in tasks]
        rows.append([label(m), *cells, f"{statistics.mean(means):.2f}" if len(means) == len(tasks) else "–"])
        if m in paper_rows:
            rows.append([f"{m} (paper)", *[paper_cell(paper_rows[m]["tasks"].get(t)) for t in tasks],
                         f"{paper_rows[m]['average']:.2f} (8 tasks)"])
    return header, rows


# The rule of the tables made before the tuned comparison, and how often it fires on noise alone (three paired
# differences drawn from N(0, 1), 10^6 draws: 21.1%); the tuned tables use 95% t-intervals (selection.interval).
OLD_RULE = "(a rule that calls pure noise a result about one time in five at three seeds)"


def verdict(diffs: list[float]) -> str:
    """"holds" when every paired difference is positive and the mean exceeds one std; the mirror image
    for "does not hold"; anything else is inconclusive at this number of seeds."""
    if len(diffs) < 2:
        return "inconclusive (one seed)"
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    if mean - sd > 0 and min(diffs) > 0:
        return "holds"
    if mean + sd < 0 and max(diffs) < 0:
        return "does not hold"
    return f"inconclusive at {len(diffs)} seeds"


def direction(diffs: list[float]) -> str:
    """A rung against the one below it, by ``verdict``'s rule: "higher", "lower" or inconclusive."""
    return {"holds": "higher", "does not hold": "lower"}.get(verdict(diffs), verdict(diffs))


def ladder_table(by_method: dict) -> tuple[list[str], list[list[str]]]:
    """One row per rung: its score per task and the paired per-seed difference to the rung above it (while a rung
    has no run yet, to the nearest rung above that has, named in the cell)."""
    tasks = [t for t in LADDER_TASKS if any(by_method.get(m, {}).get(t) for m, _ in LADDER[1:-1])]
    seeds = max((len(by_method.get(m, {}).get(t, {})) for m, _ in LADDER for t in tasks), default=0)
    header = ["rung", "method", "change from the rung above"]
    for t in tasks:
        header += [t, f"{t}: Δ to the rung above"]
    rows = []
    for index, (method, change) in enumerate(LADDER):
        row = [str(index), method if index in (0, len(LADDER) - 1) else f"{method} (ours)", change]
        for t in tasks:
            runs = by_method.get(method, {}).get(t, {})
            row.append(cell([score(r) for r in runs.values()], seeds))
            above = next((i for i in range(index - 1, -1, -1) if by_method.get(LADDER[i][0], {}).get(t)), None)
            below = by_method[LADDER[above][0]][t] if above is not None else {}
            paired = sorted(set(runs) & set(below))
            diffs = [score(runs[s]) - score(below[s]) for s in paired]
            against = "" if above == index - 1 else f" (to rung {above})"
            row.append(f"{cell(diffs)}{against}, {direction(diffs)}" if diffs else "–")
        rows.append(row)
    return header, rows


HEADLINE = ("triadapt_linear", ["lora", "adalora", "increlora"])


def headline_table(by_method: dict) -> tuple[list[str], list[list[str]]]:
    """The README's answer: TriAdaptLoRA linear's score per task, and its paired per-seed difference to each
    baseline with the verdict."""
    ours, others = HEADLINE
    tasks = [t for t in GLUE if by_method.get(ours, {}).get(t)]
    rows = [[f"{ours} (score)", *[cell([score(r) for r in by_method[ours][t].values()]) for t in tasks]]]
    for other in others:
        row = [f"{ours} − {other}"]
        for t in tasks:
            a, b = by_method[ours][t], by_method.get(other, {}).get(t, {})
            diffs = [score(a[s]) - score(b[s]) for s in sorted(set(a) & set(b))]
            said = verdict(diffs).replace("does not hold", "behind").replace("holds", "ahead")
            row.append((f"{cell(diffs)}, {said}" if "(" in said else f"{cell(diffs)} ({said})") if diffs else "–")
        rows.append(row)
    return ["", *tasks], rows


def claims_table(by_method: dict) -> tuple[list[str], list[list[str]]]:
    rows = []
    for ours, other in CLAIMS:
        for task in GLUE:
            a, b = by_method.get(ours, {}).get(task, {}), by_method.get(other, {}).get(task, {})
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            diffs = [score(a[s]) - score(b[s]) for s in seeds]
            rows.append([f"{label(ours)} > {label(other)}", task, ", ".join(f"{d:+.2f}" for d in diffs), cell(diffs), verdict(diffs)])
    return ["claim", "task", "per-seed difference", "mean ± std", "verdict"], rows


def sensitivity_table(curves: dict, default) -> tuple[list[str], list[list[str]]]:
    """Figs. 3-5 as numbers: method -> swept value -> scores becomes one row per method with the mean at each
    value and the row's range (max - min of those means), the spread the paper's sensitivity claim is about."""
    values = sorted({v for curve in curves.values() for v in curve})
    seeds = max(len(scores) for curve in curves.values() for scores in curve.values())
    rows = []
    for method, curve in sorted(curves.items()):
        means = [statistics.mean(curve[v]) for v in values if v in curve]
        rows.append([method, *[cell(curve.get(v, []), seeds) for v in values], f"{max(means) - min(means):.2f}"])
    return ["method", *[f"{v} (protocol)" if v == default else str(v) for v in values], "range"], rows


def squad_caption(model: str, kind: str, squad: dict) -> str:
    """Table IV's own caption: its seeds, and where its evaluation questions come from."""
    seeds = sorted({s for runs in squad.values() for s in runs})
    protocol = next(iter(next(iter(squad.values())).values()))["data"].get("protocol") or {}
    where = ("held-out articles of the official dev set (dev-split protocol; ours are not comparable to the paper's)"
             if protocol.get("name") == "dev_split" else "the official dev set")
    return (f"**Table IV (SQuAD 2.0).** {MODEL_LABELS.get(model, model)}, {kind} protocol, {where}, best dev score "
            f"per run, mean ± std over seeds {seeds}. Paper: DeBERTaV3-base on an A100 (results/paper_reported.json).")


def squad_table(squad: dict, paper4: dict) -> tuple[list[str], list[list[str]]]:
    """EM and F1 per method beside the paper's, under a row for answering "no answer" to every question."""
    seeds = len({s for runs in squad.values() for s in runs})
    rows = [[m, cell([score(r, "exact") for r in runs.values()], seeds), cell([score(r, "f1") for r in runs.values()], seeds),
             f"{paper4[m]['exact']:.2f} / {paper4[m]['f1']:.2f}" if m in paper4 else "–"] for m, runs in squad.items()]
    baselines = {r["data"]["protocol"].get("all_empty_baseline") for runs in squad.values() for r in runs.values()
                 if r["data"].get("protocol")}
    if len(baselines) == 1 and None not in baselines:
        empty = f"{baselines.pop():.2f}"
        rows.insert(0, ["no answer to every question", empty, empty, "–"])
    return ["method", "EM", "F1", "paper EM / F1"], rows


def sensitivity_sections(records: list[dict]) -> list[tuple[str, str, tuple]]:
    """(file name, caption, table) per sensitivity sweep and (model, task) it ran on."""
    sections = []
    for tag, key in SWEEPS.items():
        points = sensitivity_points(records, tag)
        for model, task in sorted({(m, t) for m, t, _ in points}):
            curves = {method: curve for (m, t, method), curve in points.items() if (m, t) == (model, task)}
            swept = [r for r in records if r.get("tag") == tag and (r["model"], r["task"]) == (model, task)]
            default = protocol_config("cpu", model, next(iter(curves)), task, 0)["task"][key]
            caption = (f"**Fig. {tag[-1]} ({key}) as numbers.** {MODEL_LABELS.get(model, model)}, cpu protocol with "
                       f"{key} swept, {task} dev {swept[0]['metric']}, best dev score per run (%), seeds "
                       f"{sorted({r['seed'] for r in swept})}. \"(protocol)\" marks the protocol's own value (those "
                       f"cells are Table I's); range = max − min of the row.")
            sections.append((f"{tag}_{model}_{task}", caption, sensitivity_table(curves, default)))
    return sections


def build(runs_dir: Path, paper_file: Path, out_dir: Path) -> list[Path]:
    paper = json.loads(Path(paper_file).read_text())
    records = read_records(runs_dir)
    runs = runs_by_protocol(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    paper1 = {r["method"]: r for r in paper["table1"] if r["method"]}
    paper2 = {r["method"]: r for r in paper["table2"]}
    paper3 = {r["method"]: r for r in paper["table3"]}
    paper4 = {r["method"]: r for r in paper["table4"]}
    sections = []
    for (model, kind), by_method in sorted(runs.items()):
        seeds = sorted({s for tasks in by_method.values() for t, runs in tasks.items() if t in GLUE for s in runs})
        title = (f"{MODEL_LABELS.get(model, model)}, {kind} protocol, GLUE dev, best dev score per run, "
                 f"mean ± std over seeds {seeds}. Paper rows: DeBERTaV3-base on an A100 (results/paper_reported.json).")
        stem = f"{model}_{kind}"
        sections += [(f"table1_{stem}", f"**Table I.** {title}", glue_table(TABLE1, by_method, paper1, len(seeds))),
                     (f"table2_{stem}", f"**Table II (orthogonal constraint).** {title}",
                      glue_table(TABLE2, by_method, paper2, len(seeds))),
                     (f"table3_{stem}", f"**Table III (F-norm normalisation).** {title}",
                      glue_table(TABLE3, by_method, paper3, len(seeds))),
                     (f"claims_{stem}", f"**Paired per-seed differences.** {title} \"holds\"/\"does not hold\" when every "
                      f"seed agrees and the mean is more than one std from 0 {OLD_RULE}.", claims_table(by_method))]
        if by_method.get(HEADLINE[0]):
            sections.append((f"headline_{stem}", f"**TriAdaptLoRA linear against the three baselines the paper says it "
                             f"beats.** {MODEL_LABELS.get(model, model)}, {kind} protocol, GLUE dev, best dev score per "
                             f"run (%), seeds {seeds}. Below the scores: our minus theirs, paired per seed, mean ± std; "
                             f"\"ahead\"/\"behind\" when every seed agrees and the mean is more than one std from 0 {OLD_RULE}.",
                             headline_table(by_method)))
        if any(m in by_method for m, _ in LADDER[1:-1]):
            sections.append((f"ladder_{stem}", f"**The ablation ladder (ours), TriAdaptLoRA linear to LoRA.** "
                             f"{MODEL_LABELS.get(model, model)}, {kind} protocol, GLUE dev, best dev score per run (%), "
                             f"mean ± std over seeds. Δ: the paired per-seed difference to the rung above, mean ± std, "
                             f"\"higher\"/\"lower\" by the verdict rule of the claims table.", ladder_table(by_method)))
        squad = {m: by_method[m]["squad_v2"] for m in TABLE4 if by_method.get(m, {}).get("squad_v2")}
        if squad:
            sections.append((f"table4_{stem}", squad_caption(model, kind, squad), squad_table(squad, paper4)))
    study = schedule_runs(records)
    for model in sorted({m for m, _ in study}):
        scores, gaps = schedule_tables(study, model)
        where = (f"{MODEL_LABELS.get(model, model)}, the CPU protocol (cpu_lr, length-grouped batches, every step-based "
                 f"schedule scaled by T / T_paper) at several T, GLUE dev, best dev score per run (%)")
        own = [r for (m, t), by_steps in study.items() if m == model for steps, by_method in by_steps.items()
               for runs in by_method.values() for r in runs.values() if r.get("tag") == "schedule_length"]
        cost = (f" The study's own {len(own)} run{'s' * (len(own) != 1)} took {sum(r['wall_time_s'] for r in own) / 3600:.1f} h of wall time "
                f"(one thread each, two at a time on 2 cores).")
        sections += [(f"schedule_length_{model}", f"**The schedule-length study.** {where}, mean ± std over seeds "
                      f"(n = the seeds a cell has when fewer than 3). The CPU-protocol rows are Table I's records."
                      + cost, scores),
                     (f"schedule_gaps_{model}", f"**Gap to LoRA against T.** {where}: each method minus LoRA, paired per "
                      f"seed at the same T; \"ahead\"/\"behind\" when every seed agrees and the mean is more than one "
                      f"std from 0 {OLD_RULE}. The last column: the same difference between the runs' last evaluations (mean ± "
                      f"std), a check on best-of-run, which favours runs with more evaluations (a run evaluates every "
                      f"epoch, so a longer run more often).", gaps)]
    tuned = tuned_study(records)
    for model in sorted({m for m, *_ in tuned}):
        for factor, when in ((1, "the CPU protocol's T"), (3, "3 × the CPU protocol's T")):
            (header, rows), choice, comparisons = tuned_tables(tuned, model, factor)
            if not choice:
                continue
            where = (f"{MODEL_LABELS.get(model, model)}, {when}, the CPU protocol otherwise (length-grouped batches, "
                     f"schedules scaled by T / T_paper); 10% of each GLUE train set held out (stratified, seed 0) as "
                     f"validation, ten evaluations per run (conf/experiment/tuned.yaml)")
            suffix = "" if factor == 1 else f"_{factor}x"
            sections += [(f"tuned{suffix}_{model}", f"**Each method at its own tuned learning rate (issue 45).** {where}. "
                          f"Scores: GLUE dev (never used for a choice) at each run's best validation step, and at its "
                          f"last step, mean ± std over seeds {list(REPORT_SEEDS)} at the rate chosen on validation (n = "
                          f"the seeds a cell has while fewer). Differences: paired per seed, mean [95% t-interval], "
                          f"two-sided p of a one-sample t-test; \"ahead\"/\"behind\" only when the interval excludes "
                          f"0. {comparisons} comparison{'s' * (comparisons != 1)} with two or more seeds in this table; "
                          f"at 95% each, about {0.05 * comparisons:.1f} would exclude 0 by chance alone.",
                          (header, rows)),
                         (f"tuned_rates{suffix}_{model}", f"**The learning rate each method was tuned to (issue 45).** "
                          f"{where}. The validation score (task metric, %, at the run's best validation step) of seed "
                          f"0 at each rate tried; the selected rate has the highest, once the grid and the winner's neighbours (×2, ÷2) are "
                          f"tried (\"open\" before: no score of that cell is reported yet); its report seeds follow.",
                          choice)]
    generation = generation_runs(records)
    if generation:
        caption, table = generation_table(generation)
        sections.append(("generation_smollm2_squad_v2_gen", caption, table))
    perturbation = perturbation_runs(records)
    for model in sorted({m for m, *_ in perturbation}):
        sections.append((f"growth_perturbation_{model}", f"**What a growth event changes (issue 25).** "
                         f"{MODEL_LABELS.get(model, model)}, every record that measured it. ΔW change: ||ΔW after − ΔW "
                         f"before||_F / ||ΔW before||_F of each grown matrix, averaged over the matrices of an event, "
                         f"mean ± std over runs (1.00 = a change as large as everything the matrix had learned). "
                         f"Loss: the mean training loss of the few steps after an event minus those before it (training lowers "
                         f"it between the two windows anyway: compare rows, not with 0).",
                         perturbation_table({k: v for k, v in perturbation.items() if k[0] == model})))
    for tag, key in OPTION_SWEEPS.items():
        option = option_runs(records, tag)
        for model in sorted({m for m, *_ in option}):
            sections.append((f"option_{tag}_{model}", f"**{key} against the protocol's value (ours, "
                             f"conf/experiment/{tag}.yaml).** {MODEL_LABELS.get(model, model)}, cpu protocol, GLUE dev, "
                             f"best dev score per run (%), mean ± std; the difference is paired per seed with Table I's "
                             f"record of the same method and task.",
                             option_table({k: v for k, v in option.items() if k[0] == model}, runs, key)))
    for name, caption, (header, rows) in sections + sensitivity_sections(records):
        if not rows:
            continue
        path = out_dir / f"{name}.md"
        path.write_text(f"{caption}\n\n" + markdown(header, rows))
        path.with_suffix(".tex").write_text(f"% {caption.replace('**', '')}\n" + latex(header, rows))
        written.append(path)
    for stale in out_dir.iterdir() if written else []:  # a table no record supports any more (e.g. its protocol changed)
        table = re.fullmatch(r"(table[1-4]|claims|headline|ladder|schedule_length|schedule_gaps|option_[a-z_]+|growth_perturbation|tuned(_rates)?(_3x)?|generation|fig[3-5])_.+\.(md|tex)", stale.name)
        if table and stale.with_suffix(".md") not in written:
            stale.unlink()
    return written


INCLUDE = re.compile(r"(<!-- include (?P<path>\S+) -->\n).*?(<!-- end include -->)", re.DOTALL)


def fill_includes(readme: Path) -> list[str]:
    """Replace each include block of ``readme`` by the current text of the file it names (relative to the
    readme's folder); the readme is rewritten atomically. Returns the included paths; a missing file is an error."""
    included = []

    def body(match: re.Match) -> str:
        path = readme.parent / match["path"]
        if not path.is_file():
            fail(f"{readme} includes {match['path']}, which make_tables did not write (no record for that table "
                 f"yet?); {readme} is as it was")
        included.append(match["path"])
        return f"{match[1]}{path.read_text().strip()}\n{match[3]}"

    text = INCLUDE.sub(body, readme.read_text())
    partial = readme.with_name(f".{readme.name}.partial")
    partial.write_text(text)
    os.replace(partial, readme)
    return included


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "runs")
    parser.add_argument("--paper", type=Path, default=ROOT / "results" / "paper_reported.json")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "tables")
    parser.add_argument("--readme", type=Path, nargs="*",
                        help="fill these files' include blocks (see above) with the tables; no file named: README.md "
                             "and every docs/*.md that has include blocks")
    args = parser.parse_args()
    missing = [str(path) for path in args.readme or [] if not path.is_file()]
    if missing:
        parser.error(f"--readme {' '.join(missing)}: no such file")
    written = build(args.runs, args.paper, args.out)
    if not written:
        fail(f"no record under {args.runs} follows a protocol (its config equal to +experiment=cpu_protocol's, or to "
             f"the paper's settings), so no table was written and {args.out} is as it was; run a sweep first, e.g. "
             f"python run.py -m +experiment=table1")
    for path in written:
        print(path)
    if args.readme is not None:
        documents = args.readme or [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for document in documents:
            if INCLUDE.search(document.read_text()):
                for path in fill_includes(document):
                    print(f"{document} <- {path}")


if __name__ == "__main__":
    main()
