"""Peer check: our monophone alignment against Kaldi's, on the same features and lexicon.

Kaldi's side (:mod:`asr_kd.hmm.kaldi_peer_worker`) runs in a child process with ``PYTHONPATH``
set to a separate install of ``kaldi-hmm-gmm`` and ``kaldifst==1.7.17`` (they clash with the
main stack: see ../shared/STACK.md)::

    pip install --no-deps --target /some/dir kaldi-hmm-gmm==1.1.4 kaldifst==1.7.17

Both systems train a monophone model with the same schedule; we report the frame-level phone
agreement of the final alignments and each system's average per-frame log-likelihood.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

logger = logging.getLogger(__name__)


def run_kaldi_mono(feats: Dict[str, np.ndarray], texts: Dict[str, Sequence[str]], lang_dir, peer_path,
                   num_iters: int = 0, realign_iters: Sequence[int] = (), max_gauss: int = 0, max_iter_inc: int = 0,
                   num_states: int = 3, num_sil_states: int = 5, timeout: float = 3600, model=None) -> dict:
    """Train and align with Kaldi in a child process; returns its per-utterance alignment.

    With ``model`` (an asr_kd monophone :class:`~asr_kd.hmm.train.GmmHmm`) Kaldi does not train:
    it aligns with our GMMs and transition probabilities, which isolates the aligner."""
    utts = sorted(u for u in texts if u in feats)
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        extra = {}
        cfg = {"num_iters": num_iters, "realign_iters": list(realign_iters), "max_gauss": max_gauss,
               "max_iter_inc": max_iter_inc, "num_states": num_states, "num_sil_states": num_sil_states,
               "mode": "train"}
        if model is not None:
            g = model.gmm
            extra = {"means": g.means.numpy(), "vars": g.vars.numpy(), "log_weights": g.log_weights.numpy(),
                     "loops": json.dumps({str(p): v.tolist() for p, v in model.trans.loop.items()})}
            topo = model.trans.topo
            sil = [n for p, n in topo.num_states.items()]
            cfg.update(mode="align", num_states=min(sil), num_sil_states=max(sil))
        np.savez(inp, utts=np.array(utts, dtype=object), feats=np.array([feats[u] for u in utts] + [None], dtype=object)[:-1],
                 texts=np.array([list(texts[u]) for u in utts] + [None], dtype=object)[:-1], **extra)
        env = dict(os.environ)
        repo = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([str(peer_path), repo])
        proc = subprocess.run([sys.executable, "-m", "asr_kd.hmm.kaldi_peer_worker", str(inp), str(lang_dir),
                               str(out), json.dumps(cfg)], env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"kaldi peer failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
        d = np.load(out, allow_pickle=True)
        return {
            "alignments": {u: (p, pdf, ll) for u, p, pdf, ll in zip(d["utts"], d["phones"], d["pdfs"], d["loglikes"])},
            "history": json.loads(str(d["history"])), "failed": json.loads(str(d["failed"])),
            "num_gauss": int(d["num_gauss"]),
        }


def compare(ours: Dict[str, "object"], kaldi: dict) -> dict:
    """Frame-level phone agreement and average per-frame log-likelihoods."""
    common = sorted(set(ours) & set(kaldi["alignments"]))
    agree, frames, ll_ours, ll_kaldi = 0, 0, 0.0, 0.0
    for u in common:
        a = ours[u]
        kp, _, kll = kaldi["alignments"][u]
        agree += int((a.phones == kp).sum())
        frames += len(kp)
        ll_ours += a.loglike
        ll_kaldi += float(np.sum(kll))
    return {
        "utts_compared": len(common), "frames": frames,
        "phone_agreement": agree / max(frames, 1),
        "loglike_per_frame_ours": ll_ours / max(frames, 1),
        "loglike_per_frame_kaldi": ll_kaldi / max(frames, 1),
        "kaldi_failed": len(kaldi["failed"]), "kaldi_num_gauss": kaldi["num_gauss"],
        "kaldi_history": kaldi["history"],
    }
