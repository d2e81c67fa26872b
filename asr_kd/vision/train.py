"""Training image classifiers on in-memory tensors (MNIST, CIFAR-100 specialists), through the
toolkit's one training loop (:mod:`asr_kd.training`, shared with the speech DNNs) and its one
loss (:class:`asr_kd.distill.DistillationLoss`). Public API:

- :class:`TrainConfig`: every knob of a run (epochs, batch size, SGD with momentum and an optional
  momentum ramp, lr schedule ``constant|cosine|step|exp`` with linear warm-up, weight decay,
  max-norm, gradient clipping, distillation temperature and term weights, ``dtype``
  ``auto|bf16|fp32`` (bf16 = autocast with fp32 master weights and an fp32 loss; ``auto``, the
  default, picks bf16 only where the hardware runs it natively: CUDA with bf16 support, or a CPU
  with AVX512-BF16/AMX. On an AVX2-only CPU, torch's CPU bf16 matmul is emulated and measured
  ~10x *slower* than fp32, so ``auto`` gives fp32 there), seed, device, progress).
- :func:`train_classifier` ``(model, x, y=None, config, soft_targets=None, teacher=None,
  augment=None, eval_fn=None, checkpoint=None) -> TrainHistory``: trains ``model`` in place.

  * hard labels only (``y``): cross-entropy;
  * ``soft_targets`` (``[N, C]`` probabilities at ``config.temperature``, one row per training
    example) or ``teacher`` (a callable ``x_batch -> logits``, run on the same augmented batch):
    :class:`asr_kd.distill.DistillationLoss` (which tempers the teacher's logits itself), with the
    hard term added when ``y`` is given;
  * ``augment``: a callable ``x_batch -> x_batch`` applied on the device to each training batch
    (random ops draw from torch's global RNG, seeded by ``config.seed``);
  * ``eval_fn``: ``(model, epoch) -> dict`` of metrics, called every ``config.eval_every`` epochs
    and after the last one, logged and kept in the history; with ``config.select_best = key``
    the weights of the epoch with the lowest ``key`` are restored at the end;
  * ``checkpoint``: a file written (atomically) after every epoch with the model, optimizer, RNG
    states and history; a run that finds one made with the same config resumes after its last
    epoch and ends where an uninterrupted run would (long CPU runs survive an interruption).
- :func:`predict_logits` ``(model, x, batch_size=1000, device="cpu", dtype="fp32")``: fp32
  logits on the CPU, in eval mode (the model's previous mode is restored).
- :func:`count_errors` ``(logits_or_predictions, labels) -> int``.
- :func:`resolve_dtype` ``(dtype, device)`` and :func:`autocast` ``(device, dtype)``.
- :func:`lr_factor` ``(config, progress_in_epochs)``: the schedule's multiplier of ``config.lr``.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from asr_kd.distill import HARD_WEIGHT, DistillationLoss
from asr_kd.training import Batch, Learner, fit, save_checkpoint
from asr_kd.utils import autocast, resolve_dtype, seed_everything, training_lock

log = logging.getLogger(__name__)

SCHEDULES = ("constant", "cosine", "step", "exp")
DTYPES = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    """One training run. Defaults are plain SGD with momentum on hard labels, in bf16 autocast."""

    epochs: int = 10
    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    # Hinton et al. (2012) ramp the momentum from a low start to ``momentum`` over the first epochs.
    momentum_start: Optional[float] = None
    momentum_ramp_epochs: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    warmup_epochs: float = 0.0
    lr_milestones: Sequence[float] = ()  # "step": epochs at which lr is multiplied by lr_gamma
    lr_gamma: float = 0.1  # "step": factor per milestone; "exp": factor per epoch
    lr_min_factor: float = 0.0  # "cosine": final lr as a fraction of lr
    max_norm: Optional[float] = None
    grad_clip: Optional[float] = None
    # Distillation (used when soft targets or a teacher are given).
    temperature: float = 1.0
    hard_weight: float = HARD_WEIGHT
    soft_weight: float = 1.0
    dtype: str = "auto"
    seed: int = 0
    device: str = "cpu"
    drop_last: bool = False
    eval_every: int = 1
    select_best: Optional[str] = None
    progress: bool = True
    desc: str = "train"

    def __post_init__(self) -> None:
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose from {SCHEDULES}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose from {DTYPES}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError("epochs must be >= 0 and batch_size >= 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_milestones"] = list(d["lr_milestones"])
        return d


@dataclass
class TrainHistory:
    """Per-epoch records (``epoch``, ``loss``, ``lr``, ``seconds`` and the eval metrics) and the
    run's :class:`TrainConfig` as a dict (``config``: saved with the model as ``config.json``)."""

    epochs: List[Dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    best_epoch: Optional[int] = None
    config: Dict[str, object] = field(default_factory=dict)

    def last(self, key: str, default=None):
        for rec in reversed(self.epochs):
            if key in rec:
                return rec[key]
        return default



def lr_factor(config: TrainConfig, progress: float) -> float:
    """The multiplier of ``config.lr`` after ``progress`` epochs (a float; warm-up included)."""
    if config.warmup_epochs > 0 and progress < config.warmup_epochs:
        return (progress + 1e-8) / config.warmup_epochs
    if config.lr_schedule == "constant":
        return 1.0
    if config.lr_schedule == "step":
        return config.lr_gamma ** sum(1 for m in config.lr_milestones if progress >= m)
    if config.lr_schedule == "exp":
        return config.lr_gamma ** progress
    # cosine from the end of warm-up to the end of training
    span = max(config.epochs - config.warmup_epochs, 1e-8)
    t = min(max((progress - config.warmup_epochs) / span, 0.0), 1.0)
    lo = config.lr_min_factor
    return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * t))


def _momentum_at(config: TrainConfig, progress: float) -> float:
    if config.momentum_start is None or config.momentum_ramp_epochs <= 0:
        return config.momentum
    t = min(progress / config.momentum_ramp_epochs, 1.0)
    return config.momentum_start + t * (config.momentum - config.momentum_start)


def _set_train(model, mode: bool) -> Optional[bool]:
    if isinstance(model, nn.Module):
        old = model.training
        model.train(mode)
        return old
    return None


@torch.no_grad()
def predict_logits(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    batch_size: int = 1000,
    device: str = "cpu",
    dtype: str = "fp32",
    transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> torch.Tensor:
    """fp32 logits ``[N, C]`` on the CPU of ``model`` on ``x``, in eval mode.

    ``transform`` (optional) is applied to each batch on the device before the model.
    """
    old = _set_train(model, False)
    out = []
    try:
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(device, non_blocking=True)
            if transform is not None:
                xb = transform(xb)
            with autocast(device, dtype):
                z = model(xb)
            out.append(z.float().cpu())
    finally:
        if old is not None:
            model.train(old)
    if not out:
        return torch.zeros(0, 0)
    return torch.cat(out)


def count_errors(logits_or_predictions: torch.Tensor, labels: torch.Tensor) -> int:
    """Number of examples whose arg-max (or given prediction) differs from the label."""
    pred = logits_or_predictions
    if pred.dim() == 2:
        pred = pred.argmax(dim=-1)
    return int((pred.cpu() != labels.cpu()).sum())


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: Optional[torch.Tensor] = None,
    config: Optional[TrainConfig] = None,
    soft_targets: Optional[torch.Tensor] = None,
    teacher: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    eval_fn: Optional[Callable[[nn.Module, int], Dict[str, float]]] = None,
    checkpoint: Optional[Path] = None,
) -> TrainHistory:
    """Train ``model`` in place on ``x`` (``[N, ...]``) and return its history (see module doc).
    With a ``checkpoint``, a second run on the same checkpoint fails at once (see :func:`training_lock`)."""
    with training_lock(checkpoint) if checkpoint is not None else contextlib.nullcontext():
        return _train_classifier(model, x, y, config, soft_targets, teacher, augment, eval_fn, checkpoint)


class _ClassifierLearner(Learner):
    """A classifier under :func:`train_classifier`: lr and momentum by the schedule at every step,
    eval every ``eval_every`` epochs, best-epoch selection, one checkpoint file resumed only by the
    same run (``fingerprint``), RNG states in it."""

    def __init__(self, model, cfg: TrainConfig, dtype: str, eval_fn, checkpoint, fingerprint, gen):
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                    weight_decay=cfg.weight_decay)
        super().__init__(model, optimizer, DistillationLoss(cfg.temperature, cfg.hard_weight, cfg.soft_weight),
                         name=cfg.desc, device=cfg.device, dtype=dtype, grad_clip=cfg.grad_clip or 0.0,
                         max_norm=cfg.max_norm)
        self.cfg, self.eval_fn, self.ckpt, self.fingerprint, self.gen = cfg, eval_fn, checkpoint, fingerprint, gen
        self.best_epoch, self.best_value, self.best_state = None, math.inf, None
        self.wall_before, self.t_start = 0.0, time.time()

    def before_step(self, progress: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = self.cfg.lr * lr_factor(self.cfg, progress)
            g["momentum"] = _momentum_at(self.cfg, progress)

    def end_epoch(self, epoch: int, wall_s: float) -> None:
        cfg = self.cfg
        rec: Dict[str, float] = {"epoch": epoch, "loss": self.loss_sum / max(self.examples, 1),
                                 "lr": self.optimizer.param_groups[0]["lr"], "seconds": wall_s}
        if self.eval_fn is not None and (epoch % max(cfg.eval_every, 1) == 0 or epoch == cfg.epochs):
            metrics = self.eval_fn(self.model, epoch) or {}
            self.model.train()
            rec.update(metrics)
            if cfg.select_best and cfg.select_best in metrics and metrics[cfg.select_best] < self.best_value:
                self.best_value = metrics[cfg.select_best]
                self.best_state = copy.deepcopy(self.model.state_dict())
                self.best_epoch = epoch
        self.history.append(rec)
        log.info("%s epoch %d/%d: %s", cfg.desc, epoch, cfg.epochs,
                 ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()
                           if k != "epoch"))
        if self.ckpt is not None:
            save_checkpoint(self.ckpt, self.checkpoint(epoch))

    def wall_s(self) -> float:
        return self.wall_before + time.time() - self.t_start

    def extra_state(self) -> dict:
        return dict(fingerprint=self.fingerprint, generator=self.gen.get_state(), torch_rng=torch.get_rng_state(),
                    best_epoch=self.best_epoch, best_value=self.best_value, best_state=self.best_state,
                    wall_s=self.wall_s())

    def load_extra_state(self, state: dict) -> None:
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.best_epoch, self.best_value, self.best_state = state["best_epoch"], state["best_value"], state["best_state"]
        self.wall_before = state["wall_s"]


def _train_classifier(model, x, y, config, soft_targets, teacher, augment, eval_fn, checkpoint) -> TrainHistory:
    cfg = config or TrainConfig()
    n = x.shape[0]
    if y is None and soft_targets is None and teacher is None:
        raise ValueError("nothing to learn from: give hard labels y, soft_targets or a teacher")
    if soft_targets is not None and teacher is not None:
        raise ValueError("give soft_targets or a teacher, not both")
    for name, t in (("y", y), ("soft_targets", soft_targets)):
        if t is not None and t.shape[0] != n:
            raise ValueError(f"{name} has {t.shape[0]} rows but x has {n}")

    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = cfg.device
    dtype = resolve_dtype(cfg.dtype, device)
    model.to(device)
    if isinstance(teacher, nn.Module):
        teacher.to(device).eval()
    steps_per_epoch = n // cfg.batch_size if cfg.drop_last else math.ceil(n / cfg.batch_size)
    steps_per_epoch = max(steps_per_epoch, 1)
    # What must match for a checkpoint to be resumed: every knob but the cosmetic ones.
    fingerprint = {k: v for k, v in cfg.to_dict().items() if k not in ("progress", "device")}
    fingerprint["examples"] = n
    learner = _ClassifierLearner(model, cfg, dtype, eval_fn, checkpoint, fingerprint, gen)
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location="cpu")
        if state.get("fingerprint") != fingerprint:
            raise ValueError(f"{checkpoint} was written by a different training run; delete it (or use --force)")
        learner.restore(state)
        log.info("%s: resuming from %s after epoch %d", cfg.desc, checkpoint, state["epoch"])
    log.info(
        "%s: %d examples, %d epochs of %d steps, %s, %s on %s",
        cfg.desc, n, cfg.epochs, steps_per_epoch,
        "distillation T=%g" % cfg.temperature if soft_targets is not None or teacher is not None else "hard labels",
        dtype, device,
    )

    def epoch_batches(epoch: int):
        perm = torch.randperm(n, generator=gen)
        idxs = (perm[s * cfg.batch_size : (s + 1) * cfg.batch_size] for s in range(steps_per_epoch))
        return (Batch(x[i], y[i] if y is not None else None,
                      soft_targets[i] if soft_targets is not None else None) for i in idxs if len(i)), steps_per_epoch

    def prepare(b: Batch) -> Batch:
        xb = b.x.to(device, non_blocking=True)
        if augment is not None:
            xb = augment(xb)
        t_logits = None
        if teacher is not None:  # on the same augmented batch
            with torch.no_grad(), autocast(device, dtype):
                t_logits = teacher(xb).float()
        return Batch(xb, b.y.to(device, non_blocking=True) if b.y is not None else None,
                     b.soft_targets.to(device, non_blocking=True) if b.soft_targets is not None else None, t_logits)

    fit([learner], cfg.epochs, epoch_batches, prepare, desc=cfg.desc, progress=cfg.progress)
    history = TrainHistory(epochs=learner.history, best_epoch=learner.best_epoch, config=cfg.to_dict())
    if learner.best_state is not None:
        model.load_state_dict(learner.best_state)
        log.info("%s: restored epoch %d (best %s = %.4g)", cfg.desc, learner.best_epoch, cfg.select_best,
                 learner.best_value)
    history.wall_s = learner.wall_s()
    return history
