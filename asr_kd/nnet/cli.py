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
    # realign the training set with a DNN (or an ensemble): new labels for the next DNN
    asr-kd nnet align --models exp/dnn_seed1/final.pt --lang-dir data/lang \
        --cuts data/fbank/X_cuts_train.jsonl.gz --out-dir exp/dnn_seed1_ali_train
    asr-kd gmm labels --cuts data/fbank/X_cuts_train.jsonl.gz --ali-dir exp/dnn_seed1_ali_train \
        --out-cuts data/senones/X_cuts_train_dnnali.jsonl.gz

The dev set for early stopping and learning-rate halving is a fixed set of training speakers
(``--dev-fraction``, ``--dev-seed``), the same for every model of a recipe; ``--subset-fraction``
trains on a random part of the remaining utterances (the paper's 3% experiment).
Run under ``torchrun --nproc-per-node N asr-kd ...`` (or ``python -m torch.distributed.run``) for DDP.
``--stream-frames DIR`` streams the training frames from shards on disk (asr_kd/nnet/stream.py)
instead of holding them in memory, for corpora whose frames do not fit in each process.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import torch

from asr_kd.config import add_flags, config_flags, config_values
from asr_kd.hmm.align import AlignOpts
from asr_kd.nnet.align import dnn_align_step
from asr_kd.nnet.model import PRESETS
from asr_kd.nnet.steps import EVAL_SPLIT, SplitOpts, StreamOpts, eval_step, priors_step, train_step
from asr_kd.nnet.train import TrainConfig

DEFAULT_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPE = ("hidden_layers", "hidden_dim", "left_context", "right_context", "dropout")


def _step(sub, name: str, help_: str, cuts_help: str, frames_cache: bool = True) -> argparse.ArgumentParser:
    """The parser of a step, with the options every step has."""
    p = sub.add_parser(name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cuts", type=Path, required=True, help=cuts_help)
    if frames_cache:
        p.add_argument("--frames-cache", type=Path, help="cache of the loaded frames (speeds up later runs)")
    p.add_argument("--device", default=DEFAULT_DEVICE, help="cpu or cuda")
    return p


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="nnet_step", metavar="STEP", required=True)
    p = _step(sub, "train", "train a DNN on hard labels, or distill one from teachers",
              "training cuts with fbank and 'senone' labels")
    p.add_argument("--gmm-dir", type=Path, required=True, help="the GMM system that made the labels (priors, tree)")
    p.add_argument("--exp-dir", type=Path, nargs="+", required=True,
                   help="where the model goes; one per --temperature when several are given")
    add_flags(p, config_flags(StreamOpts))
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help="network size: paper 8x2560, cpu 4x1024, small 3x512, tiny 2x64 (asr_kd/nnet/model.py)")
    p.add_argument("--hidden-layers", type=int, help="hidden layers (default: the preset's)")
    p.add_argument("--hidden-dim", type=int, help="units per hidden layer (default: the preset's)")
    p.add_argument("--left-context", type=int, help="frames of left context in the input window (default: the preset's)")
    p.add_argument("--right-context", type=int, help="frames of right context (default: the preset's)")
    p.add_argument("--dropout", type=float, help="dropout after each hidden layer (default: the preset's, 0)")
    add_flags(p, config_flags(TrainConfig))
    p.add_argument("--dev-cuts", type=Path, help="labelled dev cuts for early stopping (else --dev-fraction)")
    add_flags(p, config_flags(SplitOpts))
    p.add_argument("--teachers", type=Path, nargs="*", default=[], help="teacher final.pt files: distillation")
    p.add_argument("--temperature", type=float, nargs="+", default=[1.0],
                   help="distillation temperature; several train one student each, sharing the teachers' pass")

    p = _step(sub, "eval", "frame accuracy of a model or an ensemble", "cuts with 'senone' labels")
    p.add_argument("--models", type=Path, nargs="+", required=True,
                   help="final.pt files; several are scored as an ensemble (mean of their distributions)")
    p.add_argument("--out", type=Path, required=True, help="JSON with the frame accuracy (kept unless --force)")
    p.add_argument("--force", action="store_true", help="recompute even if --out exists")
    add_flags(p, config_flags(StreamOpts, fields=("dir", "buffer_frames")))
    add_flags(p, config_flags(SplitOpts, defaults=EVAL_SPLIT))
    add_flags(p, config_flags(TrainConfig, fields=("dtype",)))

    p = _step(sub, "priors", "senone priors from a model's own mean posterior (for asr-kd decode --priors)",
              "the training cuts (fbank and senone labels)")
    p.add_argument("--models", type=Path, nargs="+", required=True,
                   help="final.pt files; several: the ensemble's mean distribution")
    p.add_argument("--out", type=Path, required=True, help="JSON with log_priors (kept unless --force)")
    p.add_argument("--force", action="store_true", help="recompute even if --out exists")
    p.add_argument("--max-utterances", type=int, default=0,
                   help="use this many utterances spread over the set (0: all)")
    p.add_argument("--floor", type=float, default=1e-8, help="smallest prior (then renormalized)")
    add_flags(p, config_flags(StreamOpts, fields=("dir", "shard_frames")))

    p = _step(sub, "align", "forced-align cuts with DNNs (an ensemble when several): new senone labels "
              "(asr-kd gmm labels --ali-dir OUT_DIR)", "cuts with fbank (or audio) and transcripts", frames_cache=False)
    p.add_argument("--models", type=Path, nargs="+", required=True,
                   help="final.pt files; several align as their ensemble (mean posterior)")
    p.add_argument("--lang-dir", type=Path, required=True, help="the lang directory the models' GMM was trained with")
    p.add_argument("--out-dir", type=Path, required=True,
                   help="alignment directory (ali.pt, summary.json...), as asr-kd gmm align writes")
    p.add_argument("--priors", type=Path,
                   help="JSON of senone log_priors (asr-kd nnet priors) instead of those saved in the model")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--force", action="store_true", help="redo even if OUT_DIR/ali.pt is newer than its inputs")
    add_flags(p, config_flags(AlignOpts))


def _stream(args) -> Optional[StreamOpts]:
    """The --stream-frames options, or None (frames in memory)."""
    stream = StreamOpts(**config_values(StreamOpts, args))
    return stream if stream.dir is not None else None


def run(args) -> int:
    if args.nnet_step == "align":
        dnn_align_step(args.models, args.lang_dir, args.cuts, args.out_dir, AlignOpts(**config_values(AlignOpts, args)),
                       priors=args.priors, device=args.device, progress=args.progress, force=args.force)
    elif args.nnet_step == "priors":
        priors_step(args.models, args.cuts, args.out, frames_cache=args.frames_cache, stream=_stream(args),
                    max_utterances=args.max_utterances, floor=args.floor, device=args.device, force=args.force)
    elif args.nnet_step == "eval":
        eval_step(args.models, args.cuts, args.out, frames_cache=args.frames_cache, stream=_stream(args),
                  split=SplitOpts(**config_values(SplitOpts, args)), dtype=args.dtype, device=args.device,
                  force=args.force)
    else:
        # TrainConfig's device is --device; its temperature is replaced by each of --temperature
        train_step(args.cuts, args.gmm_dir, args.exp_dir, TrainConfig(**config_values(TrainConfig, args)),
                   preset=args.preset, shape={k: getattr(args, k) for k in SHAPE}, temperatures=args.temperature,
                   teachers=args.teachers, dev_cuts=args.dev_cuts, split=SplitOpts(**config_values(SplitOpts, args)),
                   frames_cache=args.frames_cache, stream=_stream(args), device=args.device)
    return 0
