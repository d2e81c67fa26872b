"""The decoding graph HCLG = min(det(H o C o det(L o G))), built the way Kaldi's mkgraph.sh does.

- ``L_disambig.fst`` (lang) o ``G.fst`` (the n-gram LM), determinized (log semiring) and minimized;
- C by ``kaldifst.compose_context`` (context width 3 for triphones, 1 for monophones), which also
  numbers the context-dependent phones ("ilabels"): ``[l, c, r]``, ``[0]`` (Kaldi's ``#-1``) or
  ``[-p]`` (disambiguation symbol p);
- H maps frame-level senones to those ilabels: one left-to-right HMM per context-dependent phone
  with the pdf-ids of the tree, self-loops included (scaled by ``self_loop_scale``, 0.1 as in
  Kaldi's GMM recipes); disambiguation ilabels become H input symbols above the pdf range;
- H o CLG determinized, disambiguation symbols removed, epsilons removed, minimized;
- converted to a k2 ``Fsa`` whose labels are **pdf-id + 1** (k2 reads label 0 as a symbol that
  consumes a frame, so the graph is made input-epsilon-free) and whose ``aux_labels`` are words.

The context dependency (``ctx_dep``) and the transition model (``trans``) are duck-typed: ``ctx_dep`` has
``context_width``, ``num_pdfs`` and ``pdf(left, phone, right, hmm_state)`` (phone 0 = utterance
boundary); ``trans.loop[phone][hmm_state]`` is a self-loop probability and ``trans.topo[phone]``
the number of HMM states. :mod:`asr_kd.hmm` provides both.

The graph is cached in ``graph_dir`` (``HCLG.pt`` for k2, ``HCLG.fst`` in OpenFst's binary format
for Kaldi's decoders, same labels) together with a fingerprint of its inputs, and rebuilt only
when one of them changes. Given the model's phone set (``phones``, ``model_name``), the lang's
must be the same (:func:`asr_kd.model_info.check_phones`): a graph over other phone ids would
decode garbage.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import k2
import kaldifst
import torch

from asr_kd.lang import Lang
from asr_kd.model_info import check_phones
from asr_kd.utils import Pathlike, atomic_path, read_json, write_json

log = logging.getLogger(__name__)


def _fingerprint(paths: Sequence[Pathlike], extra: dict) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()


def _read_fst(path: Pathlike):
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found (run the lang / LM stage first)")
    return kaldifst.StdVectorFst.read(str(path))


def compose_lg(lang_dir: Pathlike, g_path: Pathlike):
    """det(min(L_disambig o G)) in the log semiring, as mkgraph does."""
    L = _read_fst(Path(lang_dir) / "L_disambig.fst")
    G = _read_fst(g_path)
    kaldifst.arcsort(L, sort_type="olabel")
    LG = kaldifst.compose(L, G)
    if LG.num_states == 0:
        raise RuntimeError(f"L o G is empty: do {lang_dir}/words.txt and {g_path} share a word table?")
    kaldifst.determinize_star(LG, use_log=True)
    kaldifst.minimize_encoded(LG)
    kaldifst.arcsort(LG, sort_type="ilabel")
    return LG


def h_fst_text(ilabels: List[List[int]], ctx_dep, trans, disambig_base: int, self_loop_scale: float) -> str:
    """H in OpenFst text form; input labels are pdf-id + 1, or disambig_base + k."""
    arcs = []
    next_state = 1
    disambig_ids: Dict[int, int] = {}
    for i, entry in enumerate(ilabels):
        if not entry:
            continue  # epsilon
        if len(entry) == 1 and entry[0] <= 0:
            # #-1 ([0]) or a disambiguation phone ([-p]): a distinct H input symbol each.
            k = disambig_ids.setdefault(entry[0], disambig_base + len(disambig_ids))
            arcs.append(f"0 0 {k} {i} 0")
            continue
        if len(entry) == 3:
            left, phone, right = entry
        elif len(entry) == 1:
            left, phone, right = 0, entry[0], 0
        else:
            raise ValueError(f"unexpected context window {entry} (context width must be 1 or 3)")
        loops = trans.loop[phone]
        states = list(range(next_state, next_state + len(loops)))
        next_state += len(loops)
        pdfs = [ctx_dep.pdf(left, phone, right, k) + 1 for k in range(len(loops))]
        arcs.append(f"0 {states[0]} {pdfs[0]} {i} 0")
        for k, s in enumerate(states):
            loop = min(max(float(loops[k]), 1e-6), 1 - 1e-6)
            arcs.append(f"{s} {s} {pdfs[k]} 0 {-self_loop_scale * math.log(loop):.6f}")
            leave = -self_loop_scale * math.log(1 - loop)
            if k + 1 < len(states):
                arcs.append(f"{s} {states[k + 1]} {pdfs[k + 1]} 0 {leave:.6f}")
            else:
                arcs.append(f"{s} 0 0 0 {leave:.6f}")
    arcs.append("0 0")
    return "\n".join(arcs) + "\n"


def _drop_input_symbols_above(fst, first: int):
    """Map input labels >= ``first`` (H's disambiguation symbols) to epsilon (fstrmsymbols)."""
    lines = []
    for line in fst.to_str().splitlines():
        f = line.split()
        if len(f) >= 4 and int(f[2]) >= first:
            f[2] = "0"
        lines.append("\t".join(f))
    return kaldifst.compile("\n".join(lines) + "\n", acceptor=False)


def compose_hclg(LG, lang: Lang, ctx_dep, trans, self_loop_scale: float = 0.1):
    """HCLG as an OpenFst transducer (pdf-id + 1 : word)."""
    disambig = [lang.phones[p] for p in lang.disambig_phones]
    central = 1 if ctx_dep.context_width == 3 else 0
    CLG, ilabels = kaldifst.compose_context(
        disambig_syms=disambig, context_width=ctx_dep.context_width, central_position=central, ifst=LG
    )
    kaldifst.arcsort(CLG, sort_type="ilabel")
    disambig_base = ctx_dep.num_pdfs + 1
    H = kaldifst.compile(h_fst_text(ilabels, ctx_dep, trans, disambig_base, self_loop_scale), acceptor=False)
    kaldifst.arcsort(H, sort_type="olabel")
    HCLG = kaldifst.compose(H, CLG)
    if HCLG.num_states == 0:
        raise RuntimeError("H o CLG is empty: the tree has no pdf for some context-dependent phone")
    kaldifst.determinize_star(HCLG, use_log=True)
    HCLG = _drop_input_symbols_above(HCLG, disambig_base)
    kaldifst.rmepsilon(HCLG)
    kaldifst.minimize_encoded(HCLG)
    kaldifst.arcsort(HCLG, sort_type="ilabel")
    return HCLG


def to_k2(fst):
    """A k2 Fsa (labels pdf-id + 1, aux_labels words), input-epsilon-free, connected, arc-sorted."""
    graph = k2.Fsa.from_openfst(fst.to_str(), acceptor=False)
    graph = k2.connect(k2.remove_epsilon(graph))
    return k2.arc_sort(graph)


def build_graph(
    lang_dir: Pathlike,
    g_path: Pathlike,
    ctx_dep,
    trans,
    graph_dir: Pathlike,
    model_files: Sequence[Pathlike] = (),
    self_loop_scale: float = 0.1,
    force: bool = False,
    phones: Optional[dict] = None,
    model_name: Optional[str] = None,
):
    """Build (or load from ``graph_dir``) the k2 HCLG for a model; returns the k2 Fsa.

    ``model_files`` (tree, transition model) are part of the cache fingerprint. With
    ``model_name``, the model's phone set (``phones``, or for older models the phone ids of
    ``trans``) is checked against the lang's first.
    """
    graph_dir = Path(graph_dir)
    lang_dir = Path(lang_dir)
    if model_name is not None:
        check_phones(phones, model_name, lang_dir, trans.loop.keys())
    inputs = [lang_dir / "L_disambig.fst", lang_dir / "words.txt", g_path, *model_files]
    fingerprint = _fingerprint(inputs, {"self_loop_scale": self_loop_scale, "version": 2})
    meta_path, fsa_path, fst_path = graph_dir / "HCLG.json", graph_dir / "HCLG.pt", graph_dir / "HCLG.fst"
    cached = meta_path.exists() and fsa_path.exists() and fst_path.exists()
    if not force and cached and read_json(meta_path).get("fingerprint") == fingerprint:
        return k2.Fsa.from_dict(torch.load(fsa_path))
    t0 = time.time()
    lang = Lang.load(lang_dir)
    LG = compose_lg(lang_dir, g_path)
    HCLG = compose_hclg(LG, lang, ctx_dep, trans, self_loop_scale)
    graph = to_k2(HCLG)
    graph_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(fsa_path) as tmp:
        torch.save(graph.as_dict(), tmp)
    with atomic_path(fst_path) as tmp:  # OpenFst binary (pdf-id + 1 : word), for Kaldi's decoders
        HCLG.write(str(tmp))
    (graph_dir / "words.txt").write_text((lang_dir / "words.txt").read_text())
    info = {
        "fingerprint": fingerprint,
        "inputs": [str(p) for p in inputs],
        "self_loop_scale": self_loop_scale,
        "context_width": ctx_dep.context_width,
        "num_pdfs": ctx_dep.num_pdfs,
        "LG_states": LG.num_states,
        "HCLG_states": int(graph.shape[0]),
        "HCLG_arcs": int(graph.num_arcs),
        "build_s": round(time.time() - t0, 2),
    }
    write_json(meta_path, info)
    log.info(f"HCLG: {info['HCLG_states']} states, {info['HCLG_arcs']} arcs in {info['build_s']} s -> {graph_dir}")
    return graph
