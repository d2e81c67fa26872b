"""A small, device-agnostic training loop for classifiers on in-memory tensors.

Used by the image recipes (MNIST, CIFAR-100 specialists). The losses come from
:mod:`asr_kd.distill` (no second copy here). Public API:

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
- :func:`apply_max_norm` ``(model, max_norm)``: rescale each unit's incoming weight vector to an
  L2 norm of at most ``max_norm`` (Srebro & Shraibman; Hinton et al. 2012's dropout nets).
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
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from asr_kd.distill import HARD_WEIGHT, DistillationLoss
from asr_kd.utils import atomic_path, autocast, resolve_dtype, seed_everything, training_lock

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
    """Per-epoch records (``epoch``, ``loss``, ``lr``, ``seconds`` and the eval metrics)."""

    epochs: List[Dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    best_epoch: Optional[int] = None

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


@torch.no_grad()
def apply_max_norm(
    model: nn.Module,
    max_norm: float,
    module_types: Tuple[Type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d),
) -> None:
    """Rescale every unit's incoming weight vector (``weight[i]``) to an L2 norm <= ``max_norm``.

    Vectors already inside the ball are left as they are (a projection, not a normalisation).
    """
    for m in model.modules():
        if isinstance(m, module_types) and getattr(m, "weight", None) is not None:
            w = m.weight
            w.copy_(torch.renorm(w, p=2, dim=0, maxnorm=max_norm))


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
    distill = soft_targets is not None or teacher is not None
    loss_fn = DistillationLoss(cfg.temperature, cfg.hard_weight, cfg.soft_weight)

    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = cfg.device
    dtype = resolve_dtype(cfg.dtype, device)
    model.to(device)
    if isinstance(teacher, nn.Module):
        teacher.to(device).eval()
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = n // cfg.batch_size if cfg.drop_last else math.ceil(n / cfg.batch_size)
    steps_per_epoch = max(steps_per_epoch, 1)
    history = TrainHistory()
    best_value, best_state = math.inf, None
    t_start = time.time()
    first_epoch, wall_before = 1, 0.0
    # What must match for a checkpoint to be resumed: every knob but the cosmetic ones.
    fingerprint = {k: v for k, v in cfg.to_dict().items() if k not in ("progress", "device")}
    fingerprint["examples"] = n
    if checkpoint is not None and Path(checkpoint).exists():
        ck = torch.load(checkpoint, map_location="cpu")
        if ck["fingerprint"] != fingerprint:
            raise ValueError(f"{checkpoint} was written by a different training run; delete it (or use --force)")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        history = TrainHistory(epochs=ck["history"], best_epoch=ck["best_epoch"])
        best_value, best_state = ck["best_value"], ck["best_state"]
        first_epoch, wall_before = ck["epoch"] + 1, ck["wall_s"]
        log.info("%s: resuming from %s after epoch %d", cfg.desc, checkpoint, ck["epoch"])
    log.info(
        "%s: %d examples, %d epochs of %d steps, %s, %s on %s",
        cfg.desc, n, cfg.epochs, steps_per_epoch,
        "distillation T=%g" % cfg.temperature if distill else "hard labels",
        dtype, device,
    )

    for epoch in range(first_epoch, cfg.epochs + 1):
        model.train()
        t0 = time.time()
        perm = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        steps = range(steps_per_epoch)
        bar = None
        if cfg.progress:
            bar = tqdm(steps, desc=f"{cfg.desc} {epoch}/{cfg.epochs}", leave=False, mininterval=2.0)
            steps = bar
        for step in steps:
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            if idx.numel() == 0:
                continue
            progress = epoch - 1 + step / steps_per_epoch
            lr = cfg.lr * lr_factor(cfg, progress)
            mom = _momentum_at(cfg, progress)
            for g in optimizer.param_groups:
                g["lr"] = lr
                g["momentum"] = mom
            xb = x[idx].to(device, non_blocking=True)
            yb = y[idx].to(device, non_blocking=True) if y is not None else None
            if augment is not None:
                xb = augment(xb)
            with autocast(device, dtype):
                logits = model(xb)
                t_logits = None
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(xb).float()
            p = soft_targets[idx].to(device, non_blocking=True) if soft_targets is not None else None
            if distill:
                loss = loss_fn(logits.float(), teacher_logits=t_logits, hard_labels=yb, soft_targets=p)
            else:
                loss = F.cross_entropy(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if cfg.max_norm:
                apply_max_norm(model, cfg.max_norm)
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise FloatingPointError(f"{cfg.desc}: loss is {lv} at epoch {epoch} step {step}")
            total += lv * idx.numel()
            count += idx.numel()
            if bar is not None and step % 50 == 0:
                bar.set_postfix(loss=f"{lv:.4f}", lr=f"{lr:.3g}")
        if bar is not None:
            bar.close()
        rec: Dict[str, float] = {
            "epoch": epoch,
            "loss": total / max(count, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.time() - t0,
        }
        if eval_fn is not None and (epoch % max(cfg.eval_every, 1) == 0 or epoch == cfg.epochs):
            metrics = eval_fn(model, epoch) or {}
            model.train()
            rec.update(metrics)
            if cfg.select_best and cfg.select_best in metrics and metrics[cfg.select_best] < best_value:
                best_value = metrics[cfg.select_best]
                best_state = copy.deepcopy(model.state_dict())
                history.best_epoch = epoch
        history.epochs.append(rec)
        log.info(
            "%s epoch %d/%d: %s",
            cfg.desc, epoch, cfg.epochs,
            ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items() if k != "epoch"),
        )
        if checkpoint is not None:
            state = dict(fingerprint=fingerprint, epoch=epoch, model=model.state_dict(),
                         optimizer=optimizer.state_dict(), generator=gen.get_state(), torch_rng=torch.get_rng_state(),
                         history=history.epochs, best_epoch=history.best_epoch, best_value=best_value,
                         best_state=best_state, wall_s=wall_before + time.time() - t_start)
            with atomic_path(checkpoint) as tmp:
                torch.save(state, tmp)

    if best_state is not None:
        model.load_state_dict(best_state)
        log.info("%s: restored epoch %d (best %s = %.4g)", cfg.desc, history.best_epoch, cfg.select_best, best_value)
    history.wall_s = wall_before + time.time() - t_start
    return history
