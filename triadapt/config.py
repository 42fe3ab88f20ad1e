"""TriAdaptLoRA configuration: one validated dataclass, saved beside the adapter weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .importance import NORMALIZATIONS
from .layer import A_INITS, DIAGONAL_PLACEMENTS, DROPOUT_SAMPLERS
from .schedule import MODES, ROUNDINGS, growth_steps


PARAMETRIZATIONS = ("paper", "authors_code")
LAYOUTS = ("growing", "preallocated")
MIDDLE_LAYOUTS = ("triangular", "dense_blocks")
SCALINGS = ("current_rank", "reference_rank")
MIDDLE_INITS = ("gaussian", "identity")


INTEGER_FIELDS = ("total_steps", "r_init", "r_ref", "delta_r", "fixed_k", "t0", "interval", "seed", "capacity")
NUMBER_FIELDS = ("alpha", "eps", "dropout", "init_std", "orth_reg_weight")
FLAG_FIELDS = ("share_dropout_masks", "orth_squared", "budget_exact", "preserve_function_at_growth",
               "growth_after_total_steps")


# The first author's public code (YaoLiang2023/DiverValue-Bench @ 448a1bb, peft/src/peft/tuners/triadaptlora.py), as
# settings of this config: ``TriAdaptConfig(**AUTHORS_CODE, delta_r=r_ref // 2, ...)`` (docs/methods.md, "The paper and
# the authors' code", lists each point with its line). Their Δr default is r_ref / 2 (RankAllocator's rank_dic).
AUTHORS_CODE = {
    "parametrization": "authors_code",   # A ~ N(0, 0.02), B = 0 (new blocks too), scale 2, L and U start at eye_
    "middle_layout": "dense_blocks",     # add_parameters: c_row (Δr x r), c_col (r x Δr), dense within the block
    "diagonal_placement": "block_eye",   # nn.init.eye_ on those non-square blocks
    "normalization": "blocks",           # compute_score: ||C||_F / len(C_row)
    "rounding": "floor",                 # compute_threshold: int(R * (t - t0) / (T - t0)), at least 1, at most M
    "budget_exact": False,               # every matrix scoring >= the k-th largest grows by Δr, no cap on the budget
    "growth_after_total_steps": True,    # update_and_increase: t > t0, t % interval == 0, total < target; no t < T
    "orth_reg_weight": 0.5,              # TriAdaptLoraConfig's default
}


def _check_types(config: "TriAdaptConfig") -> None:
    """A value of the wrong type (e.g. r_ref="8" read from a text file) is named before any comparison trips on it."""
    for names, kind, fits in (
            (INTEGER_FIELDS, "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
            (NUMBER_FIELDS, "a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
            (FLAG_FIELDS, "True or False", lambda v: isinstance(v, bool))):
        for name in names:
            value = getattr(config, name)
            if not fits(value):
                raise TypeError(f"{name}={value!r} must be {kind}")
    targets = config.target_modules
    if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) for t in targets):
        raise TypeError(f"target_modules={targets!r} must be a list of module-name suffixes, e.g. "
                        f"['attention.self.query', 'attention.self.value'], or [] for the model family's preset")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}")


@dataclass
class TriAdaptConfig:
    """Settings of TriAdaptLoRA (paper Sec. III; defaults as in the paper and the authors' code).

    Growth happens at optimizer steps t with t0 < t < total_steps and t % interval == 0 while
    budget remains: k(t) matrices (Eqs. 13-14) with the largest importance (Eq. 11) each gain
    delta_r rank-1 units, until the total rank reaches r_ref * M.
    """

    # module-name suffixes, e.g. "attention.self.query"; empty: the model family's preset (triadapt.targets)
    target_modules: list[str] = field(default_factory=list)
    total_steps: int = 0  # T, the run's number of optimizer steps
    r_init: int = 1  # initial rank of every matrix
    r_ref: int = 8  # reference rank: the budget is r_ref * M
    delta_r: int = 4  # "Incre Rank Num": rank added to a selected matrix per event
    alpha: float = 32.0  # scaling numerator of alpha / (r + eps) (Eq. 5)
    eps: float = 1e-5
    dropout: float = 0.0  # dropout on the adapter input
    # One dropout mask per input tensor, shared by the matrices that read it (Wq, Wk, Wv): fewer masks to
    # draw, each matrix still sees dropout(p), but their masks are then equal. Off by default.
    share_dropout_masks: bool = False
    # How the dropout mask is drawn: bernoulli (nn.Dropout) | uniform (rand >= p: the same distribution from another
    # random stream, about half the cost on CPU; ours, off by default)
    dropout_sampler: str = "bernoulli"
    init_std: float = 0.02  # N(0, init_std) for A, L, U and every new unit
    mode: str = "linear"  # linear | nonlinear | fixed_k
    fixed_k: int = 3  # k of the fixed_k mode
    t0: int = 100  # initial warm-up: no growth at t <= t0
    interval: int = 100  # "Incre Interval"
    normalization: str = "r"  # importance normalization: r | sqrt_r | none (Table III) | blocks (the authors' code)
    orth_reg_weight: float = 0.1  # coefficient of Eq. 10; 0 switches it off (Table II)
    orth_squared: bool = False  # squared Frobenius norms as written in Eq. 10 (the codes use unsquared)
    rounding: str = "ceil"  # ceil as in the paper; floor as in the authors' code
    budget_exact: bool = True  # strict top-k, never beyond r_ref*M; False = authors' code (ties, overshoot)
    # The paper's parametrisation (Sec. III.C, Eq. 5) or the first author's public code (DiverValue-Bench,
    # peft/src/peft/tuners/triadaptlora.py): L and U start as identity matrices (D = 2I), new units' B columns
    # start at zero, and the scale is a constant 2 (alpha and r unused). See PARAMETRIZATIONS.
    parametrization: str = "paper"
    # The authors' code, each point its own option (docs/methods.md, "The paper and the authors' code"):
    middle_layout: str = "triangular"  # triangular (Eqs. 8-9) | dense_blocks: each growth block's square part dense
    diagonal_placement: str = "own"  # with authors_code: identity entries on each unit's diagonal | block_eye (eye_)
    growth_after_total_steps: bool = False  # True: events go on past T while budget remains (no t < T bound)
    # Ablations of ours (the ablation ladder from TriAdaptLoRA to LoRA), off by default, each one step toward LoRA:
    scaling: str = "current_rank"  # current_rank: alpha/(r+eps) (Eq. 5) | reference_rank: alpha/r_ref at any rank
    a_init: str = "gaussian"  # gaussian: N(0, init_std) | kaiming_uniform: as PEFT's LoRA initialises A
    middle_init: str = "gaussian"  # gaussian: L, U ~ N(0, init_std) | identity: each unit's L, U diagonals 1/2, D = I
    # Our variant, beyond the paper: growth leaves the function unchanged (new B columns and the new U columns' old
    # rows start at 0, the old B is rescaled by s_old/s_new; TriAdaptLinear.grow). Off: the paper's growth.
    preserve_function_at_growth: bool = False
    seed: int = 0  # seeds the draw of new units: (seed, step, module) -> identical on every replica
    # How the adapters are stored (issue 47): growing (new parameters at every event, the records' layout) |
    # preallocated (every matrix holds `capacity` units from step 0, the unborn ones masked; shapes never change, for
    # FSDP, DDP built once and torch.compile; train it with triadapt.optim.UnitAdamW). The paper's parametrisation only.
    layout: str = "growing"
    capacity: int = 0  # preallocated: units per matrix; 0: r_init + delta_r * (number of events), at most min(d, n)
    # Filled by growth and saved with the weights: full module name -> sizes of its rank blocks, in order
    # (the module's rank is their sum), so a reload rebuilds the exact parameter layout.
    growth_blocks: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self):
        _check_types(self)
        _check_choice("mode", self.mode, MODES)
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        _check_choice("rounding", self.rounding, ROUNDINGS)
        _check_choice("parametrization", self.parametrization, PARAMETRIZATIONS)
        _check_choice("scaling", self.scaling, SCALINGS)
        _check_choice("a_init", self.a_init, A_INITS)
        _check_choice("middle_init", self.middle_init, MIDDLE_INITS)
        _check_choice("dropout_sampler", self.dropout_sampler, DROPOUT_SAMPLERS)
        _check_choice("middle_layout", self.middle_layout, MIDDLE_LAYOUTS)
        _check_choice("layout", self.layout, LAYOUTS)
        if self.layout == "preallocated":
            beyond = {k: getattr(self, k) for k, paper in (("parametrization", "paper"), ("middle_layout", "triangular"),
                      ("scaling", "current_rank"), ("a_init", "gaussian"), ("middle_init", "gaussian"),
                      ("preserve_function_at_growth", False), ("share_dropout_masks", False)) if getattr(self, k) != paper}
            if beyond:
                raise ValueError(f"layout='preallocated' stores the paper's parametrisation only; got {beyond}")
        if self.capacity < 0 or (self.capacity and self.capacity < self.r_init):
            raise ValueError(f"capacity={self.capacity} must be 0 (automatic) or >= r_init={self.r_init}")
        _check_choice("diagonal_placement", self.diagonal_placement, DIAGONAL_PLACEMENTS)
        if self.parametrization == "authors_code" and (self.scaling, self.middle_init) != ("current_rank", "gaussian"):
            raise ValueError(f"parametrization='authors_code' sets the scale and the middle factor itself; leave "
                             f"scaling (got {self.scaling!r}) and middle_init (got {self.middle_init!r}) at their defaults")
        if self.r_init < 1:
            raise ValueError(f"r_init={self.r_init} must be >= 1")
        if self.r_ref < self.r_init:
            raise ValueError(f"r_ref={self.r_ref} must be >= r_init={self.r_init}")
        if self.delta_r <= 0:
            raise ValueError(f"delta_r={self.delta_r} must be a positive integer")
        if self.interval <= 0:
            raise ValueError(f"interval={self.interval} must be a positive integer")
        if self.fixed_k < 1:
            raise ValueError(f"fixed_k={self.fixed_k} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must lie in [0, 1)")
        if self.t0 < 0 or self.orth_reg_weight < 0:
            raise ValueError(f"t0={self.t0} and orth_reg_weight={self.orth_reg_weight} must be >= 0")

    def check_schedule(self) -> None:
        """Fail before training when no growth event fits inside the run."""
        T = self.total_steps
        if T < 1:
            raise ValueError(f"total_steps={T}: set it to the run's number of optimizer steps (T of Eqs. 12-14); "
                             f"growth is scheduled over it")
        if T <= self.t0 or not growth_steps(self.t0, self.interval, T):
            first = (self.t0 // self.interval + 1) * self.interval
            raise ValueError(
                f"no growth event fits: total_steps T={T}, t0={self.t0}, interval={self.interval}; "
                f"the first event would be at step {first}, which needs T > {first}"
            )

    def layer_options(self) -> dict:
        """Keyword arguments of ``TriAdaptLinear`` that this parametrisation and these ablations imply."""
        preserve = {"preserve_function": self.preserve_function_at_growth, "dropout_sampler": self.dropout_sampler,
                    "dense_blocks": self.middle_layout == "dense_blocks", "diagonal_placement": self.diagonal_placement}
        if self.parametrization == "authors_code":
            return {"a_init": self.a_init, "middle_diagonal": 1.0, "new_b": "zeros", "fixed_scale": 2.0, **preserve}
        return {"a_init": self.a_init, "middle_diagonal": 0.5 if self.middle_init == "identity" else None,
                "new_b": "gaussian", "fixed_scale": self.alpha / self.r_ref if self.scaling == "reference_rank" else None,
                **preserve}

    def to_dict(self) -> dict:
        return asdict(self)
