"""What the torch-free loss specs and the torch implementations share: reduction and penalty
names and the penalty's option check.

Both sides import this module and it imports neither, so ``spec`` (config, no torch) and the
implementations (``_base``, ``regularizers``) depend on one declaration instead of on each other.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)
RegularizerName = Literal["l1", "l2", "elastic_net"]
REGULARIZERS: tuple[str, ...] = get_args(RegularizerName)


def check_penalty(strength: float, l1_ratio: float) -> None:
    """Raise ``ValueError`` unless ``strength >= 0`` is finite and ``l1_ratio`` lies in [0, 1]."""
    if not (strength >= 0 and math.isfinite(strength)):
        raise ValueError(f"strength must be a finite number >= 0; got {strength!r}")
    if not 0.0 <= l1_ratio <= 1.0:
        raise ValueError(f"l1_ratio must lie in [0, 1]; got {l1_ratio!r}")
