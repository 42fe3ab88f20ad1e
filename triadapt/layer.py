"""The TriAdaptLoRA layer: h = W0 x + alpha/(r+eps) * B (L+U) A x  (paper Eq. 5).

Parameters are stored per growth block, never preallocated: block j holds A_j (dr x n), B_j (d x dr)
and the packed new rows of L and new columns of U. Rank-1 unit i (0-based) owns row i of L and
column i of U, diagonal included (i+1 entries each), so L is lower and U upper triangular by
construction (Eqs. 8-9) and both diagonals train (D_ii = L_ii + U_ii). Trainable entries per
matrix: r(n+d) + r(r+1). With ``dense_blocks`` (the authors' code) a unit's row of L and column of U run
to the end of its growth block instead of its own diagonal: each new block's square part is dense.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ADAPTER_PREFIX = "tri_"
A_INITS = ("gaussian", "kaiming_uniform")
NEW_B_INITS = ("gaussian", "zeros")
# Where a block's identity entries go when L and U start at the identity (``middle_diagonal``): each unit's own
# diagonal, or where the authors' ``nn.init.eye_`` on a non-square block puts them: row s+i of L at column i and
# column s+i of U at row i, for the block starting at unit s (the same as the diagonal for the first block only).
DIAGONAL_PLACEMENTS = ("own", "block_eye")


def _row_widths(first_row: int, num_rows: int, dense_block: bool = False) -> list[int]:
    """Entries of each row first_row .. first_row+num_rows-1 of L (= of each column of U) that a growth block
    adds: up to the unit's own diagonal (triangular), or to the block's last column (``dense_block``)."""
    return [first_row + num_rows if dense_block else i + 1 for i in range(first_row, first_row + num_rows)]


def _packed_size(first_row: int, num_rows: int, dense_block: bool = False) -> int:
    """Entries of rows first_row .. first_row+num_rows-1 of L, as one growth block adds them."""
    return sum(_row_widths(first_row, num_rows, dense_block))


DROPOUT_SAMPLERS = ("bernoulli", "uniform")


class UniformMaskDropout(nn.Dropout):
    """Dropout(p) whose mask is drawn as rand >= p and multiplied in as 0 or 1/(1-p): the distribution of
    ``nn.Dropout``'s Bernoulli mask from another random stream, about twice as cheap on CPU (ours; an option:
    ``TriAdaptConfig.dropout_sampler="uniform"``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.p > 0):
            return x
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))


def make_dropout(p: float, sampler: str = "bernoulli") -> nn.Module:
    """The adapter-input dropout: ``nn.Identity`` at p = 0, else ``nn.Dropout`` (bernoulli) or ``UniformMaskDropout``."""
    if sampler not in DROPOUT_SAMPLERS:
        raise ValueError(f"dropout_sampler={sampler!r} is not valid; choose one of: {', '.join(DROPOUT_SAMPLERS)}")
    if p == 0:
        return nn.Identity()
    return UniformMaskDropout(p) if sampler == "uniform" else nn.Dropout(p)


class SharedInputDropout(nn.Module):
    """Dropout that reuses its mask when called again on the very same input tensor: the matrices that
    read one input (Wq, Wk, Wv read the same hidden states) then share one mask instead of drawing three.
    Each matrix still sees dropout(p); the masks become equal across those matrices (an option, off by
    default: ``TriAdaptConfig.share_dropout_masks``)."""

    def __init__(self, p: float, sampler: str = "bernoulli"):
        super().__init__()
        self.inner = make_dropout(p, sampler)
        self.clear()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        if self._input is not x:
            self._input, self._output = x, self.inner(x)
        return self._output

    def clear(self) -> None:
        self._input = self._output = None


class _FusedAdapterLinear(torch.autograd.Function):
    """y = x W0^T + b + (x' A^T) M^T, with M = alpha/(r+eps) B D (d x r), W0 and b frozen (Eq. 5), and
    x' = dropout(x) or, without dropout (``x_adapter=None``), x itself.

    The same products as plain autograd, in one node: the adapter's output is accumulated into the base
    output in place (``addmm_``), and without dropout its input gradient into the base input gradient,
    instead of separate full-width tensors that are then summed. The rank-r activations are kept as
    r x tokens, the layout every committed record was computed with: x A^T gives other last bits (and is not
    slower on CPU BLAS), so changing it would end the records' exact reproduction."""

    @staticmethod
    def forward(ctx, x, x_adapter, weight, bias, a, m):
        x2 = x.reshape(-1, x.shape[-1])
        xin = x2 if x_adapter is None else x_adapter.reshape(-1, x.shape[-1])
        xa_t = a @ xin.t()
        y = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        y.addmm_(xa_t.t(), m.t())
        ctx.save_for_backward(xin, xa_t, weight, a, m)
        ctx.input_shape, ctx.fused_input = x.shape, x_adapter is None
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        xin, xa_t, weight, a, m = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        gm_t = m.t() @ g.t()  # dL/d(x' A^T), r x tokens
        grad_x = grad_x_adapter = grad_a = grad_m = None
        if ctx.needs_input_grad[0]:
            grad_x = g @ weight
            if ctx.fused_input:
                grad_x.addmm_(gm_t.t(), a)
            grad_x = grad_x.view(ctx.input_shape)
        if ctx.needs_input_grad[1]:
            grad_x_adapter = (gm_t.t() @ a).view(ctx.input_shape)
        if ctx.needs_input_grad[4]:
            grad_a = gm_t @ xin
        if ctx.needs_input_grad[5]:
            grad_m = (xa_t @ g).t()
        return grad_x, grad_x_adapter, None, None, grad_a, grad_m


class FrozenBaseAdapter(nn.Module):
    """What both layouts share: the frozen base's weight seen as d x n, and merging the update into it and back.
    A subclass sets ``base_layer``, ``fan_in_fan_out`` and ``merged`` and defines ``delta_weight``."""

    def base_weight(self) -> torch.Tensor:
        """The frozen weight as d x n (a view of a transposed ``Conv1D`` weight)."""
        return self.base_layer.weight.t() if self.fan_in_fan_out else self.base_layer.weight

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base_weight().add_(self.delta_weight())  # in place through the view: Conv1D's weight too
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base_weight().sub_(self.delta_weight())
            self.merged = False


class TriAdaptLinear(FrozenBaseAdapter):
    """A frozen linear map plus a growing triangular-split low-rank update. The base is an ``nn.Linear``
    (weight d x n) or, with ``fan_in_fan_out=True``, a layer that stores its weight transposed (n x d) and
    computes x W + b, as GPT-2's ``Conv1D`` does."""

    def __init__(self, base: nn.Module, blocks: int | list[int], alpha: float, dropout: float = 0.0,
                 init_std: float = 0.02, eps: float = 1e-5, generator: torch.Generator | None = None,
                 a_init: str = "gaussian", middle_diagonal: float | None = None, new_b: str = "gaussian",
                 fixed_scale: float | None = None, fan_in_fan_out: bool = False, preserve_function: bool = False,
                 dropout_sampler: str = "bernoulli", dense_blocks: bool = False, diagonal_placement: str = "own"):
        """``a_init``, ``middle_diagonal``, ``new_b`` and ``fixed_scale`` default to the paper (Sec. III.C, Eq. 5):
        A, L, U and every new unit's B ~ N(0, init_std), scale alpha/(r+eps). The alternatives serve the ablation
        ladder and the authors' code (``TriAdaptConfig.layer_options``): A as PEFT's LoRA draws it
        (``kaiming_uniform``), L and U of each unit zero but their diagonal entry ``middle_diagonal``, new B
        columns zero (``new_b="zeros"``), and a scale that ignores the rank (``fixed_scale``). ``preserve_function``
        (ours, beyond the paper) makes growth leave the layer's function unchanged: see ``grow``; ``dropout_sampler``
        picks how the adapter-input dropout draws its mask (``make_dropout``). ``dense_blocks`` and
        ``diagonal_placement="block_eye"`` follow the authors' code: dense square blocks of L and U per growth
        block, and their identity entries where ``eye_`` on a non-square block puts them (``DIAGONAL_PLACEMENTS``)."""
        super().__init__()
        if diagonal_placement not in DIAGONAL_PLACEMENTS:
            raise ValueError(f"diagonal_placement={diagonal_placement!r} is not valid; choose one of: "
                             f"{', '.join(DIAGONAL_PLACEMENTS)}")
        self.dense_blocks, self.diagonal_placement = dense_blocks, diagonal_placement
        if a_init not in A_INITS:
            raise ValueError(f"a_init={a_init!r} is not valid; choose one of: {', '.join(A_INITS)}")
        if new_b not in NEW_B_INITS:
            raise ValueError(f"new_b={new_b!r} is not valid; choose one of: {', '.join(NEW_B_INITS)}")
        self.base_layer, self.fan_in_fan_out = base, fan_in_fan_out
        self.alpha, self.eps, self.init_std = alpha, eps, init_std
        self.a_init, self.middle_diagonal, self.new_b, self.fixed_scale = a_init, middle_diagonal, new_b, fixed_scale
        self.preserve_function = preserve_function
        self.dropout = make_dropout(dropout, dropout_sampler)
        self.tri_a = nn.ParameterList()
        self.tri_b = nn.ParameterList()
        self.tri_l = nn.ParameterList()
        self.tri_u = nn.ParameterList()
        self.rank = 0
        self.merged = False
        blocks = [blocks] if isinstance(blocks, int) else list(blocks)
        self._add_units(blocks[0], generator, zero_b=True)  # B = 0: the update starts at zero
        for size in blocks[1:]:  # a reload rebuilds grown blocks; their values are then loaded
            self._add_units(size, generator, zero_b=self.new_b == "zeros")

    @property
    def scale(self) -> float:
        return self.alpha / (self.rank + self.eps) if self.fixed_scale is None else self.fixed_scale

    def _add_units(self, count: int, generator, zero_b: bool, zero_u_above: bool = False) -> list[nn.Parameter]:
        weight = self.base_weight()
        d, n = weight.shape

        def parameter(t: torch.Tensor) -> nn.Parameter:
            return nn.Parameter(t.to(device=weight.device, dtype=weight.dtype))

        def gaussian(*shape):
            return parameter(torch.empty(*shape, dtype=torch.float32).normal_(0.0, self.init_std, generator=generator))

        widths = _row_widths(self.rank, count, self.dense_blocks)
        starts = [sum(widths[:i]) for i in range(count)]  # where each unit's row of L (column of U) starts
        packed = sum(widths)
        if self.a_init == "kaiming_uniform":  # PEFT LoRA: kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(n), 1/sqrt(n))
            bound = 1.0 / math.sqrt(n)
            a = parameter(torch.empty(count, n, dtype=torch.float32).uniform_(-bound, bound, generator=generator))
        else:
            a = gaussian(count, n)
        b = nn.Parameter(torch.zeros(d, count, device=weight.device, dtype=weight.dtype)) if zero_b else gaussian(d, count)
        if self.middle_diagonal is None:
            l, u = gaussian(packed), gaussian(packed)
        else:  # unit i's entry at column i of its row of L (row i of its column of U), or at i - s (block_eye)
            diagonal = torch.zeros(packed, dtype=torch.float32)
            offset = 0 if self.diagonal_placement == "block_eye" else self.rank
            diagonal[[start + offset + i for i, start in enumerate(starts)]] = self.middle_diagonal
            l, u = parameter(diagonal.clone()), parameter(diagonal)
        if zero_u_above:  # each new column of U: zero in the old units' rows (its first self.rank entries)
            with torch.no_grad():
                for start in starts:
                    u[start:start + self.rank] = 0.0
        for container, p in ((self.tri_a, a), (self.tri_b, b), (self.tri_l, l), (self.tri_u, u)):
            container.append(p)
        self.rank += count
        self._set_triangle_index()
        return [a, b, l, u]

    def _set_triangle_index(self) -> None:
        r, device = self.rank, self.base_layer.weight.device
        if self.dense_blocks:  # the rows of L (columns of U) block by block, each as wide as _row_widths says
            widths = [w for s, m in self._block_spans() for w in _row_widths(s, m, dense_block=True)]
            rows = torch.repeat_interleave(torch.arange(r, device=device), torch.tensor(widths, device=device))
            cols = torch.cat([torch.arange(w, device=device) for w in widths])
        else:
            rows, cols = torch.tril_indices(r, r, device=device)
        # Row-major lower triangle = the concatenated rows of L; its transpose places U's columns.
        self.register_buffer("_lower_index", rows * r + cols, persistent=False)
        self.register_buffer("_upper_index", cols * r + rows, persistent=False)

    def _block_spans(self) -> list[tuple[int, int]]:
        """(first unit, size) of every growth block."""
        sizes = self.block_sizes()
        return [(sum(sizes[:j]), size) for j, size in enumerate(sizes)]

    def grow(self, count: int, generator: torch.Generator | None = None) -> list[nn.Parameter]:
        """Append ``count`` rank-1 units drawn from N(0, init_std) (Eqs. 6-9); old entries stay.

        With ``preserve_function`` (ours): the new units' B columns and the old rows of the new U columns start at
        zero, which removes every new term of dW, and the old B is multiplied by s_old / s_new, which undoes the
        change of alpha/(r+eps) (Eq. 5): the layer computes the same function before and after, and every new
        parameter receives gradient from the next step on (U's new entries at once, B's new columns through them).
        """
        if self.merged:
            raise RuntimeError("cannot grow a merged TriAdaptLinear; call unmerge() first")
        if count <= 0:
            raise ValueError(f"count={count} must be positive")
        if not self.preserve_function:
            return self._add_units(count, generator, zero_b=self.new_b == "zeros")
        old_scale = self.scale
        new = self._add_units(count, generator, zero_b=True, zero_u_above=True)
        with torch.no_grad():
            for b in self.tri_b[:-1]:
                b.mul_(old_scale / self.scale)
        return new

    def block_sizes(self) -> list[int]:
        return [a.shape[0] for a in self.tri_a]

    def _triangle(self, packed: nn.ParameterList, index: torch.Tensor) -> torch.Tensor:
        values = torch.cat(list(packed)) if len(packed) > 1 else packed[0]
        r = self.rank
        return values.new_zeros(r * r).index_add(0, index, values).view(r, r)

    def lower(self) -> torch.Tensor:
        return self._triangle(self.tri_l, self._lower_index)

    def upper(self) -> torch.Tensor:
        return self._triangle(self.tri_u, self._upper_index)

    def transform(self) -> torch.Tensor:
        """D = L + U (r x r)."""
        return self.lower() + self.upper()

    def factor_a(self) -> torch.Tensor:
        return torch.cat(list(self.tri_a), dim=0) if len(self.tri_a) > 1 else self.tri_a[0]

    def factor_b(self) -> torch.Tensor:
        return torch.cat(list(self.tri_b), dim=1) if len(self.tri_b) > 1 else self.tri_b[0]

    def update_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, alpha/(r+eps) * D, A), detached copies: the update's factors (Eq. 5) at this moment."""
        with torch.no_grad():
            return self.factor_b().clone(), self.scale * self.transform(), self.factor_a().clone()

    def delta_weight(self) -> torch.Tensor:
        """The d x n update alpha/(r+eps) * B D A; used for merging only, never in training."""
        return self.scale * (self.factor_b() @ self.transform() @ self.factor_a())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        if self.merged:
            return base(x)
        # Factorised: x -> A -> D -> B, folding D into B (M = scale B D, d x r), so no d x n matrix is built.
        m = self.scale * (self.factor_b() @ self.transform())
        frozen = not base.weight.requires_grad and (base.bias is None or not base.bias.requires_grad)
        if frozen:
            dropped = None if isinstance(self.dropout, nn.Identity) else self.dropout(x)
            x_adapter = None if dropped is x else dropped  # None: the adapter reads x itself
            weight, bias, a = self.base_weight(), base.bias, self.factor_a()
            if torch.is_autocast_enabled(x.device.type):  # a custom node is not autocast: cast as nn.Linear would be
                dtype = torch.get_autocast_dtype(x.device.type)
                x, weight, a, m = x.to(dtype), weight.to(dtype), a.to(dtype), m.to(dtype)
                bias = None if bias is None else bias.to(dtype)
                x_adapter = None if x_adapter is None else x_adapter.to(dtype)
            return _FusedAdapterLinear.apply(x, x_adapter, weight, bias, a, m)
        return base(x) + (self.dropout(x) @ self.factor_a().t()) @ m.t()

    def num_trainable(self) -> int:
        d, n = self.base_weight().shape
        return self.rank * (n + d) + 2 * sum(_packed_size(s, m, self.dense_blocks) for s, m in self._block_spans())

    def extra_repr(self) -> str:
        d, n = self.base_weight().shape
        return f"in={n}, out={d}, rank={self.rank}, scale={self.scale:.4g}, merged={self.merged}"
