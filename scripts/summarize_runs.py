"""A Markdown table of the run records carrying one tag: method, task, best and last dev score,
trainable parameters at the start and the end, and wall time.

    python scripts/summarize_runs.py --tag issue4-sst2-comparison
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def summarize(runs_dir: Path, tag: str) -> str:
    rows = []
    for path in sorted(Path(runs_dir).rglob("*.json")):
        r = json.loads(path.read_text())
        if r.get("tag") != tag:
            continue
        scale = 1 if r["task"] == "squad_v2" else 100
        params = r["trainable_parameters"]
        rows.append(f"| {r['method']} | {r['task']} | {r['model']} | {r['steps']} | {r['metric']} | "
                    f"{scale * r['best']['main']:.2f} | {scale * r['last']['main']:.2f} | {params['at_start']:,} | "
                    f"{params['at_end']:,} | {r['wall_time_s'] / 60:.1f} |")
    header = ("| method | task | model | steps | metric | best | last | trainable (start) | trainable (end) | "
              "wall (min) |\n|---|---|---|---|---|---|---|---|---|---|\n")
    return header + "\n".join(rows) + "\n"


def main():
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--runs", type=Path, default=root / "results" / "runs")
    args = parser.parse_args()
    if not args.runs.is_dir():
        parser.error(f"--runs {args.runs}: no such folder")
    tags = sorted({str(json.loads(p.read_text()).get("tag")) for p in args.runs.rglob("*.json")})
    if args.tag not in tags:
        parser.error(f"--tag {args.tag!r}: no record under {args.runs} has it; the tags there: {', '.join(tags) or 'none'}")
    print(summarize(args.runs, args.tag), end="")


if __name__ == "__main__":
    main()
