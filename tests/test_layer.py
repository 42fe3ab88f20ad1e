"""TriAdaptLinear against the paper's Eq. 5, its triangular structure, growth, counting and merging."""

import pytest
import torch
from torch import nn

from triadapt import TriAdaptLinear
from triadapt.layer import SharedInputDropout, UniformMaskDropout, make_dropout


def unpack_lower(packed_blocks, r):
    """L from the packed rows, by hand: row i takes the next i+1 values."""
    values = torch.cat([p.detach() for p in packed_blocks]).tolist()
    L = torch.zeros(r, r)
    for i in range(r):
        for j in range(i + 1):
            L[i, j] = values.pop(0)
    return L


def unpack_upper(packed_blocks, r):
    """U from the packed columns: column i takes the next i+1 values, i.e. the transpose of the same packing."""
    return unpack_lower(packed_blocks, r).T


def make_layer(rank=1, n=7, d=5, alpha=16.0):
    torch.manual_seed(0)
    return TriAdaptLinear(nn.Linear(n, d), rank, alpha)


def test_initial_state():
    layer = make_layer()
    assert layer.rank == 1 and torch.all(layer.tri_b[0] == 0)  # B = 0, so the update starts at zero
    x = torch.randn(3, 7)
    assert torch.equal(layer(x), layer.base_layer(x))


def test_output_matches_eq5_after_growth():
    layer = make_layer()
    layer.grow(2)
    layer.grow(3)
    with torch.no_grad():
        layer.tri_b[0].normal_()  # make every block of B non-zero
    r = layer.rank
    A = torch.cat([a.detach() for a in layer.tri_a])
    B = torch.cat([b.detach() for b in layer.tri_b], dim=1)
    L, U = unpack_lower(layer.tri_l, r), unpack_upper(layer.tri_u, r)
    x = torch.randn(4, 7)
    expected = 16.0 / (r + 1e-5) * (B @ (torch.tril(L) + torch.triu(U)) @ A @ x.T).T
    torch.testing.assert_close(layer(x) - layer.base_layer(x), expected, rtol=1e-5, atol=1e-6)


def test_triangular_after_growth_and_old_entries_kept():
    layer = make_layer()
    history = []
    for count in (1, 4, 2, 1):
        before = (layer.lower().detach().clone(), layer.upper().detach().clone(),
                  layer.factor_a().detach().clone(), layer.factor_b().detach().clone(), layer.rank)
        layer.grow(count)
        L, U = layer.lower().detach(), layer.upper().detach()
        assert torch.equal(L, torch.tril(L)) and torch.equal(U, torch.triu(U))
        L0, U0, A0, B0, r0 = before
        assert torch.equal(L[:r0, :r0], L0) and torch.equal(U[:r0, :r0], U0)
        assert torch.equal(layer.factor_a()[:r0], A0) and torch.equal(layer.factor_b()[:, :r0], B0)
        assert torch.all(L[r0:, :] .abs().sum(1) > 0) and torch.all(U[:, r0:].abs().sum(0) > 0)  # L_down, U_up dense
        history.append(layer.rank)
    assert history == [2, 6, 8, 9]
    D = layer.transform().detach()
    assert torch.equal(torch.diagonal(D), torch.diagonal(L) + torch.diagonal(U))  # both diagonals train


def test_parameter_count_formula():
    layer = make_layer(rank=1, n=7, d=5)
    layer.grow(3)
    r = 4
    adapter = sum(p.numel() for name, p in layer.named_parameters() if name.startswith("tri_"))
    assert layer.num_trainable() == adapter == r * (7 + 5) + r * (r + 1) == 68


def test_growth_draws_gaussian_units():
    layer = TriAdaptLinear(nn.Linear(400, 300), 1, 8.0)
    new = layer.grow(20, torch.Generator().manual_seed(0))
    values = torch.cat([p.detach().flatten() for p in new])
    assert abs(values.std().item() - 0.02) < 0.001 and abs(values.mean().item()) < 0.001


def test_merge_unmerge_and_no_growth_while_merged():
    layer = make_layer()
    layer.grow(3)
    x = torch.randn(6, 7)
    unmerged = layer(x)
    W = layer.base_layer.weight.detach().clone()
    layer.merge()
    torch.testing.assert_close(layer(x), unmerged, atol=1e-5, rtol=0)
    with pytest.raises(RuntimeError, match="merged"):
        layer.grow(1)
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight.detach(), W, atol=1e-6, rtol=0)


def test_grow_rejects_non_positive():
    with pytest.raises(ValueError, match="count=0"):
        make_layer().grow(0)


def test_fused_forward_and_gradients_equal_plain_autograd():
    """The fused node (no dropout, frozen base) against Eq. 5 written out with plain autograd, in float64."""
    torch.manual_seed(0)
    base = nn.Linear(7, 5).double().requires_grad_(False)
    layer = TriAdaptLinear(base, [2, 3], alpha=4.0).double()
    with torch.no_grad():
        for p in layer.tri_b:
            p.normal_()
    x = torch.randn(3, 4, 7, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert y.grad_fn.name().endswith("_FusedAdapterLinearBackward")
    expected = base(x) + layer.scale * x @ (layer.factor_b() @ (layer.lower() + layer.upper()) @ layer.factor_a()).t()
    torch.testing.assert_close(y, expected)
    weights = torch.randn_like(y)
    params = [x, *layer.tri_a, *layer.tri_b, *layer.tri_l, *layer.tri_u]
    for got, want in zip(torch.autograd.grad((y * weights).sum(), params),
                         torch.autograd.grad((expected * weights).sum(), params)):
        torch.testing.assert_close(got, want)
    # With dropout, the adapter reads dropout(x): same masks (same RNG draws) as the plain formula.
    layer.dropout = nn.Dropout(0.5)
    torch.manual_seed(3)
    y = layer(x)
    torch.manual_seed(3)
    dropped = nn.functional.dropout(x, 0.5)
    expected = base(x) + layer.scale * dropped @ (layer.factor_b() @ layer.transform() @ layer.factor_a()).t()
    torch.testing.assert_close(y, expected)
    for got, want in zip(torch.autograd.grad((y * weights).sum(), params),
                         torch.autograd.grad((expected * weights).sum(), params)):
        torch.testing.assert_close(got, want)
    # With a trainable base (full fine-tuning around it) the plain path runs, and the base gets its gradient.
    base.weight.requires_grad_(True)
    assert layer(x).grad_fn.name() == "AddBackward0"


def test_shared_dropout_reuses_the_mask_only_for_the_same_input():
    drop = SharedInputDropout(0.5)
    x, other = torch.ones(200), torch.ones(200)
    first = drop(x)
    assert drop(x) is first  # the same tensor: the same mask
    assert not torch.equal(drop(other), first)  # another tensor: a fresh mask
    assert set(first.unique().tolist()) == {0.0, 2.0}
    drop.eval()
    assert drop(x) is x


def test_uniform_mask_dropout_keeps_1_minus_p_scaled_and_passes_gradient_through_the_mask():
    """rand >= p keeps an entry with probability 1 - p, scaled by 1/(1-p) (E = x); the gradient is the mask itself.
    p = 0.3 over 10^5 entries: kept fraction 0.7 within 0.005 (about 3.5 std)."""
    torch.manual_seed(0)
    drop = UniformMaskDropout(0.3)
    x = torch.ones(100_000, requires_grad=True)
    y = drop(x)
    assert y.detach().unique().tolist() == pytest.approx([0.0, 1 / 0.7])
    assert abs((y > 0).float().mean().item() - 0.7) < 0.005
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())
    drop.eval()
    assert drop(x) is x
    shared = SharedInputDropout(0.5, "uniform")
    first = shared(x)
    assert shared(x) is first and set(first.detach().unique().tolist()) == {0.0, 2.0}
    assert isinstance(make_dropout(0.0, "uniform"), torch.nn.Identity)
    with pytest.raises(ValueError, match="dropout_sampler='gauss' is not valid; choose one of: bernoulli, uniform"):
        make_dropout(0.1, "gauss")
