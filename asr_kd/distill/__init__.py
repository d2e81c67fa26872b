"""The distillation core shared by every recipe (speech, MNIST, image specialists).

- :mod:`asr_kd.distill.losses`: tempered softmax, soft-target cross-entropy, the paper's
  distillation loss (T^2-scaled soft term plus weighted hard term) and logit matching.
- :mod:`asr_kd.distill.ensemble`: combining teachers' tempered distributions by arithmetic or
  geometric mean.
"""
from asr_kd.distill.ensemble import ensemble_log_probs, ensemble_probs
from asr_kd.distill.losses import (
    HARD_WEIGHT,
    DistillationLoss,
    distillation_loss,
    logit_matching_loss,
    soft_cross_entropy,
    tempered_log_softmax,
    tempered_softmax,
)

__all__ = [
    "HARD_WEIGHT",
    "DistillationLoss",
    "distillation_loss",
    "ensemble_log_probs",
    "ensemble_probs",
    "logit_matching_loss",
    "soft_cross_entropy",
    "tempered_log_softmax",
    "tempered_softmax",
]
