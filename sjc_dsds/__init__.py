"""sjc-dsds: Score Jacobian Chaining with Debiased Score Distillation Sampling for text-to-3D."""

from __future__ import annotations

__version__ = "0.1.0"
