"""TriAdaptLoRA with a fixed parameter set (issue 47): every adapted matrix holds its capacity from step 0.

``PreallocatedTriAdaptLinear`` stores A (cap x n), B (d x cap) and the packed lower triangles of L and U for ``cap``
units. Units not yet born are masked: their rows of A and columns of B are multiplied by 0 in every forward, so they
change nothing and every one of their entries receives a zero gradient. A growth event writes the newborn units'
initial values in place, drawn exactly as ``TriAdaptLinear._add_units`` draws them (same generator, same order), sets
their mask to 1 and updates the scale alpha/(r+eps) of Eq. 5, a tensor: shapes never change, so an optimizer built
once, a DDP/FSDP wrapper built once and a compiled graph stay valid. ``UnitAdamW`` (triadapt.optim) gives newborn
units fresh Adam moments, bias correction and an LR schedule from their birth, as a new optimizer group does for the
growing layout.
"""

from __future__ import annotations

import torch
from torch import nn

from .layer import FrozenBaseAdapter, _FusedAdapterLinear, _packed_size, make_dropout


def local_part(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(the entries this process holds, the global index of their first row): the whole tensor and 0, or under
    FSDP2 a DTensor's local shard (rows, dim 0) and its offset."""
    from torch.distributed.tensor import DTensor

    if not isinstance(tensor, DTensor):
        return tensor, 0
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(tensor.shape, tensor.device_mesh, tensor.placements)
    return tensor.to_local(), offset[0]


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a sharded DTensor gathered (differentiably), any other tensor as it is. Inside a forward,
    FSDP2 has gathered the parameters already; growth and the regulariser run outside it."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def write_rows(tensor: torch.Tensor, start: int, values: torch.Tensor) -> None:
    """tensor[start:start+len(values)] = values (dim 0), also when only a shard of ``tensor`` is here (FSDP2)."""
    local, offset = local_part(tensor)
    low, high = max(start, offset), min(start + len(values), offset + local.shape[0])
    if low < high:
        local[low - offset:high - offset] = values[low - start:high - start]


def write_columns(tensor: torch.Tensor, start: int, values: torch.Tensor) -> None:
    """tensor[:, start:start+values.shape[1]] = values, also when only a shard of rows is here (FSDP2)."""
    local, offset = local_part(tensor)
    local[:, start:start + values.shape[1]] = values[offset:offset + local.shape[0]]


class PreallocatedTriAdaptLinear(FrozenBaseAdapter):
    """A frozen linear map plus a triangular-split low-rank update of fixed capacity (paper Eq. 5), with the
    paper's initialisation (A, L, U and each new unit's B ~ N(0, init_std), the first block's B = 0)."""

    def __init__(self, base: nn.Module, capacity: int, rank: int, alpha: float, dropout: float = 0.0,
                 init_std: float = 0.02, eps: float = 1e-5, generator: torch.Generator | None = None,
                 fan_in_fan_out: bool = False, dropout_sampler: str = "bernoulli"):
        super().__init__()
        if not 1 <= rank <= capacity:
            raise ValueError(f"rank={rank} must lie in [1, capacity={capacity}]")
        self.base_layer, self.fan_in_fan_out = base, fan_in_fan_out
        self.alpha, self.eps, self.init_std, self.capacity = alpha, eps, init_std, capacity
        self.dropout = make_dropout(dropout, dropout_sampler)
        weight = self.base_weight()
        d, n = weight.shape
        packed = _packed_size(0, capacity)
        self.tri_a = nn.Parameter(torch.zeros(capacity, n, device=weight.device, dtype=weight.dtype))
        self.tri_b = nn.Parameter(torch.zeros(d, capacity, device=weight.device, dtype=weight.dtype))
        self.tri_l = nn.Parameter(torch.zeros(packed, device=weight.device, dtype=weight.dtype))
        self.tri_u = nn.Parameter(torch.zeros(packed, device=weight.device, dtype=weight.dtype))
        rows, cols = torch.tril_indices(capacity, capacity, device=weight.device)
        self.register_buffer("_lower_index", rows * capacity + cols, persistent=False)
        self.register_buffer("_upper_index", cols * capacity + rows, persistent=False)
        self.register_buffer("entry_unit", rows, persistent=False)  # the unit owning each packed entry of L and U
        self.register_buffer("unit_mask", torch.zeros(capacity, device=weight.device, dtype=weight.dtype))
        self.register_buffer("scale", torch.zeros((), device=weight.device, dtype=weight.dtype))
        # the optimizer step at which each unit was born (-1: from the start; capacity not yet used: a large number)
        self.register_buffer("birth", torch.full((capacity,), 2**62, device=weight.device, dtype=torch.long))
        self.merged = False
        self._write_units(rank, generator, zero_b=True, step=-1)

    @property
    def rank(self) -> int:
        """Units born so far: read from the mask, so a loaded state dict brings its rank along."""
        return int(self.unit_mask.sum().item())

    def _write_units(self, count: int, generator, zero_b: bool, step: int) -> None:
        """Units rank .. rank+count-1 born: their values drawn as TriAdaptLinear._add_units draws a new block's."""
        if self.rank + count > self.capacity:
            raise ValueError(f"growing to rank {self.rank + count} exceeds the capacity {self.capacity}")
        d, n = self.base_weight().shape
        start, end = _packed_size(0, self.rank), _packed_size(0, self.rank + count)

        def gaussian(*shape):
            return torch.empty(*shape, dtype=torch.float32).normal_(0.0, self.init_std, generator=generator)

        with torch.no_grad():
            write_rows(self.tri_a, self.rank, gaussian(count, n))
            write_columns(self.tri_b, self.rank, torch.zeros(d, count) if zero_b else gaussian(d, count))
            write_rows(self.tri_l, start, gaussian(end - start))
            write_rows(self.tri_u, start, gaussian(end - start))
            rank = self.rank
            self.unit_mask[rank:rank + count] = 1.0
            self.birth[rank:rank + count] = step
            self.scale.fill_(self.alpha / (rank + count + self.eps))

    def grow(self, count: int, generator: torch.Generator | None = None, step: int = 0) -> list[nn.Parameter]:
        """Eqs. 6-9 in place: ``count`` units born at optimizer step ``step``; no new parameter (returns [])."""
        if self.merged:
            raise RuntimeError("cannot grow a merged layer; call unmerge() first")
        if count <= 0:
            raise ValueError(f"count={count} must be positive")
        self._write_units(count, generator, zero_b=False, step=step)
        return []

    def block_tensors(self) -> dict[str, torch.Tensor]:
        """The born units in the growing layout's names and shapes, block by block ("tri_a.0", "tri_b.0", ...): what
        is saved, so that an adapter loads into either layout."""
        out, start = {}, 0
        for j, size in enumerate(self.block_sizes()):
            end = start + size
            packed = slice(_packed_size(0, start), _packed_size(0, end))
            out.update({f"tri_a.{j}": self.tri_a[start:end], f"tri_b.{j}": self.tri_b[:, start:end],
                        f"tri_l.{j}": self.tri_l[packed], f"tri_u.{j}": self.tri_u[packed]})
            start = end
        return {k: v.detach().contiguous() for k, v in out.items()}

    def load_block_tensors(self, blocks: dict[str, torch.Tensor]) -> None:
        """Load ``block_tensors``' format (as many blocks as it holds): the units become born (from the start)."""
        count = sum(1 for key in blocks if key.startswith("tri_a."))
        sizes = [blocks[f"tri_a.{j}"].shape[0] for j in range(count)]
        if sum(sizes) > self.capacity:
            raise ValueError(f"a saved rank of {sum(sizes)} does not fit the capacity {self.capacity}")
        with torch.no_grad():
            start = 0
            for j, size in enumerate(sizes):
                end = start + size
                packed = slice(_packed_size(0, start), _packed_size(0, end))
                self.tri_a[start:end] = blocks[f"tri_a.{j}"]
                self.tri_b[:, start:end] = blocks[f"tri_b.{j}"]
                self.tri_l[packed] = blocks[f"tri_l.{j}"]
                self.tri_u[packed] = blocks[f"tri_u.{j}"]
                self.birth[start:end] = -1 if j == 0 else j - 1  # distinct births keep the block sizes
                start = end
            self.unit_mask.zero_()
            self.unit_mask[:start] = 1.0
            self.scale.fill_(self.alpha / (start + self.eps))

    def block_sizes(self) -> list[int]:
        births = self.birth[:self.rank].tolist()
        return [sum(1 for b in births if b == step) for step in dict.fromkeys(births)]

    def _full_transform(self) -> torch.Tensor:
        c, tri_l, tri_u = self.capacity, whole(self.tri_l), whole(self.tri_u)
        lower = tri_l.new_zeros(c * c).index_add(0, self._lower_index, tri_l)
        upper = tri_l.new_zeros(c * c).index_add(0, self._upper_index, tri_u)
        return (lower + upper).view(c, c)

    def transform(self) -> torch.Tensor:
        """D = L + U over the born units (r x r)."""
        return self._full_transform()[:self.rank, :self.rank]

    def factor_a(self) -> torch.Tensor:
        return whole(self.tri_a)[:self.rank]

    def factor_b(self) -> torch.Tensor:
        return whole(self.tri_b)[:, :self.rank]

    def masked_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A and B at full capacity, the unborn units' rows and columns zero: fixed shapes for any rank."""
        return whole(self.tri_a) * self.unit_mask[:, None], whole(self.tri_b) * self.unit_mask[None, :]

    def update_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return self.factor_b().clone(), self.scale * self.transform(), self.factor_a().clone()

    def delta_weight(self) -> torch.Tensor:
        a, b = self.masked_factors()
        return self.scale * (b @ self._full_transform() @ a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        if self.merged:
            return base(x)
        a, b = self.masked_factors()
        m = self.scale * (b @ self._full_transform())
        dropped = None if isinstance(self.dropout, nn.Identity) else self.dropout(x)
        return _FusedAdapterLinear.apply(x, None if dropped is x else dropped, self.base_weight(), base.bias, a, m)

    def extra_repr(self) -> str:
        d, n = self.base_weight().shape
        return f"in={n}, out={d}, rank={self.rank} of {self.capacity}, merged={self.merged}"


def unit_of_entries(layer: PreallocatedTriAdaptLinear) -> dict[nn.Parameter, torch.Tensor]:
    """For each adapter tensor of ``layer``, the unit owning each entry (broadcastable to the tensor)."""
    units = torch.arange(layer.capacity, device=layer.tri_a.device)
    return {layer.tri_a: units[:, None], layer.tri_b: units[None, :], layer.tri_l: layer.entry_unit,
            layer.tri_u: layer.entry_unit}
