"""What the GMM system hands on: alignments, senone labels on lhotse cuts, priors, CTM.

A model directory (``exp/mono``, ``exp/tri1``) holds::

    final.mdl            torch file: GMMs, transition model, context dependency (GmmHmm.load)
    tree.json            the context dependency alone (monophone map or decision tree)
    transitions.json     topology and self-loop probabilities per (phone, state)
    ali.pt               alignment of the training cuts (per utterance: pdfs, phones, states)
    ali_failures.json    utterances left out and why
    priors.json          senone counts and log-priors from the alignment (for hybrid decoding)
    history.json         per-iteration log-likelihood, Gaussians, aligned utterances
    phones.ctm           phone-level alignment for inspection
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from lhotse import CutSet, NumpyFilesWriter
import torch

from asr_kd.hmm.align import Alignment
from asr_kd.utils import atomic_path, write_json, write_text

logger = logging.getLogger(__name__)

FRAME_SHIFT = 0.01


def save_alignments(path, alis: Dict[str, Alignment]) -> None:
    with atomic_path(path) as tmp:
        torch.save({u: a.to_arrays() for u, a in alis.items()}, tmp)


def load_alignments(path) -> Dict[str, Alignment]:
    d = torch.load(path, map_location="cpu", weights_only=False)  # our own file: numpy arrays inside
    return {u: Alignment.from_arrays(v) for u, v in d.items()}


def senone_priors(alis: Dict[str, Alignment], num_pdfs: int) -> dict:
    """Counts of each senone in the alignment and log-priors (add-one smoothed so that no pdf
    gets -inf; hybrid decoding divides posteriors by these)."""
    counts = np.zeros(num_pdfs, dtype=np.int64)
    for a in alis.values():
        counts += np.bincount(a.pdfs, minlength=num_pdfs)
    sm = counts + 1.0
    return {"num_pdfs": num_pdfs, "num_frames": int(counts.sum()), "counts": counts.tolist(),
            "log_priors": np.log(sm / sm.sum()).tolist(), "unseen_pdfs": int((counts == 0).sum())}


def write_ctm(path, alis: Dict[str, Alignment], phone_names: Dict[int, str], frame_shift: float = FRAME_SHIFT) -> None:
    """``utt 1 start duration phone`` per phone instance (Kaldi's phone CTM)."""
    lines = []
    for u in sorted(alis):
        for p, s, n in alis[u].phone_segments():
            lines.append(f"{u} 1 {s * frame_shift:.2f} {n * frame_shift:.2f} {phone_names.get(p, str(p))}")
    write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def attach_senones(cuts, alis: Dict[str, Alignment], storage_dir, field: str = "senone",
                   frame_shift: float = FRAME_SHIFT):
    """Cuts with a ``senone`` TemporalArray (int32 pdf-id per fbank frame, stored as .npy files
    under ``storage_dir``). Cuts without an alignment, or whose feature frame count differs from
    the alignment's, are left out and counted. Returns ``(CutSet, counts)``."""
    out, missing, mismatch = [], 0, 0
    Path(storage_dir).mkdir(parents=True, exist_ok=True)
    with NumpyFilesWriter(storage_dir) as writer:
        for cut in cuts:
            a = alis.get(cut.id)
            if a is None:
                missing += 1
                continue
            if cut.has_features and cut.num_frames != a.num_frames:
                mismatch += 1
                logger.warning("cut %s: %d feature frames but %d aligned frames; left out",
                               cut.id, cut.num_frames, a.num_frames)
                continue
            arr = writer.store_array(cut.id, a.pdfs.astype(np.int32), frame_shift=frame_shift, temporal_dim=0)
            out.append(cut.with_custom(field, arr))
    return CutSet.from_cuts(out), {"with_labels": len(out), "no_alignment": missing, "frame_mismatch": mismatch}


def save_model_dir(exp_dir, model, alis, failures, history, lang, summary_fields: Optional[dict] = None) -> None:
    """Write everything a model directory holds (see the module doc); final.mdl last, since its
    presence marks the step as done. An old final.mdl goes first: a redo killed halfway leaves
    no model, not an old one beside the new alignment."""
    exp_dir = Path(exp_dir)
    (exp_dir / "final.mdl").unlink(missing_ok=True)
    exp_dir.mkdir(parents=True, exist_ok=True)
    write_json(exp_dir / "tree.json", model.ctx_dep.to_dict())
    write_json(exp_dir / "transitions.json", model.trans.to_dict())
    save_alignments(exp_dir / "ali.pt", alis)
    write_json(exp_dir / "ali_failures.json", failures)
    write_json(exp_dir / "priors.json", senone_priors(alis, model.ctx_dep.num_pdfs))
    write_json(exp_dir / "history.json", history)
    write_ctm(exp_dir / "phones.ctm", alis, lang.phone_names)
    summary = {"num_pdfs": model.ctx_dep.num_pdfs, "num_gauss": model.gmm.total_gauss(),
               "utts_aligned": len(alis), "utts_failed": len(failures),
               "failure_reasons": _reason_counts(failures),
               "final_loglike_per_frame": (sum(a.loglike for a in alis.values())
                                           / max(1, sum(a.num_frames for a in alis.values())))}
    summary.update(summary_fields or {})
    write_json(exp_dir / "summary.json", summary)
    model.save(exp_dir / "final.mdl")


def _reason_counts(failures: Dict[str, str]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for r in failures.values():
        k = r.split(":")[0]
        out[k] = out.get(k, 0) + 1
    return out
