"""Context dependency: which pdf-id (senone) a (left, phone, right, HMM state) uses.

:class:`MonophoneContext` gives every (phone, state) its own pdf. :class:`DecisionTree` is the
phonetic decision tree of Kaldi's triphone systems: one root per (phone, state), binary
questions "is the left/right phone in set Q", with the question sets derived automatically by
clustering phones on their statistics (Kaldi's ``cluster-phones``), grown greedily by
likelihood gain to a target number of leaves; the leaves are the pdf-ids.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from asr_kd.hmm.topology import HmmTopology


class MonophoneContext:
    """pdf-id = offset of the phone + HMM state (phones in id order)."""

    context_width = 1

    def __init__(self, topo: HmmTopology):
        self.topo = topo
        self.offset: Dict[int, int] = {}
        n = 0
        for p in topo.phones:
            self.offset[p] = n
            n += topo[p]
        self.num_pdfs = n

    def pdf(self, left: int, phone: int, right: int, state: int) -> int:
        return self.offset[phone] + state

    def to_dict(self) -> dict:
        return {"type": "monophone"}


# ---------------------------------------------------------------------------
# Statistics and the likelihood of a pooled Gaussian
# ---------------------------------------------------------------------------


@dataclass
class TreeStats:
    """Single-Gaussian statistics per seen context ``(left, phone, right, state)``:
    ``keys [K, 4]`` and ``stats [K, 1 + 2D]`` = (count, sum x, sum x^2)."""

    keys: np.ndarray
    stats: np.ndarray

    @property
    def dim(self) -> int:
        return (self.stats.shape[1] - 1) // 2

    @classmethod
    def accumulate(cls, alis, feats) -> "TreeStats":
        """From monophone (or any) alignments: the context of a frame is its phone instance's
        neighbours in the aligned phone sequence (Kaldi's ``acc-tree-stats``)."""
        keys, xs = [], []
        for utt, a in alis.items():
            left, right = a.contexts()
            keys.append(np.stack([left, a.phones, right, a.states], axis=1))
            xs.append(feats[utt])
        keys = np.concatenate(keys).astype(np.int64)
        x = np.concatenate(xs).astype(np.float64)
        uniq, inv = np.unique(keys, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        D = x.shape[1]
        stats = np.zeros((len(uniq), 1 + 2 * D))
        stats[:, 0] = np.bincount(inv, minlength=len(uniq))
        for d in range(D):
            stats[:, 1 + d] = np.bincount(inv, weights=x[:, d], minlength=len(uniq))
            stats[:, 1 + D + d] = np.bincount(inv, weights=x[:, d] ** 2, minlength=len(uniq))
        return cls(uniq.astype(np.int32), stats)

    def context_independent(self, phones: Sequence[int]) -> "TreeStats":
        """Pool the statistics of ``phones`` over their contexts (Kaldi's ``acc-tree-stats
        --ci-phones``, given the silence phones): their roots cannot split, so each of their HMM
        states is one pdf whatever the neighbours. Without this, silence (a third of the frames)
        takes hundreds of leaves tied to the neighbouring words. Other phones still see them as
        context."""
        keys = self.keys.astype(np.int64)
        ci = np.isin(keys[:, 1], list(phones))
        keys[ci, 0] = 0
        keys[ci, 2] = 0
        uniq, inv = np.unique(keys, axis=0, return_inverse=True)
        stats = np.zeros((len(uniq), self.stats.shape[1]))
        np.add.at(stats, inv.reshape(-1), self.stats)
        return TreeStats(uniq.astype(np.int32), stats)


def gaussian_loglike(stats: np.ndarray, var_floor: np.ndarray) -> np.ndarray:
    """Log-likelihood of the data under its own ML Gaussian, for rows of (count, sum, sumsq)."""
    stats = np.atleast_2d(stats)
    D = (stats.shape[1] - 1) // 2
    n = stats[:, 0]
    safe = np.maximum(n, 1e-10)[:, None]
    mean = stats[:, 1 : 1 + D] / safe
    var = np.maximum(stats[:, 1 + D :] / safe - mean**2, var_floor)
    ll = -0.5 * n * (D * (1.0 + math.log(2 * math.pi)) + np.log(var).sum(1))
    return np.where(n > 0, ll, 0.0)


# ---------------------------------------------------------------------------
# Automatic questions (Kaldi's cluster-phones)
# ---------------------------------------------------------------------------


def cluster_phones(tstats: TreeStats, phones: Sequence[int], var_floor: np.ndarray, max_states: int,
                   max_passes: int = 10) -> List[List[int]]:
    """Top-down binary clustering of ``phones`` by their context-independent per-state statistics.

    A set's objective is the summed likelihood of one Gaussian per HMM state pooled over the
    set. Every node of the resulting tree (except the root) is a question. Each bisection starts
    by splitting the phones ordered by mean c0 and improves it by moving single phones."""
    phones = list(phones)
    idx = {p: i for i, p in enumerate(phones)}
    S = np.zeros((len(phones), max_states, tstats.stats.shape[1]))
    for (l, p, r, k), row in zip(tstats.keys, tstats.stats):
        if p in idx and k < max_states:
            S[idx[p], k] += row

    def objective(members: List[int]) -> float:
        if not members:
            return 0.0
        pooled = S[members].sum(0)  # [states, 1+2D]
        return float(gaussian_loglike(pooled, var_floor).sum())

    questions: List[List[int]] = []

    def bisect(members: List[int]) -> None:
        if len(members) < 2:
            return
        counts = S[members, :, 0].sum(1)
        c0 = np.where(counts > 0, S[members, :, 1].sum(1) / np.maximum(counts, 1e-10), 0.0)
        order = [members[i] for i in np.argsort(c0, kind="stable")]
        a, b = order[: len(order) // 2], order[len(order) // 2 :]
        best = objective(a) + objective(b)
        for _ in range(max_passes):
            improved = False
            for m in list(a) + list(b):
                src, dst = (a, b) if m in a else (b, a)
                if len(src) == 1:
                    continue
                src2 = [x for x in src if x != m]
                dst2 = dst + [m]
                v = objective(src2) + objective(dst2)
                if v > best + 1e-6:
                    best = v
                    src[:] = src2
                    dst[:] = dst2
                    improved = True
            if not improved:
                break
        for part in (a, b):
            questions.append(sorted(phones[i] for i in part))
            bisect(part)

    bisect(list(range(len(phones))))
    return questions


# ---------------------------------------------------------------------------
# The decision tree
# ---------------------------------------------------------------------------


class DecisionTree:
    """Phonetic decision tree; leaves are pdf-ids.

    ``roots[(phone, state)]`` is a node index; a node is either ``("leaf", pdf)`` or
    ``("q", position, question, yes, no)`` with position 0 = left phone, 2 = right phone.
    """

    context_width = 3

    def __init__(self, questions: List[List[int]], nodes: List[tuple], roots: Dict[Tuple[int, int], int]):
        self.questions = [sorted(int(p) for p in q) for q in questions]
        self._qsets = [set(q) for q in self.questions]
        self.nodes = nodes
        self.roots = roots
        self.num_pdfs = sum(1 for n in nodes if n[0] == "leaf")

    def pdf(self, left: int, phone: int, right: int, state: int) -> int:
        n = self.nodes[self.roots[(phone, state)]]
        while n[0] == "q":
            ph = left if n[1] == 0 else right
            n = self.nodes[n[3] if ph in self._qsets[n[2]] else n[4]]
        return n[1]

    def to_dict(self) -> dict:
        return {"type": "tree", "questions": self.questions, "nodes": [list(n) for n in self.nodes],
                "roots": [[p, k, r] for (p, k), r in sorted(self.roots.items())]}

    @classmethod
    def from_dict(cls, d: dict) -> "DecisionTree":
        return cls(d["questions"], [tuple(n) for n in d["nodes"]], {(p, k): r for p, k, r in d["roots"]})


def build_tree(tstats: TreeStats, topo: HmmTopology, num_leaves: int, questions: List[List[int]],
               min_count: float = 100.0, min_gain: float = 0.0, var_floor: Optional[np.ndarray] = None,
               ) -> Tuple[DecisionTree, dict]:
    """Grow the tree greedily: always split the leaf whose best question gains the most
    likelihood, until ``num_leaves`` leaves or no split gains more than ``min_gain`` with both
    children holding at least ``min_count`` frames. Returns the tree and a summary."""
    D = tstats.dim
    if var_floor is None:
        var_floor = np.full(D, 1e-3)
    keys, stats = tstats.keys, tstats.stats
    max_phone = max(max(topo.phones), int(keys[:, [0, 2]].max()) if len(keys) else 0)
    M = np.zeros((len(questions), max_phone + 1))
    for qi, q in enumerate(questions):
        M[qi, q] = 1.0

    def best_split(rows: np.ndarray):
        tot = stats[rows].sum(0)
        base = gaussian_loglike(tot, var_floor)[0]
        best = (-math.inf, None, None)
        for pos in (0, 2):
            yes = M[:, keys[rows, pos]] @ stats[rows]  # [Q, 1+2D]
            no = tot[None] - yes
            gain = gaussian_loglike(yes, var_floor) + gaussian_loglike(no, var_floor) - base
            ok = (yes[:, 0] >= min_count) & (no[:, 0] >= min_count)
            gain = np.where(ok, gain, -math.inf)
            q = int(np.argmax(gain))
            if gain[q] > best[0]:
                best = (float(gain[q]), pos, q)
        return best

    # node under construction: {"rows": array} for leaves, replaced by a question when split
    build: List[dict] = []
    roots: Dict[Tuple[int, int], int] = {}
    by_root: Dict[Tuple[int, int], List[int]] = {}
    for i, (l, p, r, k) in enumerate(keys.tolist()):
        by_root.setdefault((p, k), []).append(i)
    heap = []
    for p in topo.phones:
        for k in range(topo[p]):
            rows = np.asarray(by_root.get((p, k), []), dtype=np.int64)
            roots[(p, k)] = len(build)
            build.append({"rows": rows})
            if len(rows):
                g, pos, q = best_split(rows)
                if g > min_gain:
                    heapq.heappush(heap, (-g, roots[(p, k)], pos, q))
    num = len(build)
    total_gain = 0.0
    while heap and num < num_leaves:
        neg, n, pos, q = heapq.heappop(heap)
        rows = build[n]["rows"]
        yes_mask = M[q, keys[rows, pos]] > 0
        children = []
        for part in (rows[yes_mask], rows[~yes_mask]):
            children.append(len(build))
            build.append({"rows": part})
            g, pos2, q2 = best_split(part)
            if g > min_gain:
                heapq.heappush(heap, (-g, children[-1], pos2, q2))
        build[n] = {"q": (pos, q, children[0], children[1])}
        num += 1
        total_gain += -neg
    # number the leaves root by root
    nodes: List[tuple] = []
    pdf = 0
    for n in build:
        if "q" in n:
            pos, q, y, no = n["q"]
            nodes.append(("q", pos, q, y, no))
        else:
            nodes.append(("leaf", pdf))
            pdf += 1
    tree = DecisionTree(questions, nodes, roots)
    leaf_counts = [float(stats[n["rows"]][:, 0].sum()) if "rows" in n else None for n in build]
    summary = {"num_leaves": tree.num_pdfs, "likelihood_gain": total_gain,
               "gain_per_frame": total_gain / max(stats[:, 0].sum(), 1.0),
               "min_leaf_count": min(c for c in leaf_counts if c is not None and c > 0) if len(keys) else 0,
               "num_contexts_seen": int(len(keys))}
    return tree, summary


def leaf_stats(tree: DecisionTree, tstats: TreeStats) -> np.ndarray:
    """Pooled (count, sum, sumsq) per pdf-id, for initialising the tied GMMs."""
    out = np.zeros((tree.num_pdfs, tstats.stats.shape[1]))
    for (l, p, r, k), row in zip(tstats.keys.tolist(), tstats.stats):
        out[tree.pdf(l, p, r, k)] += row
    return out
