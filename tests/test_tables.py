"""Golden test of the table builder on a small fixture set of records (values checked by hand:
increlora CoLA 40, 44 -> 42.00 ± 2.83; paired CoLA differences +5, +3 -> 4.00 ± 1.41, "holds";
the ad-hoc 7-step LoRA record is left out; AdaLoRA's single CoLA seed shows as "30.00 (n=1)", with no average,
and its claim is "inconclusive (one seed)"; Table IV: LoRA EM 52, 54 -> 53.00 ± 1.41 under the all-empty
baseline row 49.71, TriAdaptLoRA's single seed "(n=1)")."""

import json
import subprocess
from pathlib import Path
import sys

import pytest

from tests.conftest import ROOT, load_script

FIXTURES = ROOT / "tests" / "fixtures"


def test_tables_match_the_golden_files(tmp_path):
    (tmp_path / "table2_minilm_cpu.md").write_text("a table no fixture record supports\n")  # left from older records
    (tmp_path / "table2_minilm_cpu.tex").write_text("stale\n")
    (tmp_path / "notes.txt").write_text("not a table\n")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tables.py"), "--runs", str(FIXTURES / "records"),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    expected = ["claims_minilm_cpu.md", "headline_minilm_cpu.md", "table1_minilm_cpu.md", "table4_minilm_cpu.md"]
    for name in expected:
        assert (tmp_path / name).read_text() == (FIXTURES / "expected" / name).read_text()
    assert sorted(p.name for p in tmp_path.glob("*.md")) == expected
    assert not (tmp_path / "table2_minilm_cpu.tex").exists() and (tmp_path / "notes.txt").exists()


def test_rank_grid_places_each_matrix_by_layer_and_type():
    figures = load_script("make_figures")
    pattern = {"bert.encoder.layer.0.attention.self.query": 3, "bert.encoder.layer.0.attention.output.dense": 5,
               "bert.encoder.layer.1.output.dense": 7, "deberta.encoder.layer.1.attention.self.value_proj": 2}
    grid = figures.rank_grid(pattern)
    assert grid.tolist() == [[3, 0, 0, 5, 0, 0], [0, 0, 2, 0, 0, 7]]  # columns Wq Wk Wv Wa Wm Wo


def test_the_dev_curves_mean_panel_holds_only_methods_that_ran_every_seed():
    """LoRA and TriAdaptLoRA ran seeds 0-2, AdaLoRA seed 0 only: the mean panel averages the pair over 0, 1, 2 and
    leaves AdaLoRA out; each seed's panel holds every method that ran it. One seed: no mean panel."""
    figures = load_script("make_figures")
    runs = {"adalora": {0: {}}, "lora": {0: {}, 1: {}, 2: {}}, "triadapt_linear": {2: {}, 0: {}, 1: {}}}
    assert figures.curve_panels(runs) == {
        "mean over seeds 0, 1, 2 (band: min-max)": {"lora": [0, 1, 2], "triadapt_linear": [0, 1, 2]},
        "seed 0": {"lora": [0], "triadapt_linear": [0], "adalora": [0]},
        "seed 1": {"lora": [1], "triadapt_linear": [1]},
        "seed 2": {"lora": [2], "triadapt_linear": [2]}}
    assert figures.curve_panels({"lora": {0: {}}, "increlora": {0: {}}}) == {"seed 0": {"lora": [0], "increlora": [0]}}


def _write(path, record: dict, config: dict, when: str, value: float):
    import json

    path.write_text(json.dumps({**record, "config": config, "finished_at": when, "best": {"main": value, "metrics": {}}}))


def test_the_newest_of_repeated_runs_counts(tmp_path):
    tables = load_script("make_tables")
    config = tables.protocol_config("cpu", "minilm", "lora", "rte", 0)
    base = {"model": "minilm", "method": "lora", "task": "rte", "seed": 0}
    _write(tmp_path / "a.json", base, config, "2026-01-02T00:00:00+00:00", 0.6)
    _write(tmp_path / "b.json", base, config, "2026-01-01T00:00:00+00:00", 0.5)
    runs = tables.runs_by_protocol(tables.read_records(tmp_path))
    assert runs[("minilm", "cpu")]["lora"]["rte"][0]["best"]["main"] == 0.6


def test_variants_of_a_cell_are_left_out(tmp_path):
    """A newer run with an added method option, a swept hyperparameter or another lr is not the protocol's
    cell; where and how the run was kept (tag, threads, data folder) does not matter."""
    import copy

    tables = load_script("make_tables")
    config = tables.protocol_config("cpu", "minilm", "triadapt_linear", "mrpc", 0)
    base = {"model": "minilm", "method": "triadapt_linear", "task": "mrpc", "seed": 0}
    kept = {**copy.deepcopy(config), "tag": "anything", "data": {"dir": "/elsewhere"}}
    kept["train"]["threads"] = 1
    _write(tmp_path / "a.json", base, kept, "2026-01-01T00:00:00+00:00", 0.70)
    added, swept, other_lr = (copy.deepcopy(config) for _ in range(3))
    added["method"]["share_dropout_masks"] = True  # +method.share_dropout_masks=true
    swept["task"]["warmup_steps"] = 999  # a fig3 point
    other_lr["train"]["lr"] = 5e-4
    for i, variant in enumerate((added, swept, other_lr)):
        _write(tmp_path / f"v{i}.json", base, variant, f"2026-01-0{i + 2}T00:00:00+00:00", 0.90)
    runs = tables.runs_by_protocol(tables.read_records(tmp_path))
    assert runs[("minilm", "cpu")]["triadapt_linear"]["mrpc"][0]["best"]["main"] == 0.70


def test_squad_cells_follow_table4_and_glue_cells_do_not(tmp_path):
    """SQuAD's cpu cell is +experiment=table4 (T = 1500, length 128, stride 32): a run at the older 300 steps /
    384 or at length 256 is ad hoc, and table4's length never reaches a GLUE cell."""
    import copy

    tables = load_script("make_tables")
    squad = tables.protocol_config("cpu", "minilm", "lora", "squad_v2", 0)
    assert (squad["train"]["max_steps"], squad["task"]["max_seq_length"], squad["task"]["doc_stride"]) == (1500, 128, 32)
    assert tables.protocol_config("cpu", "minilm", "lora", "rte", 0)["task"]["max_seq_length"] == 320
    base = {"model": "minilm", "method": "lora", "task": "squad_v2", "seed": 0}
    old = copy.deepcopy(squad)
    old["train"]["max_steps"], old["task"]["cpu_steps"], old["task"]["max_seq_length"] = 300, 300, 384
    _write(tmp_path / "old.json", base, old, "2026-01-02T00:00:00+00:00", 49.71)
    longer = copy.deepcopy(squad)
    longer["task"]["max_seq_length"], longer["task"]["doc_stride"] = 256, 128
    _write(tmp_path / "longer.json", base, longer, "2026-01-03T00:00:00+00:00", 51.57)
    _write(tmp_path / "new.json", base, squad, "2026-01-01T00:00:00+00:00", 55.36)
    runs = tables.runs_by_protocol(tables.read_records(tmp_path))
    assert runs[("minilm", "cpu")]["lora"]["squad_v2"][0]["best"]["main"] == 55.36


def test_a_sensitivity_curve_takes_its_default_point_from_the_protocol_cell_of_its_own_task():
    import copy

    tables = load_script("make_tables")

    def protocol_run(task, seed, score):
        return {"model": "minilm", "method": "triadapt_linear", "task": task, "seed": seed, "tag": "table1",
                "metric": "pearson", "config": tables.protocol_config("cpu", "minilm", "triadapt_linear", task, seed),
                "best": {"main": score}}

    default = protocol_run("stsb", 0, 0.65)
    records = [default, protocol_run("stsb", 1, 0.5), protocol_run("rte", 0, 0.52)]
    for value, score in ((200, 0.60), (400, 0.62)):
        config = copy.deepcopy(default["config"])
        config["task"]["warmup_steps"] = value
        records.append({**default, "tag": "fig3", "config": config, "best": {"main": score}})
    points = tables.sensitivity_points(records, "fig3")
    at_default = default["config"]["task"]["warmup_steps"]
    assert at_default == 100
    assert {k: dict(v) for k, v in points.items()} == {  # seed 1 is not swept, nor is RTE
        ("minilm", "stsb", "triadapt_linear"): {200: [60.0], 400: [62.0], at_default: [65.0]}}
    [(name, caption, table)] = tables.sensitivity_sections(records)
    assert name == "fig3_minilm_stsb" and "stsb dev pearson" in caption and "seeds [0]" in caption
    assert table == (["method", "100 (protocol)", "200", "400", "range"],
                     [["triadapt_linear", "65.00", "60.00", "62.00", "5.00"]])


def test_sensitivity_table_gives_each_value_its_mean_and_each_row_its_range():
    """Hand values: IncreLoRA's means 80, 84, 81 -> range 4; seeds 83, 85 -> 84.00 ± 1.41; a value a method
    lacks is "–" and leaves its range; one seed of two says (n=1)."""
    curves = {"triadapt_linear": {100: [84.0], 200: [85.0, 86.0]},
              "increlora": {100: [80.0], 200: [83.0, 85.0], 400: [81.0]}}
    header, rows = load_script("make_tables").sensitivity_table(curves, default=200)
    assert header == ["method", "100", "200 (protocol)", "400", "range"]
    assert rows == [["increlora", "80.00 (n=1)", "84.00 ± 1.41", "81.00 (n=1)", "4.00"],
                    ["triadapt_linear", "84.00 (n=1)", "85.50 ± 0.71", "–", "1.50"]]


def test_readme_include_blocks_are_filled_from_the_tables(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Results\n<!-- include table1_minilm_cpu.md -->\nstale numbers\n<!-- end include -->\ntext after\n")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tables.py"), "--runs", str(FIXTURES / "records"),
                    "--out", str(tmp_path), "--readme", str(readme)], check=True, capture_output=True)
    table = (FIXTURES / "expected" / "table1_minilm_cpu.md").read_text().strip()
    assert readme.read_text() == (f"# Results\n<!-- include table1_minilm_cpu.md -->\n{table}\n"
                                  "<!-- end include -->\ntext after\n")
    assert not list(tmp_path.glob(".*partial"))


def test_readme_include_of_a_table_never_written_is_an_error(tmp_path):
    readme = tmp_path / "README.md"
    original = "<!-- include table2_minilm_cpu.md -->\nold\n<!-- end include -->\n"
    readme.write_text(original)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tables.py"), "--runs", str(FIXTURES / "records"),
                           "--out", str(tmp_path), "--readme", str(readme)], capture_output=True, text=True)
    assert done.returncode != 0 and "includes table2_minilm_cpu.md" in done.stderr
    assert readme.read_text() == original


@pytest.mark.parametrize("script", ["make_tables.py", "make_figures.py"])
@pytest.mark.parametrize("runs, message", [("missing", "--runs {runs}: no such folder"),
                                           ("empty", "--runs {runs}: no run record (*.json) under it"),
                                           ("broken", "{runs}/x.json is not a JSON run record"),
                                           ("ad_hoc", "no record under {runs} follows a protocol")])
def test_a_wrong_runs_folder_stops_naming_it_and_leaves_every_output_as_it_was(tmp_path, script, runs, message):
    """A typo in --runs, or a folder of ad hoc records, once deleted every committed table as 'stale'."""
    folder = tmp_path / runs
    if runs != "missing":
        folder.mkdir()
    if runs == "broken":
        (folder / "x.json").write_text("{oops")
    if runs == "ad_hoc":  # a record of no protocol: another learning rate
        record = json.loads(next((FIXTURES / "records").rglob("*.json")).read_text())
        record["config"]["train"]["lr"] = 0.12345
        (folder / "x.json").write_text(json.dumps(record))
    out = tmp_path / "out"
    out.mkdir()
    (out / "table1_minilm_cpu.md").write_text("the committed table\n")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--runs", str(folder), "--out", str(out)],
                          capture_output=True, text=True)
    if script == "make_figures.py" and runs == "ad_hoc":
        message = "no record under {runs} feeds a figure"
    assert done.returncode == 2 and done.stderr.startswith("error: " + message.format(runs=folder))
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert [p.name for p in out.iterdir()] == ["table1_minilm_cpu.md"]
    assert (out / "table1_minilm_cpu.md").read_text() == "the committed table\n"


def test_ablation_claims_pair_the_full_method_with_each_variant_per_seed():
    """Table II and III's claims: nonlinear minus its variant on the seeds both have (no_orth: +2, +4 -> "holds";
    no_norm has seed 0 only; sqrt_r has no run, so no row)."""
    tables = load_script("make_tables")
    run = lambda value: {"task": "rte", "best": {"main": value}}  # noqa: E731
    by_method = {"triadapt_nonlinear": {"rte": {0: run(0.60), 1: run(0.62)}},
                 "triadapt_nonlinear_no_orth": {"rte": {0: run(0.58), 1: run(0.58), 2: run(0.90)}},
                 "triadapt_nonlinear_no_norm": {"rte": {0: run(0.61)}}}
    _, rows = tables.claims_table(by_method)
    assert [[cell.replace(" ", "") for cell in row] for row in rows] == [
        ["triadapt_nonlinear>triadapt_nonlinear_no_orth", "rte", "+2.00,+4.00", "3.00±1.41", "holds"],
        ["triadapt_nonlinear>triadapt_nonlinear_no_norm", "rte", "-1.00", "-1.00", "inconclusive(oneseed)"]]


def test_ladder_rows_pair_each_rung_with_the_one_above():
    """Rung 1 minus rung 0 on MRPC: +2, +3 -> 2.50 ± 0.71, "higher"; rung 2 has no run: "–"; LoRA (rung 6) is
    paired with rung 1, the nearest rung above with runs: +3, -1 -> inconclusive. Only tasks a rung ran on count."""
    tables = load_script("make_tables")
    run = lambda value: {"task": "mrpc", "best": {"main": value}}  # noqa: E731
    by_method = {"triadapt_linear": {"mrpc": {0: run(0.75), 1: run(0.76)}},
                 "ladder1_fixed_scale": {"mrpc": {0: run(0.77), 1: run(0.79)}},
                 "lora": {"mrpc": {0: run(0.80), 1: run(0.78)}}, "adalora": {"cola": {0: run(0.1)}}}
    header, rows = tables.ladder_table(by_method)
    assert header == ["rung", "method", "change from the rung above", "mrpc", "mrpc: Δ to the rung above"]
    assert [row[0:2] + row[3:] for row in rows[:3]] == [
        ["0", "triadapt_linear", "75.50 ± 0.71", "–"],
        ["1", "ladder1_fixed_scale (ours)", "78.00 ± 1.41", "2.50 ± 0.71, higher"],
        ["2", "ladder2_no_growth (ours)", "–", "–"]]
    assert rows[-1][1:2] + rows[-1][3:] == ["lora", "79.00 ± 1.41", "1.00 ± 2.83 (to rung 1), inconclusive at 2 seeds"]


def _study_records(tmp_path):
    """MRPC records of the schedule-length study, scores by hand (%): at T = 300 (the CPU protocol) LoRA 80, 82, 84
    and TriAdaptLoRA 78, 81, 81 (gaps -2, -1, -3: -2.00 ± 1.00, behind); at 900 LoRA 83, 85 and AdaLoRA 86 on seed 0
    (gap +3, one seed); at the paper's 3450 LoRA 85, 86, 87 and TriAdaptLoRA 86, 88, 87 (gaps +1, +2, 0: 1.00 ±
    1.00, inconclusive; at the last evaluation TriAdaptLoRA's 3450 runs score 3 less: -2.00 ± 1.00). Left out: a newer TriAdaptLoRA run at 3450 with another lr, BitFit at 3450 (not a study
    method), RTE, which has runs at the protocol's T only, and (tests/fixtures/records) an ad-hoc 7-step run. The
    study's own runs: 9 of 1800 s each, 4.5 h."""
    import copy

    tables = load_script("make_tables")
    scores = {("lora", 300): [80, 82, 84], ("triadapt_linear", 300): [78, 81, 81], ("lora", 900): [83, 85],
              ("adalora", 900): [86], ("lora", 3450): [85, 86, 87], ("triadapt_linear", 3450): [86, 88, 87],
              ("bitfit", 3450): [99]}
    for (method, steps), values in scores.items():
        for seed, value in enumerate(values):
            config = copy.deepcopy(tables.protocol_config("cpu", "minilm", method, "mrpc", seed))
            config["train"]["max_steps"] = None if steps == 3450 else steps
            record = {"model": "minilm", "method": method, "task": "mrpc", "seed": seed, "steps": steps,
                      "tag": "table1" if steps == 300 else "schedule_length", "wall_time_s": 1800.0, "metric": "accuracy", "schedule": {"paper_steps": 3450},
                      "evaluations": [{"step": steps // 2, "main": value / 200}, {"step": steps, "main": value / 100}],
                      "last": {"main": (value - 3 * ((method, steps) == ("triadapt_linear", 3450))) / 100}}
            _write(tmp_path / f"mrpc--{method}--{steps}--seed{seed}.json", record, config,
                   "2026-01-01T00:00:00+00:00", value / 100)
    other_lr = copy.deepcopy(tables.protocol_config("cpu", "minilm", "triadapt_linear", "mrpc", 0))
    other_lr["train"].update(max_steps=None, lr=5e-4)
    _write(tmp_path / "adhoc.json", {"model": "minilm", "method": "triadapt_linear", "task": "mrpc", "seed": 0,
                                     "steps": 3450, "tag": "schedule_length", "schedule": {"paper_steps": 3450}}, other_lr,
           "2026-02-01T00:00:00+00:00", 0.99)
    rte = tables.protocol_config("cpu", "minilm", "lora", "rte", 0)
    _write(tmp_path / "rte.json", {"model": "minilm", "method": "lora", "task": "rte", "seed": 0, "steps": 500,
                                   "schedule": {"paper_steps": 7800}}, rte, "2026-01-01T00:00:00+00:00", 0.6)


def test_schedule_length_tables_match_the_golden_files(tmp_path):
    (tmp_path / "runs").mkdir()
    _study_records(tmp_path / "runs")
    adhoc = FIXTURES / "records" / "cola--lora--adhoc.json"
    (tmp_path / "runs" / adhoc.name).write_text(adhoc.read_text())
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tables.py"), "--runs", str(tmp_path / "runs"),
                    "--out", str(tmp_path / "out")], check=True, capture_output=True)
    for name in ("schedule_length_minilm.md", "schedule_gaps_minilm.md"):
        assert (tmp_path / "out" / name).read_text() == (FIXTURES / "expected" / name).read_text()
    listed = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_figures.py"), "--runs", str(tmp_path / "runs"),
                             "--out", str(tmp_path / "figures"), "--list"], check=True, capture_output=True, text=True)
    assert {Path(line).name for line in listed.stdout.split()} >= {"schedule_gap_minilm.png",
                                                                     "schedule_curves_minilm_mrpc.png"}


def test_an_option_sweep_is_paired_with_the_protocol_cell_of_each_seed(tmp_path):
    """lr_cap (method.new_group_schedule=own_warmup_capped): 85, 86 against Table I's 84, 83 -> +1, +3, 2.00 ± 1.41,
    "holds"; a capped run that also changed the lr is not the sweep's, and Table I's seed 2 has no partner."""
    import copy

    tables = load_script("make_tables")
    base = {"model": "minilm", "method": "triadapt_nonlinear", "task": "stsb"}
    for seed, (capped, protocol) in enumerate([(0.85, 0.84), (0.86, 0.83), (None, 0.80)]):
        config = tables.protocol_config("cpu", "minilm", "triadapt_nonlinear", "stsb", seed)
        _write(tmp_path / f"table1-{seed}.json", {**base, "seed": seed, "tag": "table1"}, config,
               "2026-01-01T00:00:00+00:00", protocol)
        if capped is None:
            continue
        variant = copy.deepcopy(config)
        variant["method"]["new_group_schedule"] = "own_warmup_capped"
        _write(tmp_path / f"cap-{seed}.json", {**base, "seed": seed, "tag": "lr_cap"}, variant,
               "2026-01-01T00:00:00+00:00", capped)
        variant = copy.deepcopy(variant)
        variant["train"]["lr"] = 1e-4
        _write(tmp_path / f"cap-lr-{seed}.json", {**base, "seed": seed, "tag": "lr_cap"}, variant,
               "2026-01-02T00:00:00+00:00", 0.10)
    records = tables.read_records(tmp_path)
    option = tables.option_runs(records, "lr_cap")
    _, rows = tables.option_table(option, tables.runs_by_protocol(records), "method.new_group_schedule")
    assert rows == [["triadapt_nonlinear", "stsb", "method.new_group_schedule=own_warmup_capped", "85.50 ± 0.71",
                     "83.50 ± 0.71", "+1.00, +3.00", "2.00 ± 1.41", "holds"]]


def test_perturbation_rows_average_matrices_then_events_then_runs():
    """Seed 0: events {1.0, 0.5} and {0.2} -> 0.75, 0.2 (first 0.75, median 0.475); seed 1: {0.25}, {0.5} and an
    event with nothing learned yet (None, skipped) -> first 0.25, median 0.375. Firsts 0.50 ± 0.35, medians 0.42 ±
    0.07; loss jumps -0.1, +0.2, +0.1 -> +0.067."""
    tables = load_script("make_tables")
    event = lambda step, **changes: {"step": step, "delta_w_change": changes}  # noqa: E731
    runs = {("minilm", "triadapt_linear", "mrpc", 300): {
        0: {"method_state": {"growth_history": [event(18, a=1.0, b=0.5), event(27, a=0.2)]},
            "growth_losses": [{"loss_before": 1.0, "loss_after": 0.9}, {"loss_before": 0.8, "loss_after": 1.0}]},
        1: {"method_state": {"growth_history": [event(18, a=0.25), event(27, a=0.5), event(36, a=None)]},
            "growth_losses": [{"loss_before": 0.5, "loss_after": 0.6}]}}}
    _, rows = tables.perturbation_table(runs)
    assert rows == [["triadapt_linear", "mrpc", "300", "2", "0.50 ± 0.35", "0.42 ± 0.07", "+0.067", "2"]]


def test_an_option_the_protocol_config_lacks_is_still_paired(tmp_path):
    """dropout_sampler is absent from the paper's method config: a run that adds it (and nothing else) pairs with
    Table I's cell (0.76 against 0.75 -> +1.00)."""
    import copy

    tables = load_script("make_tables")
    base = {"model": "minilm", "method": "triadapt_linear", "task": "mrpc", "seed": 0}
    config = tables.protocol_config("cpu", "minilm", "triadapt_linear", "mrpc", 0)
    assert "dropout_sampler" not in config["method"]
    _write(tmp_path / "table1.json", {**base, "tag": "table1"}, config, "2026-01-01T00:00:00+00:00", 0.75)
    variant = copy.deepcopy(config)
    variant["method"]["dropout_sampler"] = "uniform"
    _write(tmp_path / "uniform.json", {**base, "tag": "dropout_sampler"}, variant, "2026-01-01T00:00:00+00:00", 0.76)
    records = tables.read_records(tmp_path)
    _, rows = tables.option_table(tables.option_runs(records, "dropout_sampler"), tables.runs_by_protocol(records),
                                  "method.dropout_sampler")
    assert [row[2] for row in rows] == ["method.dropout_sampler=uniform"] and rows[0][5] == "+1.00"


def test_summarize_runs_lists_a_tags_records_and_names_a_tag_no_record_has(tmp_path):
    for name, tag in (("rte--triadapt_linear--seed0.json", "mine"), ("rte--lora--seed0.json", "theirs")):
        record = json.loads((FIXTURES / "records" / name).read_text())
        record.update(tag=tag, metric="accuracy", last={"main": 0.6}, trainable_parameters={"at_start": 1000,
                      "at_end": 2000}, wall_time_s=90)  # what a real record has beyond the fixtures
        (tmp_path / name).write_text(json.dumps(record))
    script = [sys.executable, str(ROOT / "scripts" / "summarize_runs.py"), "--runs", str(tmp_path)]
    done = subprocess.run([*script, "--tag", "mine"], capture_output=True, text=True, check=True)
    [row] = done.stdout.splitlines()[2:]
    assert row == "| triadapt_linear | rte | minilm | 300 | accuracy | 63.00 | 60.00 | 1,000 | 2,000 | 1.5 |"
    done = subprocess.run([*script, "--tag", "min"], capture_output=True, text=True)
    assert done.returncode == 2 and f"--tag 'min': no record under {tmp_path} has it; the tags there: mine, theirs" \
        in done.stderr
    done = subprocess.run([*script[:-1], str(tmp_path / "nope"), "--tag", "mine"], capture_output=True, text=True)
    assert done.returncode == 2 and f"--runs {tmp_path / 'nope'}: no such folder" in done.stderr


def _generation_records(folder: Path) -> None:
    """The decoder study's records, by hand: two seeds of LoRA and TriAdaptLoRA (3 layers), zero-shot rows at step 0."""
    tables = load_script("make_tables")
    scores = {("lora", 0): (40.0, 50.0), ("lora", 1): (42.0, 54.0), ("triadapt_linear", 0): (38.0, 51.0),
              ("triadapt_linear", 1): (44.0, 56.0)}
    for (method, seed), (exact, f1) in scores.items():
        config = {**tables.generation_config(method), "seed": seed}
        zero = {"exact": 2.0, "f1": 10.0, "HasAns_f1": 18.0, "NoAns_f1": 0.0}
        last = {"exact": exact, "f1": f1, "HasAns_f1": f1 + 10, "NoAns_f1": f1 - 10}
        evaluations = [{"step": 0, "metrics": {"dev": zero}, "main": 10.0}, {"step": 120, "metrics": {"dev": last},
                                                                             "main": f1}]
        pattern = {f"model.layers.{i}.{kind}.{m}": 8 + (i == 0) * 4 * (m == "q_proj")
                   for i in range(3) for kind, ms in (("self_attn", ["q_proj", "k_proj", "v_proj", "o_proj"]),
                                                      ("mlp", ["gate_proj", "up_proj", "down_proj"])) for m in ms}
        record = {"model": "smollm2", "method": method, "task": "squad_v2_gen", "seed": seed, "steps": 120,
                  "tag": "smollm2_squad", "metric": "f1", "config": config, "evaluations": evaluations,
                  "best": evaluations[1], "last": evaluations[1], "finished_at": "2026-12-07T00:00:00+00:00",
                  "data": {"protocol": {"train_features": 470, "eval_questions": 100, "all_empty_baseline": 43.0}},
                  "method_state": {"rank_pattern": pattern}}
        (folder / f"{method}-{seed}.json").write_text(json.dumps(record))


def test_the_decoder_table_matches_its_golden_file_and_the_figure_is_listed(tmp_path):
    """EM 40, 42 -> 41.00 ± 1.41; F1 50, 54 -> 52.00 ± 2.83; the zero-shot row from every run's step 0; paired F1
    differences +1, +2 -> +1.50, half-width t(0.975, 1) · 0.7071 / √2 = 6.35, p = 1 − 2·atan(3)/π = 0.205."""
    (tmp_path / "runs").mkdir()
    _generation_records(tmp_path / "runs")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tables.py"), "--runs", str(tmp_path / "runs"),
                    "--out", str(tmp_path / "out")], check=True, capture_output=True)
    name = "generation_smollm2_squad_v2_gen.md"
    assert (tmp_path / "out" / name).read_text() == (FIXTURES / "expected" / name).read_text()
    listed = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_figures.py"), "--runs", str(tmp_path / "runs"),
                             "--out", str(tmp_path / "figures"), "--list"], check=True, capture_output=True, text=True)
    assert "growth_pattern_smollm2_squad_v2_gen.png" in {Path(line).name for line in listed.stdout.split()}
