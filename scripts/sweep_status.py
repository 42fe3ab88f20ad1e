"""Which runs of an experiment's sweep already have a record, and which are missing.

    python scripts/sweep_status.py table1 [override ...] [--runs results/runs]

Expands the experiment's grid (``hydra.sweeper.params`` of conf/experiment/<name>.yaml) and, for each
cell, looks for the record the runner would skip on (same name, same resolved config but for the keys of
``runner.records.IGNORED_FOR_IDENTITY``: tag, resume, skip_existing, data and results folders, checkpoint
cadence). Pass the overrides the sweep was launched with (e.g. ``train.threads=1``): they are part of each
run's config. Exit status 1 while cells are missing, so scripts can wait on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # the sweeper run.py -m uses
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

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


def status(experiment: str, extra: list[str], runs_dir: Path | None = None) -> tuple[list[tuple[list[str], Path]], list[list[str]]]:
    """(cells with their record, cells without one)."""
    done, missing = [], []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for cell in grid(experiment, extra):
            cfg = compose(config_name="config", overrides=[f"+experiment={experiment}", *cell])
            config = OmegaConf.to_container(cfg, resolve=True)
            base = runs_dir if runs_dir is not None else ROOT / config["results_dir"]
            found = find_record(Path(base) / config["model"]["name"], record_stem(config), config)
            (done.append((cell, found)) if found is not None else missing.append(cell))
    return done, missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="a name under conf/experiment/, e.g. table1")
    parser.add_argument("overrides", nargs="*", help="the overrides the sweep was launched with, e.g. train.threads=1")
    parser.add_argument("--runs", type=Path, help="records folder (default: the config's results_dir)")
    args = parser.parse_args()
    available = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    if args.experiment not in available:
        parser.error(f"unknown experiment {args.experiment!r}; choose from {', '.join(available)}")
    done, missing = status(args.experiment, args.overrides, args.runs)
    print(f"{args.experiment}: {len(done)} of {len(done) + len(missing)} runs have a record")
    for cell in missing:
        print("missing:", " ".join(cell))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
