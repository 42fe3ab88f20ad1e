"""``authors_code`` against a transcription of the first author's layer and allocator.

The transcription restates, stand-alone, what YaoLiang2023/DiverValue-Bench @ 448a1bbd09021b2909403e52997140541fa136de,
peft/src/peft/tuners/triadaptlora.py computes: ``TriAdaptLoraLayer.add_parameters`` (c_row / c_col zeros then
``nn.init.eye_``, A ~ N(0, 0.02), B zeros), ``compute_score`` (||C||_F / len(C_row), minus the value at the previous
call), ``loraW.forward`` (B (C A) * 2 with C the row blocks plus the column blocks, zero-padded), and
``RankAllocator.compute_threshold`` / ``increase_to_target_rank`` (k = int(R (t - t0) / (T - t0)), at least 1, at most M;
every matrix scoring at least the k-th largest grows by Δr). Both sides start from the same values, are moved by the
same "training" between events, and are compared after every event: ΔW, D, the scores, k and the matrices chosen.
"""

import pytest
import torch
from torch import nn

from triadapt import TriAdaptConfig, TriAdaptModel
from triadapt.config import AUTHORS_CODE


class TheirLayer:
    """One adapted matrix of the authors' code (their ParameterLists as plain lists of tensors)."""

    def __init__(self, d: int, n: int):
        self.d, self.n, self.c_row, self.c_col, self.a, self.b, self.previous = d, n, [], [], [], [], 0.0

    def add_parameters(self, add_r: int, new_a: torch.Tensor) -> None:
        rank = self.c_row[-1].shape[1] if self.c_row else 0
        size = rank + add_r
        c_row, c_col = torch.zeros(add_r, size), torch.zeros(size, add_r)
        nn.init.eye_(c_row)
        nn.init.eye_(c_col)
        self.c_row.append(c_row)
        self.c_col.append(c_col)
        self.a.append(new_a.clone())  # their N(0, 0.02) draw: ours, so that both hold the same values
        self.b.append(torch.zeros(self.d, add_r))

    def c(self) -> torch.Tensor:
        rank = self.c_row[-1].shape[1]
        rows = torch.cat([torch.cat([c, torch.zeros(c.shape[0], rank - c.shape[1])], 1) for c in self.c_row], 0)
        cols = torch.cat([torch.cat([c, torch.zeros(rank - c.shape[0], c.shape[1])], 0) for c in self.c_col], 1)
        return rows + cols

    def delta_w(self) -> torch.Tensor:
        return torch.cat(self.b, 1) @ (self.c() @ torch.cat(self.a, 0)) * 2

    def compute_score(self) -> float:
        value = torch.norm(self.c(), p="fro") / torch.tensor(len(self.c_row)).float()
        score, self.previous = value - self.previous, value
        return score.item()


def their_threshold(target: int, total: int, t: int, t0: int, T: int, scores: list[float]) -> tuple[int, float]:
    k = int((target - total) * ((t - t0) / (T - t0)))
    k = min(max(k, 1), len(scores))
    return k, torch.topk(torch.tensor(scores), k)[0][-1].item()


def copy_into_theirs(layer, theirs: TheirLayer) -> None:
    """Our layer's current values, in their layout (their row blocks of C are rows of our L, column blocks columns of
    our U; with dense blocks both hold exactly the same entries)."""
    lower, upper = layer.lower().detach(), layer.upper().detach()
    start = 0
    for j, size in enumerate(layer.block_sizes()):
        end = start + size
        theirs.c_row[j] = lower[start:end, :end].clone()
        theirs.c_col[j] = upper[:end, start:end].clone()
        theirs.a[j], theirs.b[j] = layer.tri_a[j].detach().clone(), layer.tri_b[j].detach().clone()
        start = end


def train_a_little(tri: TriAdaptModel, generator: torch.Generator) -> None:
    """What training does between events: every adapter entry moves (B leaves 0), by different amounts per matrix."""
    with torch.no_grad():
        for index, layer in enumerate(tri.layers()):
            for p in layer.parameters():
                if p.requires_grad:
                    p.add_(torch.randn(p.shape, generator=generator) * 0.05 * (index + 1))


def drive(settings: dict, events: int = 4):
    """Our model with ``settings`` beside the transcription, event after event; returns what was compared."""
    torch.manual_seed(0)
    base = nn.Sequential(*[nn.Linear(10, 10) for _ in range(5)])
    T, t0, r_ref = 20, 2, 8
    tri = TriAdaptModel(base, TriAdaptConfig(target_modules=[str(i) for i in range(5)], r_ref=r_ref, delta_r=r_ref // 2,
                                             total_steps=T, t0=t0, interval=2, **settings))
    theirs = []
    for layer in tri.layers():
        mine = TheirLayer(10, 10)
        mine.add_parameters(1, layer.tri_a[0].detach())
        mine.compute_score()  # reset_lora_parameters scores once at init
        theirs.append(mine)
    generator = torch.Generator().manual_seed(1)
    for layer, mine in zip(tri.layers(), theirs):
        torch.testing.assert_close(layer.transform().detach(), mine.c(), rtol=0, atol=0)
    steps = [t for t in range(T) if t > t0 and t % 2 == 0][:events]
    for step in steps:
        train_a_little(tri, generator)
        for layer, mine in zip(tri.layers(), theirs):
            copy_into_theirs(layer, mine)
        total, events_before = tri.total_rank(), len(tri.growth_history)
        tri.grow(step)
        if total >= r_ref * 5:  # update_and_increase: no event once the total reaches the target
            assert len(tri.growth_history) == events_before
            continue
        event = tri.growth_history[-1]
        scores = [mine.compute_score() for mine in theirs]
        k, threshold = their_threshold(r_ref * 5, total, step, t0, T, scores)
        chosen = [i for i, score in enumerate(scores) if score >= threshold]
        assert event["k"] == k, (step, event["k"], k)
        assert list(event["scores"].values()) == pytest.approx(scores, abs=1e-6)
        assert sorted(event["grown"]) == sorted(tri.layer_names[i] for i in chosen)
        assert all(count == r_ref // 2 for count in event["grown"].values())
        for i in chosen:
            theirs[i].add_parameters(r_ref // 2, tri.layers()[i].tri_a[-1].detach())
        for layer, mine in zip(tri.layers(), theirs):
            torch.testing.assert_close(layer.transform().detach(), mine.c(), rtol=0, atol=1e-7)
            torch.testing.assert_close(layer.delta_weight().detach(), mine.delta_w(), rtol=1e-5, atol=1e-7)
    return tri


def test_authors_code_equals_the_transcription_of_their_layer_over_its_events():
    tri = drive(AUTHORS_CODE, events=5)
    assert len(tri.growth_history) == 3 and tri.total_rank() > 8 * 5  # the last event overshoots the budget, as theirs
    assert max(len(layer.block_sizes()) for layer in tri.layers()) >= 3  # blocks beyond the second: eye_ off-diagonal


def test_the_comparison_fails_on_the_earlier_authors_code():
    """What `parametrization="authors_code"` alone was before (identity on every unit's own diagonal, triangular
    blocks, importance divided by r, ceil and an exact budget): the transcription tells it apart."""
    with pytest.raises(AssertionError):
        drive({"parametrization": "authors_code"})


def test_dense_blocks_hold_the_authors_parameter_count():
    """42 middle entries at rank 5 (blocks 1, 4) and 114 at rank 9 (1, 4, 4), against 30 and 90 triangular."""
    def middle_entries(layout: str, blocks: list[int]) -> int:
        from triadapt.layer import TriAdaptLinear

        layer = TriAdaptLinear(nn.Linear(12, 12), blocks, 32.0, dense_blocks=layout == "dense_blocks")
        return sum(p.numel() for p in (*layer.tri_l, *layer.tri_u))

    assert [middle_entries("dense_blocks", b) for b in ([1, 4], [1, 4, 4])] == [42, 114]
    assert [middle_entries("triangular", b) for b in ([1, 4], [1, 4, 4])] == [30, 90]


def test_their_eye_on_a_later_block_sits_off_the_diagonal():
    """Growing 1 -> 5 -> 9 from D = [2]: the new diagonal entries are 0, ones at (r_old + i, i) and (i, r_old + i)."""
    from triadapt.layer import TriAdaptLinear

    config = TriAdaptConfig(target_modules=["x"], **AUTHORS_CODE)
    layer = TriAdaptLinear(nn.Linear(12, 12), 1, 32.0, **config.layer_options())
    layer.grow(4)
    d = layer.transform().detach()
    expected = torch.zeros(5, 5)
    expected[0, 0] = 2.0
    for i in range(4):
        expected[1 + i, i] += 1.0
        expected[i, 1 + i] += 1.0
    assert torch.equal(d, expected)
    layer.grow(4)
    d = layer.transform().detach()
    assert torch.equal(d[5:, :4] + d[:4, 5:].t(), 2 * torch.eye(4)) and torch.all(d.diagonal()[1:] == 0)


def test_the_runner_config_mirrors_the_library_constant():
    from tests.conftest import compose_config

    method = compose_config("method=triadapt_linear_authors_code", "task=rte").method
    assert {key: method[key] for key in AUTHORS_CODE} == AUTHORS_CODE
    assert method.delta_r == method.r_ref // 2 and method.new_group_weight_decay == 0.0


def test_a_grown_authors_code_adapter_saves_and_reloads_to_the_same_outputs(tmp_path):
    tri = drive(AUTHORS_CODE, events=2)
    x = torch.randn(4, 10)
    tri.save_pretrained(tmp_path)
    torch.manual_seed(0)
    again = TriAdaptModel.from_pretrained(nn.Sequential(*[nn.Linear(10, 10) for _ in range(5)]), tmp_path)
    assert again.rank_pattern() == tri.rank_pattern() and again.growth_blocks() == tri.growth_blocks()
    assert torch.equal(again(x), tri(x))


def test_growth_goes_on_past_t_only_with_the_authors_window():
    """Their update_and_increase has no t < T bound: with growth_after_total_steps an event at t >= T still grows
    while budget remains; the paper's window (t0 < t < T) does not."""
    def grows_at(step: int, after: bool) -> bool:
        torch.manual_seed(0)
        tri = TriAdaptModel(nn.Sequential(nn.Linear(10, 10)), TriAdaptConfig(
            target_modules=["0"], r_ref=8, delta_r=2, total_steps=10, t0=2, interval=2, growth_after_total_steps=after))
        return bool(tri.grow(step))

    assert grows_at(4, after=False) and grows_at(4, after=True)
    assert not grows_at(12, after=False) and grows_at(12, after=True)
