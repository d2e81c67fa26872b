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
it) and writes atomically. The file the skip looks at (``final.mdl`` of mono and tri, ``ali.pt`` of
align, the ``--out-cuts`` manifest of labels) is removed before a redo rewrites anything and written
last, so a redo killed halfway is redone by the next run. A second mono, tri or align into the same
directory while one runs fails at once.
``final.mdl`` records the model's feature settings (sampling rate, fbank, MFCC) and the phone set
of its lang; a step that uses a model with a lang directory refuses a lang with other phones.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from asr_kd.model_info import check_phones, feature_config, phone_table
from asr_kd.utils import UserError

logger = logging.getLogger(__name__)


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


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def load_data(cuts_path, max_utts: int = 0):
    """Cuts, features (MFCC + CMVN + deltas), transcripts and feature rejections."""
    from asr_kd.hmm.features import features_from_cuts
    from asr_kd.utils import UserError, error_text, load_cuts

    cuts = load_cuts(cuts_path, "run the fbank stage first")
    if max_utts:
        cuts = cuts.subset(first=max_utts)
    t0 = time.time()
    try:
        feats, rejected = features_from_cuts(cuts)
    except (OSError, EOFError, ValueError) as e:  # a missing or truncated feature archive
        raise UserError(f"{error_text(e)} (read through {cuts_path}): redo the stage that wrote it "
                        "(features: asr-kd fbank)") from e
    texts = {}
    for c in cuts:
        words = []
        for s in c.supervisions:
            words += (s.text or "").split()
        texts[c.id] = words
    logger.info("%d cuts, %d with features (%.1f s), %d rejected", len(texts), len(feats), time.time() - t0, len(rejected))
    return cuts, feats, texts, rejected


def model_info(cuts, cuts_path, lang_dir) -> dict:
    """What final.mdl records of how the model was made (see asr_kd.model_info)."""
    from dataclasses import asdict

    from asr_kd.hmm.features import FeatureOpts

    rates = sorted({c.sampling_rate for c in cuts})
    if len(rates) != 1:
        raise ValueError(f"{cuts_path}: cuts at several sampling rates {rates}; a model is trained at one")
    return {"features": feature_config(rates[0], asdict(FeatureOpts())), "phones": phone_table(lang_dir),
            "train_cuts": str(Path(cuts_path).resolve())}


def load_model_checked(model_dir, lang_dir):
    """``model_dir/final.mdl``, after checking that its phone set is the lang's."""
    from asr_kd.hmm.train import GmmHmm

    path = Path(model_dir) / "final.mdl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train the GMM system first")
    model = GmmHmm.load(path)
    check_phones(model.info.get("phones"), str(path), lang_dir, model.trans.topo.phones)
    return model


def _need(path: Path, hint: str) -> Path:
    """``path``, or a one-line error naming it and what makes it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {hint}")
    return path


def _align_opts(args):
    from asr_kd.hmm.align import AlignOpts

    return AlignOpts(acoustic_scale=args.acoustic_scale, sil_prob=args.sil_prob,
                     batch_frames=args.batch_frames, map_oov=not args.no_map_oov, backend=args.align_backend)


def _train_opts(args):
    from asr_kd.hmm.train import TrainOpts

    return TrainOpts(num_iters=args.num_iters, realign_iters=tuple(int(i) for i in args.realign_iters.split(",") if i),
                     max_gauss=args.max_gauss, max_iter_inc=args.max_iter_inc, align=_align_opts(args),
                     random_flat_start=getattr(args, "random_flat_start", False),
                     **({"acc_block_frames": args.acc_block_frames} if getattr(args, "acc_block_frames", None) else {}))


def run(args) -> int:
    import torch

    torch.set_num_threads(getattr(args, "num_threads", 1))
    step = args.gmm_step
    from asr_kd.hmm.lang_io import LangInfo
    from asr_kd.hmm.output import attach_senones, load_alignments, write_ctm
    from asr_kd.utils import outputs_fresh

    if step == "report":
        return _report(args)
    if step == "kaldi-compare":
        return _kaldi_compare(args)
    if step == "ctm":
        lang = LangInfo.load(args.lang_dir)
        if (Path(args.ali_dir) / "final.mdl").is_file():  # a model dir (an align dir has no model)
            load_model_checked(args.ali_dir, args.lang_dir)
        write_ctm(args.out, load_alignments(Path(args.ali_dir) / "ali.pt"), lang.phone_names)
        return 0
    if step == "labels":
        if outputs_fresh([args.out_cuts], [Path(args.ali_dir) / "ali.pt", args.cuts]) and not args.force:
            logger.info("%s is newer than its alignment; skipping (use --force to redo)", args.out_cuts)
            return 0
        from asr_kd.utils import atomic_path, load_cuts

        cuts = load_cuts(args.cuts, "run the fbank stage first")
        alis = load_alignments(_need(Path(args.ali_dir) / "ali.pt", "train or align the GMM system first"))
        # the old manifest goes before its label arrays are overwritten; the new one comes last
        Path(args.out_cuts).unlink(missing_ok=True)
        storage = args.storage_dir or str(Path(args.out_cuts).parent / (Path(args.out_cuts).name.split(".")[0] + "_senone"))
        out, counts = attach_senones(cuts, alis, storage)
        with atomic_path(args.out_cuts) as tmp:
            out.to_file(tmp)
        logger.info("senone labels: %s", counts)
        return 0

    lang = LangInfo.load(args.lang_dir)
    out_dir = Path(args.exp_dir if step in ("mono", "tri") else args.out_dir)
    # Redone when what it was made from is newer: the monophone alignment for tri, the model for align.
    inputs = ([Path(args.ali_dir) / "ali.pt"] if step == "tri" else
              [Path(args.model_dir) / "final.mdl"] if step == "align" else [])
    from asr_kd.utils import training_lock

    if args.nj < 1:
        raise UserError(f"--nj must be at least 1, not {args.nj}")
    if step == "align" and args.job:
        job, nj = _parse_job(args.job)
        part = _part_path(out_dir, job, nj)
        with training_lock(part):  # the other parts run beside it
            return _align_job(args, lang, out_dir, inputs, job, nj, part)
    with training_lock(out_dir):
        return _train_or_align(args, step, lang, out_dir, inputs)


# Alignment alone sums no statistics: one utterance per block, so that the parts balance on any
# set. --job J/N splits as --nj N does.
ALIGN_BLOCK_FRAMES = 1


def _parse_job(spec: str):
    """``J/N`` -> ``(J, N)`` with ``1 <= J <= N``, or a one-line error."""
    try:
        job, nj = (int(v) for v in spec.split("/"))
    except ValueError:
        raise UserError(f"--job takes J/N (part J of N, 1-based), not {spec!r}") from None
    if not 1 <= job <= nj:
        raise UserError(f"--job {spec}: J must be between 1 and N")
    return job, nj


def _part_path(out_dir: Path, job: int, nj: int) -> Path:
    return out_dir / f"split{nj}" / f"ali.{job}.pt"


def _align_job(args, lang, out_dir, inputs, job, nj, part) -> int:
    """``gmm align --job J/N``: part J of the ``--nj N`` split, aligned into ``splitN/ali.J.pt``."""
    import torch

    from asr_kd.hmm.jobs import GmmJobs
    from asr_kd.utils import atomic_path, outputs_fresh

    if not args.force:
        if outputs_fresh([out_dir / "ali.pt"], [args.cuts, *inputs]):
            logger.info("%s is done and newer than its inputs; skipping part %d/%d", out_dir, job, nj)
            return 0
        if outputs_fresh([part], [args.cuts, *inputs]):
            logger.info("%s is newer than its inputs; skipping (use --force to redo)", part)
            return 0
    model = load_model_checked(args.model_dir, args.lang_dir)
    cuts, feats, texts, rejected = load_data(args.cuts, args.max_utts)
    parts = GmmJobs.split(feats, texts, nj, block_frames=ALIGN_BLOCK_FRAMES)
    mine = parts[job - 1] if job <= len(parts) else []
    t1 = time.time()
    with GmmJobs({u: feats[u] for u in mine}, {u: texts[u] for u in mine}, lang, model.ctx, _align_opts(args), 1,
                 args.device, block_frames=ALIGN_BLOCK_FRAMES) as jobs:
        alis, failures = jobs.align(model.gmm, model.trans)
    secs = time.time() - t1
    part.unlink(missing_ok=True)
    with atomic_path(part) as tmp:
        torch.save({"job": job, "nj": nj, "utts": mine, "alis": {u: a.to_arrays() for u, a in alis.items()},
                    "failures": failures, "rejected": rejected, "align_seconds": secs,
                    "peak_rss_mb": _peak_rss_mb()}, tmp)
    logger.info("%s: part %d/%d, %d of %d utterances aligned (%.1f s)", part, job, nj, len(alis), len(mine), secs)
    return 0


def _merge_parts(args, out_dir, inputs, nj):
    """The alignments, failures and timings of the N parts written by ``--job J/N``, checked to be
    all there and newer than their inputs."""
    import torch

    from asr_kd.hmm.align import Alignment
    from asr_kd.utils import outputs_fresh

    alis, found, rejected, secs, utts = {}, {}, {}, [], set()
    for j in range(1, nj + 1):
        path = _part_path(out_dir, j, nj)
        again = f"asr-kd gmm align ... --out-dir {out_dir} --job {j}/{nj}"
        if not path.is_file():
            raise UserError(f"{path} not found: run part {j} of {nj} first ({again})")
        if not outputs_fresh([path], [args.cuts, *inputs]):
            raise UserError(f"{path} is older than {' or '.join(str(i) for i in [args.cuts, *inputs])}: "
                            f"rerun part {j} of {nj} ({again} --force)")
        d = torch.load(path, map_location="cpu", weights_only=False)  # our own file: numpy arrays inside
        if (d["job"], d["nj"]) != (j, nj):
            raise UserError(f"{path} holds part {d['job']}/{d['nj']}, not {j}/{nj}")
        alis.update((u, Alignment.from_arrays(a)) for u, a in d["alis"].items())
        found.update(d["failures"])
        rejected.update(d["rejected"])
        secs.append(d["align_seconds"])
        utts.update(d["utts"])
    return alis, found, rejected, secs, utts | set(rejected)


def _train_or_align(args, step, lang, out_dir, inputs) -> int:
    from asr_kd.hmm.jobs import JOB_CPU, GmmJobs, peak_rss_jobs_mb, start_jobs
    from asr_kd.hmm.output import load_alignments, save_alignments, save_model_dir, senone_priors, write_ctm
    from asr_kd.utils import load_cuts, outputs_fresh, write_json

    if outputs_fresh([out_dir / ("final.mdl" if step != "align" else "ali.pt")], [args.cuts, *inputs]) and not args.force:
        logger.info("%s is done and newer than its inputs; skipping (use --force to redo)", out_dir)
        return 0
    t0 = time.time()
    if args.nj > 1 and not getattr(args, "merge_jobs", 0):
        start_jobs(args.nj)  # they start up while the features load
    prev = None if step == "mono" else load_model_checked(args.ali_dir if step == "tri" else args.model_dir,
                                                          args.lang_dir)
    if step == "align" and args.merge_jobs:
        cuts = load_cuts(args.cuts, "run the fbank stage first")
        texts = [c.id for c in (cuts.subset(first=args.max_utts) if args.max_utts else cuts)]
        alis, found, rejected, job_secs, covered = _merge_parts(args, out_dir, inputs, args.merge_jobs)
        if covered != set(texts):
            raise UserError(f"the {args.merge_jobs} parts in {out_dir}/split{args.merge_jobs} hold {len(covered)} "
                            f"utterances, {args.cuts} has {len(texts)}: run the parts with the same --cuts and "
                            "--max-utts as the merge")
        failures = {u: found.get(u, "no features") for u in texts if u not in alis}
        secs = sum(job_secs)
        extra = {"nj": args.merge_jobs, "job_align_seconds": [round(v, 2) for v in job_secs]}
    else:
        cuts, feats, texts, rejected = load_data(args.cuts, args.max_utts)
    from asr_kd.hmm.train import train_mono, train_tri

    if step == "mono":
        model, alis, failures, history = train_mono(lang, feats, texts, _train_opts(args), args.num_states,
                                                    args.num_sil_states, args.device, args.progress, args.nj)
        extra = {}
    elif step == "tri":
        prev_alis = load_alignments(_need(Path(args.ali_dir) / "ali.pt", "train the monophone system first"))
        prev_alis = {u: a for u, a in prev_alis.items() if u in feats and feats[u].shape[0] == a.num_frames}
        model, alis, failures, history, extra = train_tri(prev, prev_alis, feats, texts, lang, args.num_leaves,
                                                          _train_opts(args), args.min_leaf_count, args.device,
                                                          args.progress, args.nj)
        extra = {"tree": extra}
    else:  # align
        model = prev
        if not args.merge_jobs:
            t1 = time.time()
            with GmmJobs(feats, texts, lang, model.ctx, _align_opts(args), args.nj, args.device,
                         block_frames=ALIGN_BLOCK_FRAMES, progress=True) as jobs:
                alis, failures = jobs.align(model.gmm, model.trans)
            secs = time.time() - t1
            extra = {"nj": args.nj}
            if args.nj > 1:
                extra.update(peak_rss_mb_jobs=peak_rss_jobs_mb(), **_job_cpu(JOB_CPU))
        failures.update({u: r for u, r in rejected.items()})
        frames = sum(a.num_frames for a in alis.values())
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "ali.pt").unlink(missing_ok=True)  # the step's marker: goes first, comes back last
        write_json(out_dir / "ali_failures.json", failures)
        write_json(out_dir / "priors.json", senone_priors(alis, model.ctx.num_pdfs))
        write_ctm(out_dir / "phones.ctm", alis, lang.phone_names)
        write_json(out_dir / "summary.json", {
            "model": str(args.model_dir), "utts": len(texts), "utts_aligned": len(alis), "utts_failed": len(failures),
            "loglike_per_frame": sum(a.loglike for a in alis.values()) / max(frames, 1),
            "align_seconds": secs, "real_time_factor": secs / max(frames * 0.01, 1e-9),
            "peak_rss_mb": _peak_rss_mb(), **extra})
        save_alignments(out_dir / "ali.pt", alis)
        return 0
    failures.update({u: r for u, r in rejected.items()})
    extra["seconds"] = round(time.time() - t0, 1)
    extra["peak_rss_mb"] = _peak_rss_mb()
    extra["nj"] = args.nj
    if args.nj > 1:
        extra.update(peak_rss_mb_jobs=peak_rss_jobs_mb(), **_job_cpu(JOB_CPU))
    extra["frames"] = int(sum(f.shape[0] for f in feats.values()))
    model.info = model_info(cuts, args.cuts, args.lang_dir)
    extra["train_cuts"] = model.info["train_cuts"]
    save_model_dir(out_dir, model, alis, failures, history, lang, extra)
    logger.info("%s: %d/%d utterances aligned, %d pdfs, %d Gaussians (%.0f s)", out_dir, len(alis), len(texts),
                model.ctx.num_pdfs, model.gmm.total_gauss(), time.time() - t0)
    return 0


def _job_cpu(cpu: dict) -> dict:
    """The jobs' CPU seconds in all and on the critical path (asr_kd.hmm.jobs.JOB_CPU)."""
    return {"jobs_cpu_s": round(cpu["cpu_s"], 2), "jobs_critical_cpu_s": round(cpu["critical_cpu_s"], 2)}


def _report(args) -> int:
    """Rows for the 'gmm' table: per system, aligned fraction, final and per-pass log-likelihood,
    size, wall time and peak memory (all read from the files the steps wrote)."""
    import json

    from asr_kd.results import update_results

    rows = []
    for d in args.model_dirs:
        d = Path(d)
        summ = json.loads((d / "summary.json").read_text())
        hist = json.loads((d / "history.json").read_text())
        n = summ["utts_aligned"] + summ["utts_failed"]
        system = "gmm-mono" if d.name.startswith("mono") else "gmm-tri"
        rows.append({
            "system": system, "set": "train", "utterances": n, "aligned_pct": 100.0 * summ["utts_aligned"] / max(n, 1),
            "loglike_per_frame": summ["final_loglike_per_frame"], "num_pdfs": summ["num_pdfs"],
            "num_gauss": summ["num_gauss"], "seconds": summ.get("seconds"), "peak_rss_mb": summ.get("peak_rss_mb"),
            "loglike_per_pass": " ".join(f"{h['loglike_per_frame']:.1f}" for h in hist if h["realigned"] or h["iter"] == 0),
            "exp_dir": str(d), "command": args.command,
        })
    for spec in args.align_dirs:
        system, set_, d = spec.split(":", 2)
        summ = json.loads((Path(d) / "summary.json").read_text())
        rows.append({
            "system": system, "set": set_, "utterances": summ["utts"],
            "aligned_pct": 100.0 * summ["utts_aligned"] / max(summ["utts"], 1),
            "loglike_per_frame": summ["loglike_per_frame"], "align_rtf": summ["real_time_factor"],
            "peak_rss_mb": summ.get("peak_rss_mb"), "exp_dir": str(d), "command": args.command,
        })
    secs = [r.get("seconds") for r in rows if r["set"] == "train"]
    if secs and all(v is not None for v in secs):
        rows.append({"system": "gmm-pipeline", "set": "train", "seconds": float(sum(secs)),
                     "peak_rss_mb": max((r.get("peak_rss_mb") or 0.0) for r in rows),
                     "exp_dir": " ".join(str(d) for d in args.model_dirs), "command": args.command})
    table = "GMM-HMM training and alignment"
    update_results(args.recipe_dir, rows, table=table, notes={
        table: "GMM-HMM systems (asr_kd.hmm): fraction of utterances force-aligned, average per-frame "
               "log-likelihood of the final alignment and per pass (flat start, then each realignment), "
               "wall time and peak memory of the training step on this machine; align_rtf = alignment "
               "seconds per second of audio."})
    return 0


def _kaldi_compare(args) -> int:
    """Two checks on the same features and lexicon (a subset: --max-utts): (1) Kaldi aligns with
    our monophone model, which isolates the aligner and graphs; (2) Kaldi and we each train a
    monophone system from a flat start with the same schedule, and the alignments are compared."""
    from asr_kd.hmm.align import ForcedAligner
    from asr_kd.hmm.kaldi_peer import compare, run_kaldi_mono
    from asr_kd.hmm.lang_io import LangInfo
    from asr_kd.hmm.train import train_mono
    from asr_kd.utils import write_json

    lang = LangInfo.load(args.lang_dir)
    model = load_model_checked(args.model_dir, args.lang_dir)
    cuts, feats, texts, rejected = load_data(args.cuts, args.max_utts)
    texts = {u: w for u, w in texts.items() if u in feats}
    if model.ctx.to_dict()["type"] != "monophone":
        raise SystemExit(f"{args.model_dir} is not a monophone model")
    ours, _ = ForcedAligner(model.gmm, model.ctx, model.trans, lang, _align_opts(args)).align(feats, texts)
    same = compare(ours, run_kaldi_mono(feats, texts, args.lang_dir, args.peer_path, model=model))
    opts = _train_opts(args)
    topo = model.trans.topo.num_states
    t0 = time.time()
    _, ours2, _, hist = train_mono(lang, feats, texts, opts, min(topo.values()), max(topo.values()))
    ours_s = time.time() - t0
    t0 = time.time()
    kaldi = run_kaldi_mono(feats, texts, args.lang_dir, args.peer_path, opts.num_iters, opts.realign_iters,
                           opts.max_gauss, opts.max_iter_inc, min(topo.values()), max(topo.values()))
    kaldi_s = time.time() - t0
    indep = compare(ours2, kaldi)
    indep["our_history"] = [{"iter": h["iter"], "loglike_per_frame": h["loglike_per_frame"],
                             "num_gauss": h["num_gauss"]} for h in hist]
    indep["seconds_ours"], indep["seconds_kaldi"] = round(ours_s, 1), round(kaldi_s, 1)
    report = {"cuts": str(args.cuts), "utts": len(texts), "same_model": same, "independent_training": indep}
    write_json(args.out, report)
    logger.info("same model: phone agreement %.4f, loglike/frame ours %.3f kaldi %.3f",
                same["phone_agreement"], same["loglike_per_frame_ours"], same["loglike_per_frame_kaldi"])
    logger.info("independent training: phone agreement %.4f, loglike/frame ours %.3f kaldi %.3f",
                indep["phone_agreement"], indep["loglike_per_frame_ours"], indep["loglike_per_frame_kaldi"])
    return 0
