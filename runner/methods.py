"""Method registry: ``method.kind`` in the Hydra config -> a ``Method`` wrapping the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from baselines.adalora import AdaLoRA
from baselines.adapters import BottleneckAdapters
from baselines.increlora import IncreLoRA
from baselines.lora import LoRA
from baselines.simple import BitFit, FullFineTuning
from baselines.tlora import TLoRA
from triadapt import TriAdaptConfig, TriAdaptModel
from triadapt.preallocated import PreallocatedTriAdaptLinear

from baselines.method import Method


@dataclass
class RunContext:
    """What a method may know about the run."""

    total_steps: int  # T, optimizer steps
    scale: Callable[[int], int]  # maps a paper step count to this run's (schedule scaling)
    seed: int
    target_modules: list[str]


# Options beyond the paper (conf/method/ladder*.yaml, triadapt_linear_authors_code.yaml); absent from the paper's own
# method configs, so that their resolved configs, and with them the records' identities, stay as they were.
ABLATION_KEYS = ("parametrization", "scaling", "a_init", "middle_init", "preserve_function_at_growth", "dropout_sampler",
                 "middle_layout", "diagonal_placement", "growth_after_total_steps", "layout", "capacity")


def triadapt_config(m, ctx: RunContext) -> TriAdaptConfig:
    """The library's validated config from a TriAdaptLoRA method config of this run."""
    return TriAdaptConfig(
        target_modules=list(ctx.target_modules), total_steps=ctx.total_steps, r_init=m.r_init, r_ref=m.r_ref,
        delta_r=m.delta_r, alpha=m.alpha, dropout=m.dropout, mode=m.mode, fixed_k=m.fixed_k,
        t0=ctx.scale(m.t0), interval=ctx.scale(m.interval), normalization=m.normalization,
        orth_reg_weight=m.orth_reg_weight, orth_squared=m.orth_squared, rounding=m.rounding,
        budget_exact=m.budget_exact, seed=ctx.seed, share_dropout_masks=m.get("share_dropout_masks", False),
        **{key: m[key] for key in ABLATION_KEYS if key in m})


class TriAdaptMethod(Method):
    """TriAdaptLoRA (linear, nonlinear or fixed-k) behind the loop's hooks."""

    name = "triadapt"

    def __init__(self, model, method_cfg, ctx: RunContext):
        m = method_cfg
        config = triadapt_config(m, ctx)
        config.check_schedule()
        self.tri = TriAdaptModel(model, config)
        self.new_group_schedule = m.new_group_schedule
        self.new_group_weight_decay = m.get("new_group_weight_decay")
        super().__init__(self.tri)

    def regularizer(self):
        return self.tri.orthogonal_regularizer() if self.tri.config.orth_reg_weight > 0 else None

    def unit_layers(self):
        return [layer for layer in self.tri.layers() if isinstance(layer, PreallocatedTriAdaptLinear)]

    @property
    def growth_events(self) -> int:
        return len(self.tri.growth_history)

    def before_optimizer_step(self, step: int):
        return self.tri.grow(step)

    def extra_state(self):
        return {"previous_norms": self.tri.previous_norms, "growth_history": self.tri.growth_history}, {}

    def load_extra_state(self, state, tensors):
        self.tri.previous_norms = state["previous_norms"]
        self.tri.growth_history = state["growth_history"]

    def replay_growth(self, step: int):
        return self.tri.replay_growth(step)

    def summary(self) -> dict:
        return {"rank_pattern": self.tri.rank_pattern(), "total_rank": self.tri.total_rank(),
                "budget": self.tri.config.r_ref * len(self.tri.layer_names),
                "growth_history": self.tri.growth_history,
                "schedule": {"t0": self.tri.config.t0, "interval": self.tri.config.interval}}


KINDS = ("full_ft", "bitfit", "lora", "triadapt", "adalora", "increlora", "adapters", "tlora")


def check_options(method_cfg) -> None:
    """Check a method's named options (``kind``; TriAdaptLoRA's ``mode``, ``dropout_sampler``, ...) against their
    choices before any data or model loads; raises ``ValueError`` naming the value and the choices. Checks that
    need T (a growth schedule that must fit) wait for ``build_method``."""
    if method_cfg.kind not in KINDS:
        raise ValueError(f"kind={method_cfg.kind!r} is not valid; choose one of: {', '.join(KINDS)}")
    if method_cfg.kind == "triadapt":  # unscaled steps and no modules: only the choices and ranges are read here
        triadapt_config(method_cfg, RunContext(total_steps=0, scale=lambda steps: steps, seed=0, target_modules=[]))


def build_method(method_cfg, model, ctx: RunContext) -> Method:
    kind = method_cfg.kind
    if kind == "full_ft":
        return FullFineTuning(model)
    if kind == "bitfit":
        return BitFit(model)
    if kind == "lora":
        return LoRA(model, ctx.target_modules, method_cfg.r, method_cfg.alpha, method_cfg.dropout)
    if kind == "triadapt":
        return TriAdaptMethod(model, method_cfg, ctx)
    if kind == "adalora":
        m = method_cfg
        return AdaLoRA(model, ctx.target_modules, ctx.total_steps, m.init_r, m.target_r, m.alpha, m.dropout,
                       ctx.scale(m.tinit), ctx.scale(m.tfinal), ctx.scale(m.delta_t), m.beta1, m.beta2,
                       m.orth_reg_weight)
    if kind == "increlora":
        m = method_cfg
        method = IncreLoRA(model, ctx.target_modules, ctx.total_steps, m.r_init, m.r_ref, m.incre_rank_num, m.top_h,
                           ctx.scale(m.init_warmup), ctx.scale(m.interval), m.alpha, m.dropout, m.beta1, m.beta2,
                           m.orth_reg_weight, m.advance_learning, m.budget_exact, ctx.seed)
        method.new_group_schedule = m.new_group_schedule
        return method
    if kind == "adapters":
        return BottleneckAdapters(model, method_cfg.placement, method_cfg.bottleneck)
    if kind == "tlora":
        return TLoRA(model, ctx.target_modules, method_cfg.r, method_cfg.dropout, ctx.seed)
    raise ValueError(f"method.kind={kind!r}; valid: {', '.join(KINDS)}")
