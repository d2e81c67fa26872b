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
import time
from pathlib import Path

import torch
from lhotse import load_manifest_lazy

from asr_kd.config import add_flags, config_flags, config_values
from asr_kd.data.features import Cmvn, compute_cmvn_stats
from asr_kd.nnet.data import FrameSet, split_by_speaker, subset_utterances
from asr_kd.nnet.stream import StreamFrameSet, open_frame_shards
from asr_kd.nnet.model import PRESETS, DnnConfig, Ensemble, load_model
from asr_kd.nnet.train import TrainConfig, frame_accuracy_of, train_together
from asr_kd.utils import UserError, error_text, load_cuts, outputs_fresh, read_json, write_json

log = logging.getLogger(__name__)

DEFAULT_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


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
    p.add_argument("--buffer-frames", type=int, default=262144,
                   help="--stream-frames: frames in the shuffle buffer (x 176 bytes at 40 fbank: the memory bound)")
    p.add_argument("--shard-frames", type=int, default=1000000, help="--stream-frames: frames per shard written")
    p.add_argument("--shards-per-window", type=int, default=0,
                   help="--stream-frames: shards whose utterances are shuffled together (0 = all)")
    p.add_argument("--loader-workers", type=int, default=0,
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


def load_frames(cuts_path: Path, cache: Path = None):
    """A FrameSet for a cuts manifest, per-speaker CMVN, from the cache when it is fresh."""
    if not cuts_path.is_file():
        raise FileNotFoundError(f"{cuts_path} not found: run the alignment (senone labels) stage first")
    source = str(cuts_path.resolve())
    if cache is not None and outputs_fresh([cache], [cuts_path]):
        frames = FrameSet.load(cache, source)
        if frames is not None:
            return frames
        log.info(f"{cache} was made from another manifest than {cuts_path}: rebuilding it")
    cuts = load_cuts(cuts_path)
    try:
        frames, report = FrameSet.from_cuts(cuts, Cmvn(compute_cmvn_stats(cuts), mode="speaker"))
    except FileNotFoundError as e:
        raise UserError(f"{error_text(e)} (read through {cuts_path}): redo the stage that wrote it (features: asr-kd "
                        "fbank; senone labels: asr-kd gmm labels)") from e
    log.info(f"{cuts_path}: {report['cuts']} cuts, {report['frames']} frames; skipped "
             f"{len(report['no_labels'])} without labels, {len(report['length_mismatch'])} with a length mismatch")
    if cache is not None:
        frames.save(cache, source)
    return frames


def check_not_stale(exp_dirs, inputs) -> None:
    """A model directory (final model or checkpoints) older than the labels, priors or teachers it
    was trained from would be kept (or resumed) as if it were current: refuse, naming both. Not
    deleted here: a long training is for the user to remove."""
    for d in map(Path, exp_dirs):
        made = [p for p in (d / "final.pt", *d.glob("epoch-*.pt")) if p.is_file()]
        if not made:
            continue
        oldest = min(made, key=lambda p: p.stat().st_mtime)
        newer = [p for p in map(Path, inputs) if p.is_file() and p.stat().st_mtime > oldest.stat().st_mtime]
        if newer:
            raise UserError(f"{d} was trained from older inputs ({newer[0]} is newer than {oldest}): remove {d} "
                            "to train again on the new ones")


def _splits(frames, dev_fraction, dev_seed, subset_fraction, subset_seed):
    train_utts, dev_utts = split_by_speaker(frames, dev_fraction, dev_seed)
    if subset_fraction < 1.0:
        keep = subset_utterances(len(train_utts), subset_fraction, subset_seed)
        train_utts = [train_utts[i] for i in keep]
    return train_utts, dev_utts


def run(args) -> int:
    if args.nnet_step == "eval" and args.out.exists() and not args.force:
        log.info(f"{args.out} exists; skipping (use --force to redo)")
        return 0
    if args.nnet_step == "train" and args.stream_frames:
        frames = open_frame_shards(args.cuts, args.stream_frames,
                                   lambda cuts: Cmvn(compute_cmvn_stats(cuts), mode="speaker"), args.shard_frames,
                                   progress=not args.no_progress)
    else:
        frames = load_frames(args.cuts, args.frames_cache)
    if args.nnet_step == "eval":
        if args.dev_fraction or args.subset_fraction < 1.0:
            utts, _ = _splits(frames, args.dev_fraction, args.dev_seed, args.subset_fraction, args.subset_seed)
            frames = frames.subset(utts)
        models = [load_model(p, args.device) for p in args.models]
        model = models[0] if len(models) == 1 else Ensemble(models)
        acc = frame_accuracy_of(model, frames, args.device, args.dtype)
        write_json(args.out, {"models": [str(p) for p in args.models], "cuts": str(args.cuts),
                              "frame_accuracy": acc, "frames": len(frames), "utterances": len(frames.cut_ids)})
        log.info(f"frame accuracy {acc:.2f}% over {len(frames)} frames -> {args.out}")
        return 0

    priors_path = args.gmm_dir / "priors.json"
    if not priors_path.is_file():
        raise FileNotFoundError(f"{priors_path} not found: train the GMM system first")
    priors = read_json(priors_path)
    if args.dev_cuts:
        cache = args.frames_cache.with_name(args.frames_cache.stem + "_dev.pt") if args.frames_cache else None
        dev_set = load_frames(args.dev_cuts, cache)
        train_utts, _ = _splits(frames, 0.0, 0, args.subset_fraction, args.subset_seed)
    else:
        train_utts, dev_utts = _splits(frames, args.dev_fraction, args.dev_seed, args.subset_fraction, args.subset_seed)
        if not dev_utts:
            raise UserError("the dev split is empty: raise --dev-fraction (needs at least two speakers)")
        dev_set = frames.subset(dev_utts) if isinstance(frames, FrameSet) else frames.frameset(dev_utts)
    if isinstance(frames, FrameSet):
        train_set = frames.subset(train_utts)
    else:
        train_set = StreamFrameSet(frames, train_utts, args.buffer_frames, args.shards_per_window, args.loader_workers)
    model_cfg = DnnConfig.from_preset(
        args.preset, num_senones=priors["num_pdfs"], feat_dim=frames.feat_dim, hidden_layers=args.hidden_layers,
        hidden_dim=args.hidden_dim, left_context=args.left_context, right_context=args.right_context,
        dropout=args.dropout)
    max_label = int(frames.labels.max()) if isinstance(frames, FrameSet) else frames.max_label
    if max_label >= model_cfg.num_senones:
        raise ValueError(f"labels go up to {max_label} but {args.gmm_dir} has {model_cfg.num_senones} senones")
    if len(args.exp_dir) != len(args.temperature):
        raise ValueError(f"{len(args.exp_dir)} --exp-dir for {len(args.temperature)} --temperature values: "
                         "give one exp dir per temperature")
    settings = {**config_values(TrainConfig, args), "progress": not args.no_progress}
    cfgs = [TrainConfig(**{**settings, "temperature": t}) for t in args.temperature]
    teachers = Ensemble([load_model(p, args.device) for p in args.teachers]) if args.teachers else None
    first = next(iter(load_manifest_lazy(args.cuts)))
    meta = {"gmm_dir": str(args.gmm_dir), "log_priors": priors["log_priors"], "cmvn": "speaker",
            "sampling_rate": first.sampling_rate, "feature": "fbank-40", "train_cuts": str(args.cuts),
            "teachers": [str(p) for p in args.teachers], "seed": args.seed}
    check_not_stale(args.exp_dir, [args.cuts, priors_path, *([args.dev_cuts] if args.dev_cuts else []), *args.teachers])
    t0 = time.time()
    summaries = train_together(args.exp_dir, model_cfg, cfgs, train_set, dev_set, teachers, meta)
    for exp_dir, summary in zip(args.exp_dir, summaries):
        log.info(f"{exp_dir}: best dev frame accuracy {summary['best_dev_frame_accuracy']:.2f}% "
                 f"(epoch {summary['best_epoch']}) in {time.time() - t0:.0f} s")
    return 0
