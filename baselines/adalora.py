"""AdaLoRA (Zhang et al. 2023) through PEFT's ``AdaLoraConfig``, with its pitfalls handled:

- the allocator runs once per *optimizer* step, after ``optimizer.step()`` and before the
  gradients are zeroed (PEFT's documented point; the HF Trainer never calls it);
- ``total_step`` is the run's optimizer-step count, and tinit/tfinal/deltaT are scaled with it;
- the six target matrices are named explicitly (PEFT's DeBERTa default has a bare "dense");
- the orthogonality weight comes from the paper's Table V (PEFT's default 0.5 is not the paper's).
The orthogonal regulariser is added to the loss inside ``AdaLoraModel.forward`` when labels are
passed; ``PeftModel.forward`` (no task type) calls the transformers model directly and would skip it
silently (huggingface/peft#432), so the loop drives the ``AdaLoraModel`` itself.
"""

from __future__ import annotations

from peft import AdaLoraConfig, get_peft_model

from .method import Method


class AdaLoRA(Method):
    name = "adalora"

    def __init__(self, model, target_modules, total_steps: int, init_r: int, target_r: int, alpha: float,
                 dropout: float, tinit: int, tfinal: int, delta_t: int, beta1: float, beta2: float,
                 orth_reg_weight: float):
        if tinit >= total_steps - tfinal:
            raise ValueError(f"AdaLoRA schedule leaves no budgeting phase: tinit={tinit}, tfinal={tfinal}, "
                             f"total_steps={total_steps}; need tinit < total_steps - tfinal")
        self.config = AdaLoraConfig(
            init_r=init_r, target_r=target_r, lora_alpha=alpha, lora_dropout=dropout,
            target_modules=list(target_modules), tinit=tinit, tfinal=tfinal, deltaT=delta_t, beta1=beta1,
            beta2=beta2, orth_reg_weight=orth_reg_weight, total_step=total_steps)
        super().__init__(get_peft_model(model, self.config).base_model)

    def after_optimizer_step(self, step: int) -> None:
        self.model.update_and_allocate(step)

    def extra_state(self):
        """PEFT's allocator state (EMA importance and uncertainty) and the final mask, if set."""
        allocator = self.model.rankallocator
        tensors = {f"{kind}/{name}": value for kind in ("ipt", "exp_avg_ipt", "exp_avg_unc")
                   for name, value in getattr(allocator, kind).items()}
        return {"rank_pattern": self.model.peft_config["default"].rank_pattern}, tensors

    def load_extra_state(self, state, tensors):
        allocator = self.model.rankallocator
        for kind in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            setattr(allocator, kind, {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(kind + "/")})
        self.model.peft_config["default"].rank_pattern = state["rank_pattern"]

    def rank_pattern(self) -> dict[str, int]:
        """Active ranks per adapted matrix, keyed by the backbone's module name (as TriAdaptLoRA's)."""
        pattern = self.model.peft_config["default"].rank_pattern
        if pattern is None:  # before the final mask: every rank still active
            return {name.removeprefix("model."): module.r["default"]
                    for name, module in self.model.named_modules() if hasattr(module, "lora_E")}
        return {name.removesuffix(".lora_E.default"): int(sum(mask)) for name, mask in pattern.items()}

    def summary(self) -> dict:
        ranks = self.rank_pattern()
        c = self.config
        return {"rank_pattern": ranks, "total_rank": sum(ranks.values()), "budget": c.target_r * len(ranks),
                "schedule": {"tinit": c.tinit, "tfinal": c.tfinal, "deltaT": c.deltaT, "total_step": c.total_step}}
