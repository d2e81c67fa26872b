"""``asr-kd nnet <step>``: DNN teachers, distilled students, frame accuracy.

    # a teacher (or the baseline): hard senone labels from the GMM alignment
    asr-kd nnet train --cuts data/senones/X_cuts_train.jsonl.gz --gmm-dir exp/tri1 \\
        --exp-dir exp/dnn_seed1 --preset cpu --seed 1
    # a student distilled from K teachers at temperature T
    asr-kd nnet train --cuts ... --gmm-dir exp/tri1 --exp-dir exp/dnn_distilled_T2 --preset cpu \\
        --teachers exp/dnn_seed{1,2,3,4}/final.pt --temperature 2 --hard-weight 0.5
    # several students at once (one per temperature): the teachers run once per batch for all
    asr-kd nnet train ... --teachers exp/dnn_seed{1,2,3,4}/final.pt --temperature 2 5 \
        --exp-dir exp/dnn_distilled_T2 exp/dnn_distilled_T5
    # frame accuracy of a model, or of an ensemble (several models)
    asr-kd nnet eval --models exp/dnn_seed*/final.pt --cuts data/senones/X_cuts_test.jsonl.gz --out exp/x.json

The dev set for early stopping and learning-rate halving is a fixed set of training speakers
(``--dev-fraction``, ``--dev-seed``), the same for every model of a recipe; ``--subset-fraction``
trains on a random part of the remaining utterances (the paper's 3% experiment).
Run under ``torchrun --nproc-per-node N asr-kd ...`` (or ``python -m torch.distributed.run``) for DDP.
``--stream-frames DIR`` streams the training frames from shards on disk (asr_kd/nnet/stream.py)
instead of holding them in memory, for corpora whose frames do not fit in each process.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from asr_kd.config import add_flags, config_flags, config_values
from asr_kd.nnet.model import PRESETS
from asr_kd.nnet.steps import StreamOpts, eval_step, priors_step, train_step
from asr_kd.nnet.train import TrainConfig

log = logging.getLogger(__name__)

DEFAULT_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPE = ("hidden_layers", "hidden_dim", "left_context", "right_context", "dropout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="nnet_step", metavar="STEP", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("train", help="train a DNN on hard labels, or distill one from teachers", formatter_class=fmt)
    p.add_argument("--cuts", type=Path, required=True, help="training cuts with fbank and 'senone' labels")
    p.add_argument("--gmm-dir", type=Path, required=True, help="the GMM system that made the labels (priors, tree)")
    p.add_argument("--exp-dir", type=Path, nargs="+", required=True,
                   help="where the model goes; one per --temperature when several are given")
    p.add_argument("--frames-cache", type=Path, help="cache of the loaded frames (speeds up later runs)")
    p.add_argument("--stream-frames", type=Path, metavar="DIR",
                   help="stream the training frames from frame shards in DIR (written there from --cuts first) "
                        "instead of holding them in memory: memory bounded by --buffer-frames, not by the corpus")
    p.add_argument("--buffer-frames", type=int, default=StreamOpts.buffer_frames,
                   help="--stream-frames: frames in the shuffle buffer (x 176 bytes at 40 fbank: the memory bound)")
    p.add_argument("--shard-frames", type=int, default=StreamOpts.shard_frames, help="--stream-frames: frames per shard written")
    p.add_argument("--shards-per-window", type=int, default=StreamOpts.shards_per_window,
                   help="--stream-frames: shards whose utterances are shuffled together (0 = all)")
    p.add_argument("--loader-workers", type=int, default=StreamOpts.loader_workers,
                   help="--stream-frames: DataLoader processes reading ahead (0 = read in the training process)")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help="network size: paper 8x2560, cpu 4x1024, small 3x512, tiny 2x64 (asr_kd/nnet/model.py)")
    p.add_argument("--hidden-layers", type=int, help="hidden layers (default: the preset's)")
    p.add_argument("--hidden-dim", type=int, help="units per hidden layer (default: the preset's)")
    p.add_argument("--left-context", type=int, help="frames of left context in the input window (default: the preset's)")
    p.add_argument("--right-context", type=int, help="frames of right context (default: the preset's)")
    p.add_argument("--dropout", type=float, help="dropout after each hidden layer (default: the preset's, 0)")
    add_flags(p, config_flags(TrainConfig))
    p.add_argument("--device", default=DEFAULT_DEVICE, help="cpu or cuda")
    p.add_argument("--dev-cuts", type=Path, help="labelled dev cuts for early stopping (else --dev-fraction)")
    p.add_argument("--dev-fraction", type=float, default=0.05, help="without --dev-cuts: train speakers held out")
    p.add_argument("--dev-seed", type=int, default=0, help="which speakers --dev-fraction holds out")
    p.add_argument("--subset-fraction", type=float, default=1.0,
                   help="train on this fraction of the utterances (the paper's 3%% experiment: 0.03)")
    p.add_argument("--subset-seed", type=int, default=0, help="which utterances --subset-fraction keeps")
    p.add_argument("--teachers", type=Path, nargs="*", default=[], help="teacher final.pt files: distillation")
    p.add_argument("--temperature", type=float, nargs="+", default=[1.0],
                   help="distillation temperature; several train one student each, sharing the teachers' pass")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")

    p = sub.add_parser("eval", help="frame accuracy of a model or an ensemble", formatter_class=fmt)
    p.add_argument("--models", type=Path, nargs="+", required=True,
                   help="final.pt files; several are scored as an ensemble (mean of their distributions)")
    p.add_argument("--cuts", type=Path, required=True, help="cuts with 'senone' labels")
    p.add_argument("--frames-cache", type=Path, help="cache of the loaded frames (speeds up later runs)")
    p.add_argument("--stream-frames", type=Path, metavar="DIR",
                   help="read the frames from frame shards in DIR (written there from --cuts first), "
                        "--buffer-frames at a time, instead of holding them all in memory")
    p.add_argument("--buffer-frames", type=int, default=StreamOpts.buffer_frames,
                   help="--stream-frames: frames held in memory at a time")
    p.add_argument("--out", type=Path, required=True, help="JSON with the frame accuracy (kept unless --force)")
    p.add_argument("--force", action="store_true", help="recompute even if --out exists")
    p.add_argument("--subset-fraction", type=float, default=1.0,
                   help="evaluate on the same utterance subset a --subset-fraction model trained on")
    p.add_argument("--subset-seed", type=int, default=0, help="the --subset-seed that model trained with")
    p.add_argument("--dev-fraction", type=float, default=0.0, help="drop these dev speakers first (train-set eval)")
    p.add_argument("--dev-seed", type=int, default=0, help="the --dev-seed of that split")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bf16 where the hardware has fast bf16 (AVX-512 BF16, AMX, CUDA), else fp32")
    p.add_argument("--device", default=DEFAULT_DEVICE, help="cpu or cuda")
    add_priors_arguments(sub)


def add_priors_arguments(sub) -> None:
    p = sub.add_parser("priors", help="senone priors from a model's own mean posterior (for asr-kd decode --priors)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", type=Path, nargs="+", required=True,
                   help="final.pt files; several: the ensemble's mean distribution")
    p.add_argument("--cuts", type=Path, required=True, help="the training cuts (fbank and senone labels)")
    p.add_argument("--frames-cache", type=Path, help="cache of the loaded frames (speeds up later runs)")
    p.add_argument("--out", type=Path, required=True, help="JSON with log_priors (kept unless --force)")
    p.add_argument("--max-utterances", type=int, default=0, help="use this many utterances spread over the set (0: all)")
    p.add_argument("--floor", type=float, default=1e-8, help="smallest prior (then renormalized)")
    p.add_argument("--force", action="store_true", help="recompute even if --out exists")
    p.add_argument("--device", default=DEFAULT_DEVICE, help="cpu or cuda")


def run(args) -> int:
    if args.nnet_step == "priors":
        priors_step(args.models, args.cuts, args.out, frames_cache=args.frames_cache,
                    max_utterances=args.max_utterances, floor=args.floor, device=args.device, force=args.force)
        return 0
    if args.nnet_step == "eval":
        stream = StreamOpts(args.stream_frames, args.buffer_frames) if args.stream_frames else None
        eval_step(args.models, args.cuts, args.out, frames_cache=args.frames_cache, stream=stream,
                  subset_fraction=args.subset_fraction, subset_seed=args.subset_seed, dev_fraction=args.dev_fraction,
                  dev_seed=args.dev_seed, dtype=args.dtype, device=args.device, force=args.force)
        return 0
    stream = StreamOpts(args.stream_frames, args.buffer_frames, args.shard_frames, args.shards_per_window,
                        args.loader_workers) if args.stream_frames else None
    train_cfg = TrainConfig(**{**config_values(TrainConfig, args), "progress": not args.no_progress,
                               "device": args.device})
    train_step(args.cuts, args.gmm_dir, args.exp_dir, train_cfg, preset=args.preset,
               shape={k: getattr(args, k) for k in SHAPE}, temperatures=args.temperature, teachers=args.teachers,
               dev_cuts=args.dev_cuts, dev_fraction=args.dev_fraction, dev_seed=args.dev_seed,
               subset_fraction=args.subset_fraction, subset_seed=args.subset_seed, frames_cache=args.frames_cache,
               stream=stream, device=args.device)
    return 0
