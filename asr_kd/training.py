"""One training loop for every model of the toolkit: DNN acoustic models on speech frames
(:mod:`asr_kd.nnet.train`) and image classifiers (:mod:`asr_kd.vision.train`).

- :class:`Batch`: the inputs of one batch and what it is learned from: hard labels, soft targets
  (a distribution already tempered) and/or the teachers' logits.
- :class:`Learner`: one model being trained: its optimizer and its
  :class:`~asr_kd.distill.DistillationLoss` (which owns the temperature), and the update every
  model shares: forward pass in bf16 autocast with the loss in fp32, a NaN/inf check that names
  the epoch and batch, backward pass, gradient clipping, optimizer step, optional max-norm
  projection; it sums the loss and the accuracy over the epoch. A domain subclasses it for what
  differs: the learning rate (:meth:`Learner.before_step`), the epochs it trains
  (:meth:`Learner.trains_in`: resume, early stopping) and the end of an epoch
  (:meth:`Learner.end_epoch`: evaluation, model selection, checkpoint).
- :func:`fit`: for each epoch, the epoch's batches from the domain (``epoch_batches(epoch)``), a
  ``prepare(batch)`` shared by every learner (device transfer, augmentation, the teachers' forward
  pass: once per batch however many students train on it), then each active learner's step.
- :meth:`Learner.checkpoint` / :meth:`Learner.restore`: one checkpoint format, a dict with
  ``epoch``, ``model``, ``optimizer``, ``history`` and the subclass's own state
  (:meth:`Learner.extra_state`), written atomically by :func:`save_checkpoint`.
- :func:`apply_max_norm`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn as nn
from tqdm import tqdm

from asr_kd.distill import DistillationLoss
from asr_kd.utils import Pathlike, atomic_path, autocast


@dataclass
class Batch:
    """One training batch (tensors on the training device once :func:`fit`'s ``prepare`` ran)."""

    x: torch.Tensor
    y: Optional[torch.Tensor] = None
    soft_targets: Optional[torch.Tensor] = None
    teacher_logits: Optional[torch.Tensor] = None


@torch.no_grad()
def apply_max_norm(
    model: nn.Module,
    max_norm: float,
    module_types: Tuple[Type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d),
) -> None:
    """Rescale every unit's incoming weight vector (``weight[i]``) to an L2 norm <= ``max_norm``
    (Srebro & Shraibman; Hinton et al. 2012's dropout nets). Vectors already inside the ball are
    left as they are (a projection, not a normalisation)."""
    for m in model.modules():
        if isinstance(m, module_types) and getattr(m, "weight", None) is not None:
            w = m.weight
            w.copy_(torch.renorm(w, p=2, dim=0, maxnorm=max_norm))


def save_checkpoint(path: Pathlike, state: dict) -> None:
    """``torch.save`` through a temporary file: a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


class Learner:
    """One model being trained (see the module docstring). ``net`` is the module the forward pass
    runs through when it is not ``model`` itself (a DistributedDataParallel wrapper)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss: DistillationLoss, *, name: str,
                 device: str = "cpu", dtype: str = "fp32", grad_clip: float = 0.0, max_norm: Optional[float] = None,
                 net: Optional[nn.Module] = None):
        self.model, self.optimizer, self.loss, self.name = model, optimizer, loss, name
        self.device, self.dtype, self.grad_clip, self.max_norm = device, dtype, grad_clip, max_norm
        self.net = net if net is not None else model
        self.history: List[dict] = []
        self.start_epoch = 1

    # What a domain overrides.
    def trains_in(self, epoch: int) -> bool:
        return epoch >= self.start_epoch

    def before_step(self, progress: float) -> None:
        """Called before each step with the epochs done so far (a float): per-step schedules."""

    def end_epoch(self, epoch: int, wall_s: float) -> None:
        """Evaluation, schedule, model selection and checkpoint."""
        raise NotImplementedError

    def extra_state(self) -> dict:
        """The subclass's part of a checkpoint (schedule, best epoch, RNG states...)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # The shared mechanics.
    def begin_epoch(self, epoch: int) -> None:
        self.model.train()
        self.loss_sum, self.examples, self.correct, self.labelled = 0.0, 0, 0, 0
        self.clipped, self.steps, self.step_s = 0, 0, 0.0

    def step(self, batch: Batch, epoch: int, b: int) -> float:
        """One update on ``batch`` (batch ``b`` of ``epoch``); returns the loss."""
        t0 = time.time()
        with autocast(self.device, self.dtype):
            logits = self.net(batch.x)
        logits = logits.float()
        loss = self.loss(logits, teacher_logits=batch.teacher_logits, hard_labels=batch.y,
                         soft_targets=batch.soft_targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.name}: loss is {loss.item()} at epoch {epoch}, batch {b}"
                                     f"{self.nan_advice()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.clipped += int(norm > self.grad_clip)
        self.optimizer.step()
        if self.max_norm:
            apply_max_norm(self.model, self.max_norm)
        value = loss.item()
        n = len(batch.x)
        self.loss_sum += value * n
        self.examples += n
        if batch.y is not None:
            self.correct += int((logits.argmax(-1) == batch.y).sum())
            self.labelled += n
        self.steps += 1
        self.step_s += time.time() - t0
        return value

    def nan_advice(self) -> str:
        return "; lower the learning rate"

    def checkpoint(self, epoch: int) -> dict:
        return {"epoch": epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "history": self.history, **self.extra_state()}

    def restore(self, state: dict) -> None:
        """Continue after the checkpoint's epoch."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = state["history"]
        self.start_epoch = state["epoch"] + 1
        self.load_extra_state(state)


def fit(
    learners: Sequence[Learner],
    epochs: int,
    epoch_batches: Callable[[int], Tuple[Iterable, int]],
    prepare: Optional[Callable[[object], Batch]] = None,
    on_epoch: Optional[Callable[[int], None]] = None,
    desc: str = "train",
    progress: bool = True,
) -> None:
    """Train ``learners`` together on the same batches, epochs 1..``epochs`` (each learner skips the
    epochs it does not train in: done before a resume, or after it stopped early).

    ``epoch_batches(epoch)`` -> (iterable of batches, number of batches); ``prepare(batch)`` ->
    :class:`Batch`, once per batch for every learner; ``on_epoch(epoch)`` runs first in each epoch
    (per-epoch seeding)."""
    for epoch in range(1, epochs + 1):
        active = [r for r in learners if r.trains_in(epoch)]
        if not active:
            continue
        if on_epoch is not None:
            on_epoch(epoch)
        for r in active:
            r.begin_epoch(epoch)
        t0 = time.time()
        batches, num_batches = epoch_batches(epoch)
        bar = tqdm(batches, total=num_batches, desc=f"{desc} epoch {epoch}/{epochs}", unit="batch", leave=False,
                   disable=not progress, mininterval=5)
        for b, batch in enumerate(bar):
            if prepare is not None:
                batch = prepare(batch)
            for r in active:
                r.before_step(epoch - 1 + b / num_batches)
                value = r.step(batch, epoch, b)
            if progress and b % 50 == 0:
                bar.set_postfix(loss=f"{value:.4f}")
        bar.close()
        wall = time.time() - t0
        for r in active:
            r.end_epoch(epoch, wall)
