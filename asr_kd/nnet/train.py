"""Training a DNN acoustic model on hard labels or on an ensemble's soft targets.

One loop serves the baseline, each teacher of the ensemble and every distilled student:

- targets: the forced-alignment senones (hard), and/or the teachers' tempered distribution from
  the teachers' logits computed on the fly for each batch (exact, nothing cached), tempered and
  combined by :class:`asr_kd.distill.DistillationLoss` (``T^2``-scaled soft term plus
  ``hard_weight`` times the hard term), or logit matching;
- SGD with momentum (or Adam), "newbob" learning-rate halving when dev frame accuracy stops
  improving, early stopping after ``patience`` epochs without improvement;
- bf16 autocast where the hardware has fast bf16 (AVX-512 BF16, AMX, CUDA), fp32 master weights;
- a checkpoint every epoch (model, optimizer, schedule, history): a crashed or interrupted run
  resumes where it stopped; the best epoch on dev is exported as ``final.pt``;
- several processes with torch DistributedDataParallel when started by ``torchrun`` (gloo on CPU,
  nccl on GPU): each rank takes its stride of the same shuffled frame order;
- the training frames in memory (:class:`FrameSet`) or streamed from frame shards on disk
  (:class:`asr_kd.nnet.stream.StreamFrameSet`, memory bounded by its shuffle buffer).

A NaN/inf loss stops the run with an error naming the epoch and batch (the last checkpoint stays).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
from tqdm import tqdm

from asr_kd.config import option
from asr_kd.distill import HARD_WEIGHT, DistillationLoss, ensemble_probs
from asr_kd.nnet.data import FrameSet, frame_batches
from asr_kd.nnet.stream import StreamFrameSet
from asr_kd.nnet.model import Dnn, DnnConfig, Ensemble, save_model
from asr_kd.utils import Pathlike, atomic_path, autocast, read_json, resolve_dtype, training_lock, write_json

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """How one DNN is trained; ``asr-kd nnet train`` makes a flag of each field (help as below)."""

    epochs: int = option(10, "passes over the training frames (at most: early stopping may end sooner)")
    batch_size: int = option(256, "frames per update (per process under DDP)")
    optimizer: str = option("sgd", "sgd (with momentum) or adam", choices=("sgd", "adam"))
    lr: float = option(0.05, "learning rate (halved by newbob when dev stops improving)")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(0.0, "L2 weight decay of the optimizer")
    newbob_threshold: float = option(0.2, "halve the learning rate when dev frame accuracy improves by less "
                                          "(points)")
    patience: int = option(3, "stop after this many epochs without a dev improvement (0 = never)")
    seed: int = option(1, "initialisation, frame order and masks")
    dtype: str = option("auto", "auto: bf16 where the hardware has fast bf16 (AVX-512 BF16, AMX, CUDA), else fp32",
                        choices=("auto", "bf16", "fp32"))
    device: str = option("cpu", "cpu or cuda", flag=False)  # the command's default is cuda when it is there
    max_frames_per_epoch: int = option(0, "frames per epoch (0 = every frame each epoch)")
    # SpecAugment on the student's input window; teachers always see the clean window.
    freq_mask: int = option(0, "SpecAugment: zero up to this many consecutive mel bins of each training window "
                               "(0 = off)")
    time_mask: int = option(0, "SpecAugment: zero up to this many consecutive frames of each training window "
                               "(0 = off)")
    # The T^2-scaled soft term's gradient grows with T (T (q - p) per frame); with SGD at a
    # hard-label learning rate a student at T >= 5 can diverge.
    grad_clip: float = option(0.0, "clip the gradient's L2 norm to this (0 = off)")
    # distillation (used when teachers are given)
    temperature: float = option(1.0, "distillation temperature", flag=False)  # the command takes several
    hard_weight: float = option(HARD_WEIGHT, "distillation: weight of the hard-label term (the soft term is scaled by T^2)")
    soft_weight: float = option(1.0, "distillation: weight of the soft-target term")
    ensemble_method: str = option("arithmetic", "distillation: mean of the teachers' distributions",
                                  choices=("arithmetic", "geometric"))
    logit_matching: bool = option(False, "distillation: match zero-meaned logits instead (the high-T limit)")
    progress: bool = option(True, "progress bars (--no-progress: logs only)")


def mask_window(x: torch.Tensor, frames: int, freq_mask: int, time_mask: int, generator: torch.Generator):
    """SpecAugment on spliced inputs [B, frames * D]: one band of 0..freq_mask mel bins over all
    frames of each window, and 0..time_mask consecutive frames of it, zeroed (a new copy)."""
    b = x.shape[0]
    x = x.reshape(b, frames, -1).clone()
    for width, axis, size in ((freq_mask, 2, x.shape[2]), (time_mask, 1, frames)):
        if width <= 0:
            continue
        w = torch.randint(0, min(width, size) + 1, (b, 1), generator=generator)
        start = (torch.rand(b, 1, generator=generator) * (size - w + 1)).long()
        pos = torch.arange(size)[None, :]
        band = (pos >= start) & (pos < start + w)  # [B, size]
        x.masked_fill_(band[:, None, :] if axis == 2 else band[:, :, None], 0.0)
    return x.reshape(b, -1)


def distributed() -> tuple:
    """(rank, world_size), initializing torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def epoch_batches(train_set: Union[FrameSet, StreamFrameSet], epoch: int, batch_size: int, seed: int, left: int,
                  right: int, rank: int = 0, world_size: int = 1):
    """(iterator of (spliced inputs, labels), number of batches) of one epoch of this rank: from the
    frames in memory (:func:`frame_batches`) or streamed from shards (:class:`StreamFrameSet`)."""
    if isinstance(train_set, StreamFrameSet):
        return train_set.epoch_batches(epoch, batch_size, seed, left, right, rank, world_size)
    batches = list(frame_batches(len(train_set), batch_size, epoch, seed, rank, world_size, train_set.labels))
    return ((train_set.splice(idx, left, right), train_set.labels[idx]) for idx in batches), len(batches)


def _batched_logits(model, frames: FrameSet, idx: torch.Tensor, batch_size: int, device: str, dtype: str):
    """(batch indices, logits) for consecutive batches of ``idx``, without autograd."""
    model.eval()
    cfg = model.cfg
    with torch.no_grad():
        for i in range(0, len(idx), batch_size):
            b = idx[i : i + batch_size]
            x = frames.splice(b, cfg.left_context, cfg.right_context).to(device)
            with autocast(device, dtype):
                yield b, model(x).float().cpu()


def predict(model, frames: FrameSet, batch_size: int = 4096, device: str = "cpu", dtype: str = "auto",
            idx: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Logits for every frame (or the ``idx`` frames): [N, S], or [K, N, S] for an Ensemble."""
    idx = torch.arange(len(frames)) if idx is None else idx
    return torch.cat([z for _, z in _batched_logits(model, frames, idx, batch_size, device, dtype)], dim=-2)


def frame_counts(model, frames: FrameSet, device: str = "cpu", dtype: str = "auto", batch_size: int = 4096):
    """(frames classified as their senone label, labelled frames); an Ensemble votes by its mean
    distribution (T = 1). Batch by batch: a whole set's logits would not fit in memory (1M frames x
    2000 senones x K)."""
    idx = torch.nonzero(frames.labels >= 0).squeeze(1)
    correct = 0
    for b, logits in _batched_logits(model, frames, idx, batch_size, device, dtype):
        pred = ensemble_probs(logits).argmax(-1) if logits.dim() == 3 else logits.argmax(-1)
        correct += int((pred == frames.labels[b]).sum())
    return correct, len(idx)


def frame_accuracy_of(model, frames: FrameSet, device: str = "cpu", dtype: str = "auto", batch_size: int = 4096) -> float:
    """Frame accuracy (%) against the set's senone labels (:func:`frame_counts`)."""
    correct, labelled = frame_counts(model, frames, device, dtype, batch_size)
    return 100.0 * correct / max(labelled, 1)


def _make_optimizer(model, cfg: TrainConfig):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be sgd or adam, not {cfg.optimizer!r}")


def _latest_checkpoint(exp_dir: Path) -> Optional[Path]:
    ckpts = sorted(exp_dir.glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    return ckpts[-1] if ckpts else None


class _Run:
    """One model being trained in ``exp_dir``: its optimizer, learning-rate schedule, early
    stopping, history and per-epoch checkpoints (resumed from the latest one)."""

    def __init__(self, exp_dir: Path, model_cfg: DnnConfig, cfg: TrainConfig, rank: int, world: int):
        self.exp_dir, self.cfg, self.rank, self.world = exp_dir, cfg, rank, world
        self.loss = DistillationLoss(cfg.temperature, cfg.hard_weight, cfg.soft_weight, cfg.logit_matching,
                                     cfg.ensemble_method)
        if rank == 0:
            exp_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        cfg.dtype = resolve_dtype(cfg.dtype, cfg.device)
        self.model = Dnn(model_cfg).to(cfg.device)
        self.opt = _make_optimizer(self.model, cfg)
        self.history: List[dict] = []
        self.start_epoch, self.lr, self.best_acc, self.best_epoch, self.bad_epochs = 1, cfg.lr, -1.0, 0, 0
        ckpt = _latest_checkpoint(exp_dir)
        if ckpt is not None:
            state = torch.load(ckpt, map_location=cfg.device)
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.history = state["history"]
            self.start_epoch = state["epoch"] + 1
            self.lr, self.best_acc = state["lr"], state["best_acc"]
            self.best_epoch, self.bad_epochs = state["best_epoch"], state["bad_epochs"]
            log.info(f"resuming {exp_dir} after epoch {state['epoch']} (best dev {self.best_acc:.2f}% "
                     f"at epoch {self.best_epoch})")
        self.net = torch.nn.parallel.DistributedDataParallel(self.model) if world > 1 else self.model

    def stopped_early(self) -> bool:
        return bool(self.cfg.patience and self.bad_epochs >= self.cfg.patience)

    def trains_in(self, epoch: int) -> bool:
        return self.start_epoch <= epoch <= self.cfg.epochs and not self.stopped_early()

    def begin_epoch(self) -> None:
        for g in self.opt.param_groups:
            g["lr"] = self.lr
        self.model.train()
        self.loss_sum, self.frames, self.correct, self.clipped, self.steps, self.step_s = 0.0, 0, 0, 0, 0, 0.0

    def step(self, x: torch.Tensor, y: torch.Tensor, t_logits: Optional[torch.Tensor], epoch: int, b: int) -> None:
        """One update on a batch; ``t_logits`` [K, B, S] are the teachers' (shared by every student)."""
        cfg = self.cfg
        t0 = time.time()
        with autocast(cfg.device, cfg.dtype):
            logits = self.net(x)
        logits = logits.float()
        loss = self.loss(logits, teacher_logits=t_logits, hard_labels=y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.exp_dir}: loss is {loss.item()} at epoch {epoch}, batch {b}; lower the "
                                     f"learning rate (last checkpoint: {_latest_checkpoint(self.exp_dir)})")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.clipped += int(norm > cfg.grad_clip)
        self.opt.step()
        self.loss_sum += loss.item() * len(y)
        self.frames += len(y)
        self.correct += int((logits.argmax(-1) == y).sum())
        self.steps += 1
        self.step_s += time.time() - t0

    def end_epoch(self, epoch: int, dev_set: FrameSet, wall: float, teacher_s: float) -> None:
        """Dev accuracy, newbob halving, early-stopping count, best model and checkpoint."""
        cfg = self.cfg
        dev_acc = frame_accuracy_of(self.model, dev_set, cfg.device, cfg.dtype)
        improved = dev_acc > self.best_acc
        record = {"epoch": epoch, "lr": self.lr, "train_loss": self.loss_sum / max(self.frames, 1),
                  "train_frame_accuracy": 100.0 * self.correct / max(self.frames, 1), "dev_frame_accuracy": dev_acc,
                  "frames": self.frames * self.world, "wall_s": round(wall, 2),
                  "frames_per_s": round(self.frames * self.world / max(wall, 1e-9), 1)}
        if teacher_s:  # the teachers' share of the epoch (one pass, shared by every student trained with it)
            record["teacher_s"] = round(teacher_s, 2)
            record["student_s"] = round(self.step_s, 2)
        if cfg.grad_clip:
            record["clipped_pct"] = round(100.0 * self.clipped / max(self.steps, 1), 1)
        self.history.append(record)
        log.info(f"{self.exp_dir.name} epoch {epoch}: loss {record['train_loss']:.4f}, train acc "
                 f"{record['train_frame_accuracy']:.2f}%, dev acc {dev_acc:.2f}%, lr {self.lr:g}, "
                 f"{record['frames_per_s']:.0f} frames/s"
                 + (f", {record['clipped_pct']:g}% of steps clipped" if cfg.grad_clip else ""))
        if dev_acc - self.best_acc < cfg.newbob_threshold and epoch > 1:
            self.lr /= 2
        if improved:
            self.best_acc, self.best_epoch, self.bad_epochs = dev_acc, epoch, 0
            if self.rank == 0:
                with atomic_path(self.exp_dir / "best.pt") as tmp:
                    torch.save(self.model.state_dict(), tmp)
        else:
            self.bad_epochs += 1
        if self.rank == 0:
            with atomic_path(self.exp_dir / f"epoch-{epoch}.pt") as tmp:
                torch.save({"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                            "history": self.history, "epoch": epoch, "lr": self.lr, "best_acc": self.best_acc,
                            "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}, tmp)
            for old in self.exp_dir.glob("epoch-*.pt"):  # keep the last two
                if int(old.stem.split("-")[1]) < epoch - 1:
                    old.unlink()

    def finish(self, model_cfg: DnnConfig, train_set: FrameSet, dev_set: FrameSet, teachers, meta) -> dict:
        """Export the best epoch as final.pt with summary.json."""
        summary = {
            "best_epoch": self.best_epoch,
            "best_dev_frame_accuracy": self.best_acc,
            "epochs_run": len(self.history),
            "stopped_early": self.stopped_early(),
            "parameters": self.model.num_parameters(),
            "model": asdict(model_cfg),
            "train": asdict(self.cfg),
            "distilled": teachers is not None,
            "num_teachers": len(teachers.members) if teachers is not None else 0,
            "train_frames": len(train_set),
            "dev_frames": len(dev_set),
            "history": self.history,
            "wall_s": round(sum(h["wall_s"] for h in self.history), 1),
        }
        if self.rank == 0:
            self.model.load_state_dict(torch.load(self.exp_dir / "best.pt"))
            save_model(self.exp_dir / "final.pt", self.model, meta)
            write_json(self.exp_dir / "summary.json", summary)
        return summary


# Settings that must agree between models trained together: they see the same batches and masks.
SHARED_SETTINGS = ("batch_size", "seed", "max_frames_per_epoch", "freq_mask", "time_mask", "device", "progress")


def train_together(
    exp_dirs: Sequence[Pathlike],
    model_cfg: DnnConfig,
    cfgs: Sequence[TrainConfig],
    train_set: FrameSet,
    dev_set: FrameSet,
    teachers: Optional[Ensemble] = None,
    meta: Optional[dict] = None,
) -> List[dict]:
    """:func:`_train_together` holding each ``exp_dir``'s training lock (rank 0 takes it for all
    ranks): a second training in the same directory fails at once instead of mixing checkpoints."""
    with contextlib.ExitStack() as locks:
        if int(os.environ.get("RANK", "0")) == 0:
            for d in exp_dirs:
                locks.enter_context(training_lock(d))
        return _train_together(exp_dirs, model_cfg, cfgs, train_set, dev_set, teachers, meta)


def _train_together(
    exp_dirs: Sequence[Pathlike],
    model_cfg: DnnConfig,
    cfgs: Sequence[TrainConfig],
    train_set: FrameSet,
    dev_set: FrameSet,
    teachers: Optional[Ensemble] = None,
    meta: Optional[dict] = None,
) -> List[dict]:
    """Train (or resume) several models of one shape on the same batches, e.g. students distilled
    at several temperatures: the teachers' forward pass, the costly part of distillation, runs
    once per batch for all of them. Each model keeps its own optimizer, schedule, early stopping
    and ``exp_dir``; a finished one (``final.pt`` and ``summary.json`` there) is skipped."""
    if len(exp_dirs) != len(cfgs) or not cfgs:
        raise ValueError(f"{len(exp_dirs)} exp dirs for {len(cfgs)} training configs")
    for name in SHARED_SETTINGS:
        if len({getattr(c, name) for c in cfgs}) > 1:
            raise ValueError(f"models trained together must share {name}: {[getattr(c, name) for c in cfgs]}")
    exp_dirs = [Path(d) for d in exp_dirs]
    summaries: List[Optional[dict]] = [None] * len(cfgs)
    todo = []
    for i, d in enumerate(exp_dirs):
        if (d / "final.pt").exists() and (d / "summary.json").exists():
            log.info(f"{d / 'final.pt'} exists; skipping training")
            summaries[i] = read_json(d / "summary.json")
        else:
            todo.append(i)
    if not todo:
        return summaries
    rank, world = distributed()
    cfg0 = cfgs[todo[0]]
    device = cfg0.device
    runs = {i: _Run(exp_dirs[i], model_cfg, cfgs[i], rank, world) for i in todo}
    if teachers is not None:
        teachers = teachers.to(device).eval()
        for p in teachers.parameters():
            p.requires_grad_(False)
        if (teachers.cfg.left_context, teachers.cfg.right_context) != (model_cfg.left_context, model_cfg.right_context):
            raise ValueError("teachers and student must see the same context window")
        teacher_dtype = resolve_dtype(cfg0.dtype, device)
    left, right = model_cfg.left_context, model_cfg.right_context
    augment = cfg0.freq_mask > 0 or cfg0.time_mask > 0
    name = exp_dirs[todo[0]].name + (f" (+{len(todo) - 1})" if len(todo) > 1 else "")
    for epoch in range(1, max(c.epochs for c in cfgs) + 1):
        active = [r for r in runs.values() if r.trains_in(epoch)]
        if not active:
            continue
        # Seeded per epoch (dropout, masks), so a run resumed after epoch k equals an uninterrupted one.
        torch.manual_seed(cfg0.seed * 100003 + epoch)
        mask_rng = torch.Generator().manual_seed(cfg0.seed * 100003 + epoch + rank * 7919)
        for r in active:
            r.begin_epoch()
        t0 = time.time()
        teacher_s = 0.0
        batches, num_batches = epoch_batches(train_set, epoch, cfg0.batch_size, cfg0.seed, left, right, rank, world)
        if cfg0.max_frames_per_epoch:
            num_batches = min(num_batches, max(1, cfg0.max_frames_per_epoch // (cfg0.batch_size * world)))
            batches = itertools.islice(batches, num_batches)
        bar = tqdm(batches, total=num_batches, desc=f"{name} epoch {epoch}", unit="batch",
                   disable=not (cfg0.progress and rank == 0), mininterval=5)
        for b, (x, y) in enumerate(bar):
            x, y = x.to(device), y.to(device)
            t_logits = None
            if teachers is not None:
                t1 = time.time()
                with torch.no_grad(), autocast(device, teacher_dtype):
                    t_logits = teachers(x).float()  # teachers see the clean window
                teacher_s += time.time() - t1
            if augment:
                x = mask_window(x, left + 1 + right, cfg0.freq_mask, cfg0.time_mask, mask_rng)
            for r in active:
                r.step(x, y, t_logits, epoch, b)
        wall = time.time() - t0
        for r in active:
            r.end_epoch(epoch, dev_set, wall, teacher_s)
    for i, r in runs.items():
        summaries[i] = r.finish(model_cfg, train_set, dev_set, teachers, meta)
    return summaries


def train(
    exp_dir: Pathlike,
    model_cfg: DnnConfig,
    cfg: TrainConfig,
    train_set: FrameSet,
    dev_set: FrameSet,
    teachers: Optional[Ensemble] = None,
    meta: Optional[dict] = None,
) -> dict:
    """Train (or resume) in ``exp_dir``; returns the summary also written to ``summary.json``."""
    return train_together([exp_dir], model_cfg, [cfg], train_set, dev_set, teachers, meta)[0]
