"""Monophone and triphone GMM-HMM training (Kaldi's ``train_mono.sh`` and ``train_deltas.sh``).

Both run the same loop: on the scheduled iterations realign the training data with the current
model (batched forced alignment), accumulate GMM and transition statistics on the fixed
alignment, MLE-update both, and mix up towards the target number of Gaussians. Realignment and
accumulation (the E-step) run in ``nj`` jobs (:mod:`asr_kd.hmm.jobs`; the same model for any
``nj``); the update, the mixing up and the tree are done here.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from asr_kd.config import option
from asr_kd.hmm.align import AlignOpts, Alignment, equal_align_transcript
from asr_kd.hmm.gmm import DiagGmmSet, global_mean_var
from asr_kd.hmm.graph import AlignError
from asr_kd.hmm.jobs import BLOCK_FRAMES, GmmJobs
from asr_kd.hmm.lang_info import LangInfo
from asr_kd.hmm.topology import HmmTopology, TransitionModel
from asr_kd.hmm.tree import DecisionTree, MonophoneContext, TreeStats, build_tree, cluster_phones, leaf_stats
from asr_kd.utils import atomic_path

logger = logging.getLogger(__name__)


@dataclass
class GmmHmm:
    """An acoustic model: context dependency (tree), transition model and GMMs.

    ``info`` records how it was made (``asr_kd.model_info``): ``features`` (sampling rate, fbank
    and MFCC settings), ``phones`` (the phone set of its lang) and ``train_cuts``; empty for models
    trained before it was saved."""

    ctx_dep: object
    trans: TransitionModel
    gmm: DiagGmmSet
    info: dict = field(default_factory=dict)

    def save(self, path) -> None:
        with atomic_path(path) as tmp:
            torch.save({"gmm": self.gmm.state_dict(), "trans": self.trans.to_dict(), "ctx": self.ctx_dep.to_dict(),
                        "info": self.info}, tmp)

    @classmethod
    def load(cls, path) -> "GmmHmm":
        d = torch.load(path, map_location="cpu", weights_only=False)  # torch >= 2.6 defaults to True
        trans = TransitionModel.from_dict(d["trans"])
        ctx_dep = context_from_dict(d["ctx"], trans.topo)
        return cls(ctx_dep, trans, DiagGmmSet.from_state_dict(d["gmm"]), d.get("info", {}))


def context_from_dict(d: dict, topo: HmmTopology):
    if d["type"] == "monophone":
        return MonophoneContext(topo)
    return DecisionTree.from_dict(d)


@dataclass
class TrainOpts:
    """How a GMM-HMM system is trained; ``asr-kd gmm mono|tri|kaldi-compare`` make a flag of each
    field that has one (help as below), with the defaults of their schedule (:data:`MONO_SCHEDULE`,
    :data:`TRI_SCHEDULE`, :data:`KALDI_COMPARE_SCHEDULE`)."""

    # The defaults are the monophone schedule: lighter than Kaldi's train_mono.sh (40 iterations,
    # 25 realignments), 14 realignments in 30 iterations, which is what the speechocean762 numbers used.
    num_iters: int = option(30, "EM iterations (after the initial pass)")
    realign_iters: Tuple[int, ...] = option((1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 19, 22, 25, 28),
                                            "comma-separated iterations that realign")
    init_gauss: Optional[int] = option(None, "Gaussians to start from (default: one per pdf)", flag=False)
    max_gauss: int = option(1000, "target total number of Gaussians")
    max_iter_inc: int = option(20, "iteration by which max-gauss is reached")
    random_flat_start: bool = option(False, "Kaldi's random-path equal alignment instead of silence at both ends")
    power: float = option(0.2, "mixing up: Gaussians per pdf in proportion to its occupancy to this power",
                          flag=False)
    perturb: float = option(0.01, "mixing up: a split Gaussian's halves move +-this many standard deviations",
                            flag=False)
    min_gaussian_occupancy: float = option(10.0, "update: Gaussians with less occupancy keep their means and "
                                                 "variances", flag=False)
    var_floor_factor: float = option(0.01, "variance floor, as a factor of the global variance", flag=False)
    acc_block_frames: int = option(BLOCK_FRAMES, "frames per block of statistics accumulation: the unit the jobs "
                                                 "share out and the fixed order the blocks are summed in (the model "
                                                 "depends on it, not on --nj)")
    align: AlignOpts = option(default_factory=AlignOpts, help="realignment", flag=False)


# Per-step schedules (the defaults of asr-kd gmm mono, tri and kaldi-compare).
MONO_SCHEDULE = TrainOpts()
TRI_SCHEDULE = TrainOpts(num_iters=25, realign_iters=(10, 15, 20), max_gauss=10000, max_iter_inc=20)
# kaldi-compare: both flat-start trainings of the peer check (ours and Kaldi's), shorter
KALDI_COMPARE_SCHEDULE = TrainOpts(num_iters=20, realign_iters=(1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 18),
                                   max_gauss=300, max_iter_inc=15)


def train_gmm_hmm(
    model: GmmHmm,
    feats: Dict[str, np.ndarray],
    texts: Dict[str, Sequence[str]],
    lang: LangInfo,
    alis: Dict[str, Alignment],
    opts: TrainOpts,
    device="cpu",
    progress: bool = False,
    nj: int = 1,
) -> Tuple[GmmHmm, Dict[str, Alignment], Dict[str, str], List[dict]]:
    """Run the EM loop from the alignment ``alis`` (equal or from a previous model), the E-step in
    ``nj`` jobs (:class:`~asr_kd.hmm.jobs.GmmJobs`: the same result for any ``nj``).

    Returns the model, the last alignment, the utterances left out (with reasons) and a
    per-iteration history (average per-frame log-likelihood, Gaussians, aligned fraction)."""
    history: List[dict] = []
    failures: Dict[str, str] = {}
    allx = torch.from_numpy(np.concatenate([feats[u] for u in texts if u in feats]))
    _, gvar = global_mean_var(allx)
    var_floor = opts.var_floor_factor * gvar
    del allx
    cur_gauss = model.gmm.total_gauss()
    inc = max(0, (opts.max_gauss - cur_gauss)) / max(1, opts.max_iter_inc)
    realign_at = set(opts.realign_iters)
    with GmmJobs(feats, texts, lang, model.ctx_dep, opts.align, nj, device, opts.acc_block_frames, alis,
                 progress) as jobs:
        for it in range(0, opts.num_iters + 1):
            t0 = time.time()
            realigned = it > 0 and it in realign_at
            e = jobs.estep(model.gmm, model.trans, realign=realigned)
            if realigned:  # the jobs keep the new alignment; the final one is returned below
                failures = e.failures
            if e.frames == 0:
                raise RuntimeError("no utterance could be aligned; nothing to train on")
            accs = e.accs
            stats = model.gmm.update(accs, var_floor=var_floor, min_gaussian_occupancy=opts.min_gaussian_occupancy)
            trans_obj = model.trans.update(e.taccs)
            if it < opts.max_iter_inc or model.gmm.total_gauss() < opts.max_gauss:
                target = min(opts.max_gauss, int(cur_gauss + inc))
                cur_gauss = model.gmm.split(target, accs.pdf_occupancy(), power=opts.power, perturb=opts.perturb)
            row = {
                "iter": it, "realigned": realigned, "frames": e.frames,
                "loglike_per_frame": e.loglike / e.frames, "transition_obj_per_frame": trans_obj,
                "num_gauss": model.gmm.total_gauss(), "num_pdfs": model.gmm.num_pdfs,
                "utts_aligned": e.utts, "utts_failed": len(failures), "seconds": round(time.time() - t0, 2),
                **stats,
            }
            history.append(row)
            logger.info("iter %d%s: loglike/frame %.3f over %d frames, %d Gaussians, %d/%d utts aligned",
                        it, " (realigned)" if realigned else "", row["loglike_per_frame"], row["frames"],
                        row["num_gauss"], e.utts, len(texts))
        # final alignment with the final model
        alis, failures = jobs.align(model.gmm, model.trans)
    return model, alis, failures, history


def init_monophone(lang: LangInfo, feats: Dict[str, np.ndarray], num_states: int = 3,
                   num_sil_states: int = 5) -> GmmHmm:
    """Flat start: every pdf one Gaussian with the global mean and variance (``gmm-init-mono``)."""
    topo = HmmTopology.build(lang.real_phones, lang.silence_phones, num_states, num_sil_states)
    ctx_dep = MonophoneContext(topo)
    allx = torch.from_numpy(np.concatenate(list(feats.values())))
    mean, var = global_mean_var(allx)
    return GmmHmm(ctx_dep, TransitionModel.init(topo), DiagGmmSet.single_gaussian(mean, var, ctx_dep.num_pdfs))


def equal_align_all(model: GmmHmm, feats, texts, lang: LangInfo, map_oov: bool = True,
                    random_path: bool = False, seed: int = 0):
    alis, failures = {}, {}
    for i, (utt, words) in enumerate(texts.items()):
        rng = np.random.RandomState(seed + i) if random_path else None
        if utt not in feats:
            failures[utt] = "no features"
            continue
        try:
            alis[utt] = equal_align_transcript(feats[utt].shape[0], words, lang, model.ctx_dep, model.trans.topo,
                                               map_oov, rng)
        except AlignError as e:
            failures[utt] = str(e)
    return alis, failures


def train_mono(lang: LangInfo, feats, texts, opts: Optional[TrainOpts] = None, num_states: int = 3,
               num_sil_states: int = 5, device="cpu", progress: bool = False, nj: int = 1):
    """Monophone system from a flat start (E-step in ``nj`` jobs); returns ``(model, alignments,
    failures, history)``."""
    opts = opts or TrainOpts()
    model = init_monophone(lang, {u: feats[u] for u in texts if u in feats}, num_states, num_sil_states)
    alis, failures = equal_align_all(model, feats, texts, lang, opts.align.map_oov, opts.random_flat_start)
    if failures:
        logger.warning("equal alignment left out %d utterances", len(failures))
    return train_gmm_hmm(model, feats, texts, lang, alis, opts, device, progress, nj)


def convert_alignment(ali: Alignment, ctx_dep) -> Alignment:
    """Same state sequence, pdf-ids from another context dependency (Kaldi's ``convert-ali``)."""
    left, right = ali.contexts()
    cache: Dict[tuple, int] = {}
    pdfs = np.empty(ali.num_frames, dtype=np.int32)
    for t, key in enumerate(zip(left.tolist(), ali.phones.tolist(), right.tolist(), ali.states.tolist())):
        v = cache.get(key)
        if v is None:
            v = cache[key] = ctx_dep.pdf(*key)
        pdfs[t] = v
    return Alignment(pdfs, ali.phones, ali.states, ali.phone_start, ali.loglike)


def train_tri(
    prev: GmmHmm,
    alis: Dict[str, Alignment],
    feats: Dict[str, np.ndarray],
    texts: Dict[str, Sequence[str]],
    lang: LangInfo,
    num_leaves: int = 2000,
    opts: Optional[TrainOpts] = None,
    min_leaf_count: float = 100.0,
    device="cpu",
    progress: bool = False,
    nj: int = 1,
):
    """Triphone system with decision-tree state tying, from a previous model's alignment (E-step
    in ``nj`` jobs; the tree is built here).

    Returns ``(model, alignments, failures, history, tree_summary)``."""
    opts = opts or TRI_SCHEDULE
    topo = prev.trans.topo
    t0 = time.time()
    tstats = TreeStats.accumulate(alis, feats).context_independent(lang.silence_phones)
    allx = torch.from_numpy(np.concatenate([feats[u] for u in alis]))
    gmean, gvar = global_mean_var(allx)
    del allx
    var_floor = (opts.var_floor_factor * gvar).numpy()
    max_states = max(topo.num_states.values())
    questions = cluster_phones(tstats, topo.phones, var_floor, max_states)
    questions += [[0], sorted({0, *lang.silence_phones})]
    tree, summary = build_tree(tstats, topo, num_leaves, questions, min_count=min_leaf_count,
                               var_floor=var_floor)
    summary["num_questions"] = len(questions)
    summary["seconds"] = round(time.time() - t0, 2)
    logger.info("tree: %d leaves from %d seen contexts, likelihood gain %.3f per frame (%.1f s)",
                tree.num_pdfs, summary["num_contexts_seen"], summary["gain_per_frame"], summary["seconds"])
    # tied GMMs: one Gaussian per leaf from the pooled statistics (Kaldi's gmm-init-model)
    ls = torch.from_numpy(leaf_stats(tree, tstats))
    D = tstats.dim
    n = ls[:, :1]
    has = n[:, 0] > 0
    mean = torch.where(has[:, None], ls[:, 1 : 1 + D] / n.clamp_min(1e-10), gmean[None])
    var = torch.where(has[:, None], ls[:, 1 + D :] / n.clamp_min(1e-10) - mean**2, gvar[None])
    var = torch.maximum(var, torch.from_numpy(var_floor)[None]).clamp_min(1e-3)
    gmm = DiagGmmSet(mean[:, None, :], var[:, None, :], torch.zeros(tree.num_pdfs, 1, dtype=torch.float64))
    trans = TransitionModel.from_dict(prev.trans.to_dict())
    model = GmmHmm(tree, trans, gmm)
    conv = {u: convert_alignment(a, tree) for u, a in alis.items()}
    model, alis, failures, history = train_gmm_hmm(model, feats, texts, lang, conv, opts, device, progress, nj)
    return model, alis, failures, history, summary
