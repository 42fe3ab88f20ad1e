"""TriAdaptLoRA on a whole model: injection, rank growth (Eqs. 11-14), the orthogonal
regulariser (Eq. 10), merging, and save/load that rebuilds every matrix at its grown rank."""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import importance, schedule
from .perturbation import relative_change
from .targets import is_adaptable, is_transposed_linear, target_modules_for
from .config import TriAdaptConfig
from .layer import SharedInputDropout, TriAdaptLinear
from .preallocated import PreallocatedTriAdaptLinear

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
GROWTH_STATE_NAME = "growth_state.json"  # Eq. 11's snapshot of the last event and the growth history


def matches_target(name: str, targets: list[str]) -> bool:
    """PEFT's rule: the full name equals a target or ends with '.' + target."""
    return any(name == t or name.endswith("." + t) for t in targets)


def unit_generator(seed: int, step: int, module_index: int) -> torch.Generator:
    """New units depend only on (seed, step, module): identical on every replica and after resume."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 10_007 + module_index)


def orthogonality_terms(a: torch.Tensor, b: torch.Tensor, squared: bool = False) -> list[torch.Tensor]:
    """||A A^T - I||_F and ||B^T B - I||_F for A (r x n), B (d x r): the two terms of Eq. 10."""
    eye = torch.eye(a.shape[0], device=a.device, dtype=a.dtype)
    norms = [torch.linalg.matrix_norm(gram - eye, ord="fro") for gram in (a @ a.t(), b.t() @ b)]
    return [n.square() for n in norms] if squared else norms


class TriAdaptModel(nn.Module):
    """Wraps a transformers model; its forward is the wrapped model's forward.

    Training hooks, called once per optimizer step by the loop:
    ``orthogonal_regularizer()`` is added to the loss, ``grow(step)`` runs after the backward and
    gradient clipping and before ``optimizer.step()``, and returns the new parameters, which the
    caller registers with its optimizer and scheduler.
    """

    def __init__(self, model: nn.Module, config: TriAdaptConfig):
        super().__init__()
        if any(isinstance(m, TriAdaptLinear) for m in model.modules()):
            raise ValueError("the model already holds TriAdaptLoRA layers: wrap the base model once "
                             "(TriAdaptModel.from_pretrained loads a saved adapter onto a fresh base model)")
        self.model = model
        self.config = config
        for p in model.parameters():
            p.requires_grad_(False)
        if not config.target_modules:  # the family's preset (triadapt.targets), kept in the config for reloads
            config.target_modules = target_modules_for(model)
        targets = [(n, m) for n, m in model.named_modules()
                   if is_adaptable(m) and matches_target(n, config.target_modules)]
        if not targets:
            raise ValueError(f"no nn.Linear (or GPT-2 Conv1D) in the model matches target_modules={config.target_modules}")
        capacity = sum(min(m.weight.shape) for _, m in targets)  # a matrix holds at most min(d_in, d_out) ranks
        if config.r_ref * len(targets) > capacity:
            raise ValueError(f"r_ref={config.r_ref}: the budget r_ref x {len(targets)} matrices = "
                             f"{config.r_ref * len(targets)} ranks is more than the adapted matrices can hold "
                             f"(the sum of their min(d_in, d_out) is {capacity}); choose r_ref <= "
                             f"{capacity // len(targets)}")
        unknown = set(config.growth_blocks) - {n for n, _ in targets}
        if unknown:
            raise ValueError(f"growth_blocks names modules that are not adapted targets: {sorted(unknown)[:5]}")
        self.layer_names: list[str] = []
        events = len(schedule.growth_steps(config.t0, config.interval, config.total_steps)) if config.total_steps else 0
        for index, (name, module) in enumerate(targets):
            blocks = config.growth_blocks.get(name, [config.r_init])
            generator = unit_generator(config.seed, -1, index)
            if config.layout == "preallocated":
                capacity = config.capacity or min(min(module.weight.shape), config.r_init + config.delta_r * events)
                layer = PreallocatedTriAdaptLinear(module, max(capacity, sum(blocks)), blocks[0], config.alpha,
                                                   config.dropout, config.init_std, config.eps, generator,
                                                   is_transposed_linear(module), config.dropout_sampler)
                for birth, size in enumerate(blocks[1:]):  # a reload rebuilds grown blocks; their values are loaded
                    layer.grow(size, generator, step=birth)
            else:
                layer = TriAdaptLinear(module, blocks, config.alpha, config.dropout, config.init_std, config.eps,
                                       generator=generator, fan_in_fan_out=is_transposed_linear(module),
                                       **config.layer_options())
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
            self.layer_names.append(name)
        self.shared_dropout = None
        if config.share_dropout_masks and config.dropout > 0:
            self.shared_dropout = SharedInputDropout(config.dropout, config.dropout_sampler)
            for layer in self.layers():
                layer.dropout = self.shared_dropout
        self.previous_norms = self._normalized_norms()
        self.growth_history: list[dict] = []
        self._schedule_checked = False

    # -- structure -------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        if self.shared_dropout is not None:
            self.shared_dropout.clear()  # masks are shared within one forward, never across
        return self.model(*args, **kwargs)

    def layers(self) -> list[TriAdaptLinear]:
        return [self.model.get_submodule(n) for n in self.layer_names]

    def rank_pattern(self) -> dict[str, int]:
        return {n: layer.rank for n, layer in zip(self.layer_names, self.layers())}

    def growth_blocks(self) -> dict[str, list[int]]:
        return {n: layer.block_sizes() for n, layer in zip(self.layer_names, self.layers())}

    def total_rank(self) -> int:
        return sum(layer.rank for layer in self.layers())

    @property
    def remaining(self) -> int:
        """R(t) of Eq. 12: the ranks still to hand out, r_ref * M minus the current total."""
        return self.config.r_ref * len(self.layer_names) - self.total_rank()

    # -- Eq. 10 ----------------------------------------------------------------------------
    def orthogonal_regularizer(self) -> torch.Tensor:
        """coef * mean over the 2M factors of ||A A^T - I||_F + ||B^T B - I||_F (unsquared by default)."""
        terms = [t for layer in self.layers()
                 for t in orthogonality_terms(layer.factor_a(), layer.factor_b(), self.config.orth_squared)]
        return self.config.orth_reg_weight * torch.stack(terms).mean()

    # -- Eqs. 11-14 ------------------------------------------------------------------------
    def _normalized_norms(self) -> list[float]:
        return [importance.normalized_norm(layer.transform(), self.config.normalization, len(layer.block_sizes()))
                for layer in self.layers()]

    def grow(self, step: int) -> list[nn.Parameter]:
        """One growth event at optimizer step ``step`` if the schedule says so; returns new parameters."""
        c = self.config
        if not self._schedule_checked:  # no event in the schedule (or T never set) would mean no growth, silently
            c.check_schedule()
            self._schedule_checked = True
        window_end = None if c.growth_after_total_steps else c.total_steps
        if self.remaining <= 0 or not schedule.is_growth_step(step, c.t0, c.interval, window_end):
            return []
        M = len(self.layer_names)
        k = schedule.num_modules_to_grow(c.mode, self.remaining, step, c.t0, c.total_steps, M, c.delta_r,
                                         c.fixed_k, c.rounding, c.budget_exact)
        current = self._normalized_norms()
        scores = importance.importance_scores(current, self.previous_norms)
        self.previous_norms = current  # refreshed for every matrix at every event
        chosen = importance.top_k(scores, k, ties_at_threshold=not c.budget_exact)
        grown, before, capped = {}, self.remaining, {}
        for index in chosen:
            count = min(c.delta_r, self.remaining - sum(grown.values())) if c.budget_exact else c.delta_r
            if count <= 0:
                break
            room = getattr(self.layers()[index], "capacity", None)
            if room is not None and count > room - self.layers()[index].rank:  # preallocated: what the capacity holds
                capped[self.layer_names[index]] = count
                count = room - self.layers()[index].rank
            if count > 0:
                grown[self.layer_names[index]] = count
        factors_before = {name: self.model.get_submodule(name).update_factors() for name in grown}
        new_params = self._apply_growth(step, grown)
        self.growth_history.append({
            "step": step, "k": k, "budget_before": before, "budget_after": self.remaining,
            "grown": grown, "scores": dict(zip(self.layer_names, scores)),
            **({"capped": capped} if capped else {}),  # matrices given less than delta_r: their capacity was full
            # ||dW_after - dW_before||_F / ||dW_before||_F of each grown matrix: what the event did to it (issue 25)
            "delta_w_change": {name: relative_change(factors, self.model.get_submodule(name).update_factors())
                               for name, factors in factors_before.items()},
        })
        return new_params

    def _apply_growth(self, step: int, grown: dict[str, int]) -> list[nn.Parameter]:
        """Grow the named matrices; new units depend only on (seed, step, matrix)."""
        index = {name: i for i, name in enumerate(self.layer_names)}
        new_params = []
        for name, count in grown.items():
            layer = self.model.get_submodule(name)
            generator = unit_generator(self.config.seed, step, index[name])
            new_params += (layer.grow(count, generator, step=step) if isinstance(layer, PreallocatedTriAdaptLinear)
                           else layer.grow(count, generator))
        self.config.growth_blocks = self.growth_blocks()
        return new_params

    def replay_growth(self, step: int) -> list[nn.Parameter]:
        """Rebuild the parameters that the recorded event at ``step`` created (for resuming)."""
        event = next(e for e in self.growth_history if e["step"] == step)
        return self._apply_growth(step, event["grown"])

    # -- inference -------------------------------------------------------------------------
    def merge(self) -> None:
        for layer in self.layers():
            layer.merge()

    def unmerge(self) -> None:
        for layer in self.layers():
            layer.unmerge()

    # -- persistence -----------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every trainable tensor: the adapters and any module the caller unfroze (e.g. the head). A preallocated
        layer gives its born units only, in the growing layout's per-block names, so either layout loads them."""
        preallocated = {name: layer for name, layer in zip(self.layer_names, self.layers())
                        if isinstance(layer, PreallocatedTriAdaptLinear)}
        state = {n: p.detach().contiguous() for n, p in self.model.named_parameters() if p.requires_grad
                 and n.rpartition(".")[0] not in preallocated}
        for name, layer in preallocated.items():
            state.update({f"{name}.{key}": tensor for key, tensor in layer.block_tensors().items()})
        return state

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write adapter_config.json (with rank_pattern), adapter_model.safetensors and growth_state.json (the
        importance snapshot of the last event, so growth can continue after a reload), each atomically."""
        if any(layer.merged for layer in self.layers()):
            raise RuntimeError("unmerge() before saving: a merged adapter would be saved twice")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.growth_blocks = self.growth_blocks()
        growth_state = {"previous_norms": dict(zip(self.layer_names, self.previous_norms)),
                        "growth_history": self.growth_history}
        tmp = {name: directory / (name + ".tmp") for name in (WEIGHTS_NAME, CONFIG_NAME, GROWTH_STATE_NAME)}
        save_file(self.trainable_state_dict(), str(tmp[WEIGHTS_NAME]))
        tmp[CONFIG_NAME].write_text(json.dumps(self.config.to_dict(), indent=2))
        tmp[GROWTH_STATE_NAME].write_text(json.dumps(growth_state))
        for name, path in tmp.items():
            os.replace(path, directory / name)

    @classmethod
    def from_pretrained(cls, model: nn.Module, directory: str | os.PathLike) -> "TriAdaptModel":
        """Rebuild every matrix at its saved rank, then load the weights (safetensors only)."""
        directory = Path(directory)
        config_file = directory / CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(f"no TriAdaptLoRA adapter at {directory}: {CONFIG_NAME} is missing "
                                    f"(TriAdaptModel.save_pretrained writes it)")
        saved = json.loads(config_file.read_text())
        unknown = sorted(set(saved) - {f.name for f in fields(TriAdaptConfig)})
        if unknown:
            peft = (f"; it is a PEFT adapter (peft_type={saved['peft_type']!r}): load it with "
                    f"peft.PeftModel.from_pretrained") if "peft_type" in saved else ""
            raise ValueError(f"{config_file} is not a TriAdaptLoRA config: unknown keys {unknown[:5]}{peft}")
        config = TriAdaptConfig(**saved)
        wrapped = cls(model, config)
        state = load_file(str(directory / WEIGHTS_NAME))
        wrapped.load_trainable(state)
        growth_state = directory / GROWTH_STATE_NAME
        if growth_state.is_file():  # the next event's Eq. 11 compares against the last event's snapshot
            saved = json.loads(growth_state.read_text())
            wrapped.previous_norms = [saved["previous_norms"][name] for name in wrapped.layer_names]
            wrapped.growth_history = saved["growth_history"]
        else:  # saved without it: the loaded weights' own norms, never the random initial ones
            wrapped.previous_norms = wrapped._normalized_norms()
        return wrapped

    def load_trainable(self, state: dict[str, torch.Tensor]) -> None:
        """Load saved trainable tensors; any missing, extra or misshapen adapter tensor is an error."""
        state = dict(state)
        for name, layer in zip(self.layer_names, self.layers()):
            if isinstance(layer, PreallocatedTriAdaptLinear):  # its blocks go into the fixed tensors
                blocks = {key[len(name) + 1:]: state.pop(key) for key in list(state) if key.startswith(f"{name}.tri_")}
                expected = layer.block_tensors()
                if {k: tuple(v.shape) for k, v in blocks.items()} != {k: tuple(v.shape) for k, v in expected.items()}:
                    raise ValueError(f"adapter checkpoint does not fit this model's rank pattern: {name} saved "
                                     f"{sorted(blocks)[:4]}, model {sorted(expected)[:4]}")
                layer.load_block_tensors(blocks)
        own = {n: p for n, p in self.model.named_parameters()
               if not any(n.startswith(f"{name}.tri_") for name, layer in zip(self.layer_names, self.layers())
                          if isinstance(layer, PreallocatedTriAdaptLinear))}
        adapter_keys = {n for n in own if ".tri_" in n}
        problems = sorted(set(state) - set(own))[:3] + sorted(adapter_keys - set(state))[:3]
        problems += [f"{n}: saved {tuple(t.shape)} vs model {tuple(own[n].shape)}"
                     for n, t in state.items() if n in own and own[n].shape != t.shape][:3]
        if problems:
            raise ValueError(f"adapter checkpoint does not fit this model's rank pattern: {problems}")
        with torch.no_grad():
            for name, tensor in state.items():
                own[name].copy_(tensor)
        for p in self.model.parameters():
            p.requires_grad_(False)
        for name in state:
            own[name].requires_grad_(True)
        for layer in self.layers():
            if isinstance(layer, PreallocatedTriAdaptLinear):
                for p in (layer.tri_a, layer.tri_b, layer.tri_l, layer.tri_u):
                    p.requires_grad_(True)
