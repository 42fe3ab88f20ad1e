"""The shared runner: data, metrics, backbones, the training loop and run records.

Importing it registers the config resolvers ``${times:a,b}`` (a × b), with which an experiment sets T as a multiple
of a task's ``cpu_steps`` (conf/experiment/schedule_length_3x.yaml), and ``${ceil_div:a,b}`` (⌈a / b⌉), with which
it spreads a number of evaluations over T (conf/experiment/tuned.yaml)."""

import math

from omegaconf import OmegaConf

OmegaConf.register_new_resolver("times", lambda *factors: math.prod(factors), replace=True)
OmegaConf.register_new_resolver("ceil_div", lambda a, b: -(-a // b), replace=True)
