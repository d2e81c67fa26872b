"""``asr-kd gmm <step>``: monophone and triphone training, alignment, senone labels, CTM.

Typical recipe use::

    asr-kd gmm mono   --lang-dir data/lang --cuts data/fbank/X_cuts_train.jsonl.gz --exp-dir exp/mono
    asr-kd gmm tri    --lang-dir data/lang --cuts data/fbank/X_cuts_train.jsonl.gz --ali-dir exp/mono \\
                      --exp-dir exp/tri1 --num-leaves 2000 --max-gauss 10000
    asr-kd gmm align  --lang-dir data/lang --cuts data/fbank/X_cuts_dev.jsonl.gz --model-dir exp/tri1 \\
                      --out-dir exp/tri1_ali_dev
    asr-kd gmm labels --cuts data/fbank/X_cuts_train.jsonl.gz --ali-dir exp/tri1 \\
                      --out-cuts data/senones/X_cuts_train.jsonl.gz

``--nj N`` (mono, tri, align) splits the utterances over N jobs, as Kaldi's ``--nj``: spawned
processes of one thread each run the E-step of every iteration (realignment and statistics) and
the alignment; the model and the alignment are those of ``--nj 1``, bit for bit
(:mod:`asr_kd.hmm.jobs`). Under a scheduler, ``align --job J/N`` aligns part J of the same split
into ``OUT_DIR/splitN/ali.J.pt`` (run as array jobs through ``local/cmd/run.sh`` or
``local/cmd/slurm.sh``) and ``align --merge-jobs N`` writes the outputs of ``--nj N`` from them.

Every step skips its work when its outputs exist and are newer than its inputs (``--force`` redoes
it) and writes atomically. The steps themselves are :mod:`asr_kd.hmm.steps` (one function each, with
the same effect from Python); this module parses the options and calls one.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from asr_kd.config import add_flags, config_flags, config_values
from asr_kd.hmm import steps
from asr_kd.hmm.align import AlignOpts
from asr_kd.hmm.train import KALDI_COMPARE_SCHEDULE, MONO_SCHEDULE, TRI_SCHEDULE, TrainOpts

SCHEDULE = ("num_iters", "realign_iters", "max_gauss", "max_iter_inc")
# The TrainOpts fields each training step has flags for, and the schedule their defaults come from.
TRAINING = {"mono": (MONO_SCHEDULE, (*SCHEDULE, "random_flat_start", "acc_block_frames")),
            "tri": (TRI_SCHEDULE, (*SCHEDULE, "acc_block_frames")),
            "kaldi-compare": (KALDI_COMPARE_SCHEDULE, SCHEDULE)}


def _step(sub, name: str, help_: str, lang: bool = True, cuts: bool = True, **paths: str) -> argparse.ArgumentParser:
    """The parser of a step: its required paths (``exp_dir="help"`` for ``--exp-dir``) and the options
    every step has."""
    p = sub.add_parser(name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if lang:
        p.add_argument("--lang-dir", required=True, help="Kaldi-layout lang directory (phones.txt, lexicon.txt...)")
    if cuts:
        p.add_argument("--cuts", required=True, help="lhotse CutSet with fbank features and transcripts")
    for dest, path_help in paths.items():
        p.add_argument("--" + dest.replace("_", "-"), required=True, help=path_help)
    p.add_argument("--num-threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--device", default="cpu", help="torch device for likelihoods and alignment")
    p.add_argument("--force", action="store_true", help="redo the step even if its outputs exist")
    p.add_argument("--max-utts", type=int, default=0, help="use only the first N cuts (0 = all)")
    return p


def _nj_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nj", type=int, default=1,
                   help="parallel jobs (spawned processes, one thread each): same results as --nj 1")


def _training_flags(p: argparse.ArgumentParser, step: str) -> None:
    schedule, fields = TRAINING[step]
    add_flags(p, config_flags(TrainOpts, defaults=schedule, fields=fields))
    add_flags(p, config_flags(AlignOpts))
    if step != "kaldi-compare":
        p.add_argument("--progress", action="store_true", help="progress bars")
        _nj_flag(p)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="gmm_step", metavar="STEP", required=True)
    p = _step(sub, "mono", "monophone training from a flat start", exp_dir="output model directory")
    p.add_argument("--num-states", type=int, default=3, help="HMM states of non-silence phones")
    p.add_argument("--num-sil-states", type=int, default=5, help="HMM states of silence phones")
    _training_flags(p, "mono")

    p = _step(sub, "tri", "triphone training with decision-tree state tying",
              ali_dir="model directory whose ali.pt starts the training", exp_dir="output model directory")
    p.add_argument("--num-leaves", type=int, default=2000, help="number of tied states (senones)")
    p.add_argument("--min-leaf-count", type=float, default=100.0, help="frames a leaf needs at least")
    _training_flags(p, "tri")

    p = _step(sub, "align", "forced-align cuts with a trained model",
              model_dir="trained model directory (exp/mono, exp/tri1)",
              out_dir="where ali.pt, summary.json, priors.json, phones.ctm go")
    add_flags(p, config_flags(AlignOpts))
    _nj_flag(p)
    split = p.add_mutually_exclusive_group()
    split.add_argument("--job", metavar="J/N", default=None,
                       help="align only part J (1-based) of the --nj N split, into OUT_DIR/splitN/ali.J.pt "
                            "(array jobs under a scheduler; then --merge-jobs N)")
    split.add_argument("--merge-jobs", type=int, metavar="N", default=0,
                       help="write the outputs of --nj N from the N parts written by --job J/N")

    p = _step(sub, "labels", "attach per-frame senone labels to cuts", lang=False,
              ali_dir="directory with ali.pt (a model or align output)",
              out_cuts="output CutSet (.jsonl.gz) with a 'senone' TemporalArray")
    p.add_argument("--storage-dir", default=None, help="where the label arrays go (default: beside out-cuts)")

    p = _step(sub, "kaldi-compare", "peer check: our monophone alignment vs Kaldi's (kaldi-hmm-gmm, own process); "
              "both flat-start trainings follow the schedule flags",
              model_dir="our monophone model directory (exp/mono)",
              peer_path="directory with kaldi-hmm-gmm and kaldifst==1.7.17 (pip install --no-deps --target DIR ...)",
              out="JSON report")
    _training_flags(p, "kaldi-compare")

    p = sub.add_parser("report", help="write the GMM rows of RESULTS.md / results.json",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe-dir", default=".", help="where RESULTS.md and results.json are")
    p.add_argument("--model-dirs", nargs="+", default=[], help="training directories (exp/mono exp/tri1)")
    p.add_argument("--align-dirs", nargs="*", default=[], help="'gmm align' outputs, as SYSTEM:SET:DIR")
    p.add_argument("--command", required=True, help="the exact command that produced the numbers")

    _step(sub, "ctm", "phone-level CTM of an alignment", cuts=False,
          ali_dir="directory with ali.pt (a model or align output)",
          out="output CTM file (utterance, channel, start, duration, phone)")


def _align_opts(args) -> AlignOpts:
    return AlignOpts(**config_values(AlignOpts, args))


def _train_opts(args) -> TrainOpts:
    """The step's schedule with the options given."""
    schedule = TRAINING[args.gmm_step][0]
    return dataclasses.replace(schedule, **config_values(TrainOpts, args), align=_align_opts(args))


def run(args) -> int:
    torch.set_num_threads(getattr(args, "num_threads", 1))
    step = args.gmm_step
    if step == "mono":
        steps.train_mono_step(args.lang_dir, args.cuts, args.exp_dir, _train_opts(args), args.num_states,
                              args.num_sil_states, nj=args.nj, device=args.device, progress=args.progress,
                              max_utts=args.max_utts, force=args.force)
    elif step == "tri":
        steps.train_tri_step(args.lang_dir, args.cuts, args.ali_dir, args.exp_dir, _train_opts(args), args.num_leaves,
                             args.min_leaf_count, nj=args.nj, device=args.device, progress=args.progress,
                             max_utts=args.max_utts, force=args.force)
    elif step == "align":
        steps.align_step(args.lang_dir, args.cuts, args.model_dir, args.out_dir, _align_opts(args), nj=args.nj,
                         job=args.job, merge_jobs=args.merge_jobs, device=args.device, max_utts=args.max_utts,
                         force=args.force)
    elif step == "labels":
        steps.senone_labels_step(args.cuts, args.ali_dir, args.out_cuts, args.storage_dir, force=args.force)
    elif step == "ctm":
        steps.ctm_step(args.lang_dir, args.ali_dir, args.out)
    elif step == "report":
        steps.report_step(args.recipe_dir, args.model_dirs, args.align_dirs, args.command)
    elif step == "kaldi-compare":
        steps.kaldi_compare_step(args.lang_dir, args.cuts, args.model_dir, args.peer_path, args.out,
                                 _train_opts(args), args.max_utts)
    return 0
