"""The shared runner: data, metrics, backbones, the training loop and run records.

Importing it registers the config resolvers ``${times:a,b}`` (a × b), with which an experiment sets T as a multiple
of a task's ``cpu_steps`` (conf/experiment/schedule_length_3x.yaml), and ``${ceil_div:a,b}`` (⌈a / b⌉), with which
it spreads a number of evaluations over T (conf/experiment/tuned.yaml)."""

import math
import warnings

from omegaconf import OmegaConf

# PEFT (0.21) reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model: a FutureWarning on
# every LoRA / AdaLoRA run that no user of this runner can act on. Only that message is silenced.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

OmegaConf.register_new_resolver("times", lambda *factors: math.prod(factors), replace=True)
OmegaConf.register_new_resolver("ceil_div", lambda a, b: -(-a // b), replace=True)
