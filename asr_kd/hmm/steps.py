"""The steps of ``asr-kd gmm`` as functions, one per step (Kaldi's ``steps/train_mono.sh``,
``train_deltas.sh``, ``align_si.sh``...): the command parses its options and calls one of them,
and a Python user calls them with the same effect.

- :func:`train_mono_step`: a monophone system from a flat start, into a model directory
  (``final.mdl``, ``tree.json``, ``transitions.json``, ``ali.pt``, ``priors.json``, ``phones.ctm``,
  ``history.json``, ``summary.json``: :func:`asr_kd.hmm.alignments.save_model_dir`).
- :func:`train_tri_step`: a triphone system tied by a decision tree, from a model directory's
  alignment.
- :func:`align_step`: forced alignment of cuts with a trained model (``ali.pt``, ``priors.json``,
  ``phones.ctm``, ``ali_failures.json``, ``summary.json``); ``job="J/N"`` aligns part J of the
  ``nj=N`` split into ``OUT_DIR/splitN/ali.J.pt`` and ``merge_jobs=N`` writes the outputs of
  ``nj=N`` from the N parts.
- :func:`senone_labels_step`: cuts with a per-frame ``senone`` label from an alignment.
- :func:`ctm_step`: the phone-level CTM of an alignment.
- :func:`report_step`: the GMM rows of a recipe's ``RESULTS.md`` / ``results.json``.
- :func:`kaldi_compare_step`: the peer check against Kaldi's own monophone training.

``nj`` (mono, tri, align) splits the utterances over that many spawned one-thread jobs
(:mod:`asr_kd.hmm.jobs`): the same model and alignment as ``nj=1``, bit for bit.

Every step skips its work when its outputs exist and are newer than its inputs (``force=True``
redoes it) and writes atomically. The file the skip looks at (``final.mdl`` of mono and tri,
``ali.pt`` of align, the ``out_cuts`` manifest of labels) is removed before a redo rewrites anything
and written last, so a redo killed halfway is redone by the next run. A second mono, tri or align
into the same directory while one runs fails at once. ``final.mdl`` records the model's feature
settings (sampling rate, fbank, MFCC) and the phone set of its lang; a step that uses a model with
a lang directory refuses a lang with other phones.
"""
from __future__ import annotations

import json
import logging
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from asr_kd.hmm import alignments
from asr_kd.hmm.align import AlignOpts, Alignment, ForcedAligner
from asr_kd.hmm.features import FeatureOpts, features_from_cuts
from asr_kd.hmm.jobs import JOB_CPU, GmmJobs, peak_rss_jobs_mb, start_jobs
from asr_kd.hmm.kaldi_peer import compare, run_kaldi_mono
from asr_kd.hmm.lang_info import LangInfo
from asr_kd.hmm.train import GmmHmm, TrainOpts, train_mono, train_tri
from asr_kd.model_info import check_phones, feature_config, phone_table
from asr_kd.results import update_results
from asr_kd.utils import (
    Pathlike, UserError, atomic_path, error_text, load_cuts, outputs_fresh, training_lock, write_json,
)

logger = logging.getLogger(__name__)

# Alignment alone sums no statistics: one utterance per block, so that the parts balance on any
# set. job="J/N" splits as nj=N does.
ALIGN_BLOCK_FRAMES = 1


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def load_data(cuts_path: Pathlike, max_utts: int = 0):
    """Cuts, features (MFCC + CMVN + deltas), transcripts and feature rejections."""
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


def model_info(cuts, cuts_path: Pathlike, lang_dir: Pathlike) -> dict:
    """What final.mdl records of how the model was made (see asr_kd.model_info)."""
    rates = sorted({c.sampling_rate for c in cuts})
    if len(rates) != 1:
        raise ValueError(f"{cuts_path}: cuts at several sampling rates {rates}; a model is trained at one")
    return {"features": feature_config(rates[0], asdict(FeatureOpts())), "phones": phone_table(lang_dir),
            "train_cuts": str(Path(cuts_path).resolve())}


def load_model_checked(model_dir: Pathlike, lang_dir: Pathlike) -> GmmHmm:
    """``model_dir/final.mdl``, after checking that its phone set is the lang's."""
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


def _check_nj(nj: int) -> None:
    if nj < 1:
        raise UserError(f"--nj must be at least 1, not {nj}")


def _jobs_summary(nj: int) -> dict:
    """What summary.json records of ``nj > 1`` jobs: their peak memory, and their CPU seconds in
    all and on the critical path (asr_kd.hmm.jobs.JOB_CPU)."""
    if nj <= 1:
        return {}
    return {"peak_rss_mb_jobs": peak_rss_jobs_mb(), "jobs_cpu_s": round(JOB_CPU["cpu_s"], 2),
            "jobs_critical_cpu_s": round(JOB_CPU["critical_cpu_s"], 2)}


# (lang, previous model or None, features, transcripts) -> (model, alignments, failures, history,
# fields of summary.json)
_Fit = Callable[[LangInfo, Optional[GmmHmm], dict, dict], Tuple[GmmHmm, dict, dict, list, dict]]


def _train_step(lang_dir: Pathlike, cuts: Pathlike, exp_dir: Pathlike, prev_dir: Optional[Pathlike], nj: int,
                max_utts: int, force: bool, fit: _Fit) -> None:
    """What mono and tri share: the skip, the lock, the data, the model directory."""
    lang = LangInfo.load(lang_dir)
    exp_dir = Path(exp_dir)
    # Redone when what it was made from is newer: the monophone alignment for tri.
    inputs = [Path(prev_dir) / "ali.pt"] if prev_dir is not None else []
    _check_nj(nj)
    with training_lock(exp_dir):
        if outputs_fresh([exp_dir / "final.mdl"], [cuts, *inputs]) and not force:
            logger.info("%s is done and newer than its inputs; skipping (use --force to redo)", exp_dir)
            return
        t0 = time.time()
        if nj > 1:
            start_jobs(nj)  # they start up while the features load
        prev = None if prev_dir is None else load_model_checked(prev_dir, lang_dir)
        cut_set, feats, texts, rejected = load_data(cuts, max_utts)
        model, alis, failures, history, summary = fit(lang, prev, feats, texts)
        failures.update({u: r for u, r in rejected.items()})
        summary["seconds"] = round(time.time() - t0, 1)
        summary["peak_rss_mb"] = peak_rss_mb()
        summary["nj"] = nj
        summary.update(_jobs_summary(nj))
        summary["frames"] = int(sum(f.shape[0] for f in feats.values()))
        model.info = model_info(cut_set, cuts, lang_dir)
        summary["train_cuts"] = model.info["train_cuts"]
        alignments.save_model_dir(exp_dir, model, alis, failures, history, lang, summary)
        logger.info("%s: %d/%d utterances aligned, %d pdfs, %d Gaussians (%.0f s)", exp_dir, len(alis), len(texts),
                    model.ctx_dep.num_pdfs, model.gmm.total_gauss(), time.time() - t0)


def train_mono_step(lang_dir: Pathlike, cuts: Pathlike, exp_dir: Pathlike, opts: TrainOpts, num_states: int = 3,
                    num_sil_states: int = 5, *, nj: int = 1, device: str = "cpu", progress: bool = False,
                    max_utts: int = 0, force: bool = False) -> None:
    """``asr-kd gmm mono``: a monophone system from a flat start on ``cuts`` (fbank cuts with
    transcripts; the first ``max_utts`` if non-zero), written to ``exp_dir``."""
    def fit(lang, prev, feats, texts):
        model, alis, failures, history = train_mono(lang, feats, texts, opts, num_states, num_sil_states, device,
                                                    progress, nj)
        return model, alis, failures, history, {}

    _train_step(lang_dir, cuts, exp_dir, None, nj, max_utts, force, fit)


def train_tri_step(lang_dir: Pathlike, cuts: Pathlike, ali_dir: Pathlike, exp_dir: Pathlike, opts: TrainOpts,
                   num_leaves: int = 2000, min_leaf_count: float = 100.0, *, nj: int = 1, device: str = "cpu",
                   progress: bool = False, max_utts: int = 0, force: bool = False) -> None:
    """``asr-kd gmm tri``: a triphone system with ``num_leaves`` tied states, started from the
    model and alignment (``ali.pt``) in ``ali_dir``, written to ``exp_dir``."""
    def fit(lang, prev, feats, texts):
        prev_alis = alignments.load_alignments(_need(Path(ali_dir) / "ali.pt", "train the monophone system first"))
        prev_alis = {u: a for u, a in prev_alis.items() if u in feats and feats[u].shape[0] == a.num_frames}
        model, alis, failures, history, tree = train_tri(prev, prev_alis, feats, texts, lang, num_leaves, opts,
                                                         min_leaf_count, device, progress, nj)
        return model, alis, failures, history, {"tree": tree}

    _train_step(lang_dir, cuts, exp_dir, ali_dir, nj, max_utts, force, fit)


def parse_job(spec: str) -> Tuple[int, int]:
    """``J/N`` -> ``(J, N)`` with ``1 <= J <= N``, or a one-line error."""
    try:
        job, nj = (int(v) for v in spec.split("/"))
    except ValueError:
        raise UserError(f"--job takes J/N (part J of N, 1-based), not {spec!r}") from None
    if not 1 <= job <= nj:
        raise UserError(f"--job {spec}: J must be between 1 and N")
    return job, nj


def part_path(out_dir: Path, job: int, nj: int) -> Path:
    """Where ``job="J/N"`` writes part J of N."""
    return out_dir / f"split{nj}" / f"ali.{job}.pt"


def align_step(lang_dir: Pathlike, cuts: Pathlike, model_dir: Pathlike, out_dir: Pathlike, opts: AlignOpts, *,
               nj: int = 1, job: Optional[str] = None, merge_jobs: int = 0, device: str = "cpu",
               max_utts: int = 0, force: bool = False) -> None:
    """``asr-kd gmm align``: forced-align ``cuts`` with the model in ``model_dir`` into ``out_dir``;
    or, with ``job="J/N"``, only part J of the ``nj=N`` split; or, with ``merge_jobs=N``, write the
    outputs from the N parts."""
    lang = LangInfo.load(lang_dir)
    out_dir = Path(out_dir)
    # Redone when what it was made from is newer: the model.
    inputs = [Path(model_dir) / "final.mdl"]
    _check_nj(nj)
    if job:
        j, n = parse_job(job)
        part = part_path(out_dir, j, n)
        with training_lock(part):  # the other parts run beside it
            _align_part(lang, lang_dir, cuts, model_dir, out_dir, inputs, opts, j, n, part, device, max_utts, force)
        return
    with training_lock(out_dir):
        _align(lang, lang_dir, cuts, model_dir, out_dir, inputs, opts, nj, merge_jobs, device, max_utts, force)


def _align_part(lang, lang_dir, cuts, model_dir, out_dir: Path, inputs, opts: AlignOpts, job: int, nj: int,
                part: Path, device: str, max_utts: int, force: bool) -> None:
    """Part J of the ``nj=N`` split, aligned into ``splitN/ali.J.pt``."""
    if not force:
        if outputs_fresh([out_dir / "ali.pt"], [cuts, *inputs]):
            logger.info("%s is done and newer than its inputs; skipping part %d/%d", out_dir, job, nj)
            return
        if outputs_fresh([part], [cuts, *inputs]):
            logger.info("%s is newer than its inputs; skipping (use --force to redo)", part)
            return
    model = load_model_checked(model_dir, lang_dir)
    _, feats, texts, rejected = load_data(cuts, max_utts)
    parts = GmmJobs.split(feats, texts, nj, block_frames=ALIGN_BLOCK_FRAMES)
    mine = parts[job - 1] if job <= len(parts) else []
    t1 = time.time()
    with GmmJobs({u: feats[u] for u in mine}, {u: texts[u] for u in mine}, lang, model.ctx_dep, opts, 1,
                 device, block_frames=ALIGN_BLOCK_FRAMES) as jobs:
        alis, failures = jobs.align(model.gmm, model.trans)
    secs = time.time() - t1
    part.unlink(missing_ok=True)
    with atomic_path(part) as tmp:
        torch.save({"job": job, "nj": nj, "utts": mine, "alis": {u: a.to_arrays() for u, a in alis.items()},
                    "failures": failures, "rejected": rejected, "align_seconds": secs,
                    "peak_rss_mb": peak_rss_mb()}, tmp)
    logger.info("%s: part %d/%d, %d of %d utterances aligned (%.1f s)", part, job, nj, len(alis), len(mine), secs)


def _merge_parts(cuts, out_dir: Path, inputs, nj: int):
    """The alignments, failures and timings of the N parts written by ``job="J/N"``, checked to be
    all there and newer than their inputs."""
    alis, found, rejected, secs, utts = {}, {}, {}, [], set()
    for j in range(1, nj + 1):
        path = part_path(out_dir, j, nj)
        again = f"asr-kd gmm align ... --out-dir {out_dir} --job {j}/{nj}"
        if not path.is_file():
            raise UserError(f"{path} not found: run part {j} of {nj} first ({again})")
        if not outputs_fresh([path], [cuts, *inputs]):
            raise UserError(f"{path} is older than {' or '.join(str(i) for i in [cuts, *inputs])}: "
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


def _align(lang, lang_dir, cuts, model_dir, out_dir: Path, inputs, opts: AlignOpts, nj: int, merge_jobs: int,
           device: str, max_utts: int, force: bool) -> None:
    """The alignment of the whole set (in ``nj`` jobs, or merged from ``merge_jobs`` parts)."""
    if outputs_fresh([out_dir / "ali.pt"], [cuts, *inputs]) and not force:
        logger.info("%s is done and newer than its inputs; skipping (use --force to redo)", out_dir)
        return
    if nj > 1 and not merge_jobs:
        start_jobs(nj)  # they start up while the features load
    model = load_model_checked(model_dir, lang_dir)
    if merge_jobs:
        cut_set = load_cuts(cuts, "run the fbank stage first")
        utts = [c.id for c in (cut_set.subset(first=max_utts) if max_utts else cut_set)]
        alis, found, rejected, job_secs, covered = _merge_parts(cuts, out_dir, inputs, merge_jobs)
        if covered != set(utts):
            raise UserError(f"the {merge_jobs} parts in {out_dir}/split{merge_jobs} hold {len(covered)} "
                            f"utterances, {cuts} has {len(utts)}: run the parts with the same --cuts and "
                            "--max-utts as the merge")
        failures = {u: found.get(u, "no features") for u in utts if u not in alis}
        secs = sum(job_secs)
        jobs_summary = {"nj": merge_jobs, "job_align_seconds": [round(v, 2) for v in job_secs]}
    else:
        _, feats, texts, rejected = load_data(cuts, max_utts)
        utts = list(texts)
        t1 = time.time()
        with GmmJobs(feats, texts, lang, model.ctx_dep, opts, nj, device, block_frames=ALIGN_BLOCK_FRAMES,
                     progress=True) as jobs:
            alis, failures = jobs.align(model.gmm, model.trans)
        secs = time.time() - t1
        jobs_summary = {"nj": nj, **_jobs_summary(nj)}
    failures.update({u: r for u, r in rejected.items()})
    write_align_dir(out_dir, alis, failures, len(utts), str(model_dir), model.ctx_dep.num_pdfs, lang.phone_names,
                    secs, jobs_summary)


def write_align_dir(out_dir: Path, alis, failures: dict, num_utts: int, model: str, num_pdfs: int, phone_names,
                    secs: float, extra: Optional[dict] = None) -> None:
    """An alignment directory, as ``asr-kd gmm labels`` and ``asr-kd gmm ctm`` read it: ``ali.pt``
    (written last: it marks the step done), ``ali_failures.json``, ``priors.json`` (label counts),
    ``phones.ctm`` and ``summary.json``."""
    frames = sum(a.num_frames for a in alis.values())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ali.pt").unlink(missing_ok=True)  # the step's marker: goes first, comes back last
    write_json(out_dir / "ali_failures.json", failures)
    write_json(out_dir / "priors.json", alignments.senone_priors(alis, num_pdfs))
    alignments.write_ctm(out_dir / "phones.ctm", alis, phone_names)
    write_json(out_dir / "summary.json", {
        "model": model, "utts": num_utts, "utts_aligned": len(alis), "utts_failed": len(failures),
        "loglike_per_frame": sum(a.loglike for a in alis.values()) / max(frames, 1),
        "align_seconds": secs, "real_time_factor": secs / max(frames * 0.01, 1e-9),
        "peak_rss_mb": peak_rss_mb(), **(extra or {})})
    alignments.save_alignments(out_dir / "ali.pt", alis)


def senone_labels_step(cuts: Pathlike, ali_dir: Pathlike, out_cuts: Pathlike, storage_dir: Optional[Pathlike] = None,
                       force: bool = False) -> None:
    """``asr-kd gmm labels``: ``cuts`` with a ``senone`` TemporalArray (the pdf-id of each fbank
    frame, from ``ali_dir/ali.pt``) written to ``out_cuts``; the label arrays go to ``storage_dir``
    (default: ``<out_cuts without suffixes>_senone`` beside it)."""
    if outputs_fresh([out_cuts], [Path(ali_dir) / "ali.pt", cuts]) and not force:
        logger.info("%s is newer than its alignment; skipping (use --force to redo)", out_cuts)
        return
    cut_set = load_cuts(cuts, "run the fbank stage first")
    alis = alignments.load_alignments(_need(Path(ali_dir) / "ali.pt", "train or align the GMM system first"))
    # the old manifest goes before its label arrays are overwritten; the new one comes last
    Path(out_cuts).unlink(missing_ok=True)
    storage = storage_dir or str(Path(out_cuts).parent / (Path(out_cuts).name.split(".")[0] + "_senone"))
    out, counts = alignments.attach_senones(cut_set, alis, storage)
    with atomic_path(out_cuts) as tmp:
        out.to_file(tmp)
    logger.info("senone labels: %s", counts)


def ctm_step(lang_dir: Pathlike, ali_dir: Pathlike, out: Pathlike) -> None:
    """``asr-kd gmm ctm``: the phone-level CTM of ``ali_dir/ali.pt`` (a model or align directory)."""
    lang = LangInfo.load(lang_dir)
    if (Path(ali_dir) / "final.mdl").is_file():  # a model dir (an align dir has no model)
        load_model_checked(ali_dir, lang_dir)
    alignments.write_ctm(out, alignments.load_alignments(Path(ali_dir) / "ali.pt"), lang.phone_names)


def report_step(recipe_dir: Pathlike, model_dirs: Sequence[Pathlike], align_dirs: Sequence[str], command: str) -> None:
    """``asr-kd gmm report``: rows for the 'gmm' table of ``recipe_dir``'s RESULTS.md and
    results.json: per system, aligned fraction, final and per-pass log-likelihood, size, wall time
    and peak memory (all read from the files the steps wrote). ``align_dirs`` are
    ``SYSTEM:SET:DIR`` of align outputs; ``command`` is the one that produced the numbers."""
    rows: List[Dict] = []
    for d in model_dirs:
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
            "exp_dir": str(d), "command": command,
        })
    for spec in align_dirs:
        system, set_, d = spec.split(":", 2)
        summ = json.loads((Path(d) / "summary.json").read_text())
        rows.append({
            "system": system, "set": set_, "utterances": summ["utts"],
            "aligned_pct": 100.0 * summ["utts_aligned"] / max(summ["utts"], 1),
            "loglike_per_frame": summ["loglike_per_frame"], "align_rtf": summ["real_time_factor"],
            "peak_rss_mb": summ.get("peak_rss_mb"), "exp_dir": str(d), "command": command,
        })
    secs = [r.get("seconds") for r in rows if r["set"] == "train"]
    if secs and all(v is not None for v in secs):
        rows.append({"system": "gmm-pipeline", "set": "train", "seconds": float(sum(secs)),
                     "peak_rss_mb": max((r.get("peak_rss_mb") or 0.0) for r in rows),
                     "exp_dir": " ".join(str(d) for d in model_dirs), "command": command})
    table = "GMM-HMM training and alignment"
    update_results(recipe_dir, rows, table=table, notes={
        table: "GMM-HMM systems (asr_kd.hmm): fraction of utterances force-aligned, average per-frame "
               "log-likelihood of the final alignment and per pass (flat start, then each realignment), "
               "wall time and peak memory of the training step on this machine; align_rtf = alignment "
               "seconds per second of audio."})


def kaldi_compare_step(lang_dir: Pathlike, cuts: Pathlike, model_dir: Pathlike, peer_path: Pathlike, out: Pathlike,
                       opts: TrainOpts, max_utts: int = 0) -> dict:
    """``asr-kd gmm kaldi-compare``: two checks on the same features and lexicon (the first
    ``max_utts`` cuts): (1) Kaldi aligns with our monophone model in ``model_dir``, which isolates
    the aligner and graphs; (2) Kaldi and we each train a monophone system from a flat start with
    the schedule of ``opts``, and the alignments are compared. Kaldi runs from ``peer_path`` (see
    :mod:`asr_kd.hmm.kaldi_peer`). Writes the report to ``out`` and returns it."""
    lang = LangInfo.load(lang_dir)
    model = load_model_checked(model_dir, lang_dir)
    _, feats, texts, rejected = load_data(cuts, max_utts)
    texts = {u: w for u, w in texts.items() if u in feats}
    if model.ctx_dep.to_dict()["type"] != "monophone":
        raise UserError(f"{model_dir} is not a monophone model")
    ours, _ = ForcedAligner(model.gmm, model.ctx_dep, model.trans, lang, opts.align).align(feats, texts)
    same = compare(ours, run_kaldi_mono(feats, texts, lang_dir, peer_path, model=model))
    topo = model.trans.topo.num_states
    t0 = time.time()
    _, ours2, _, hist = train_mono(lang, feats, texts, opts, min(topo.values()), max(topo.values()))
    ours_s = time.time() - t0
    t0 = time.time()
    kaldi = run_kaldi_mono(feats, texts, lang_dir, peer_path, opts.num_iters, opts.realign_iters,
                           opts.max_gauss, opts.max_iter_inc, min(topo.values()), max(topo.values()))
    kaldi_s = time.time() - t0
    indep = compare(ours2, kaldi)
    indep["our_history"] = [{"iter": h["iter"], "loglike_per_frame": h["loglike_per_frame"],
                             "num_gauss": h["num_gauss"]} for h in hist]
    indep["seconds_ours"], indep["seconds_kaldi"] = round(ours_s, 1), round(kaldi_s, 1)
    report = {"cuts": str(cuts), "utts": len(texts), "same_model": same, "independent_training": indep}
    write_json(out, report)
    logger.info("same model: phone agreement %.4f, loglike/frame ours %.3f kaldi %.3f",
                same["phone_agreement"], same["loglike_per_frame_ours"], same["loglike_per_frame_kaldi"])
    logger.info("independent training: phone agreement %.4f, loglike/frame ours %.3f kaldi %.3f",
                indep["phone_agreement"], indep["loglike_per_frame_ours"], indep["loglike_per_frame_kaldi"])
    return report
