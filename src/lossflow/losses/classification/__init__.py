"""Classification losses: binary, multilabel and multiclass.

Binary and multilabel losses take logits of any shape and a floating target of the same shape with
values in [0, 1] (soft labels allowed). Multiclass losses take logits ``(N, C)`` or ``(N, C, *)``
and integer class indices ``(N,)`` or ``(N, *)``. A loss that supports both reads the mode from the
target: an integer target with one dimension fewer than the input is multiclass, anything else is
binary elementwise. Every loss computes in at least float32 and in log space.

One module per family: ``cross_entropy`` (``bce``, ``ce``), ``focal``, ``balanced``
(``class_balanced``, ``logit_adjusted``), ``cost_sensitive``, ``kl_div``; importing this package
registers their specs.
"""

from lossflow.losses.classification.balanced import (
    ClassBalancedLoss,
    ClassBalancedSpec,
    LogitAdjustedLoss,
    LogitAdjustedSpec,
    class_balanced_loss,
    class_balanced_weights,
    logit_adjusted_loss,
)
from lossflow.losses.classification.cost_sensitive import (
    CostSensitiveLoss,
    CostSensitiveSpec,
    cost_sensitive_loss,
)
from lossflow.losses.classification.cross_entropy import (
    BCELoss,
    BCESpec,
    CELoss,
    CESpec,
    bce_loss,
    ce_loss,
)
from lossflow.losses.classification.focal import FocalLoss, FocalSpec, focal_loss
from lossflow.losses.classification.kl_div import KLDivLoss, KLDivSpec, kl_div_loss

__all__ = [
    "BCELoss",
    "BCESpec",
    "CELoss",
    "CESpec",
    "ClassBalancedLoss",
    "ClassBalancedSpec",
    "CostSensitiveLoss",
    "CostSensitiveSpec",
    "FocalLoss",
    "FocalSpec",
    "KLDivLoss",
    "KLDivSpec",
    "LogitAdjustedLoss",
    "LogitAdjustedSpec",
    "bce_loss",
    "ce_loss",
    "class_balanced_loss",
    "class_balanced_weights",
    "cost_sensitive_loss",
    "focal_loss",
    "kl_div_loss",
    "logit_adjusted_loss",
]
