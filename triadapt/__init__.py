"""TriAdaptLoRA (Liang, Wang, Zeng 2025): triangular split, importance-driven adaptive rank growth."""

from .config import TriAdaptConfig
from .layer import TriAdaptLinear
from .model import TriAdaptModel

__all__ = ["TriAdaptConfig", "TriAdaptLinear", "TriAdaptModel"]
