"""Rebuild the paper's figures from our run records (PNG, under figures/).

    python scripts/make_figures.py [--runs results/runs] [--out figures]

- fig2_ranks_<model>_<task>.png: final rank per layer x matrix type, one panel per method (paper Fig. 2);
- fig3/4/5_<model>_<task>.png: the dev score against the initial warm-up, the update interval and the
  reference rank, TriAdaptLoRA against IncreLoRA (mean and min-max band over seeds) (paper Figs. 3-5, on
  the task each sweep ran: the paper's RTE, or the CPU protocol's STS-B);
- growth_timeline_<model>_<task>.png: total rank and k per growth event against steps, per mode, and (records
  that measured it) the mean relative change of the grown matrices' updates at each event;
- schedule_gap_<model>.png: the schedule-length study, each method's paired gap to LoRA against T, one panel per task
  (each seed a dot, the mean a line);
- schedule_curves_<model>_<task>.png: the dev score against the step of each method at the study's longest T, one
  panel per seed, and first the mean over seeds (min-max band) of the methods that ran every seed;
- ladder_<model>.png: the ablation ladder (ours), score per rung from TriAdaptLoRA linear to LoRA, per task,
  each seed a dot and the mean a line.
Reads only JSON records (never a model).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

# One rule for which run fills a cell, shared with the tables (a sibling script: on the path when run).
from make_tables import (LADDER, LADDER_TASKS, SCHEDULE_METHODS, SWEEPS, fail, generation_runs, label,  # noqa: E402
                         paired_gap, protocol, read_records, runs_by_protocol, schedule_runs, score,
                         sensitivity_points)

MATRICES = ["Wq", "Wk", "Wv", "Wa", "Wm", "Wo"]
MATRIX_NAMES = ("Wq, Wk, Wv: query, key, value; Wa: attention output (attention.output.dense); "
                "Wm: feed-forward in (intermediate.dense); Wo: feed-forward out (output.dense)")
SUFFIXES = [("attention.output.dense", "Wa"), ("intermediate.dense", "Wm"), ("output.dense", "Wo"),
            ("query", "Wq"), ("query_proj", "Wq"), ("key", "Wk"), ("key_proj", "Wk"), ("value", "Wv"),
            ("value_proj", "Wv")]
FIG2_METHODS = ["triadapt_linear", "triadapt_fixed_k", "adalora", "increlora"]
AXIS_LABELS = {"fig3": "initial warm-up (paper-scale steps)", "fig4": "rank-update interval (paper-scale steps)",
               "fig5": "reference rank r_ref"}


def matrix_position(name: str) -> tuple[int, str]:
    """(layer, paper matrix name) of an adapted module, e.g. (3, "Wq")."""
    layer = int(re.search(r"layer\.(\d+)\.", name).group(1))
    return layer, next(label for suffix, label in SUFFIXES if name.endswith("." + suffix))


def rank_grid(rank_pattern: dict[str, int]) -> np.ndarray:
    positions = {matrix_position(n): r for n, r in rank_pattern.items()}
    layers = max(layer for layer, _ in positions) + 1
    return np.array([[positions.get((layer, m), 0) for m in MATRICES] for layer in range(layers)])


WRITE = True  # False (--list): name the figures the records give, without drawing them


def save(fig, path: Path, title: str | None = None, rect=(0, 0, 1, 1)) -> Path:
    if title:
        fig.suptitle(title, wrap=True)  # a narrow figure breaks its title, not its edges
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fig2(records: list[dict], out: Path) -> list[Path]:
    """One figure per (model, task) with seed-0 final ranks of the four growing/pruning methods."""
    chosen = defaultdict(dict)
    for r in records:
        if r["method"] in FIG2_METHODS and r["seed"] == 0 and r.get("method_state", {}).get("rank_pattern") \
                and protocol(r) is not None:
            chosen[(r["model"], r["task"])][r["method"]] = r["method_state"]["rank_pattern"]
    paths = []
    for (model, task), patterns in sorted(chosen.items()):
        if not WRITE:
            paths.append(out / f"fig2_ranks_{model}_{task}.png")
            continue
        methods = [m for m in FIG2_METHODS if m in patterns]
        grids = {m: rank_grid(patterns[m]) for m in methods}
        top = max(int(g.max()) for g in grids.values())  # one colour scale for every panel, so they compare
        fig, axes = plt.subplots(1, len(methods) + 1, figsize=(3.2 * len(methods) + 0.6, 4.1), squeeze=False,
                                 gridspec_kw={"width_ratios": [1] * len(methods) + [0.06]})
        for ax, m in zip(axes[0], methods):
            sns.heatmap(grids[m], annot=True, fmt="d", ax=ax, cmap="viridis", vmin=0, vmax=top, xticklabels=MATRICES,
                        cbar=m == methods[-1], cbar_ax=axes[0][-1] if m == methods[-1] else None,
                        cbar_kws={"label": "final rank (one scale for all panels)"})
            ax.set_title(m)
            ax.set_ylabel("layer")
        fig.text(0.5, 0.01, MATRIX_NAMES, ha="center", fontsize=7)
        fig.subplots_adjust(bottom=0.2)
        paths.append(save(fig, out / f"fig2_ranks_{model}_{task}.png",
                          f"Final rank per matrix, {task}, {model} (seed 0)", rect=(0, 0.05, 1, 1)))
    return paths


def seed_words(seeds: list[int]) -> str:
    """"seed 0", "seeds 0-2", "seeds 0, 2"."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    consecutive = seeds == list(range(seeds[0], seeds[-1] + 1))
    return f"seeds {seeds[0]}–{seeds[-1]}" if consecutive else "seeds " + ", ".join(map(str, seeds))


def sensitivity(records: list[dict], out: Path) -> list[Path]:
    paths = []
    for tag in SWEEPS:
        points = sensitivity_points(records, tag)
        swept = [r for r in records if r.get("tag") == tag]
        metrics = {(r["model"], r["task"]): r["metric"] for r in swept}
        for model, task in sorted({(m, t) for m, t, _ in points}):
            if not WRITE:
                paths.append(out / f"{tag}_{model}_{task}.png")
                continue
            fig, ax = plt.subplots(figsize=(5, 3.4))
            for (mod, tsk, method), by_value in sorted(points.items()):
                if (mod, tsk) != (model, task):
                    continue
                xs = sorted(by_value)
                ys = [np.mean(by_value[x]) for x in xs]
                ax.plot(xs, ys, marker="o", label=method)
                ax.fill_between(xs, [min(by_value[x]) for x in xs], [max(by_value[x]) for x in xs], alpha=0.2)
            ax.set_xlabel(AXIS_LABELS[tag])
            ax.set_ylabel(f"{task} dev {metrics[(model, task)]} (%)")
            seeds = sorted({r["seed"] for r in swept if (r["model"], r["task"]) == (model, task)})
            ax.set_title(f"Fig. {tag[-1]}: {task}, {model}, {seed_words(seeds)}")
            ax.legend()
            paths.append(save(fig, out / f"{tag}_{model}_{task}.png"))
    return paths


def same_curves(curves: dict[str, tuple]) -> list[tuple[str, tuple]]:
    """Methods whose curves are identical drawn once, labelled together ("a = b"), so no curve hides another."""
    groups: dict[tuple, list[str]] = {}
    for method, curve in sorted(curves.items()):
        groups.setdefault(curve, []).append(method)
    return [(" = ".join(methods), curve) for curve, methods in groups.items()]


def growth_timeline(records: list[dict], out: Path) -> list[Path]:
    """Total rank, k per event and what each event changed, for the TriAdaptLoRA variants (seed 0, protocol runs)."""
    runs = defaultdict(dict)
    for r in records:
        history = r.get("method_state", {}).get("growth_history")
        if r["method"].startswith("triadapt_") and r["seed"] == 0 and history and protocol(r) is not None:
            runs[(r["model"], r["task"])][r["method"]] = (r, history)
    paths = []
    for (model, task), by_method in sorted(runs.items()):
        if not WRITE:
            paths.append(out / f"growth_timeline_{model}_{task}.png")
            continue
        totals, ks, changes = {}, {}, {}
        for method, (record, history) in by_method.items():
            state = record["method_state"]
            steps = [0] + [e["step"] for e in history] + [record["steps"]]
            spent = [state["budget"] - history[0]["budget_before"]] + [state["budget"] - e["budget_after"] for e in history]
            totals[label(method)] = (tuple(steps), tuple(spent + spent[-1:]))
            ks[label(method)] = (tuple(e["step"] for e in history), tuple(e["k"] for e in history))
            measured = [(e["step"], float(np.mean([c for c in e["delta_w_change"].values() if c is not None])))
                        for e in history if e.get("delta_w_change")]
            if measured:  # issue 25: what each event did to the grown matrices' updates
                changes[label(method)] = tuple(zip(*measured))
        panels = 3 if changes else 2
        fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.8))
        for name, (xs, ys) in same_curves(totals):
            axes[0].step(xs, ys, where="post", label=name)
        for name, (xs, ys) in same_curves(ks):
            axes[1].plot(xs, ys, marker="o", label=name)
        axes[0].set(xlabel="optimizer step", ylabel="total rank", title="rank budget spent")
        axes[1].set(xlabel="optimizer step", ylabel="k (matrices grown)", title="k per event")
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower left", fontsize=7, frameon=False,
                   title="first two panels (identical curves drawn once, named together)", title_fontsize=7)
        if changes:
            for name, (xs, ys) in same_curves(changes):
                axes[2].plot(xs, ys, marker="o", label=name)
            top = max(1.0, 1.15 * max(max(ys) for _, ys in changes.values()))
            axes[2].set(xlabel="optimizer step", ylabel="mean ||dW' - dW|| / ||dW||\n(0: the function kept)",
                        title="change of the grown updates", ylim=(-0.05, top))
            axes[2].legend(fontsize=7, loc="upper left", title="runs that measured it", title_fontsize=7)
        paths.append(save(fig, out / f"growth_timeline_{model}_{task}.png", f"Growth timeline, {task}, {model} (seed 0)",
                          rect=(0, 0.2, 1, 1)))
    return paths


def ladder(records: list[dict], out: Path) -> list[Path]:
    """Score per rung of the ablation ladder, one panel per task; CPU-protocol records only."""
    paths = []
    for (model, kind), by_method in sorted(runs_by_protocol(records).items()):
        tasks = [t for t in LADDER_TASKS if any(by_method.get(m, {}).get(t) for m, _ in LADDER[1:-1])]
        if kind != "cpu" or not tasks:
            continue
        if not WRITE:
            paths.append(out / f"ladder_{model}.png")
            continue
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            means, metrics = [], set()
            for index, (method, _) in enumerate(LADDER):
                runs = by_method.get(method, {}).get(task, {}).values()
                scores, metrics = [score(r) for r in runs], metrics | {r["metric"] for r in runs}
                ax.scatter([index] * len(scores), scores, color="tab:blue", alpha=0.5, s=14,
                           label="one seed" if index == 0 else None)
                means.append(np.mean(scores) if scores else np.nan)
            ax.scatter(range(len(LADDER)), means, color="black", marker="_", s=300, linewidths=2,
                       label="mean over seeds")  # rungs are categories: no line between them
            ax.legend(fontsize=7)
            labels = ["0 TriAdaptLoRA"] + [m.split("_", 1)[1] for m, _ in LADDER[1:-1]] + ["LoRA"]
            ax.set_xticks(range(len(LADDER)), [f"{i} {label}" if 0 < i < len(LADDER) - 1 else label
                                               for i, label in enumerate(labels)], rotation=40, ha="right", fontsize=7)
            ax.set(title=task, ylabel=f"dev {'/'.join(sorted(metrics))} (%)")
        paths.append(save(fig, out / f"ladder_{model}.png",
                          f"Ablation ladder (ours): TriAdaptLoRA linear (left) to LoRA (right), {model}, CPU protocol"))
    return paths


COLLAPSE = 20  # points below the best seed at the same T: a run that did not learn, not a comparison


def collapsed_seeds(runs: dict) -> set:
    """Seeds of a cell (seed -> record) whose score lies over ``COLLAPSE`` points below the cell's best."""
    scores = {seed: score(record) for seed, record in runs.items()}
    return {seed for seed, value in scores.items() if scores and max(scores.values()) - value > COLLAPSE}


def schedule_gap(records: list[dict], out: Path) -> list[Path]:
    """The schedule-length study's answer: each method minus LoRA (paired per seed) against T, per task."""
    study = schedule_runs(records)
    paths = []
    for model in sorted({m for m, _ in study}):
        tasks = [t for m, t in sorted(study) if m == model]
        if not WRITE:
            paths.append(out / f"schedule_gap_{model}.png")
            continue
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.4 * len(tasks), 3.8), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            by_steps = study[(model, task)]
            shown = [0.0]  # every value drawn, for the axis' range and ticks
            for method in SCHEDULE_METHODS[1:]:
                colour = f"C{SCHEDULE_METHODS.index(method)}"  # as in the dev curves
                points = []
                for steps, by_method in sorted(by_steps.items()):
                    seeds = sorted(set(by_method.get(method, {})) & set(by_method.get("lora", {})))
                    if len(seeds) < 2:  # one seed is no comparison: such cells stay out of the figure
                        continue
                    gaps = dict(zip(seeds, paired_gap(by_method, method)))
                    collapsed = collapsed_seeds(by_method.get("lora", {}))
                    kept = [g for seed, g in gaps.items() if seed not in collapsed]
                    ax.scatter([steps] * len(kept), kept, color=colour, alpha=0.45, s=14)
                    ax.scatter([steps] * (len(gaps) - len(kept)), [g for seed, g in gaps.items() if seed in collapsed],
                               color=colour, marker="x", s=30)
                    shown += list(gaps.values())
                    if len(kept) >= 2:
                        points.append((steps, np.mean(kept), np.std(kept, ddof=1)))
                if points:
                    ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                                marker="o", color=colour, capsize=3, label=label(method))
                    shown += [m + sd for _, m, sd in points] + [m - sd for _, m, sd in points]
            ax.axhline(0, color="grey", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_yscale("symlog", linthresh=10)  # a collapsed run (LoRA on STS-B: +62) shown without flattening the rest
            low, high = min(shown), max(shown)
            ax.set_ylim(low - 0.15 * abs(low) - 0.5, high + 0.15 * abs(high) + 0.5)
            ax.set_yticks([t for t in (-100, -50, -20, -10, -5, -2, 0, 2, 5, 10, 20, 50, 100) if low - 1 <= t <= high + 1],
                          [f"{t:+d}" if t else "0" for t in (-100, -50, -20, -10, -5, -2, 0, 2, 5, 10, 20, 50, 100)
                           if low - 1 <= t <= high + 1])
            ax.set_xticks(sorted(by_steps), [str(steps) for steps in sorted(by_steps)])  # the study's Ts, no minor labels
            ax.minorticks_off()
            ax.set(title=task, xlabel="T (optimizer steps, log scale)",
                   ylabel="score − LoRA's, same seed (points;\nlinear within ±10, log beyond)")
            ax.legend(fontsize=7)
        paths.append(save(fig, out / f"schedule_gap_{model}.png",
                          f"Gap to LoRA against the schedule length, {model}, CPU protocol at each T. Dots: seeds; "
                          f"x: a seed on which LoRA collapsed (over {COLLAPSE} points below its best seed at that T), "
                          f"left out of the mean ± std; cells with fewer than two seeds are not drawn."))
    return paths


def curve_panels(runs: dict) -> dict:
    """Panels of a dev-curve figure from method -> seed -> record: title -> method -> the seeds its curve averages.
    One panel per seed; first, when there are several seeds, their mean for the methods that ran every one."""
    seeds = sorted({seed for by_seed in runs.values() for seed in by_seed})
    ordered = [method for method in SCHEDULE_METHODS if runs.get(method)]
    panels = {}
    every_seed = {method: seeds for method in ordered if set(runs[method]) == set(seeds)}
    if len(seeds) > 1 and every_seed:
        panels[f"mean over seeds {', '.join(map(str, seeds))} (band: min-max)"] = every_seed
    for seed in seeds:
        panels[f"seed {seed}"] = {method: [seed] for method in ordered if seed in runs[method]}
    return panels


def schedule_curves(records: list[dict], out: Path) -> list[Path]:
    """Dev score against step at the longest T of the study, in the panels of ``curve_panels``: no curve mixes
    seed sets."""
    paths = []
    for (model, task), by_steps in sorted(schedule_runs(records).items()):
        steps = max(by_steps)
        if not WRITE:
            paths.append(out / f"schedule_curves_{model}_{task}.png")
            continue
        runs = by_steps[steps]
        panels = curve_panels(runs)
        metric = next(r["metric"] for by_seed in runs.values() for r in by_seed.values())
        rows, columns = (len(panels) + 1) // 2, min(len(panels), 2)
        fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.4 * rows), squeeze=False, sharey=True)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        for ax, (panel, chosen) in zip(axes.flat, panels.items()):
            for method, seeds in chosen.items():
                curves = [{e["step"]: 100 * e["main"] for e in runs[method][seed]["evaluations"]} for seed in seeds]
                xs = sorted(set.intersection(*(set(c) for c in curves)))
                values = np.array([[c[x] for x in xs] for c in curves])
                colour = f"C{SCHEDULE_METHODS.index(method)}"
                ax.plot(xs, values.mean(axis=0), color=colour, label=label(method))
                if len(seeds) > 1:
                    ax.fill_between(xs, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.2)
            ax.set(xlabel="optimizer step", title=panel)
            ax.legend(fontsize=7)
        for ax in axes[:, 0]:
            ax.set_ylabel(f"{task} dev {metric} (%)")
        paths.append(save(fig, out / f"schedule_curves_{model}_{task}.png",
                          f"Dev score during training at T = {steps}, {task}, {model}, CPU protocol's rates"))
    return paths


DECODER_MATRICES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def decoder_growth(records: list[dict], out: Path) -> list[Path]:
    """Where TriAdaptLoRA's rank went in the decoder study (issue 48): the final rank of each of q, k, v, o, gate,
    up, down per layer, mean over seeds, beside each matrix type's mean over layers."""
    runs = generation_runs(records).get("triadapt_linear", {})
    if not runs:
        return []
    path = out / "growth_pattern_smollm2_squad_v2_gen.png"
    if not WRITE:
        return [path]
    grids = []
    for record in runs.values():
        pattern = record["method_state"]["rank_pattern"]
        layers = 1 + max(int(re.search(r"layers\.(\d+)\.", n).group(1)) for n in pattern)
        grid = np.zeros((layers, len(DECODER_MATRICES)))
        for name, rank in pattern.items():
            grid[int(re.search(r"layers\.(\d+)\.", name).group(1)), DECODER_MATRICES.index(name.rsplit(".", 1)[1])] = rank
        grids.append(grid)
    mean = np.mean(grids, axis=0)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 7), gridspec_kw={"width_ratios": [2, 1]})
    sns.heatmap(mean, ax=left, cmap="viridis", xticklabels=[m.removesuffix("_proj") for m in DECODER_MATRICES],
                cbar_kws={"label": f"final rank, mean over {len(grids)} seed(s)"})
    left.set(ylabel="layer", title="per layer")
    right.bar([m.removesuffix("_proj") for m in DECODER_MATRICES], mean.mean(axis=0), color="tab:blue")
    right.axhline(runs[next(iter(runs))]["config"]["method"]["r_ref"], color="grey", linewidth=0.8,
                  label="r_ref (the mean rank of the budget)")
    right.set(ylabel="mean final rank over layers", title="per matrix type")
    right.legend(fontsize=7)
    return [save(fig, path, "TriAdaptLoRA's growth over SmolLM2-135M's matrices, SQuAD 2.0 as generation")]


def all_figures(records: list[dict], out: Path) -> list[Path]:
    """Every figure the records give (written unless --list)."""
    figures = (fig2, sensitivity, growth_timeline, ladder, schedule_gap, schedule_curves, decoder_growth)
    return [path for figure in figures for path in figure(records, out)]


def main():
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=root / "results" / "runs")
    parser.add_argument("--out", type=Path, default=root / "figures")
    parser.add_argument("--list", action="store_true", help="only print the figures' paths (nothing is written)")
    args = parser.parse_args()
    global WRITE
    WRITE = not args.list
    records = read_records(args.runs)  # stops, naming --runs, before anything is written
    if WRITE:
        args.out.mkdir(parents=True, exist_ok=True)
    paths = all_figures(records, args.out)
    if not paths:
        fail(f"no record under {args.runs} feeds a figure (protocol runs of Table I, the sweeps of Figs. 2-5, the "
             f"ladder or the schedule-length study); nothing was written")
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
