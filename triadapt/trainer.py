"""TriAdaptLoRA with the Hugging Face ``Trainer`` (needs ``transformers``: ``pip install triadapt[hf]``).

``TriAdaptCallback`` runs a growth event where the paper puts it: after the backward pass and gradient
clipping, before ``optimizer.step()`` (the Trainer's ``on_pre_optimizer_step``), at the Trainer's optimizer
step count, and gives the new parameters to the Trainer's optimizer and LR scheduler: they join the first
parameter group's settings and follow the run's schedule from the step they are born. A callback cannot touch
the loss, so ``TriAdaptTrainer`` adds the orthogonal regulariser (Eq. 10) in ``compute_loss`` and installs the
callback itself.
"""

from __future__ import annotations

from torch import nn

try:
    from transformers import Trainer, TrainerCallback
except ImportError as error:  # the method library alone does not need transformers
    raise ImportError("triadapt.trainer needs transformers: pip install 'triadapt[hf]'") from error

from .model import TriAdaptModel
from .optim import UnitAdamW
from .preallocated import PreallocatedTriAdaptLinear


def register_new_parameters(optimizer, scheduler, params: list[nn.Parameter]) -> None:
    """Add ``params`` as a parameter group with group 0's settings and schedule (a LambdaLR, as every schedule of
    ``transformers.get_scheduler`` is), at group 0's current learning rate."""
    settings = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    optimizer.add_param_group({**settings, "params": params})
    scheduler = getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper, if any
    if scheduler is not None:
        if not hasattr(scheduler, "lr_lambdas"):
            raise TypeError(f"{type(scheduler).__name__} is not a LambdaLR; new parameters cannot follow its schedule")
        scheduler.base_lrs.append(scheduler.base_lrs[0])
        scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])


def forget_dequantised_gguf(model: nn.Module) -> None:
    """A GGUF checkpoint that transformers dequantised to float tensors on loading (its legacy GGUF path, which
    SmolLM2's Llama takes) keeps its GGUF quantizer, and the Trainer then refuses to train it as "purely quantized".
    With plain float weights the quantizer describes nothing: it is removed, as transformers itself does after a
    dequantising load. Other quantizers are left for the Trainer to judge."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None or getattr(quantizer.quantization_config, "quant_method", None) != "gguf":
        return
    if all(p.is_floating_point() for p in model.parameters()):
        quantizer.remove_quantization_config(model)


class TriAdaptCallback(TrainerCallback):
    """Growth events (Eqs. 11-14) inside a Trainer's loop; the Trainer must train ``tri.model``."""

    def __init__(self, tri: TriAdaptModel):
        self.tri = tri

    def on_train_begin(self, args, state, control, **kwargs):
        if state.max_steps != self.tri.config.total_steps:
            raise ValueError(f"TriAdaptConfig.total_steps={self.tri.config.total_steps} but the Trainer runs "
                             f"{state.max_steps} optimizer steps; set total_steps={state.max_steps}")

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        new_parameters = self.tri.grow(state.global_step)  # the step about to be taken, counted from 0
        if new_parameters:
            register_new_parameters(optimizer, lr_scheduler, new_parameters)


class TriAdaptTrainer(Trainer):
    """``Trainer`` for a TriAdaptModel: trains ``tri.model``, adds Eq. 10 to the training loss, grows the rank. With
    the preallocated layout its optimizer is ``UnitAdamW`` (the Trainer's AdamW settings and groups): newborn units
    get fresh Adam clocks and follow the run's schedule, as the growing layout's new groups do, and nothing is ever
    added to the optimizer."""

    def __init__(self, tri: TriAdaptModel, *args, **kwargs):
        forget_dequantised_gguf(tri.model)
        super().__init__(tri.model, *args, **kwargs)
        self.tri = tri
        self.add_callback(TriAdaptCallback(tri))

    def create_optimizer(self, model=None):
        layers = [layer for layer in self.tri.layers() if isinstance(layer, PreallocatedTriAdaptLinear)]
        if not layers or self.optimizer is not None:
            return super().create_optimizer(model) if model is not None else super().create_optimizer()
        decay = set(self.get_decay_parameter_names(self.model))
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in trainable if n in decay], "weight_decay": self.args.weight_decay},
                  {"params": [p for n, p in trainable if n not in decay], "weight_decay": 0.0}]
        self.optimizer = UnitAdamW([g for g in groups if g["params"]], layers, lr=self.args.learning_rate,
                                   lr_factor=None, betas=(self.args.adam_beta1, self.args.adam_beta2),
                                   eps=self.args.adam_epsilon, weight_decay=self.args.weight_decay,
                                   new_weight_decay=self.args.weight_decay)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if not model.training:
            return result
        if return_outputs:
            loss, outputs = result
            return loss + self.tri.orthogonal_regularizer(), outputs
        return result + self.tri.orthogonal_regularizer()
