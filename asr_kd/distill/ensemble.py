"""Combining an ensemble's predictions into soft targets.

The paper's speech ensemble averages the models' distributions (arithmetic mean); the geometric
mean (renormalised product of the distributions, i.e. the softmax of the mean log-probability)
is the other common choice. Both work on the *tempered* distributions softmax(z_k / T).
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch

Logits = Union[torch.Tensor, Sequence[torch.Tensor]]

METHODS = ("arithmetic", "geometric")


def _stack(logits: Logits) -> torch.Tensor:
    """[K, ..., N] from a list of K logit tensors (or an already stacked tensor)."""
    if isinstance(logits, torch.Tensor):
        return logits
    return torch.stack(list(logits), dim=0)


def ensemble_log_probs(logits: Logits, temperature: float = 1.0, method: str = "arithmetic") -> torch.Tensor:
    """log of the combined tempered distribution of K models; ``logits`` is [K, ..., N]."""
    z = _stack(logits)
    log_p = torch.log_softmax(z.float() / temperature, dim=-1)  # [K, ..., N]: each model tempered
    k = z.shape[0]
    if method == "arithmetic":
        return torch.logsumexp(log_p, dim=0) - math.log(k)
    if method == "geometric":
        return torch.log_softmax(log_p.mean(dim=0), dim=-1)
    raise ValueError(f"unknown ensemble method {method!r}; choose from {METHODS}")


def ensemble_probs(logits: Logits, temperature: float = 1.0, method: str = "arithmetic") -> torch.Tensor:
    """The combined tempered distribution (probabilities) of K models."""
    return ensemble_log_probs(logits, temperature, method).exp()
