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
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from asr_kd.hmm.lang_io import LangInfo
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
                raise AlignError(f"word {w!r} has no pronunciation in the lexicon")
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


def linear_dag(phones: Sequence[int]) -> PhoneDag:
    """A single phone sequence (used by the equal alignment and in tests)."""
    dag = PhoneDag()
    for i, p in enumerate(phones):
        dag.arcs.append((i, i + 1, int(p), 0.0))
        dag.num_states = i + 2
    dag.finals[dag.num_states - 1] = 0.0
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


def compile_graph(dag: PhoneDag, ctx, trans: TransitionModel, transition_scale: float = 1.0):
    """The HMM-level training graph of ``dag`` as a k2 FSA (labels pdf-id + 1, see module doc).

    ``ctx`` maps ``(left, phone, right, hmm_state)`` to a pdf-id (:class:`~asr_kd.hmm.tree.MonophoneContext`
    or :class:`~asr_kd.hmm.tree.DecisionTree`)."""
    import k2

    topo = trans.topo
    copies, next_copies, start_copies, final_copies = context_expand(dag, ctx.context_width)
    # state ids: 0 = super start, then the HMM states of each copy, last = super final
    base = []
    n = 1
    for i, l, r in copies:
        base.append(n)
        n += topo[dag.arcs[i][2]]
    final_state = n
    src, dst, lab, score, a_phone, a_state, a_start = [], [], [], [], [], [], []

    def arc(s, d, label, sc, phone, state, start):
        src.append(s); dst.append(d); lab.append(label); score.append(sc)
        a_phone.append(phone); a_state.append(state); a_start.append(start)

    pdf_cache: Dict[Tuple[int, int, int, int], int] = {}

    def pdf(l, p, r, k):
        key = (l, p, r, k)
        v = pdf_cache.get(key)
        if v is None:
            v = pdf_cache[key] = ctx.pdf(l, p, r, k)
        return v

    finals = set(final_copies)
    for c, (i, l, r) in enumerate(copies):
        p = dag.arcs[i][2]
        ns = topo[p]
        loop = trans.loop[p]
        pdfs = [pdf(l, p, r, k) for k in range(ns)]
        for k in range(ns):
            s = base[c] + k
            arc(s, s, pdfs[k] + 1, transition_scale * math.log(loop[k]), p, k, 0)
            fwd = transition_scale * math.log(1.0 - loop[k])
            if k + 1 < ns:
                arc(s, s + 1, pdfs[k + 1] + 1, fwd, p, k + 1, 0)
        last = base[c] + ns - 1
        fwd = transition_scale * math.log(1.0 - loop[ns - 1])
        for c2 in next_copies[c]:
            i2, l2, r2 = copies[c2]
            p2 = dag.arcs[i2][2]
            arc(last, base[c2], pdf(l2, p2, r2, 0) + 1, fwd + dag.arcs[i2][3], p2, 0, 1)
        if c in finals:
            arc(last, final_state, -1, fwd + dag.finals[dag.arcs[i][1]], 0, 0, 0)
    for c in start_copies:
        i, l, r = copies[c]
        p = dag.arcs[i][2]
        arc(0, base[c], pdf(l, p, r, 0) + 1, dag.arcs[i][3], p, 0, 1)
    if not src:
        raise AlignError("empty training graph")
    order = sorted(range(len(src)), key=lambda a: src[a])
    idx = torch.tensor(order, dtype=torch.long)
    scores = torch.tensor(score, dtype=torch.float32)[idx]
    arcs = torch.stack(
        [torch.tensor(src, dtype=torch.int32)[idx], torch.tensor(dst, dtype=torch.int32)[idx],
         torch.tensor(lab, dtype=torch.int32)[idx], scores.view(torch.int32)], dim=1)
    fsa = k2.Fsa(arcs)
    fsa.phones = torch.tensor(a_phone, dtype=torch.int32)[idx]
    fsa.hmm_states = torch.tensor(a_state, dtype=torch.int32)[idx]
    fsa.phone_start = torch.tensor(a_start, dtype=torch.int32)[idx]
    return fsa
