"""Re-run the command a record stores and compare what it computes with the record.

    python scripts/reproduce.py results/runs/minilm/cola--lora--seed0.json [--keep DIR]

The command runs from the project root with its record and Hydra folder redirected to a scratch folder
(``results_dir`` and ``hydra.run.dir`` are not part of a run's identity), so results/ is left untouched.
Compared exactly: every dev evaluation, the best and last scores, the number of steps and the method's final
state (rank pattern, growth history). Exit status 0 when all are equal, 1 otherwise.
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
COMPARED = ("evaluations", "best", "last", "steps", "method_state")
REDIRECTED = ("results_dir=", "hydra.run.dir=")


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


def differences(record: dict, again: dict) -> list[str]:
    return [f"{key}: recorded {json.dumps(record.get(key))[:300]} / re-run {json.dumps(again.get(key))[:300]}"
            for key in COMPARED if record.get(key) != again.get(key)]


def reproduce(record_path: Path, scratch: Path) -> tuple[dict, dict]:
    record = json.loads(record_path.read_text())
    subprocess.run(rerun_command(record["command"], scratch), cwd=ROOT, check=True)
    produced = sorted((scratch / "runs").rglob("*.json"))
    if len(produced) != 1:
        raise RuntimeError(f"the re-run wrote {len(produced)} records under {scratch / 'runs'}, expected one")
    return record, json.loads(produced[0].read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("record", type=Path)
    parser.add_argument("--keep", type=Path, help="write the re-run here (an empty or new folder) and keep it")
    args = parser.parse_args()
    if not args.record.is_file():
        parser.error(f"no record at {args.record}")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep} is not empty")
    with tempfile.TemporaryDirectory(prefix="reproduce-") as tmp:
        record, again = reproduce(args.record, (args.keep or Path(tmp)).resolve())
    diffs = differences(record, again)
    main_metric = (record.get("best") or {}).get("main")
    print(f"{args.record}: " + ("reproduced exactly" if not diffs else "DIFFERS") +
          f" (recorded best {main_metric!r}, re-run {(again.get('best') or {}).get('main')!r}; "
          f"recorded at {record['git']['commit'][:8]}, re-run at {again['git']['commit'][:8]})")
    for line in diffs:
        print("  " + line)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
