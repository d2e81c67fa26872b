"""Kaldi's ``--nj`` for the GMM steps: the E-step of training and forced alignment split over jobs,
with the result of one job.

The utterances that have features, in sorted order, are cut into *blocks* of about
``block_frames`` frames; the cut depends on the data alone, never on the number of jobs. Job ``j``
of ``nj`` owns a contiguous run of whole blocks holding about ``1/nj`` of the frames
(:func:`plan`). Like a Kaldi job and its ``split$nj/JOB`` directory, it keeps its utterances'
features, transcripts, graph templates and current alignment for the whole run. Each EM iteration
sends it the model and gets back its statistics (and its alignment on the iterations that realign).

Why ``--nj N`` writes the same model and alignment as ``--nj 1``, bit for bit:

- an utterance's alignment depends only on the utterance and the model, not on the batch it is
  aligned in;
- GMM statistics are accumulated per block (float64, the frames in a fixed order), and the
  blocks are summed along a fixed binary tree over the block indices. A job sums the tree nodes
  that tile its run of blocks (:func:`cover`), and the parent completes the tree
  (:func:`tree_sum`). Floating-point addition is not associative, but this fixes the operands
  of every addition whatever the split. Transition statistics are counts (exact in any order).

That holds at one thread per job: MKL's products may depend on the number of threads, so jobs
run one thread each and ``--nj 1`` matches them at ``--num-threads 1`` (the default). The result
does depend on ``block_frames``, which fixes the summation order; it is an option of its own.

Jobs are spawned processes, not forked ones: the parent has threads (torch's, tqdm's), and a
forked child can deadlock on a lock one of them held. Each runs one thread, is killed with its
parent (:func:`asr_kd.utils.die_with_parent`), and sits in a one-worker ``ProcessPoolExecutor`` of
its own, so that its data stays in the process it was sent to. :func:`start_jobs` starts them
ahead, while the caller loads the features. ``nj=1`` runs the same code in this process.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from asr_kd.hmm.align import AlignOpts, Alignment, ForcedAligner, report_failures
from asr_kd.hmm.gmm import DiagGmmSet, GmmAccs
from asr_kd.hmm.lang_info import LangInfo
from asr_kd.hmm.topology import TransitionAccs, TransitionModel
from asr_kd.utils import die_with_parent

logger = logging.getLogger(__name__)

BLOCK_FRAMES = 30000  # frames per accumulation block: a few times the per-pdf loop's overhead, measured


def plan(lengths: Sequence[int], nj: int, block_frames: int = BLOCK_FRAMES
         ) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """``(blocks, parts)`` for utterances of ``lengths`` frames (in their order): blocks as
    ``[start, end)`` utterance ranges, each closed once it holds ``block_frames`` frames; parts as
    ``[first, end)`` block ranges of about equal frames, at most ``nj`` of them, none empty. The
    blocks do not depend on ``nj``."""
    blocks: List[Tuple[int, int]] = []
    start, acc = 0, 0
    for i, n in enumerate(lengths):
        acc += n
        if acc >= block_frames:
            blocks.append((start, i + 1))
            start, acc = i + 1, 0
    if start < len(lengths):
        blocks.append((start, len(lengths)))
    frames = [sum(lengths[s:e]) for s, e in blocks]
    total = max(1, sum(frames))
    n = max(1, min(nj, len(blocks)))
    owners, acc = [], 0
    for f in frames:  # a block goes to the part its middle frame falls in
        owners.append(min(n - 1, int((acc + f / 2) * n // total)))
        acc += f
    parts = []
    for j in range(n):
        idx = [i for i, o in enumerate(owners) if o == j]
        if idx:
            parts.append((idx[0], idx[-1] + 1))
    return blocks, parts


def cover(a: int, b: int, lo: int, hi: int) -> List[Tuple[int, int]]:
    """The largest nodes of the summation tree over blocks ``[lo, hi)`` that tile ``[a, b)``
    (a node ``(l, h)`` has children ``(l, m)`` and ``(m, h)``, ``m = (l + h) // 2``)."""
    if b <= lo or hi <= a or lo >= hi:
        return []
    if a <= lo and hi <= b:
        return [(lo, hi)]
    mid = (lo + hi) // 2
    return cover(a, b, lo, mid) + cover(a, b, mid, hi)


def tree_sum(lo: int, hi: int, leaf, known: Optional[dict] = None):
    """The value of tree node ``(lo, hi)``: ``known[(lo, hi)]`` if given, ``leaf(lo)`` for a
    single block, else the left child's value with the right one's added (``left.add(right)``)."""
    if known is not None and (lo, hi) in known:
        return known[(lo, hi)]
    if hi - lo == 1:
        return leaf(lo)
    mid = (lo + hi) // 2
    left = tree_sum(lo, mid, leaf, known)
    left.add(tree_sum(mid, hi, leaf, known))
    return left


@dataclass
class Stats:
    """GMM statistics of some blocks and their total log-likelihood."""

    accs: GmmAccs
    loglike: float = 0.0

    def add(self, other: "Stats") -> None:
        self.accs.merge(other.accs)
        self.loglike += other.loglike


@dataclass
class EStep:
    """One iteration's statistics over every job, and the alignment when it realigned."""

    accs: GmmAccs
    loglike: float
    taccs: TransitionAccs
    frames: int
    utts: int  # utterances whose alignment the statistics come from
    alis: Optional[Dict[str, Alignment]] = None
    failures: Optional[Dict[str, str]] = None


class Part:
    """What one job holds: its blocks of utterances (block ``first + i`` is ``blocks[i]``), their
    features, transcripts and current alignment, and the graph templates of its aligner."""

    def __init__(self, blocks: List[List[str]], first: int, num_blocks: int, feats, texts, alis,
                 lang: LangInfo, ctx_dep, opts: AlignOpts, device="cpu", progress: bool = False):
        self.blocks, self.first, self.num_blocks = blocks, first, num_blocks
        self.utts = [u for b in blocks for u in b]
        self.feats, self.texts, self.alis = feats, texts, alis
        self.lang, self.ctx_dep, self.opts, self.device, self.progress = lang, ctx_dep, opts, device, progress
        self.cache: dict = {}

    def align(self, gmm: DiagGmmSet, trans: TransitionModel):
        aligner = ForcedAligner(gmm, self.ctx_dep, trans, self.lang, self.opts, self.device, self.cache)
        alis, failures = aligner.align(self.feats, self.texts, progress=self.progress, report=False)
        return ({u: alis[u] for u in self.utts if u in alis},
                {u: failures[u] for u in self.utts if u in failures})

    def estep(self, gmm: DiagGmmSet, trans: TransitionModel, realign: bool) -> dict:
        out = {}
        if realign:
            self.alis, out["failures"] = self.align(gmm, trans)
            out["alis"] = self.alis
        last = self.first + len(self.blocks)
        out["nodes"] = {n: tree_sum(*n, lambda i: self._block(gmm, i)) for n in cover(self.first, last, 0, self.num_blocks)}
        taccs = trans.new_accs()
        for a in self.alis.values():
            taccs.add_alignment(a.phones, a.states, a.phone_start)
        out.update(taccs=taccs, frames=sum(a.num_frames for a in self.alis.values()), utts=len(self.alis))
        return out

    def _block(self, gmm: DiagGmmSet, i: int) -> Stats:
        utts = [u for u in self.blocks[i - self.first] if u in self.alis]
        accs = gmm.new_accs()
        if not utts:
            return Stats(accs)
        x = torch.from_numpy(np.concatenate([self.feats[u] for u in utts]))
        pdfs = torch.from_numpy(np.concatenate([self.alis[u].pdfs for u in utts]).astype(np.int64))
        return Stats(accs, gmm.accumulate(x, pdfs, accs))


_JOB: dict = {}  # the Part of a job process
_STARTED: List[ProcessPoolExecutor] = []  # job processes started ahead (start_jobs), for the next GmmJobs


def _start_job(parent_pid: int) -> None:
    die_with_parent(parent_pid)
    torch.set_num_threads(1)
    logging.getLogger("asr_kd").setLevel(logging.WARNING)


def _load_part(part_args: tuple) -> None:
    _JOB["part"] = Part(*part_args)


def _run_job(method: str, *args):
    t0 = time.process_time()
    out = getattr(_JOB["part"], method)(*args)
    return out, time.process_time() - t0


# CPU seconds the jobs of this process spent in their tasks: in all ("cpu_s") and on the critical
# path ("critical_cpu_s": per call, the busiest job's). On idle cores the tasks of a call run side
# by side, so they take about critical_cpu_s of wall time; on a machine whose other work holds this
# process to one core, they take about cpu_s.
JOB_CPU = {"cpu_s": 0.0, "critical_cpu_s": 0.0}


def _new_job() -> ProcessPoolExecutor:
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_job,
                               initargs=(os.getpid(),))  # spawn, not fork: the parent has threads (torch, tqdm)
    pool.submit(int)  # the executor starts its process at the first task
    return pool


def start_jobs(nj: int) -> None:
    """Start ``nj`` job processes now for the next :class:`GmmJobs`, so that their start-up
    (importing torch and the toolkit: seconds) overlaps what the caller does meanwhile (loading the
    features, building the tree)."""
    while len(_STARTED) < nj:
        _STARTED.append(_new_job())


def _no_leaf(i: int):
    raise AssertionError(f"block {i} was summed by no job")  # the parts tile the blocks


class GmmJobs:
    """The utterances of ``texts`` that have features, split over ``nj`` jobs (see the module doc).

    ``alis`` is the alignment the first :meth:`estep` accumulates on (equal or a previous model's);
    ``ctx_dep`` the context dependency of every alignment. Use as a context manager: leaving it ends
    the job processes."""

    def __init__(self, feats: Dict[str, np.ndarray], texts: Dict[str, Sequence[str]], lang: LangInfo, ctx_dep,
                 opts: Optional[AlignOpts] = None, nj: int = 1, device="cpu", block_frames: int = BLOCK_FRAMES,
                 alis: Optional[Dict[str, Alignment]] = None, progress: bool = False):
        opts = opts or AlignOpts()
        self.texts = texts
        utts, blocks, parts = self._plan(feats, texts, nj, block_frames)
        self.num_blocks = len(blocks)
        alis = alis or {}
        args = []
        for b0, b1 in parts or [(0, 0)]:
            ub = [utts[s:e] for s, e in blocks[b0:b1]]
            us = [u for b in ub for u in b]
            args.append((ub, b0, self.num_blocks, {u: feats[u] for u in us}, {u: texts[u] for u in us},
                         {u: alis[u] for u in us if u in alis}, lang, ctx_dep, opts, device))
        self.nj = len(args)
        self._stack = ExitStack()
        self._local: Optional[Part] = None
        self._pools: List[ProcessPoolExecutor] = []
        if self.nj == 1:
            self._local = Part(*args[0], progress=progress)
        else:
            pools = [_STARTED.pop(0) if _STARTED else _new_job() for _ in range(self.nj)]
            self._pools = [self._stack.enter_context(pool) for pool in pools]
            try:
                for f in [pool.submit(_load_part, a) for pool, a in zip(self._pools, args)]:
                    f.result()
            except BaseException:
                self.close()
                raise
            logger.info("%d GMM jobs (spawned processes, one thread each) over %d utterances in %d blocks",
                        self.nj, len(utts), self.num_blocks)
        while _STARTED:  # started ahead for more parts than this set has
            _STARTED.pop().shutdown(wait=False)

    @staticmethod
    def _plan(feats, texts, nj: int, block_frames: int):
        utts = sorted(u for u in texts if u in feats)
        return (utts, *plan([feats[u].shape[0] for u in utts], nj, block_frames))

    @classmethod
    def split(cls, feats, texts, nj: int, block_frames: int) -> List[List[str]]:
        """The utterances of each job, as ``GmmJobs(feats, texts, ..., nj, block_frames=...)``
        splits them (at most ``nj`` parts; ``gmm align --job J/N`` aligns part J)."""
        utts, blocks, parts = cls._plan(feats, texts, nj, block_frames)
        return [[u for s, e in blocks[b0:b1] for u in utts[s:e]] for b0, b1 in parts]

    def __enter__(self) -> "GmmJobs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def _map(self, method: str, *args) -> list:
        """``Part.method(*args)`` in every job, the results in part order."""
        if self._local is not None:
            return [getattr(self._local, method)(*args)]
        futures = [pool.submit(_run_job, method, *args) for pool in self._pools]
        results = [f.result() for f in futures]
        JOB_CPU["cpu_s"] += sum(c for _, c in results)
        JOB_CPU["critical_cpu_s"] += max(c for _, c in results)
        return [r for r, _ in results]

    def _merge(self, results) -> Tuple[Dict[str, Alignment], Dict[str, str]]:
        """Alignments in sorted utterance order, failures in the order of ``texts`` (utterances
        without features: "no features", as :class:`ForcedAligner` says)."""
        alis: Dict[str, Alignment] = {}
        found: Dict[str, str] = {}
        for a, f in results:
            alis.update(a)
            found.update(f)
        failures = {u: found.get(u, "no features") for u in self.texts if u not in alis}
        report_failures(failures, len(self.texts))
        return alis, failures

    def align(self, gmm: DiagGmmSet, trans: TransitionModel) -> Tuple[Dict[str, Alignment], Dict[str, str]]:
        """Every utterance aligned with the model (the jobs keep the alignment)."""
        return self._merge(self._map("align", gmm, trans))

    def estep(self, gmm: DiagGmmSet, trans: TransitionModel, realign: bool = False) -> EStep:
        """GMM and transition statistics of the current alignment, after realigning with the model
        first if ``realign``."""
        parts = self._map("estep", gmm, trans, realign)
        known: dict = {}
        for r in parts:
            known.update(r["nodes"])
        stats = tree_sum(0, self.num_blocks, _no_leaf, known) if self.num_blocks else Stats(gmm.new_accs())
        taccs = trans.new_accs()
        for r in parts:
            taccs.merge(r["taccs"])
        e = EStep(stats.accs, stats.loglike, taccs, sum(r["frames"] for r in parts), sum(r["utts"] for r in parts))
        if realign:
            e.alis, e.failures = self._merge([(r["alis"], r["failures"]) for r in parts])
        return e


def peak_rss_jobs_mb() -> float:
    """Peak resident memory of the largest finished job process (0 when none ran)."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0, 1)
