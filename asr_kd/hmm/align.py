"""Equal (flat-start) alignment and batched forced alignment with k2.

Forced alignment: per-utterance training graphs (:mod:`asr_kd.hmm.graph`), GMM log-likelihoods
of every pdf as a ``k2.DenseFsaVec`` (column pdf-id + 1), ``k2.intersect_dense`` over a batch of
utterances sorted by length, ``k2.shortest_path``. Utterances that cannot be aligned are never
given labels: the reason is recorded and the caller counts and excludes them.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from asr_kd.config import option
from asr_kd.hmm.gmm import DiagGmmSet
from asr_kd.hmm.graph import AlignError, build_template, lookup_words, transcript_dag
from asr_kd.hmm.lang_info import LangInfo
from asr_kd.hmm.topology import TransitionModel
from asr_kd.hmm.viterbi import viterbi_batch

logger = logging.getLogger(__name__)


@dataclass
class Alignment:
    """One utterance's frame-level alignment (all arrays of length num_frames)."""

    pdfs: np.ndarray  # int32 pdf-id per frame
    phones: np.ndarray  # int32 phone id per frame
    states: np.ndarray  # int32 HMM state per frame
    phone_start: np.ndarray  # bool: first frame of a phone instance
    loglike: float = 0.0  # total acoustic log-likelihood (unscaled) of the path

    @property
    def num_frames(self) -> int:
        return len(self.pdfs)

    def phone_segments(self) -> List[Tuple[int, int, int]]:
        """``(phone, start_frame, num_frames)`` of each phone instance."""
        starts = np.flatnonzero(self.phone_start).tolist() + [self.num_frames]
        return [(int(self.phones[s]), s, e - s) for s, e in zip(starts[:-1], starts[1:])]

    def contexts(self) -> Tuple[np.ndarray, np.ndarray]:
        """Left and right phone of each frame's phone instance (0 at the utterance edges)."""
        segs = self.phone_segments()
        ph = [s[0] for s in segs]
        left = np.zeros(self.num_frames, dtype=np.int32)
        right = np.zeros(self.num_frames, dtype=np.int32)
        for j, (p, s, n) in enumerate(segs):
            left[s : s + n] = ph[j - 1] if j > 0 else 0
            right[s : s + n] = ph[j + 1] if j + 1 < len(ph) else 0
        return left, right

    def to_arrays(self) -> dict:
        return {"pdfs": self.pdfs, "phones": self.phones, "states": self.states,
                "phone_start": self.phone_start, "loglike": np.float64(self.loglike)}

    @classmethod
    def from_arrays(cls, d) -> "Alignment":
        return cls(np.asarray(d["pdfs"], dtype=np.int32), np.asarray(d["phones"], dtype=np.int32),
                   np.asarray(d["states"], dtype=np.int32), np.asarray(d["phone_start"], dtype=bool),
                   float(d["loglike"]))


def equal_alignment(num_frames: int, phones: Sequence[int], ctx_dep, topo) -> Alignment:
    """Kaldi's ``align-equal``: split the frames evenly over the HMM states of a phone sequence."""
    seq = []  # (left, phone, right, state, is_first_state)
    for j, p in enumerate(phones):
        l = phones[j - 1] if j > 0 else 0
        r = phones[j + 1] if j + 1 < len(phones) else 0
        for k in range(topo[p]):
            seq.append((l, p, r, k))
    if num_frames < len(seq):
        raise AlignError(f"too short: {num_frames} frames for {len(seq)} HMM states")
    owner = (np.arange(num_frames) * len(seq)) // num_frames
    pdf_of = np.array([ctx_dep.pdf(*s) for s in seq], dtype=np.int32)
    ph_of = np.array([s[1] for s in seq], dtype=np.int32)
    st_of = np.array([s[3] for s in seq], dtype=np.int32)
    start = np.zeros(num_frames, dtype=bool)
    first = np.ones(num_frames, dtype=bool)
    first[1:] = owner[1:] != owner[:-1]
    start = first & (st_of[owner] == 0)
    return Alignment(pdf_of[owner], ph_of[owner], st_of[owner], start)


def equal_align_transcript(num_frames: int, words: Sequence[str], lang: LangInfo, ctx_dep, topo,
                           map_oov: bool = True, rng: Optional[np.random.RandomState] = None,
                           sil_prob: float = 0.5) -> Alignment:
    """Flat-start alignment of one utterance.

    Default: the first pronunciation of each word with silence at both ends (when the utterance
    is long enough). With ``rng``: like Kaldi's ``align-equal-compiled``, a random path through
    the training graph (random pronunciations, each optional silence taken with ``sil_prob``)."""
    prons, _ = lookup_words(words, lang, map_oov)
    sil = lang.optional_silence
    if rng is not None:
        for _ in range(10):
            seq = [sil] if rng.rand() < sil_prob else []
            for pr in prons:
                seq += pr[rng.randint(len(pr))]
                if rng.rand() < sil_prob:
                    seq.append(sil)
            if num_frames >= sum(topo[p] for p in seq):
                return equal_alignment(num_frames, seq, ctx_dep, topo)
    phones = [p for pr in prons for p in pr[0]]
    with_sil = [sil] + phones + [sil]
    if num_frames >= sum(topo[p] for p in with_sil):
        return equal_alignment(num_frames, with_sil, ctx_dep, topo)
    return equal_alignment(num_frames, phones, ctx_dep, topo)


def report_failures(failures: Dict[str, str], total: int) -> None:
    """One warning counting the utterances not aligned, by kind of reason."""
    if failures:
        kinds = Counter(r.split(":")[0] for r in failures.values())
        logger.warning("%d of %d utterances not aligned: %s", len(failures), total, dict(kinds))


@dataclass
class AlignOpts:
    """How utterances are forced-aligned; ``asr-kd gmm mono|tri|align|kaldi-compare`` make a flag
    of each field that has one (help as below)."""

    acoustic_scale: float = option(0.1, "scale of the GMM log-likelihoods against the HMM's transition "
                                        "log-probabilities in the alignment (Kaldi's --acoustic-scale)")
    # Kaldi aligns with --transition-scale 1.0 --self-loop-scale 0.1; for left-to-right HMMs that
    # puts every transition log-prob at 0.1, the same scale as the acoustics
    transition_scale: float = option(0.1, "scale of the transition log-probabilities", flag=False)
    sil_prob: float = option(0.5, "optional silence probability between words")
    output_beam: float = option(8.0, "k2 backend: output beam", flag=False)
    search_beam: float = option(0.0, "k2 backend, > 0: k2.intersect_dense_pruned with this beam (faster, may fail)",
                                flag=False)
    max_active: int = option(10000, "k2 backend with a search beam: most active states per frame", flag=False)
    backend: str = option("torch", "batched Viterbi in torch (asr_kd.hmm.viterbi), or k2.intersect_dense + "
                                   "shortest_path (same result)", choices=("torch", "k2"), flag="--align-backend")
    batch_frames: int = option(20000, "frames per alignment batch")
    map_oov: bool = option(True, "map words missing from the lexicon to the OOV word (--no-map-oov: exclude their "
                                 "utterances instead)")


class ForcedAligner:
    """Batched Viterbi forced alignment of many utterances against their transcripts.

    Graph templates (structure and pdf labels; see :class:`~asr_kd.hmm.graph.GraphTemplate`) are
    cached per utterance in ``template_cache``: pass the same dict to successive aligners of one
    training run (same context dependency) and only the transition scores are recomputed."""

    def __init__(self, gmm: DiagGmmSet, ctx_dep, trans: TransitionModel, lang: LangInfo,
                 opts: Optional[AlignOpts] = None, device="cpu", template_cache: Optional[dict] = None):
        self.gmm, self.ctx_dep, self.trans, self.lang = gmm, ctx_dep, trans, lang
        self.opts = opts or AlignOpts()
        self.device = torch.device(device)
        self.cache = {} if template_cache is None else template_cache

    def template(self, utt: str, words: Sequence[str]):
        key = (utt, tuple(words), self.opts.sil_prob, self.opts.map_oov, id(self.ctx_dep))
        t = self.cache.get(key)
        if t is None:
            try:
                dag = transcript_dag(words, self.lang, self.opts.sil_prob, self.opts.map_oov)
                t = build_template(dag, self.ctx_dep, self.trans.topo)
            except AlignError as e:
                t = str(e)
            self.cache[key] = t
        if isinstance(t, str):
            raise AlignError(t)
        return t

    def align(self, feats: Dict[str, np.ndarray], texts: Dict[str, Sequence[str]],
              progress: bool = False, report: bool = True) -> Tuple[Dict[str, Alignment], Dict[str, str]]:
        """Align every utterance in ``texts`` (features from ``feats``). Returns the alignments
        and, for the utterances left out, the reason (one warning counts them, unless not
        ``report``: a GMM job's caller warns once for all jobs)."""
        failures: Dict[str, str] = {}
        ready = []  # (utt, num_frames, template)
        for utt, words in texts.items():
            x = feats.get(utt)
            if x is None:
                failures[utt] = "no features"
                continue
            try:
                t = self.template(utt, words)
                if x.shape[0] < t.min_frames:
                    raise AlignError(f"too short: {x.shape[0]} frames, the transcript needs at least {t.min_frames}")
            except AlignError as e:
                failures[utt] = str(e)
                continue
            ready.append((utt, x.shape[0], t))
        ready.sort(key=lambda r: -r[1])
        alis: Dict[str, Alignment] = {}
        batches, cur, cur_frames = [], [], 0
        for r in ready:
            if cur and cur_frames + r[1] > self.opts.batch_frames:
                batches.append(cur)
                cur, cur_frames = [], 0
            cur.append(r)
            cur_frames += r[1]
        if cur:
            batches.append(cur)
        it = batches
        if progress:
            it = tqdm(batches, desc="align", unit="batch")
        for b in it:
            res = self._align_batch([feats[u] for u, _, _ in b], [t for _, _, t in b])
            for (utt, _, _), a in zip(b, res):
                if isinstance(a, str):
                    failures[utt] = a
                else:
                    alis[utt] = a
        if report:
            report_failures(failures, len(texts))
        return alis, failures

    def _align_batch(self, xs: List[np.ndarray], templates) -> List:
        if self.opts.backend == "torch":
            return self._align_batch_torch(xs, templates)
        if self.opts.backend != "k2":
            raise ValueError(f"unknown alignment backend {self.opts.backend!r} (torch or k2)")
        return self._align_batch_k2(xs, templates)

    def _align_batch_torch(self, xs: List[np.ndarray], templates) -> List:
        lls = [self.gmm.loglikes_subset(torch.as_tensor(x, dtype=torch.float32, device=self.device),
                                        torch.from_numpy(t.pdf_set)) for x, t in zip(xs, templates)]
        scores = [t.scores(self.trans, self.opts.transition_scale) for t in templates]
        res = viterbi_batch(templates, lls, scores, self.opts.acoustic_scale, self.device)
        out = []
        for t, ll, r in zip(templates, lls, res):
            if r is None:
                out.append("no path: the training graph admits no alignment of this length")
                continue
            path, _ = r
            col, ph, st = t.state_info()
            local = torch.from_numpy(col[path])
            like = float(ll.double().gather(1, local[:, None].to(ll.device)).sum())
            if not math.isfinite(like):
                out.append("alignment failed: non-finite log-likelihood")
                continue
            states = st[path]
            start = states == 0
            start[1:] &= path[1:] != path[:-1]
            out.append(Alignment(t.pdf_set[col[path]].astype(np.int32), ph[path], states, start, like))
        return out

    def _align_batch_k2(self, xs: List[np.ndarray], templates) -> List:
        import k2  # here, not at the top: only --align-backend k2 needs k2 (not in pyproject's dependencies)

        # Each utterance is scored only on the pdfs its graph uses (graph labels renumbered).
        graphs = [t.fsa(self.trans, self.opts.transition_scale, local=True) for t in templates]
        lens = [x.shape[0] for x in xs]
        lls = [self.gmm.loglikes_subset(torch.as_tensor(x, dtype=torch.float32, device=self.device),
                                        torch.from_numpy(t.pdf_set)) for x, t in zip(xs, templates)]
        T = max(lens)
        C = max(len(t.pdf_set) for t in templates)
        dense = torch.full((len(xs), T, C + 1), -1e10, dtype=torch.float32, device=self.device)
        for i, ll in enumerate(lls):
            dense[i, : ll.shape[0], 1 : ll.shape[1] + 1] = ll * self.opts.acoustic_scale
        seg = torch.tensor([[i, 0, n] for i, n in enumerate(lens)], dtype=torch.int32)
        dfv = k2.DenseFsaVec(dense, seg)
        fsas = k2.create_fsa_vec([g.to(self.device) for g in graphs])
        if self.opts.search_beam > 0:
            lats = k2.intersect_dense_pruned(fsas, dfv, search_beam=self.opts.search_beam,
                                             output_beam=self.opts.output_beam, min_active_states=30,
                                             max_active_states=self.opts.max_active)
        else:
            lats = k2.intersect_dense(fsas, dfv, output_beam=self.opts.output_beam)
        best = k2.shortest_path(lats, use_double_scores=True)
        # a best path is linear with its arcs in order: slice the arc arrays per utterance
        shape = best.arcs.shape()
        arc_splits = shape.row_splits(2)[shape.row_splits(1).long()].long().cpu().tolist()
        labels = best.labels.cpu()
        phones = best.phones.cpu()
        states = best.hmm_states.cpu()
        starts = best.phone_start.cpu()
        out = []
        for i, n in enumerate(lens):
            a0, a1 = arc_splits[i], arc_splits[i + 1]
            if a1 - a0 == 0:
                out.append("no path: the training graph admits no alignment of this length")
                continue
            local = labels[a0 : a1 - 1].long() - 1
            if local.numel() != n or int(labels[a1 - 1]) != -1:
                out.append("alignment failed: path length mismatch")
                continue
            like = float(lls[i].double().gather(1, local[:, None].to(lls[i].device)).sum())
            pdfs = torch.from_numpy(templates[i].pdf_set)[local]
            if not math.isfinite(like):
                out.append("alignment failed: non-finite log-likelihood")
                continue
            out.append(Alignment(pdfs.to(torch.int32).numpy(), phones[a0 : a1 - 1].numpy().astype(np.int32),
                                 states[a0 : a1 - 1].numpy().astype(np.int32),
                                 starts[a0 : a1 - 1].numpy().astype(bool), like))
        return out
