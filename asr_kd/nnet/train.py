"""Training a DNN acoustic model on hard labels or on an ensemble's soft targets.

One loop serves the baseline, each teacher of the ensemble and every distilled student:

- targets: the forced-alignment senones (hard), and/or the teachers' tempered distribution
  ``ensemble_probs(teacher logits, T)`` computed on the fly for each batch (exact, nothing
  cached), mixed by :func:`asr_kd.distill.distillation_loss` (``T^2``-scaled soft term plus
  ``hard_weight`` times the hard term), or logit matching;
- SGD with momentum (or Adam), "newbob" learning-rate halving when dev frame accuracy stops
  improving, early stopping after ``patience`` epochs without improvement;
- bf16 autocast on CPU (about 7x faster than torch 1.13's fp32 here) or CUDA, fp32 master weights;
- a checkpoint every epoch (model, optimizer, schedule, history): a crashed or interrupted run
  resumes where it stopped; the best epoch on dev is exported as ``final.pt``;
- several processes with torch DistributedDataParallel when started by ``torchrun`` (gloo on CPU,
  nccl on GPU): each rank takes its stride of the same shuffled frame order.

A NaN/inf loss stops the run with an error naming the epoch and batch (the last checkpoint stays).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from asr_kd.distill import distillation_loss, ensemble_probs
from asr_kd.nnet.data import FrameSet, frame_batches
from asr_kd.nnet.model import Dnn, DnnConfig, Ensemble, save_model
from asr_kd.utils import Pathlike, atomic_path, autocast, read_json, resolve_dtype, write_json

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "sgd"  # or "adam"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    newbob_threshold: float = 0.2  # halve the lr when dev accuracy improves by less (points)
    patience: int = 3  # stop after this many epochs without a dev improvement (0 = never)
    seed: int = 1
    dtype: str = "auto"  # bf16 where the hardware has fast bf16, else fp32 (or force either)
    device: str = "cpu"
    max_frames_per_epoch: int = 0  # 0 = every frame each epoch
    # Clip the gradient's L2 norm (0 = off). The T^2-scaled soft term's gradient grows with T
    # (T (q - p) per frame); with SGD at a hard-label learning rate a student at T >= 5 can diverge.
    grad_clip: float = 0.0
    # distillation (used when teachers are given)
    temperature: float = 1.0
    hard_weight: float = 0.5
    soft_weight: float = 1.0
    ensemble_method: str = "arithmetic"
    logit_matching: bool = False
    progress: bool = True


def distributed() -> tuple:
    """(rank, world_size), initializing torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


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


def frame_accuracy_of(model, frames: FrameSet, device: str = "cpu", dtype: str = "auto",
                      temperature: float = 1.0, method: str = "arithmetic", batch_size: int = 4096) -> float:
    """Frame accuracy (%) against the set's senone labels; an Ensemble votes by its mean distribution.
    Batch by batch: a whole set's logits would not fit in memory (1M frames x 2000 senones x K)."""
    idx = torch.nonzero(frames.labels >= 0).squeeze(1)
    correct = 0
    for b, logits in _batched_logits(model, frames, idx, batch_size, device, dtype):
        pred = ensemble_probs(logits, temperature, method).argmax(-1) if logits.dim() == 3 else logits.argmax(-1)
        correct += int((pred == frames.labels[b]).sum())
    return 100.0 * correct / max(len(idx), 1)


def _make_optimizer(model, cfg: TrainConfig):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be sgd or adam, not {cfg.optimizer!r}")


def _latest_checkpoint(exp_dir: Path) -> Optional[Path]:
    ckpts = sorted(exp_dir.glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    return ckpts[-1] if ckpts else None


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
    exp_dir = Path(exp_dir)
    final = exp_dir / "final.pt"
    if final.exists() and (exp_dir / "summary.json").exists():
        log.info(f"{final} exists; skipping training")
        return read_json(exp_dir / "summary.json")
    rank, world = distributed()
    device = cfg.device
    if rank == 0:
        exp_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    cfg.dtype = resolve_dtype(cfg.dtype, device)
    model = Dnn(model_cfg).to(device)
    opt = _make_optimizer(model, cfg)
    history: List[dict] = []
    start_epoch, lr, best_acc, best_epoch, bad_epochs = 1, cfg.lr, -1.0, 0, 0
    ckpt = _latest_checkpoint(exp_dir)
    if ckpt is not None:
        state = torch.load(ckpt, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = state["history"]
        start_epoch = state["epoch"] + 1
        lr, best_acc, best_epoch, bad_epochs = state["lr"], state["best_acc"], state["best_epoch"], state["bad_epochs"]
        log.info(f"resuming {exp_dir} after epoch {state['epoch']} (best dev {best_acc:.2f}% at epoch {best_epoch})")
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if teachers is not None:
        teachers = teachers.to(device).eval()
        for p in teachers.parameters():
            p.requires_grad_(False)
        if (teachers.cfg.left_context, teachers.cfg.right_context) != (model_cfg.left_context, model_cfg.right_context):
            raise ValueError("teachers and student must see the same context window")
    left, right = model_cfg.left_context, model_cfg.right_context
    stopped_early = False
    for epoch in range(start_epoch, cfg.epochs + 1):
        if cfg.patience and bad_epochs >= cfg.patience:
            stopped_early = True
            break
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        t0 = time.time()
        total_loss, total_frames, correct, clipped = 0.0, 0, 0, 0
        batches = list(frame_batches(len(train_set), cfg.batch_size, epoch, cfg.seed, rank, world, train_set.labels))
        if cfg.max_frames_per_epoch:
            batches = batches[: max(1, cfg.max_frames_per_epoch // (cfg.batch_size * world))]
        bar = tqdm(batches, desc=f"{exp_dir.name} epoch {epoch}", unit="batch", disable=not (cfg.progress and rank == 0),
                   mininterval=5)
        for b, idx in enumerate(bar):
            x = train_set.splice(idx, left, right).to(device)
            y = train_set.labels[idx].to(device)
            with autocast(device, cfg.dtype):
                soft = teacher_logits = None
                if teachers is not None:
                    with torch.no_grad():
                        t_logits = teachers(x).float()
                    if cfg.logit_matching:
                        teacher_logits = t_logits.mean(0)
                    else:
                        soft = ensemble_probs(t_logits, cfg.temperature, cfg.ensemble_method)
                logits = net(x)
            logits = logits.float()
            if teachers is None:
                loss = F.cross_entropy(logits, y)
            else:
                loss = distillation_loss(logits, soft, y, cfg.temperature, cfg.hard_weight, cfg.soft_weight,
                                         teacher_logits=teacher_logits, logit_matching=cfg.logit_matching)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{exp_dir}: loss is {loss.item()} at epoch {epoch}, batch {b}; "
                                         f"lower the learning rate (last checkpoint: {_latest_checkpoint(exp_dir)})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                clipped += int(norm > cfg.grad_clip)
            opt.step()
            total_loss += loss.item() * len(idx)
            total_frames += len(idx)
            correct += int((logits.argmax(-1) == y).sum())
        wall = time.time() - t0
        dev_acc = frame_accuracy_of(model, dev_set, device, cfg.dtype)
        improved = dev_acc > best_acc
        record = {"epoch": epoch, "lr": lr, "train_loss": total_loss / max(total_frames, 1),
                  "train_frame_accuracy": 100.0 * correct / max(total_frames, 1), "dev_frame_accuracy": dev_acc,
                  "frames": total_frames * world, "wall_s": round(wall, 2),
                  "frames_per_s": round(total_frames * world / max(wall, 1e-9), 1)}
        if cfg.grad_clip:
            record["clipped_pct"] = round(100.0 * clipped / max(len(batches), 1), 1)
        history.append(record)
        log.info(f"{exp_dir.name} epoch {epoch}: loss {record['train_loss']:.4f}, train acc "
                 f"{record['train_frame_accuracy']:.2f}%, dev acc {dev_acc:.2f}%, lr {lr:g}, "
                 f"{record['frames_per_s']:.0f} frames/s"
                 + (f", {record['clipped_pct']:g}% of steps clipped" if cfg.grad_clip else ""))
        if dev_acc - best_acc < cfg.newbob_threshold and epoch > 1:
            lr /= 2
        if improved:
            best_acc, best_epoch, bad_epochs = dev_acc, epoch, 0
            if rank == 0:
                with atomic_path(exp_dir / "best.pt") as tmp:
                    torch.save(model.state_dict(), tmp)
        else:
            bad_epochs += 1
        if rank == 0:
            with atomic_path(exp_dir / f"epoch-{epoch}.pt") as tmp:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "history": history,
                            "epoch": epoch, "lr": lr, "best_acc": best_acc, "best_epoch": best_epoch,
                            "bad_epochs": bad_epochs}, tmp)
            for old in exp_dir.glob("epoch-*.pt"):  # keep the last two
                if int(old.stem.split("-")[1]) < epoch - 1:
                    old.unlink()
    if cfg.patience and bad_epochs >= cfg.patience:
        stopped_early = True
    summary = {
        "best_epoch": best_epoch,
        "best_dev_frame_accuracy": best_acc,
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "parameters": model.num_parameters(),
        "model": asdict(model_cfg),
        "train": asdict(cfg),
        "distilled": teachers is not None,
        "num_teachers": len(teachers.members) if teachers is not None else 0,
        "train_frames": len(train_set),
        "dev_frames": len(dev_set),
        "history": history,
        "wall_s": round(sum(h["wall_s"] for h in history), 1),
    }
    if rank == 0:
        model.load_state_dict(torch.load(exp_dir / "best.pt"))
        save_model(final, model, meta)
        write_json(exp_dir / "summary.json", summary)
    return summary
