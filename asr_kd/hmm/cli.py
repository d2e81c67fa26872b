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

import torch

from asr_kd.hmm import steps
from asr_kd.hmm.align import AlignOpts
from asr_kd.hmm.train import TrainOpts


def _common(p: argparse.ArgumentParser, lang: bool = True, cuts: bool = True) -> None:
    if lang:
        p.add_argument("--lang-dir", required=True, help="Kaldi-layout lang directory (phones.txt, lexicon.txt...)")
    if cuts:
        p.add_argument("--cuts", required=True, help="lhotse CutSet with fbank features and transcripts")
    p.add_argument("--num-threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--device", default="cpu", help="torch device for likelihoods and alignment")
    p.add_argument("--force", action="store_true", help="redo the step even if its outputs exist")
    p.add_argument("--max-utts", type=int, default=0, help="use only the first N cuts (0 = all)")


def _align_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--acoustic-scale", type=float, default=0.1,
                   help="scale of the GMM log-likelihoods against the HMM's "
                   "transition log-probabilities in the alignment (Kaldi's --acoustic-scale)")
    p.add_argument("--sil-prob", type=float, default=0.5, help="optional silence probability between words")
    p.add_argument("--batch-frames", type=int, default=20000, help="frames per alignment batch")
    p.add_argument("--align-backend", choices=["torch", "k2"], default="torch",
                   help="batched Viterbi in torch, or k2.intersect_dense + shortest_path (same result)")
    p.add_argument("--no-map-oov", action="store_true",
                   help="exclude utterances with words missing from the lexicon instead of mapping them to the OOV word")


def _nj_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nj", type=int, default=1,
                   help="parallel jobs (spawned processes, one thread each): same results as --nj 1")


def _train_args(p, iters, realign, gauss, inc) -> None:
    p.add_argument("--num-iters", type=int, default=iters, help="EM iterations (after the initial pass)")
    p.add_argument("--realign-iters", default=realign, help="comma-separated iterations that realign")
    p.add_argument("--max-gauss", type=int, default=gauss, help="target total number of Gaussians")
    p.add_argument("--max-iter-inc", type=int, default=inc, help="iteration by which max-gauss is reached")
    p.add_argument("--progress", action="store_true", help="progress bars")
    p.add_argument("--acc-block-frames", type=int, default=None,
                   help="frames per block of statistics accumulation (default 30000): the unit the jobs share "
                        "out and the fixed order the blocks are summed in (the model depends on it, not on --nj)")
    _nj_arg(p)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="gmm_step", metavar="STEP", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    # Kaldi's train_mono.sh realigns 25 times in 40 iterations; the default here is lighter
    # (14 realignments in 30 iterations), which is what the speechocean762 numbers used
    mono_realign = "1,2,3,4,5,6,8,10,13,16,19,22,25,28"
    p = sub.add_parser("mono", help="monophone training from a flat start", formatter_class=fmt)
    _common(p)
    p.add_argument("--exp-dir", required=True, help="output model directory")
    p.add_argument("--random-flat-start", action="store_true",
                   help="Kaldi's random-path equal alignment instead of silence at both ends")
    p.add_argument("--num-states", type=int, default=3, help="HMM states of non-silence phones")
    p.add_argument("--num-sil-states", type=int, default=5, help="HMM states of silence phones")
    _train_args(p, 30, mono_realign, 1000, 20)
    _align_args(p)

    p = sub.add_parser("tri", help="triphone training with decision-tree state tying", formatter_class=fmt)
    _common(p)
    p.add_argument("--ali-dir", required=True, help="model directory whose ali.pt starts the training")
    p.add_argument("--exp-dir", required=True, help="output model directory")
    p.add_argument("--num-leaves", type=int, default=2000, help="number of tied states (senones)")
    p.add_argument("--min-leaf-count", type=float, default=100.0, help="frames a leaf needs at least")
    _train_args(p, 25, "10,15,20", 10000, 20)
    _align_args(p)

    p = sub.add_parser("align", help="forced-align cuts with a trained model", formatter_class=fmt)
    _common(p)
    p.add_argument("--model-dir", required=True, help="trained model directory (exp/mono, exp/tri1)")
    p.add_argument("--out-dir", required=True, help="where ali.pt, summary.json, priors.json, phones.ctm go")
    _align_args(p)
    _nj_arg(p)
    split = p.add_mutually_exclusive_group()
    split.add_argument("--job", metavar="J/N", default=None,
                       help="align only part J (1-based) of the --nj N split, into OUT_DIR/splitN/ali.J.pt "
                            "(array jobs under a scheduler; then --merge-jobs N)")
    split.add_argument("--merge-jobs", type=int, metavar="N", default=0,
                       help="write the outputs of --nj N from the N parts written by --job J/N")

    p = sub.add_parser("labels", help="attach per-frame senone labels to cuts", formatter_class=fmt)
    _common(p, lang=False)
    p.add_argument("--ali-dir", required=True, help="directory with ali.pt (a model or align output)")
    p.add_argument("--out-cuts", required=True, help="output CutSet (.jsonl.gz) with a 'senone' TemporalArray")
    p.add_argument("--storage-dir", default=None, help="where the label arrays go (default: beside out-cuts)")

    p = sub.add_parser("kaldi-compare", formatter_class=fmt,
                       help="peer check: our monophone alignment vs Kaldi's (kaldi-hmm-gmm, own process)")
    _common(p)
    p.add_argument("--model-dir", required=True, help="our monophone model directory (exp/mono)")
    p.add_argument("--peer-path", required=True,
                   help="directory with kaldi-hmm-gmm and kaldifst==1.7.17 (pip install --no-deps --target DIR ...)")
    p.add_argument("--out", required=True, help="JSON report")
    p.add_argument("--num-iters", type=int, default=20, help="EM iterations of both flat-start trainings")
    p.add_argument("--realign-iters", default="1,2,3,4,5,6,8,10,12,14,16,18",
                   help="comma-separated iterations that realign, in both trainings")
    p.add_argument("--max-gauss", type=int, default=300, help="target total number of Gaussians, in both trainings")
    p.add_argument("--max-iter-inc", type=int, default=15, help="iteration by which max-gauss is reached")
    _align_args(p)

    p = sub.add_parser("report", help="write the GMM rows of RESULTS.md / results.json", formatter_class=fmt)
    p.add_argument("--recipe-dir", default=".", help="where RESULTS.md and results.json are")
    p.add_argument("--model-dirs", nargs="+", default=[], help="training directories (exp/mono exp/tri1)")
    p.add_argument("--align-dirs", nargs="*", default=[], help="'gmm align' outputs, as SYSTEM:SET:DIR")
    p.add_argument("--command", required=True, help="the exact command that produced the numbers")

    p = sub.add_parser("ctm", help="phone-level CTM of an alignment", formatter_class=fmt)
    _common(p, cuts=False)
    p.add_argument("--ali-dir", required=True, help="directory with ali.pt (a model or align output)")
    p.add_argument("--out", required=True, help="output CTM file (utterance, channel, start, duration, phone)")


def _align_opts(args) -> AlignOpts:
    return AlignOpts(acoustic_scale=args.acoustic_scale, sil_prob=args.sil_prob,
                     batch_frames=args.batch_frames, map_oov=not args.no_map_oov, backend=args.align_backend)


def _train_opts(args) -> TrainOpts:
    return TrainOpts(num_iters=args.num_iters, realign_iters=tuple(int(i) for i in args.realign_iters.split(",") if i),
                     max_gauss=args.max_gauss, max_iter_inc=args.max_iter_inc, align=_align_opts(args),
                     random_flat_start=getattr(args, "random_flat_start", False),
                     **({"acc_block_frames": args.acc_block_frames} if getattr(args, "acc_block_frames", None) else {}))


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
