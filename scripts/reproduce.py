"""Re-run the command a record stores and compare what it computes with the record.

    python scripts/reproduce.py results/runs/minilm/cola--lora--seed0.json [--keep DIR]

The command runs from the project root with its record and Hydra folder redirected to a scratch folder
(``results_dir`` and ``hydra.run.dir`` are not part of a run's identity), so results/ is left untouched.
Compared exactly: every dev evaluation, the best and last scores, the number of steps and the method's final
state (rank pattern, growth history: steps, k, budgets and which matrices grew). The growth history's importance
scores and per-matrix update changes are floats that another BLAS or library build moves in the last digits without
changing any decision; they are compared separately and their largest drift is reported (a measurement the record
predates is not compared). Exit status 0 when everything else is equal (and the drift, if any, is printed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPARED = ("evaluations", "best", "last", "selected", "steps", "method_state")  # selected: the tuned study's choice
REDIRECTED = ("results_dir=", "hydra.run.dir=")
FLOAT_FIELDS = ("scores", "delta_w_change")  # per growth event: matrix -> float


def rerun_command(command: str, scratch: Path) -> list[str]:
    """The stored command with this interpreter and its outputs sent to ``scratch``."""
    args = shlex.split(command)
    if args[0] == "python":
        args[0] = sys.executable
    elif args[0] == "torchrun":
        args[:1] = [sys.executable, "-m", "torch.distributed.run"]
    else:
        raise ValueError(f"cannot re-run {command!r}: it starts with neither python nor torchrun")
    args = [a for a in args if not a.startswith(REDIRECTED)]
    return args + [f"results_dir={scratch / 'runs'}", f"hydra.run.dir={scratch / 'hydra'}"]


def split_scores(record: dict) -> tuple[dict, list[dict]]:
    """The compared fields with every growth event's float fields taken out, and those floats per event."""
    fields = {key: record.get(key) for key in COMPARED}
    history = (fields.get("method_state") or {}).get("growth_history") or []
    floats = [{field: event[field] for field in FLOAT_FIELDS if field in event} for event in history]
    if history:
        fields["method_state"] = {**fields["method_state"], "growth_history": [
            {k: v for k, v in e.items() if k not in FLOAT_FIELDS} for e in history]}
    return fields, floats


def score_drift(recorded: list[dict], rerun: list[dict]) -> float | None:
    """The largest |difference| between matching floats of the fields the record holds; None when the events,
    the fields or the matrices differ. A None value (nothing to compare against) must match exactly."""
    if len(recorded) != len(rerun):
        return None
    drift = 0.0
    for a, b in zip(recorded, rerun):
        for field, values in a.items():
            again = b.get(field)
            if again is None or set(values) != set(again):
                return None
            for key, value in values.items():
                if (value is None) != (again[key] is None):
                    return None
                drift = max(drift, 0.0 if value is None else abs(value - again[key]))
    return drift


def differences(record: dict, again: dict) -> tuple[list[str], float | None]:
    """What differs beyond the importance scores, and the scores' largest drift."""
    (fields, scores), (fields_again, scores_again) = split_scores(record), split_scores(again)
    diffs = [f"{key}: recorded {json.dumps(fields[key])[:300]} / re-run {json.dumps(fields_again[key])[:300]}"
             for key in COMPARED if fields[key] != fields_again[key]]
    drift = score_drift(scores, scores_again)
    if drift is None:
        diffs.append(f"growth_history {'/'.join(FLOAT_FIELDS)}: the events, fields or matrices differ")
    return diffs, drift


def read_record(path: Path) -> dict:
    """The run record at ``path``; a ValueError naming what is wrong if it is not one (not JSON, no command)."""
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a JSON run record ({err})") from None
    if not isinstance(record, dict) or not isinstance(record.get("command"), str):
        raise ValueError(f"{path} is not a run record: it stores no command (records are under results/runs/)")
    rerun_command(record["command"], Path("."))  # a command this script cannot re-run fails here, before the run
    return record


def reproduce(record: dict, scratch: Path) -> dict:
    """Re-runs the record's command with its outputs in ``scratch``; returns the new record."""
    done = subprocess.run(rerun_command(record["command"], scratch), cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"the re-run stopped with exit status {done.returncode} (its output is above)")
    produced = sorted((scratch / "runs").rglob("*.json"))
    if len(produced) != 1:
        raise RuntimeError(f"the re-run wrote {len(produced)} records under {scratch / 'runs'}, expected one")
    return json.loads(produced[0].read_text())


def report(path: Path, record: dict, again: dict) -> tuple[int, list[str]]:
    """The exit status (0 reproduced, 1 differs) and the lines that say so, for ``record`` and its re-run ``again``."""
    diffs, drift = differences(record, again)
    main_metric = (record.get("best") or {}).get("main")
    verdict = "DIFFERS" if diffs else "reproduced exactly" if not drift else \
        f"reproduced (growth scores and update changes equal up to {drift:.1e})"
    lines = [f"{path}: {verdict}" +
             f" (recorded best {main_metric!r}, re-run {(again.get('best') or {}).get('main')!r}; "
             f"recorded at {record['git']['commit'][:8]}, re-run at {again['git']['commit'][:8]})"]
    return (1 if diffs else 0), lines + ["  " + line for line in diffs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("record", type=Path)
    parser.add_argument("--keep", type=Path, help="write the re-run here (an empty or new folder) and keep it")
    args = parser.parse_args()
    if not args.record.is_file():
        parser.error(f"no record at {args.record}")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep} is not empty")
    try:
        record = read_record(args.record)
    except ValueError as err:
        parser.error(str(err))
    with tempfile.TemporaryDirectory(prefix="reproduce-") as tmp:
        try:
            again = reproduce(record, (args.keep or Path(tmp)).resolve())
        except RuntimeError as err:
            print(f"{args.record}: not reproduced: {err}", file=sys.stderr)
            return 1
    status, lines = report(args.record, record, again)
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
