"""Batched Viterbi decoding over HCLG with k2, one-best words, LM-weight rescoring of lattices.

Acoustic scores are per-frame log-likelihoods over senones: GMM log-likelihoods, or DNN
log-posteriors minus log senone priors (pseudo-likelihoods). They are multiplied by
``acoustic_scale`` and put in a ``k2.DenseFsaVec`` whose column ``pdf + 1`` holds pdf's score
(column 0 is never used: the graph is input-epsilon-free). ``k2.intersect_dense_pruned`` searches
all utterances of a batch at once against the one graph, with ``search_beam``/``output_beam`` and
``min/max_active_states`` like Kaldi's beam and max-active.

Each lattice keeps the graph part of its scores (``graph_scores``), so the one-best path can be
recomputed for any LM weight without decoding again (Kaldi's ``lattice-scale
--inv-acoustic-scale``): the recipe tunes the LM weight on a dev set and applies it to test.
An utterance whose lattice comes out empty is retried once with doubled beams and reported if
it stays empty; its hypothesis is then missing and the scorer counts it as deletions.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

import k2
import torch

from asr_kd.config import option

log = logging.getLogger(__name__)


# Frames per k2 batch. On a CPU about one utterance at a time is fastest (its working set presumably
# staying in cache; speechocean762 dev, DNN: 1.27x faster than 10000 in one job, 1.39x at --nj 2,
# same words; benchmarks/results/decode_jobs.json). A GPU needs large batches to be busy.
CPU_BATCH_FRAMES = 500
GPU_BATCH_FRAMES = 10000


@dataclass
class DecodeOpts:
    """How the search runs; ``asr-kd decode`` makes a flag of each field (help as below)."""

    acoustic_scale: float = option(0.1, "acoustic scale of the first pass")
    search_beam: float = option(13.0, "Kaldi's --beam (decode.sh default)")
    output_beam: float = option(6.0, "Kaldi's --lattice-beam")
    min_active_states: int = option(30, "fewest active states per frame", flag="--min-active")
    max_active_states: int = option(7000, "Kaldi's --max-active", flag="--max-active")
    max_batch_frames: int = option(0, f"frames per k2 batch; 0: {CPU_BATCH_FRAMES} on a CPU (about one utterance: "
                                      f"fastest there), {GPU_BATCH_FRAMES} on a GPU (large batches keep it busy)")
    device: str = option("cpu", "cpu or cuda (acoustic scores and search)")

    def __post_init__(self):
        if self.max_batch_frames <= 0:
            self.max_batch_frames = CPU_BATCH_FRAMES if self.device == "cpu" else GPU_BATCH_FRAMES


def dense_fsa_vec(loglikes: Sequence[torch.Tensor], acoustic_scale: float):
    """DenseFsaVec over a batch of [T_i, num_pdfs] score matrices (column 0 unused)."""
    lengths = [int(x.shape[0]) for x in loglikes]
    num_pdfs = int(loglikes[0].shape[1])
    scores = torch.full((len(loglikes), max(lengths), num_pdfs + 1), -1e10, dtype=torch.float32)
    for i, x in enumerate(loglikes):
        scores[i, : x.shape[0], 1:] = acoustic_scale * x.float()
    segments = torch.tensor([[i, 0, t] for i, t in enumerate(lengths)], dtype=torch.int32)
    return k2.DenseFsaVec(scores, segments)


def path_words(paths) -> List[List[int]]:
    """Word ids along each path of an FsaVec of best paths (aux labels > 0)."""
    aux = paths.aux_labels
    if isinstance(aux, k2.RaggedTensor):
        # [fsa][state][arc] o [arc][word] -> [fsa][word]
        shape = paths.arcs.shape().compose(aux.shape).remove_axis(1).remove_axis(1)
        words = k2.RaggedTensor(shape, aux.values)
    else:
        shape = paths.arcs.shape().remove_axis(1)
        words = k2.RaggedTensor(shape, aux)
    return words.remove_values_leq(0).tolist()


@dataclass
class DecodeResult:
    """Per utterance (in input order): lattice kept for rescoring, and the one-best word ids."""

    lattices: list = field(default_factory=list)  # k2 Fsa (one lattice each) or None if empty
    words: List[Optional[List[int]]] = field(default_factory=list)


class Decoder:
    def __init__(self, graph, opts: Optional[DecodeOpts] = None):
        self.opts = opts or DecodeOpts()
        graph = graph.to(self.opts.device)
        if not hasattr(graph, "graph_scores"):
            graph.graph_scores = graph.scores.clone()
        self.graph = graph

    def _intersect(self, loglikes: Sequence[torch.Tensor], beam_factor: float = 1.0):
        o = self.opts
        dense = dense_fsa_vec([x.to(o.device) for x in loglikes], o.acoustic_scale)
        return k2.intersect_dense_pruned(
            self.graph,
            dense,
            search_beam=o.search_beam * beam_factor,
            output_beam=o.output_beam * beam_factor,
            min_active_states=o.min_active_states,
            max_active_states=int(o.max_active_states * beam_factor),
        )

    def decode(self, loglikes: Sequence[torch.Tensor], one_best: bool = True) -> DecodeResult:
        """Decode a batch; returns lattices and one-best word ids (None where the lattice is empty).
        ``one_best=False`` leaves ``words`` empty (callers that rescore the lattices anyway)."""
        result = DecodeResult()
        result.lattices = _split(self._intersect(loglikes))
        empty = [i for i, lat in enumerate(result.lattices) if lat is None]
        if empty:
            retry = _split(self._intersect([loglikes[i] for i in empty], beam_factor=2.0))
            for j, i in enumerate(empty):
                result.lattices[i] = retry[j]
            still = [i for i in empty if result.lattices[i] is None]
            log.warning(f"{len(empty)} empty lattice(s) retried with doubled beams; {len(still)} still empty")
        if not one_best:
            return result
        kept = [lat for lat in result.lattices if lat is not None]
        words = iter(path_words(k2.shortest_path(k2.create_fsa_vec(kept), use_double_scores=True))) if kept else iter(())
        result.words = [next(words) if lat is not None else None for lat in result.lattices]
        return result


def _split(lattices) -> list:
    """The lattices of an FsaVec as a list, with None for those without arcs (empty).

    (Indexing an FsaVec at an arc-less Fsa trips k2 1.23's ragged-attribute indexing.)
    """
    states = lattices.arcs.row_splits(1).long()
    arcs = lattices.arcs.row_splits(2).long()[states]
    return [lattices[i] if arcs[i + 1] > arcs[i] else None for i in range(lattices.shape[0])]


def _words_per_arc(lattices):
    """Number of words (aux labels > 0) each arc of an FsaVec emits, as float scores."""
    aux = lattices.aux_labels
    if isinstance(aux, k2.RaggedTensor):
        return aux.remove_values_leq(0).shape.row_splits(1).diff().to(lattices.scores.dtype)
    return (aux > 0).to(lattices.scores.dtype)


def rescore_lm_weights(lattices: Sequence, lm_weights: Iterable[float], acoustic_scale: float,
                       word_ins_penalty: float = 0.0) -> Dict[float, List[Optional[List[int]]]]:
    """One-best word ids for each LM weight: scores = am / lm_weight + graph - penalty * words (am
    unscaled), as Kaldi's score.sh (lattice-scale --inv-acoustic-scale, lattice-add-penalty)."""
    kept = [lat for lat in lattices if lat is not None]
    out: Dict[float, List[Optional[List[int]]]] = {}
    if not kept:
        return {w: [None] * len(lattices) for w in lm_weights}
    vec = k2.create_fsa_vec(kept)
    am = (vec.scores - vec.graph_scores) / acoustic_scale
    graph = vec.graph_scores - word_ins_penalty * _words_per_arc(vec) if word_ins_penalty else vec.graph_scores
    # One FsaVec whose scores are reassigned per weight, not a clone each time: k2 caches the
    # topology a shortest path needs (incoming arcs, state batches) on the Fsa and drops only the
    # score-dependent entries when scores change; a fresh clone recomputed it, 85% of a dev decode.
    for w in lm_weights:
        vec.scores = am / w + graph
        words = iter(path_words(k2.shortest_path(vec, use_double_scores=True)))
        out[w] = [next(words) if x is not None else None for x in lattices]
    return out


def batches_by_frames(lengths: Sequence[int], max_frames: int) -> List[List[int]]:
    """Indices grouped so each batch holds at most ``max_frames`` (padded) frames, longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, cur = [], []
    for i in order:
        if cur and lengths[cur[0]] * (len(cur) + 1) > max_frames:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches
