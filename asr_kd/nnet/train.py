"""Training a DNN acoustic model on hard labels or on an ensemble's soft targets.

The toolkit's one training loop (:mod:`asr_kd.training`, shared with the image recipes) serves the
baseline, each teacher of the ensemble and every distilled student; this module gives it the
speech frames' batches and the DNN's policy (a :class:`~asr_kd.training.Learner` per model):

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
from typing import List, Optional, Sequence, Tuple, Union

import torch

from asr_kd.config import option
from asr_kd.distill import HARD_WEIGHT, DistillationLoss, ensemble_probs
from asr_kd.nnet.data import FrameSet, frame_batches
from asr_kd.nnet.stream import StreamFrameSet
from asr_kd.nnet.model import Dnn, DnnConfig, Ensemble, save_model
from asr_kd.training import Batch, Learner, fit, save_checkpoint
from asr_kd.utils import Pathlike, autocast, read_json, resolve_dtype, training_lock, write_json

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


def utterance_frame_counts(model, frames: FrameSet, device: str = "cpu", dtype: str = "auto",
                           batch_size: int = 4096) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per utterance of ``frames``: (frames classified as their senone label, labelled frames), two
    int64 tensors [U]; an Ensemble votes by its mean distribution (T = 1). Batch by batch: a whole
    set's logits would not fit in memory (1M frames x 2000 senones x K)."""
    idx = torch.nonzero(frames.labels >= 0).squeeze(1)
    num_utts = len(frames.cut_ids)
    correct = torch.zeros(num_utts, dtype=torch.int64)
    labelled = torch.bincount(frames.utt_of_frame[idx], minlength=num_utts)
    for b, logits in _batched_logits(model, frames, idx, batch_size, device, dtype):
        pred = ensemble_probs(logits).argmax(-1) if logits.dim() == 3 else logits.argmax(-1)
        correct.index_add_(0, frames.utt_of_frame[b], (pred == frames.labels[b]).long())
    return correct, labelled


def frame_counts(model, frames: FrameSet, device: str = "cpu", dtype: str = "auto", batch_size: int = 4096):
    """(frames classified as their senone label, labelled frames) of the whole set
    (:func:`utterance_frame_counts`)."""
    correct, labelled = utterance_frame_counts(model, frames, device, dtype, batch_size)
    return int(correct.sum()), int(labelled.sum())


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


class _DnnLearner(Learner):
    """One DNN being trained in ``exp_dir``: newbob learning rate, early stopping, dev frame
    accuracy each epoch, ``best.pt`` and per-epoch checkpoints ``epoch-N.pt`` (resumed from the
    latest one)."""

    def __init__(self, exp_dir: Path, model_cfg: DnnConfig, cfg: TrainConfig, dev_set: FrameSet, rank: int,
                 world: int, teacher_clock: Optional[dict] = None):
        cfg.dtype = resolve_dtype(cfg.dtype, cfg.device)
        if rank == 0:
            exp_dir.mkdir(parents=True, exist_ok=True)
            write_json(exp_dir / "config.json", {"model": asdict(model_cfg), "train": asdict(cfg)})
        torch.manual_seed(cfg.seed)
        model = Dnn(model_cfg).to(cfg.device)
        super().__init__(model, _make_optimizer(model, cfg),
                         DistillationLoss(cfg.temperature, cfg.hard_weight, cfg.soft_weight, cfg.logit_matching,
                                          cfg.ensemble_method),
                         name=str(exp_dir), device=cfg.device, dtype=cfg.dtype, grad_clip=cfg.grad_clip)
        self.exp_dir, self.cfg, self.dev_set, self.rank, self.world = exp_dir, cfg, dev_set, rank, world
        self.lr, self.best_acc, self.best_epoch, self.bad_epochs = cfg.lr, -1.0, 0, 0
        self.teacher_clock = teacher_clock  # {"s": the teachers' seconds this epoch}, when distilling
        ckpt = _latest_checkpoint(exp_dir)
        if ckpt is not None:
            self.restore(torch.load(ckpt, map_location=cfg.device))
            log.info(f"resuming {exp_dir} after epoch {self.start_epoch - 1} (best dev {self.best_acc:.2f}% "
                     f"at epoch {self.best_epoch})")
        if world > 1:  # wrapped after the resume: DDP broadcasts rank 0's weights when it wraps
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)

    def extra_state(self) -> dict:
        return {"lr": self.lr, "best_acc": self.best_acc, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_extra_state(self, state: dict) -> None:
        self.lr, self.best_acc = state["lr"], state["best_acc"]
        self.best_epoch, self.bad_epochs = state["best_epoch"], state["bad_epochs"]

    def nan_advice(self) -> str:
        return f"; lower the learning rate (last checkpoint: {_latest_checkpoint(self.exp_dir)})"

    def stopped_early(self) -> bool:
        return bool(self.cfg.patience and self.bad_epochs >= self.cfg.patience)

    def trains_in(self, epoch: int) -> bool:
        return self.start_epoch <= epoch <= self.cfg.epochs and not self.stopped_early()

    def begin_epoch(self, epoch: int) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr
        super().begin_epoch(epoch)

    def end_epoch(self, epoch: int, wall_s: float) -> None:
        """Dev accuracy, newbob halving, early-stopping count, best model and checkpoint."""
        cfg = self.cfg
        dev_acc = frame_accuracy_of(self.model, self.dev_set, cfg.device, cfg.dtype)
        improved = dev_acc > self.best_acc
        record = {"epoch": epoch, "lr": self.lr, "train_loss": self.loss_sum / max(self.examples, 1),
                  "train_frame_accuracy": 100.0 * self.correct / max(self.labelled, 1), "dev_frame_accuracy": dev_acc,
                  "frames": self.examples * self.world, "wall_s": round(wall_s, 2),
                  "frames_per_s": round(self.examples * self.world / max(wall_s, 1e-9), 1)}
        if self.teacher_clock is not None:  # the teachers' share of the epoch (one pass, shared by every student)
            record["teacher_s"] = round(self.teacher_clock["s"], 2)
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
                save_checkpoint(self.exp_dir / "best.pt", self.model.state_dict())
        else:
            self.bad_epochs += 1
        if self.rank == 0:
            save_checkpoint(self.exp_dir / f"epoch-{epoch}.pt", self.checkpoint(epoch))
            for old in self.exp_dir.glob("epoch-*.pt"):  # keep the last two
                if int(old.stem.split("-")[1]) < epoch - 1:
                    old.unlink()

    def finish(self, model_cfg: DnnConfig, train_set: FrameSet, teachers, meta) -> dict:
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
            "dev_frames": len(self.dev_set),
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
    teacher_clock = {"s": 0.0}  # shared: one teacher pass per batch serves every student
    runs = {i: _DnnLearner(exp_dirs[i], model_cfg, cfgs[i], dev_set, rank, world,
                           teacher_clock if teachers is not None else None) for i in todo}
    if teachers is not None:
        teachers = teachers.to(device).eval()
        for p in teachers.parameters():
            p.requires_grad_(False)
        if (teachers.cfg.left_context, teachers.cfg.right_context) != (model_cfg.left_context, model_cfg.right_context):
            raise ValueError("teachers and student must see the same context window")
        teacher_dtype = resolve_dtype(cfg0.dtype, device)
    left, right = model_cfg.left_context, model_cfg.right_context
    augment = cfg0.freq_mask > 0 or cfg0.time_mask > 0
    mask_rng = torch.Generator()

    def on_epoch(epoch: int) -> None:
        # Seeded per epoch (dropout, masks), so a run resumed after epoch k equals an uninterrupted one.
        torch.manual_seed(cfg0.seed * 100003 + epoch)
        mask_rng.manual_seed(cfg0.seed * 100003 + epoch + rank * 7919)
        teacher_clock["s"] = 0.0

    def batches_of(epoch: int):
        batches, num_batches = epoch_batches(train_set, epoch, cfg0.batch_size, cfg0.seed, left, right, rank, world)
        if cfg0.max_frames_per_epoch:
            num_batches = min(num_batches, max(1, cfg0.max_frames_per_epoch // (cfg0.batch_size * world)))
            batches = itertools.islice(batches, num_batches)
        return batches, num_batches

    def prepare(batch) -> Batch:
        x, y = batch[0].to(device), batch[1].to(device)
        t_logits = None
        if teachers is not None:
            t0 = time.time()
            with torch.no_grad(), autocast(device, teacher_dtype):
                t_logits = teachers(x).float()  # teachers see the clean window
            teacher_clock["s"] += time.time() - t0
        if augment:
            x = mask_window(x, left + 1 + right, cfg0.freq_mask, cfg0.time_mask, mask_rng)
        return Batch(x, y, teacher_logits=t_logits)

    name = exp_dirs[todo[0]].name + (f" (+{len(todo) - 1})" if len(todo) > 1 else "")
    fit(list(runs.values()), max(c.epochs for c in cfgs), batches_of, prepare, on_epoch, desc=name,
        progress=cfg0.progress and rank == 0)
    for i, r in runs.items():
        summaries[i] = r.finish(model_cfg, train_set, teachers, meta)
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
