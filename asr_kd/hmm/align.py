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

from asr_kd.hmm.gmm import DiagGmmSet
from asr_kd.hmm.graph import AlignError, PhoneDag, compile_graph, linear_dag, lookup_words, transcript_dag
from asr_kd.hmm.lang_io import LangInfo
from asr_kd.hmm.topology import TransitionModel

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


def equal_alignment(num_frames: int, phones: Sequence[int], ctx, topo) -> Alignment:
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
    pdf_of = np.array([ctx.pdf(*s) for s in seq], dtype=np.int32)
    ph_of = np.array([s[1] for s in seq], dtype=np.int32)
    st_of = np.array([s[3] for s in seq], dtype=np.int32)
    start = np.zeros(num_frames, dtype=bool)
    first = np.ones(num_frames, dtype=bool)
    first[1:] = owner[1:] != owner[:-1]
    start = first & (st_of[owner] == 0)
    return Alignment(pdf_of[owner], ph_of[owner], st_of[owner], start)


def equal_align_transcript(num_frames: int, words: Sequence[str], lang: LangInfo, ctx, topo,
                           map_oov: bool = True) -> Alignment:
    """Equal alignment of the first pronunciation of each word, with silence at both ends when
    the utterance is long enough for it (flat start)."""
    prons, _ = lookup_words(words, lang, map_oov)
    phones = [p for pr in prons for p in pr[0]]
    sil = lang.optional_silence
    with_sil = [sil] + phones + [sil]
    if num_frames >= sum(topo[p] for p in with_sil):
        return equal_alignment(num_frames, with_sil, ctx, topo)
    return equal_alignment(num_frames, phones, ctx, topo)


@dataclass
class AlignOpts:
    acoustic_scale: float = 0.1
    transition_scale: float = 1.0
    sil_prob: float = 0.5
    output_beam: float = 20.0
    batch_frames: int = 20000
    map_oov: bool = True


class ForcedAligner:
    """Batched Viterbi forced alignment of many utterances against their transcripts."""

    def __init__(self, gmm: DiagGmmSet, ctx, trans: TransitionModel, lang: LangInfo,
                 opts: Optional[AlignOpts] = None, device="cpu"):
        self.gmm, self.ctx, self.trans, self.lang = gmm, ctx, trans, lang
        self.opts = opts or AlignOpts()
        self.device = torch.device(device)

    def graph(self, words: Sequence[str]):
        dag = transcript_dag(words, self.lang, self.opts.sil_prob, self.opts.map_oov)
        return dag, compile_graph(dag, self.ctx, self.trans, self.opts.transition_scale)

    def align(self, feats: Dict[str, np.ndarray], texts: Dict[str, Sequence[str]],
              progress: bool = False) -> Tuple[Dict[str, Alignment], Dict[str, str]]:
        """Align every utterance in ``texts`` (features from ``feats``). Returns the alignments
        and, for the utterances left out, the reason."""
        failures: Dict[str, str] = {}
        ready = []  # (utt, num_frames, graph)
        for utt, words in texts.items():
            x = feats.get(utt)
            if x is None:
                failures[utt] = "no features"
                continue
            try:
                dag, g = self.graph(words)
                need = dag.min_frames(self.trans.topo)
                if x.shape[0] < need:
                    raise AlignError(f"too short: {x.shape[0]} frames, the transcript needs at least {need}")
            except AlignError as e:
                failures[utt] = str(e)
                continue
            ready.append((utt, x.shape[0], g))
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
            from tqdm import tqdm
            it = tqdm(batches, desc="align", unit="batch")
        for b in it:
            res = self._align_batch([feats[u] for u, _, _ in b], [g for _, _, g in b])
            for (utt, _, _), a in zip(b, res):
                if isinstance(a, str):
                    failures[utt] = a
                else:
                    alis[utt] = a
        if failures:
            kinds = Counter(r.split(":")[0] for r in failures.values())
            logger.warning("%d of %d utterances not aligned: %s", len(failures), len(texts), dict(kinds))
        return alis, failures

    def _align_batch(self, xs: List[np.ndarray], graphs) -> List:
        import k2

        P = self.gmm.num_pdfs
        lls = [self.gmm.loglikes(torch.as_tensor(x, dtype=torch.float32, device=self.device)) for x in xs]
        T = max(ll.shape[0] for ll in lls)
        dense = torch.full((len(xs), T, P + 1), -1e10, dtype=torch.float32, device=self.device)
        for i, ll in enumerate(lls):
            dense[i, : ll.shape[0], 1:] = ll * self.opts.acoustic_scale
        seg = torch.tensor([[i, 0, ll.shape[0]] for i, ll in enumerate(lls)], dtype=torch.int32)
        dfv = k2.DenseFsaVec(dense, seg)
        fsas = k2.create_fsa_vec([g.to(self.device) for g in graphs])
        lats = k2.intersect_dense(fsas, dfv, output_beam=self.opts.output_beam)
        best = k2.shortest_path(lats, use_double_scores=True)
        tot = best.get_tot_scores(use_double_scores=True, log_semiring=False).cpu()
        out = []
        for i, ll in enumerate(lls):
            path = best[i]
            labels = path.labels
            n = ll.shape[0]
            if labels.numel() == 0:
                out.append("no path through the training graph (transcript/audio mismatch or too short)")
                continue
            pdfs = labels[:-1].long() - 1
            if pdfs.numel() != n or not math.isfinite(float(tot[i])):
                out.append("alignment failed (path length mismatch or -inf score)")
                continue
            like = float(ll.double().gather(1, pdfs[:, None]).sum())
            out.append(Alignment(
                pdfs.to(torch.int32).cpu().numpy(), path.phones[:-1].cpu().numpy().astype(np.int32),
                path.hmm_states[:-1].cpu().numpy().astype(np.int32),
                path.phone_start[:-1].cpu().numpy().astype(bool), like))
        return out
