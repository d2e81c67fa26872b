"""Losses of Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network".

Notation of the paper: student logits ``z``, teacher logits ``v``, temperature ``T``,
soft targets ``p = softmax(v / T)`` and student's tempered distribution ``q = softmax(z / T)``.
The gradient of the soft cross-entropy w.r.t. ``z_i`` is ``(q_i - p_i) / T``; for large ``T`` and
zero-meaned logits it tends to ``(z_i - v_i) / (N T^2)`` (``N`` classes), which is why the soft term
is multiplied by ``T^2``: its gradients then keep their size as ``T`` changes, and in the high-T
limit the scaled loss is logit matching, ``sum_i (z_i - v_i)^2 / (2N)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from asr_kd.distill.ensemble import ensemble_probs

# The weight of the hard-label term beside the T^2-scaled soft term: every recipe's default
# (speech, MNIST, specialists) and the shell recipes' hard_weight in local/defaults.sh.
HARD_WEIGHT = 0.5


def tempered_softmax(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(z / T) over the last dimension, computed in float32 at least."""
    return torch.softmax(logits.float() / temperature, dim=-1)


def tempered_log_softmax(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return torch.log_softmax(logits.float() / temperature, dim=-1)


def soft_cross_entropy(
    student_logits: torch.Tensor,
    soft_targets: torch.Tensor,
    temperature: float = 1.0,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Mean over examples of ``-sum_i p_i log q_i`` with ``q = softmax(z / T)``.

    ``soft_targets`` are probabilities ``p`` (already tempered, e.g. from
    :func:`asr_kd.distill.ensemble_probs`). ``mask`` (bool, shape ``[batch]``) selects the
    examples that count.
    """
    log_q = tempered_log_softmax(student_logits, temperature)
    per_example = -(soft_targets.float() * log_q).sum(dim=-1)
    if mask is not None:
        return per_example[mask].sum() / mask.sum().clamp(min=1)
    return per_example.mean()


def logit_matching_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``sum_i (z_i - v_i)^2 / (2N)`` of zero-meaned logits, averaged over examples.

    This is the high-temperature limit of ``T^2 * soft_cross_entropy`` (Caruana et al.'s logit
    matching), so the same hard-label weight works for both.
    """
    z = student_logits.float()
    v = teacher_logits.float()
    z = z - z.mean(dim=-1, keepdim=True)
    v = v - v.mean(dim=-1, keepdim=True)
    per_example = (z - v).pow(2).sum(dim=-1) / (2 * z.shape[-1])
    if mask is not None:
        return per_example[mask].sum() / mask.sum().clamp(min=1)
    return per_example.mean()


def distillation_loss(
    student_logits: torch.Tensor,
    soft_targets: Optional[torch.Tensor] = None,
    hard_labels: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
    hard_weight: float = HARD_WEIGHT,
    soft_weight: float = 1.0,
    teacher_logits: Optional[torch.Tensor] = None,
    logit_matching: bool = False,
    ignore_index: int = -100,
) -> torch.Tensor:
    """``soft_weight * T^2 * CE(p, softmax(z/T)) + hard_weight * CE(y, softmax(z))``.

    - ``soft_targets``: the teachers' tempered distribution at the same ``temperature``.
    - ``hard_labels``: class ids; ``ignore_index`` entries count in neither term's mean for the
      hard term (the soft term uses every example).
    - ``logit_matching=True`` replaces the soft term with :func:`logit_matching_loss` on
      ``teacher_logits`` (the high-T limit).
    Either term may be absent (``soft_weight=0`` or ``hard_labels=None``).
    """
    loss = student_logits.new_zeros((), dtype=torch.float32)
    if soft_weight:
        if logit_matching:
            if teacher_logits is None:
                raise ValueError("logit matching needs teacher_logits")
            loss = loss + soft_weight * logit_matching_loss(student_logits, teacher_logits)
        else:
            if soft_targets is None:
                raise ValueError("the soft term needs soft_targets (or soft_weight=0)")
            loss = loss + soft_weight * temperature**2 * soft_cross_entropy(
                student_logits, soft_targets, temperature
            )
    if hard_labels is not None and hard_weight:
        loss = loss + hard_weight * F.cross_entropy(
            student_logits.float(), hard_labels, ignore_index=ignore_index
        )
    return loss


@dataclass
class DistillationLoss:
    """The paper's loss as one object that owns its temperature: given the student's logits and the
    teachers' logits (one teacher [B, N], or an ensemble [K, B, N] combined by ``ensemble_method``),
    it tempers and combines the teachers itself, so no caller applies T twice or forgets it.

    ``loss(z, teacher_logits=v, hard_labels=y)``; ``soft_targets=p`` instead of the teachers takes
    a distribution already tempered at ``temperature`` (e.g. a cache of them); with neither, the
    loss is plain cross-entropy on the hard labels.
    """

    temperature: float = 1.0
    hard_weight: float = HARD_WEIGHT
    soft_weight: float = 1.0
    logit_matching: bool = False
    ensemble_method: str = "arithmetic"

    def __call__(self, student_logits, teacher_logits=None, hard_labels=None, soft_targets=None):
        if teacher_logits is None and soft_targets is None:
            return F.cross_entropy(student_logits.float(), hard_labels)
        if self.logit_matching:
            if teacher_logits is None:
                raise ValueError("logit matching needs teacher logits")
            mean = teacher_logits.mean(0) if teacher_logits.dim() == 3 else teacher_logits
            return distillation_loss(student_logits, None, hard_labels, self.temperature, self.hard_weight,
                                     self.soft_weight, teacher_logits=mean, logit_matching=True)
        if soft_targets is None:
            stacked = teacher_logits if teacher_logits.dim() == 3 else teacher_logits[None]
            soft_targets = ensemble_probs(stacked, self.temperature, self.ensemble_method)
        return distillation_loss(student_logits, soft_targets, hard_labels, self.temperature, self.hard_weight,
                                 self.soft_weight)
