"""scripts/bench.py on tiny settings: the record's schema, a row for every method, sane ratios."""

import json

import pytest

from tests.conftest import ROOT


def test_bench_record_has_every_method(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("TRIADAPT_DATA_DIR", str(data_dir))
    import bench  # scripts/ is on the tests' path

    path = bench.main(["--models", "tiny", "--lengths", "16", "--tasks", "rte", "--dropouts", "0", "0.1",
                       "--steps", "2", "--warmup", "1", "--batch-size", "4", "--allow-busy", "--no-memory",
                       "--out", str(tmp_path)])
    result = json.loads(path.read_text())
    for key in ("command", "git", "packages", "machine", "settings", "step_times", "allocation", "eval", "wall_time_s"):
        assert key in result
    methods = set(result["settings"]["methods"])
    assert {"floor", "full_ft", "peft_lora", "triadapt", "adalora", "increlora"} <= methods
    assert [(r["length"], r["dropout"]) for r in result["step_times"]] == [(16, 0.0), (16, 0.1), ("rte (real)", 0.0),
                                                                          ("rte (real)", 0.1)]
    assert result["busy"] == (result["load_average_at_start"] > bench.BUSY_LOAD)
    assert result["memory"] == []
    for row in result["step_times"]:
        assert set(row["seconds"]) == methods and row["vs_floor"]["floor"] == 1.0
        assert row["vs_peft_lora"]["peft_lora"] == 1.0 and row["vs_floor_iqr"]["floor"] == [1.0, 1.0]
        assert all(len(t) == 2 for t in row["step_seconds"].values())
    allocation = result["allocation"][0]
    assert allocation["triadapt_M"] == 12 and allocation["triadapt_event_s"] > 0
    assert set(result["eval"][0]["vs_bare"]) == {"bare", "unmerged", "merged"}
    assert (tmp_path / f"{path.stem}.md").read_text().count("| tiny |") == 4 + 4 + 1 + 1  # step times twice, ...


def test_ratios_are_paired_per_step_with_their_interquartile_range():
    """Steps on batches of different lengths: floor 1, 2, 4 s, the method 1.1, 2.4, 4.4 s. Paired: ratios 1.1, 1.2,
    1.1 -> median 1.1, quartiles 1.1 and 1.15; the ratio of the two medians would read 2.4 / 2 = 1.2."""
    import bench

    ratios = bench.paired_ratios({"floor": [1.0, 2.0, 4.0], "triadapt": [1.1, 2.4, 4.4]}, "floor")
    assert ratios["floor"] == {"median": 1.0, "iqr": [1.0, 1.0]}
    assert ratios["triadapt"]["median"] == pytest.approx(1.1)
    assert ratios["triadapt"]["iqr"] == pytest.approx([1.1, 1.15])


def test_peak_memory_is_measured_per_method_in_its_own_process(tmp_path):
    import bench

    path = bench.main(["--models", "tiny", "--lengths", "64", "--dropouts", "0", "--methods", "floor", "full_ft",
                       "triadapt", "--steps", "1", "--warmup", "0", "--batch-size", "16", "--allow-busy",
                       "--out", str(tmp_path)])
    [row] = json.loads(path.read_text())["memory"]
    peak = row["peak_mb"]
    assert set(peak) == {"floor", "full_ft", "triadapt"} and all(v >= 0 for v in peak.values())
    assert peak["full_ft"] > peak["triadapt"]  # full FT keeps a gradient and two AdamW moments per weight


def test_bench_refuses_a_busy_machine(tmp_path, monkeypatch):
    import bench

    monkeypatch.setattr(bench.os, "getloadavg", lambda: (1.7, 1.0, 1.0))
    with pytest.raises(SystemExit, match="load average is 1.70"):
        bench.main(["--models", "tiny", "--lengths", "16", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_one_block_is_the_same_adapter_with_its_growth_blocks_packed(tiny_batch):
    """The bench's ``triadapt_one_block`` column prices packing: the same rank, parameters and function as
    ``triadapt``'s blocks, held in one tensor per factor."""
    import torch

    import bench
    from triadapt.layer import TriAdaptLinear

    blocks, packed = (bench.build(m, "tiny", 0.0, 10, blocks=[1, 4, 3]).model for m in ("triadapt", "triadapt_one_block"))
    layers = [(a, b) for a, b in zip(blocks.modules(), packed.modules()) if isinstance(a, TriAdaptLinear)]
    assert len(layers) == 12
    with torch.no_grad():
        for grown, one in layers:
            assert grown.block_sizes() == [1, 4, 3] and one.block_sizes() == [8]
            grown.tri_b[0].normal_()  # a non-zero update, so that the logits depend on every factor
            for mine, theirs in ((one.tri_a, grown.tri_a), (one.tri_l, grown.tri_l), (one.tri_u, grown.tri_u)):
                mine[0].copy_(torch.cat(list(theirs)))
            one.tri_b[0].copy_(grown.factor_b())
    assert sum(p.numel() for p in blocks.parameters() if p.requires_grad) == \
        sum(p.numel() for p in packed.parameters() if p.requires_grad)
    blocks.eval(), packed.eval()
    inputs = {k: v for k, v in tiny_batch.items() if k != "labels"}
    torch.testing.assert_close(packed(**inputs).logits, blocks(**inputs).logits, rtol=0, atol=1e-6)


def test_fused_lora_is_the_frozen_model_plus_m_a_and_trains_only_its_factors(tiny_batch):
    """The bench's ``fused_lora`` column (the rank-r products' price) computes W0 x + M A x in every target matrix."""
    import torch

    import bench

    fused = bench.build("fused_lora", "tiny", 0.0, 10, blocks=[1, 4, 3]).model
    layers = [m for m in fused.modules() if isinstance(m, bench.FusedLoRALinear)]
    assert len(layers) == 12 and all(layer.a.shape[0] == 8 == layer.m.shape[1] for layer in layers)
    assert [n for n, p in fused.named_parameters() if p.requires_grad] == \
        [n for n, _ in fused.named_parameters() if n.endswith((".a", ".m"))]
    dense = bench.backbone("tiny")  # the same seeded weights
    with torch.no_grad():
        for (name, layer) in ((n, m) for n, m in fused.named_modules() if isinstance(m, bench.FusedLoRALinear)):
            dense.get_submodule(name).weight += layer.m @ layer.a
    fused.eval(), dense.eval()
    inputs = {k: v for k, v in tiny_batch.items() if k != "labels"}
    expected = dense(**inputs).logits
    assert not torch.allclose(expected, bench.backbone("tiny").eval()(**inputs).logits, atol=1e-6)  # the update shows
    torch.testing.assert_close(fused(**inputs).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("argv, message", [(["--methods", "lora"], "invalid choice: 'lora'"),
                                           (["--methods", "triadapt"], "--methods triadapt: add floor"),
                                           (["--blocks", "1", "0", "7"], "--blocks 1 0 7: every block holds"),
                                           (["--steps", "0"], "--steps 0: each must be an integer >= 1"),
                                           (["--lengths", "64", "0"], "--lengths 64 0: each must be an integer >= 1"),
                                           (["--dropouts", "1"], "--dropouts 1.0: each must be in [0, 1)"),
                                           (["--tasks", "squad_v2"], "invalid choice: 'squad_v2'")])
def test_bench_names_a_bad_argument(argv, message, tmp_path, capsys):
    import bench

    with pytest.raises(SystemExit) as stop:
        bench.main(["--models", "tiny", "--allow-busy", "--out", str(tmp_path), *argv])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_record_without_peft_lora_or_triadapt_gets_its_tables(tmp_path):
    """Only the floor is required: the table against PEFT LoRA, and the allocation's cost in steps, need what they
    divide by (a 10-minute measurement once ended in a KeyError here, before its record was written)."""
    import bench

    path = bench.main(["--models", "tiny", "--lengths", "16", "--dropouts", "0", "--methods", "floor",
                       "triadapt_one_block", "--steps", "1", "--warmup", "0", "--batch-size", "4", "--allow-busy",
                       "--no-memory", "--out", str(tmp_path)])
    table = (tmp_path / f"{path.stem}.md").read_text()
    [row] = json.loads(path.read_text())["step_times"]
    assert f"| 1.00 | {row['vs_floor']['triadapt_one_block']:.2f} |" in table
    assert "multiple of PEFT LoRA" not in table and "| nan |" in table  # no TriAdaptLoRA step to divide by
