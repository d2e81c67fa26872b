"""Per-utterance training graphs as epsilon-free k2 FSAs.

The graph is built directly from the transcript and the lexicon, the way Kaldi's
``compile-train-graphs`` builds H o C o L o (linear transcript): alternative pronunciations,
optional silence before, between and after words (probability ``sil_prob``, as in ``L.fst``),
phonetic context (triphones; contexts cross words and silence is an ordinary context; the
utterance edge is context 0) and the left-to-right HMMs. Every arc that enters an HMM state
consumes a frame and carries that state's pdf-id + 1 as its label, so the FSA has no
epsilons and can go straight into ``k2.intersect_dense``; the extra arc to the final state
has label -1 (k2's convention). Arcs also carry ``phones`` (centre phone), ``hmm_states`` and
``phone_start`` (1 on the arc entering a phone instance), which ride through intersection
and shortest path to give phone-level alignments.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from asr_kd.hmm.lang_info import LangInfo
from asr_kd.hmm.topology import HmmTopology, TransitionModel


class AlignError(Exception):
    """An utterance cannot be aligned; the message is the reason reported and counted."""


@dataclass
class PhoneDag:
    """An acyclic phone acceptor: arcs ``(src, dst, phone, log_weight)``, start state 0."""

    arcs: List[Tuple[int, int, int, float]] = field(default_factory=list)
    finals: Dict[int, float] = field(default_factory=dict)
    num_states: int = 1

    def new_state(self) -> int:
        self.num_states += 1
        return self.num_states - 1

    def min_frames(self, topo: HmmTopology) -> int:
        """Frames needed by the shortest path (one frame per HMM state)."""
        best = [math.inf] * self.num_states
        best[0] = 0
        changed = True
        while changed:  # relax until stable (the DAG is small and acyclic)
            changed = False
            for s, d, p, _ in self.arcs:
                if best[s] + topo[p] < best[d]:
                    best[d] = best[s] + topo[p]
                    changed = True
        return int(min(best[f] for f in self.finals))


def lookup_words(words: Sequence[str], lang: LangInfo, map_oov: bool = True) -> Tuple[List[List[List[int]]], List[str]]:
    """Pronunciations of each word; OOV words map to ``lang.oov_word`` when ``map_oov`` (they are
    returned in the second list), otherwise raise :class:`AlignError`."""
    prons, oovs = [], []
    for w in words:
        p = lang.lexicon.get(w)
        if p is None:
            if not map_oov or lang.oov_word is None or lang.oov_word not in lang.lexicon:
                raise AlignError(f"no pronunciation: word {w!r} is not in the lexicon")
            oovs.append(w)
            p = lang.lexicon[lang.oov_word]
        prons.append(p)
    return prons, oovs


def transcript_dag(words: Sequence[str], lang: LangInfo, sil_prob: float = 0.5, map_oov: bool = True) -> PhoneDag:
    """The phone DAG of a transcript: every pronunciation of every word, optional silence
    (``lang.optional_silence``) at the start, between words and at the end."""
    if len(words) == 0:
        raise AlignError("empty transcript")
    prons, _ = lookup_words(words, lang, map_oov)
    dag = PhoneDag()
    sil = lang.optional_silence
    use_sil = sil_prob > 0
    log_sil = math.log(sil_prob) if use_sil else 0.0
    log_nosil = math.log(1 - sil_prob) if use_sil else 0.0
    # entry points of the next word: (state, log weight of taking this route)
    junction = 0
    entries = [(junction, log_nosil)]
    if use_sil:
        s = dag.new_state()
        dag.arcs.append((junction, s, sil, log_sil))
        entries.append((s, 0.0))
    for word_prons in prons:
        junction = dag.new_state()
        for src, w in entries:
            for pron in word_prons:
                cur = src
                for i, ph in enumerate(pron):
                    nxt = junction if i == len(pron) - 1 else dag.new_state()
                    dag.arcs.append((cur, nxt, ph, w if i == 0 else 0.0))
                    cur = nxt
        entries = [(junction, log_nosil)]
        if use_sil:
            s = dag.new_state()
            dag.arcs.append((junction, s, sil, log_sil))
            entries.append((s, 0.0))
    for st, w in entries:
        dag.finals[st] = w
    return dag


def context_expand(dag: PhoneDag, context_width: int):
    """Phone instances with their contexts: returns ``(copies, next_copies, start_copies,
    final_copies)`` where a copy is ``(arc_index, left, right)`` (0 = utterance edge;
    both 0 for monophones)."""
    succs, preds = defaultdict(list), defaultdict(list)
    for i, (s, d, _, _) in enumerate(dag.arcs):
        succs[s].append(i)
        preds[d].append(i)
    ph = [a[2] for a in dag.arcs]
    copies: List[Tuple[int, int, int]] = []
    index: Dict[Tuple[int, int, int], int] = {}
    for i, (s, d, _, _) in enumerate(dag.arcs):
        if context_width == 1:
            lefts, rights = {0}, {0}
        elif context_width == 3:
            lefts = {ph[j] for j in preds[s]} | ({0} if s == 0 else set())
            rights = {ph[j] for j in succs[d]} | ({0} if d in dag.finals else set())
        else:
            raise ValueError(f"context width {context_width} not supported (1 or 3)")
        for l in sorted(lefts):
            for r in sorted(rights):
                index[(i, l, r)] = len(copies)
                copies.append((i, l, r))
    rights_of: Dict[int, List[int]] = defaultdict(list)
    for i, l, r in copies:
        if r not in rights_of[i]:
            rights_of[i].append(r)
    next_copies: List[List[int]] = []
    for i, l, r in copies:
        d = dag.arcs[i][1]
        nxt = []
        for j in succs[d]:
            if context_width == 1:
                nxt.append(index[(j, 0, 0)])
            elif ph[j] == r:
                nxt.extend(index[(j, ph[i], r2)] for r2 in rights_of[j])
        next_copies.append(nxt)
    start = [c for c, (i, l, r) in enumerate(copies) if dag.arcs[i][0] == 0 and l == 0]
    final = [c for c, (i, l, r) in enumerate(copies) if dag.arcs[i][1] in dag.finals and r == 0]
    return copies, next_copies, start, final


# transition kinds of a graph arc: which probability of (tphone, tstate) it carries
_SELF_LOOP, _FORWARD, _NONE = 0, 1, 2


@dataclass
class GraphTemplate:
    """A training graph whose arc scores are not filled in yet.

    The structure and the pdf labels depend only on the transcript and the context dependency;
    the transition probabilities change every training iteration, so the scores are computed
    (vectorised) by :meth:`fsa` from the current transition model."""

    src: np.ndarray
    dst: np.ndarray
    labels: np.ndarray  # pdf-id + 1, or -1 on arcs into the final state
    tphone: np.ndarray  # the phone/state whose transition the arc takes
    tstate: np.ndarray
    tkind: np.ndarray  # _SELF_LOOP, _FORWARD or _NONE
    weight: np.ndarray  # lexicon weight (optional silence, final)
    phones: np.ndarray  # attributes riding through intersection
    hmm_states: np.ndarray
    phone_start: np.ndarray
    min_frames: int = 0
    pdf_set: np.ndarray = None  # the pdf-ids the graph uses, sorted
    local_labels: np.ndarray = None  # labels renumbered to index in pdf_set + 1 (-1 kept)

    def __post_init__(self):
        if self.pdf_set is None:
            self.pdf_set = np.unique(self.labels[self.labels > 0]) - 1
            self.local_labels = np.where(self.labels > 0, np.searchsorted(self.pdf_set, self.labels - 1) + 1,
                                         self.labels).astype(np.int32)

    def state_info(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per state id: local pdf column (label - 1), phone and HMM state (from the arcs into it)."""
        n = self.final_state + 1
        col = np.zeros(n, dtype=np.int64)
        ph = np.zeros(n, dtype=np.int32)
        st = np.zeros(n, dtype=np.int32)
        into = self.labels > 0
        col[self.dst[into]] = self.local_labels[into] - 1
        ph[self.dst[into]] = self.phones[into]
        st[self.dst[into]] = self.hmm_states[into]
        return col, ph, st

    @property
    def final_state(self) -> int:
        return int(self.dst.max())

    def scores(self, trans: TransitionModel, transition_scale: float = 1.0) -> np.ndarray:
        """Arc scores: lexicon weight + scaled log transition probability."""
        P = max(trans.loop) + 1
        S = max(len(v) for v in trans.loop.values())
        table = np.zeros((P, S, 3))
        for p, v in trans.loop.items():
            table[p, : len(v), _SELF_LOOP] = np.log(v)
            table[p, : len(v), _FORWARD] = np.log1p(-v)
        return self.weight + transition_scale * table[self.tphone, self.tstate, self.tkind]

    def fsa(self, trans: TransitionModel, transition_scale: float = 1.0, local: bool = False):
        """The k2 FSA with scores from ``trans``; with ``local`` its labels index ``pdf_set``
        (+1) instead of all pdf-ids, for scoring only the pdfs this graph uses."""
        import k2  # here, not at the top: only --align-backend k2 needs k2 (not in pyproject's dependencies)

        score = self.scores(trans, transition_scale)
        arcs = torch.from_numpy(np.stack([self.src, self.dst, self.local_labels if local else self.labels,
                                          score.astype(np.float32).view(np.int32)], axis=1))
        fsa = k2.Fsa(arcs)
        fsa.phones = torch.from_numpy(self.phones)
        fsa.hmm_states = torch.from_numpy(self.hmm_states)
        fsa.phone_start = torch.from_numpy(self.phone_start)
        return fsa


def build_template(dag: PhoneDag, ctx_dep, topo: HmmTopology) -> GraphTemplate:
    """The HMM-level training graph of ``dag`` (see the module doc), scores left open.

    ``ctx_dep`` maps ``(left, phone, right, hmm_state)`` to a pdf-id (:class:`~asr_kd.hmm.tree.MonophoneContext`
    or :class:`~asr_kd.hmm.tree.DecisionTree`)."""
    copies, next_copies, start_copies, final_copies = context_expand(dag, ctx_dep.context_width)
    # state ids: 0 = super start, then the HMM states of each copy, last = super final
    base = []
    n = 1
    for i, l, r in copies:
        base.append(n)
        n += topo[dag.arcs[i][2]]
    final_state = n
    rows = []  # (src, dst, label, tphone, tstate, tkind, weight, phone, state, start)
    pdf_cache: Dict[Tuple[int, int, int, int], int] = {}

    def pdf(l, p, r, k):
        key = (l, p, r, k)
        v = pdf_cache.get(key)
        if v is None:
            v = pdf_cache[key] = ctx_dep.pdf(l, p, r, k)
        return v

    finals = set(final_copies)
    for c, (i, l, r) in enumerate(copies):
        p = dag.arcs[i][2]
        ns = topo[p]
        pdfs = [pdf(l, p, r, k) for k in range(ns)]
        for k in range(ns):
            s = base[c] + k
            rows.append((s, s, pdfs[k] + 1, p, k, _SELF_LOOP, 0.0, p, k, 0))
            if k + 1 < ns:
                rows.append((s, s + 1, pdfs[k + 1] + 1, p, k, _FORWARD, 0.0, p, k + 1, 0))
        last = base[c] + ns - 1
        for c2 in next_copies[c]:
            i2, l2, r2 = copies[c2]
            p2 = dag.arcs[i2][2]
            rows.append((last, base[c2], pdf(l2, p2, r2, 0) + 1, p, ns - 1, _FORWARD, dag.arcs[i2][3], p2, 0, 1))
        if c in finals:
            rows.append((last, final_state, -1, p, ns - 1, _FORWARD, dag.finals[dag.arcs[i][1]], 0, 0, 0))
    for c in start_copies:
        i, l, r = copies[c]
        p = dag.arcs[i][2]
        rows.append((0, base[c], pdf(l, p, r, 0) + 1, 0, 0, _NONE, dag.arcs[i][3], p, 0, 1))
    if not rows:
        raise AlignError("empty training graph")
    rows.sort(key=lambda a: a[0])  # k2 wants arcs grouped by source state
    cols = list(zip(*rows))
    i32 = lambda j: np.asarray(cols[j], dtype=np.int32)
    return GraphTemplate(i32(0), i32(1), i32(2), np.asarray(cols[3], dtype=np.int64),
                         np.asarray(cols[4], dtype=np.int64), np.asarray(cols[5], dtype=np.int64),
                         np.asarray(cols[6], dtype=np.float64), i32(7), i32(8), i32(9), dag.min_frames(topo))
