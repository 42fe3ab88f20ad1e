"""scripts/bench.py on tiny settings: the record's schema, a row for every method, sane ratios."""

import importlib.util
import json

from tests.conftest import ROOT


def test_bench_record_has_every_method(tmp_path):
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = bench.main(["--models", "tiny", "--lengths", "16", "--dropouts", "0", "0.1", "--steps", "2",
                       "--warmup", "1", "--batch-size", "4", "--out", str(tmp_path)])
    result = json.loads(path.read_text())
    for key in ("command", "git", "packages", "machine", "settings", "step_times", "allocation", "eval", "wall_time_s"):
        assert key in result
    methods = set(result["settings"]["methods"])
    assert {"floor", "full_ft", "peft_lora", "triadapt", "adalora", "increlora"} <= methods
    assert [(r["length"], r["dropout"]) for r in result["step_times"]] == [(16, 0.0), (16, 0.1)]
    for row in result["step_times"]:
        assert set(row["seconds"]) == methods and row["vs_floor"]["floor"] == 1.0
        assert row["vs_peft_lora"]["peft_lora"] == 1.0
    allocation = result["allocation"][0]
    assert allocation["triadapt_M"] == 12 and allocation["triadapt_event_s"] > 0
    assert set(result["eval"][0]["vs_bare"]) == {"bare", "unmerged", "merged"}
    assert (tmp_path / f"{path.stem}.md").read_text().count("| tiny |") == 6
