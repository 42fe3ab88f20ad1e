"""What the tuned comparison (issue 45, conf/experiment/tuned.yaml) runs next, from the records that exist.

    python scripts/tuned_queue.py list [--stage 1 2 3] [--runs results/runs]   # every cell: rates tried, winner, jobs left
    python scripts/tuned_queue.py next --claims DIR [--stage ...]              # one job's overrides, claimed in DIR

Per (task, method, T): the learning-rate grid at the selection seed first (``selection.GRID``; past a winning edge,
one rate further), then the report seeds at the rate with the best validation mean. Stage 1: LoRA and TriAdaptLoRA
linear at the CPU protocol's T; stage 2: AdaLoRA, IncreLoRA and the authors'-code variant (ours to run); stage 3:
LoRA and TriAdaptLoRA linear at 3 × T, the grid narrowed to stage 1's winner and its two neighbours (×/÷ 2). ``next`` prints the first job that is ready
and that no worker has claimed (a claim is a folder in DIR, made atomically), or exits 1 when none is; run it with
``python run.py -m +experiment=tuned <overrides> train.threads=1``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from selection import GRID, REPORT_SEEDS, SELECTION_SEEDS, next_rate, select_rate, tuned_runs, validation_means

ROOT = Path(__file__).resolve().parent.parent
MODEL = "minilm"
STAGES = {
    1: {"methods": ["lora", "triadapt_linear"], "tasks": ["cola", "mrpc", "stsb", "rte"], "factor": 1},
    2: {"methods": ["adalora", "increlora", "triadapt_linear_authors_code"], "tasks": ["cola", "mrpc", "stsb", "rte"],
        "factor": 1},
    3: {"methods": ["lora", "triadapt_linear"], "tasks": ["mrpc", "stsb", "cola"], "factor": 3, "grid_from": 1},
}


def cpu_steps(task: str) -> int:
    return int(OmegaConf.load(ROOT / "conf" / "task" / f"{task}.yaml").cpu_steps)


def read_runs(runs_dir: Path) -> dict:
    return tuned_runs([json.loads(p.read_text()) for p in sorted(Path(runs_dir).rglob("*.json"))])


def cell_plan(by_rate: dict, grid) -> tuple[float | None, list[tuple[float, int]]]:
    """(the selected rate, or None while the grid is open; the (rate, seed) jobs the cell still needs, in order)."""
    means = validation_means(by_rate)
    tried = set(means)
    jobs = [(rate, seed) for rate in grid for seed in SELECTION_SEEDS if seed not in by_rate.get(rate, {})]
    if jobs:
        return None, jobs
    beyond = next_rate(means, grid)
    if beyond is not None and beyond not in tried:
        return None, [(beyond, seed) for seed in SELECTION_SEEDS]
    winner = select_rate(means)
    return winner, [(winner, seed) for seed in REPORT_SEEDS if seed not in by_rate.get(winner, {})]


def plan(runs: dict, stages: list[int]) -> list[dict]:
    """Every cell of the stages, in order, with its selection state and the jobs it still needs (None: not ready,
    e.g. a stage-3 cell before stage 1 has chosen its rate)."""
    cells, chosen = [], {}
    for stage in sorted(set(stages) | {STAGES[s].get("grid_from") for s in stages} - {None}):
        spec = STAGES[stage]
        for task in spec["tasks"]:
            steps = spec["factor"] * cpu_steps(task)
            for method in spec["methods"]:
                grid = GRID
                if "grid_from" in spec:
                    base = chosen.get((spec["grid_from"], task, method))
                    grid = None if base is None else (base / 2, base, base * 2)
                by_rate = runs.get((MODEL, task, method, steps), {})
                winner, jobs = (None, None) if grid is None else cell_plan(by_rate, grid)
                chosen[(stage, task, method)] = winner
                if stage in stages:
                    cells.append({"stage": stage, "task": task, "method": method, "steps": steps, "winner": winner,
                                  "means": validation_means(by_rate), "jobs": jobs,
                                  "default_steps": spec["factor"] == 1})
    return cells


def overrides(cell: dict, rate: float, seed: int) -> list[str]:
    steps = [] if cell["default_steps"] else [f"train.max_steps={cell['steps']}"]
    return [f"method={cell['method']}", f"task={cell['task']}", f"train.lr={rate:g}", f"seed={seed}", *steps]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["list", "next"])
    parser.add_argument("--stage", type=int, nargs="+", choices=sorted(STAGES), default=[1])
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "runs" / "tuned")
    parser.add_argument("--claims", type=Path, help="folder of claims shared by the workers (with next)")
    args = parser.parse_args(argv)
    cells = plan(read_runs(args.runs), args.stage)
    if args.command == "list":
        for cell in cells:
            means = ", ".join(f"{rate:g}: {mean:.2f}" for rate, mean in cell["means"].items()) or "none yet"
            jobs = "waits for its stage's grid" if cell["jobs"] is None else f"{len(cell['jobs'])} job(s) left"
            winner = "open" if cell["winner"] is None else f"{cell['winner']:g}"
            print(f"stage {cell['stage']} {cell['task']:5} {cell['method']:16} T={cell['steps']:<5} "
                  f"winner {winner:7} | validation means {means} | {jobs}")
        return 0
    if args.claims is None:
        parser.error("next needs --claims DIR")
    args.claims.mkdir(parents=True, exist_ok=True)
    for cell in cells:
        for rate, seed in cell["jobs"] or []:
            job = overrides(cell, rate, seed)
            try:
                (args.claims / "_".join(o.replace("=", "-") for o in job)).mkdir()
            except FileExistsError:
                continue
            print(" ".join(job))
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
