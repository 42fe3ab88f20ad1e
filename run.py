"""Entry point: python run.py method=<m> task=<t> model=<model> seed=<s>   (-m for sweeps).

A user error (a bad setting, bad data, no Hub, a resume that does not fit) ends the run with one line on stderr and
exit status 2. Settings are checked before torch is imported; a run that fails before it trained leaves no folder
behind, and one that fails later keeps its folder and says where its log is.
"""

import logging
import os
import re
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner.settings import ConfigError, check_choices, check_settings

log = logging.getLogger("runner")
GROUPS = ("method", "task", "model", "experiment")
HYDRA_FILES = {".hydra", "run.log", "multirun.yaml"}  # what Hydra writes into a run folder before the run starts


def remove_unstarted_run(output_dir: Path) -> bool:
    """Remove a run folder that holds only Hydra's own files, and the parents inside the working directory that this
    leaves empty (Hydra's outputs/<date>/); a folder outside it is the user's and stays. True if it was removed."""
    output_dir, cwd = Path(output_dir).resolve(), Path.cwd().resolve()
    if not output_dir.is_dir() or any(p.name not in HYDRA_FILES for p in output_dir.iterdir()):
        return False
    shutil.rmtree(output_dir)
    for parent in output_dir.parents:
        if cwd not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()
    return True


def command_line_choices(args: list[str]) -> list[tuple[str, str]]:
    """(group, name) of every config-group choice on the command line, each value of a sweep included."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except Exception:  # noqa: BLE001 - Hydra reports its own syntax errors
        return []
    choices = []
    for override in overrides:
        group = override.key_or_group
        if override.is_delete() or group not in GROUPS:
            continue
        values = override.sweep_string_iterator() if override.is_sweep_override() else [override.value()]
        choices += [(group, str(v)) for v in values]
    return choices


def check_keys(args: list[str], conf_dir: Path) -> None:
    """A single run whose override names a key its config lacks (e.g. method.r_ref with method=lora): one line
    naming the key and the keys that config has, before Hydra makes a folder. Sweeps are left to Hydra."""
    if any(a in ("-m", "--multirun") for a in args):
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except Exception:  # noqa: BLE001 - Hydra reports its own syntax errors
        return
    lines = [o.input_line for o in overrides]
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        try:
            compose(config_name="config", overrides=lines)
            return
        except ConfigCompositionException:
            pass
        for override in overrides:  # the first override the config cannot take, with the keys its node has
            key = override.key_or_group
            if override.is_add() or override.is_delete() or key in GROUPS or "." not in key:
                continue
            others = [line for line in lines if line != override.input_line]
            try:
                cfg = compose(config_name="config", overrides=others)
            except ConfigCompositionException:
                continue
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent)
            if node is not None and leaf not in node:
                name = f" '{node.name}'" if "name" in node else ""
                raise ConfigError(f"{key}: the {parent} config{name} has no key '{leaf}'; its keys: "
                                  f"{', '.join(sorted(node))} (to add one anyway: +{override.input_line})")


def check_run_dirs(args: list[str]) -> None:
    """A ``hydra.run.dir`` / ``hydra.sweep.dir`` given on the command line where no folder can be made: one line,
    before Hydra tries (and fails with chained tracebacks). Tried by making it; what the try made is removed."""
    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+") not in ("hydra.run.dir", "hydra.sweep.dir") or not value or "${" in value:
            continue
        folder = Path(value).absolute()
        made = [p for p in [folder, *folder.parents] if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{key}={value!r}: no run folder can be made there ({e.strerror}: {e.filename}); "
                              f"choose a folder you can write to") from None
        for path in made:  # deepest first
            path.rmdir()


def ranks_by_layer(pattern: dict[str, int]) -> dict[str, list[tuple[str, int]]]:
    """A rank pattern grouped by layer: "layer 0" -> [("attention.self.query", 9), ...]; a module outside the
    numbered layers keeps its whole name."""
    grouped: dict[str, list[tuple[str, int]]] = {}
    for name, rank in pattern.items():
        match = re.search(r"\.(\d+)\.(.+)$", name)
        layer, matrix = (f"layer {match[1]}", match[2]) if match else ("other", name)
        grouped.setdefault(layer, []).append((matrix, rank))
    return grouped


def summary(record: dict, path: Path) -> str:
    """What a run ends on: its score against the majority class, its final ranks in one line, its record."""
    best, last, floor = record["best"], record["last"], record["data"].get("majority_class")
    selected, metric = record.get("selected"), record["metric"]
    chosen = (f"best {best['main']:.4f} (step {best['step']})" if selected is None else
              f"{selected['main']:.4f} at the best validation step {selected['step']} "
              f"(validation {selected['metrics']['validation'][metric]:.4f})")
    lines = [f"{record['task']} dev {metric}: {chosen}, last {last['main']:.4f}"
             + ("" if floor is None else f"; always the majority class: {floor:.4f}")]
    first = record["evaluations"][0]
    if first["step"] == 0:  # evaluate_before_training: the untrained (zero-shot) model
        scores = first["metrics"][next(iter(first["metrics"]))]
        lines.append(f"before training (zero-shot): {metric} {first['main']:.4f}"
                     + (f", exact {scores['exact']:.4f}" if "exact" in scores else "")
                     + f"; after: {metric} {last['main']:.4f}"
                     + (f", exact {last['metrics'][next(iter(last['metrics']))]['exact']:.4f}" if "exact" in scores else ""))
    state = record.get("method_state") or {}
    if state.get("rank_pattern"):
        lines.append(f"final ranks (total {state['total_rank']} of {state['budget']}), by layer:")
        lines += [f"  {layer}: " + ", ".join(f"{matrix} {rank}" for matrix, rank in ranks)
                  for layer, ranks in ranks_by_layer(state["rank_pattern"]).items()]
    lines.append(f"record: {path}")
    return "\n".join(lines)


def resume_command() -> str:
    """This command with ``resume=true``: a single run continues its checkpoint; a sweep with fixed run folders (the
    experiments') resumes every interrupted cell when launched again as it was."""
    args = [a for a in sys.argv[1:] if not a.startswith("resume=")]
    multirun = any(a in ("-m", "--multirun") for a in args)
    return " ".join(["python", Path(sys.argv[0]).name, *args, *([] if multirun else ["resume=true"])])


def fail(error: Exception, output_dir: Path) -> None:
    where = "" if remove_unstarted_run(output_dir) else f" (log: {Path(output_dir) / 'run.log'})"
    print(f"error: {error}{where}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_settings(OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as e:
        fail(e, output_dir)
    from runner.checkpoint import ResumeError  # torch and transformers: only once the settings are known to be good
    from runner.data import DataError
    from runner.models import HubUnavailableError, ModelUnavailableError
    from runner.train import Interrupted, run

    try:
        record, path = run(cfg, output_dir)
    except (ConfigError, HubUnavailableError, ModelUnavailableError, DataError, ResumeError) as e:
        fail(e, output_dir)
    except Interrupted as stopped:
        print(f"interrupted after step {stopped.step} of {stopped.total}; checkpoint in {stopped.folder}. "
              f"Continue with: {resume_command()}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        where = "" if remove_unstarted_run(output_dir) else f" (log: {output_dir / 'run.log'})"
        print(f"interrupted before the first step ended: nothing to resume{where}", file=sys.stderr)
        sys.exit(130)
    if Path(record["output_dir"]).resolve() != output_dir.resolve():
        remove_unstarted_run(output_dir)  # resumed into an earlier folder: the one Hydra made for this launch goes
    log.info(summary(record, path))
    return record["best"]["main"]


if __name__ == "__main__":
    try:  # a misspelt method, task, model, experiment or key: one line, before Hydra makes any folder
        check_choices(command_line_choices(sys.argv[1:]), Path(__file__).resolve().parent / "conf")
        check_keys(sys.argv[1:], Path(__file__).resolve().parent / "conf")
        check_run_dirs(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main()
