"""Which runs of an experiment's sweep already have a record, and which are missing.

    python scripts/sweep_status.py table1 [override ...] [--runs results/runs]

Expands the experiment's grid (``hydra.sweeper.params`` of conf/experiment/<name>.yaml) and, for each
cell, looks for the record the runner would skip on (same name, same resolved config but for the keys of
``runner.records.IGNORED_FOR_IDENTITY``: tag, resume, skip_existing, data and results folders, checkpoint
cadence). Pass the overrides the sweep was launched with (e.g. ``train.threads=1``): they are part of each
run's config. A missing cell of an experiment with fixed run folders (``hydra.sweep.subdir`` without the job
number, as the schedule-length study's) that holds a checkpoint is listed with the step it resumes from; ``--launched-from``
names the folder the sweep was started in (default: the repository). Exit status 1 while cells are missing, so
scripts can wait on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # the sweeper run.py -m uses
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from runner.records import find_record, record_stem

ROOT = Path(__file__).resolve().parent.parent


def grid(experiment: str, extra: list[str]) -> list[list[str]]:
    """Every cell of the experiment's sweep with the command line's overrides, as the overrides Hydra's basic
    sweeper gives each job (a command-line key replaces the experiment's axis of that key, e.g. task=rte).
    Call inside an initialised Hydra."""
    cfg = compose(config_name="config", overrides=[f"+experiment={experiment}"], return_hydra_config=True)
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
    overrides = OverridesParser.create().parse_overrides(params + list(extra))
    return BasicSweeper.split_arguments(overrides, max_batch_size=None)[0]


def resume_step(cell_cfg, launched_from: Path) -> tuple[int, Path] | None:
    """(step, run folder) of the checkpoint an interrupted cell resumes from, when the sweep's run folders are fixed
    (``hydra.sweep.subdir`` without the job number) and the cell's folder holds one; else None."""
    sweep = cell_cfg.hydra.sweep
    if "hydra.job.num" in OmegaConf.to_container(sweep, resolve=False)["subdir"]:
        return None  # a new folder per launch: nothing to resume from
    run_dir = launched_from / str(sweep.dir) / str(sweep.subdir)
    pointer = run_dir / "checkpoints" / "latest"  # runner.checkpoint.LATEST, read without importing torch
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    return (int(name.removeprefix("step-")), run_dir) if (pointer.parent / name).is_dir() else None


def status(experiment: str, extra: list[str], runs_dir: Path | None = None, launched_from: Path = ROOT
           ) -> tuple[list[tuple[list[str], Path]], list[tuple[list[str], tuple[int, Path] | None]]]:
    """(cells with their record, cells without one with the checkpoint each resumes from, or None)."""
    done, missing = [], []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for cell in grid(experiment, extra):
            cfg = compose(config_name="config", overrides=[f"+experiment={experiment}", *cell], return_hydra_config=True)
            checkpoint = resume_step(cfg, launched_from)
            with open_dict(cfg):
                del cfg["hydra"]  # the run's config, as the runner records it
            config = OmegaConf.to_container(cfg, resolve=True)
            base = runs_dir if runs_dir is not None else ROOT / config["results_dir"]
            found = find_record(Path(base) / config["model"]["name"], record_stem(config), config)
            (done.append((cell, found)) if found is not None else missing.append((cell, checkpoint)))
    return done, missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="a name under conf/experiment/, e.g. table1")
    parser.add_argument("overrides", nargs="*", help="the overrides the sweep was launched with, e.g. train.threads=1")
    parser.add_argument("--runs", type=Path, help="records folder (default: the config's results_dir)")
    parser.add_argument("--launched-from", type=Path, default=ROOT,
                        help="the folder the sweep was started in, where its run folders are (default: the repository)")
    args = parser.parse_args()
    available = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    if args.experiment not in available:
        parser.error(f"unknown experiment {args.experiment!r}; choose from {', '.join(available)}")
    try:
        done, missing = status(args.experiment, args.overrides, args.runs, args.launched_from)
    except (HydraException, OmegaConfBaseException) as err:  # an override that names no key, group or choice
        reason = " ".join(line.strip() for line in str(err).strip().splitlines()[:2]).strip()
        if getattr(err, "options", None):  # a config group's unknown choice
            reason += f"; choose one of: {', '.join(err.options)}"
        parser.error(f"{' '.join(args.overrides)}: {reason}")
    print(f"{args.experiment}: {len(done)} of {len(done) + len(missing)} runs have a record")
    for cell, checkpoint in missing:
        resumes = "" if checkpoint is None else f" (resumes from step {checkpoint[0]}: {checkpoint[1]})"
        print("missing:", " ".join(cell) + resumes)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
