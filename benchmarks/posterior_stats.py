#!/usr/bin/env python
"""Posterior statistics of DNN systems on a labelled set: why one system decodes better or worse
than its frame accuracy says (a diagnostic, not a test or a benchmark).

For each system (a model, or several as an ensemble: the mean of their distributions) over the
set's labelled frames: frame accuracy; the accuracy of argmax(log posterior - log prior), the
pseudo-likelihood the HMM decoder scores; the mean negative log posterior of the label (NLL); the
mean entropy; and KL(mean posterior || the priors saved in the model), which says whether dividing
by those priors suits the system.

Run from a recipe directory after stage 11, e.g.:
    python ../../benchmarks/posterior_stats.py base=exp/dnn_seed1/final.pt \
        ens=exp/dnn_seed1/final.pt,exp/dnn_seed2/final.pt,exp/dnn_seed3/final.pt,exp/dnn_seed4/final.pt \
        student=exp/dnn_distilled_T2/final.pt
(--cuts and --frames-cache default to speechocean762's dev set.)
"""
import argparse
from pathlib import Path

import asr_kd  # noqa: F401  (first: MKL's CPU type before torch loads)
import torch

from asr_kd.nnet.model import Ensemble, load_model
from asr_kd.nnet.steps import load_frames
from asr_kd.nnet.train import _batched_logits

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("systems", nargs="+", metavar="NAME=MODEL[,MODEL...]")
parser.add_argument("--cuts", type=Path, default=Path("data/senones/speechocean762_cuts_dev.jsonl.gz"))
parser.add_argument("--frames-cache", type=Path, default=Path("data/frames/train_sp_dev.pt"))
args = parser.parse_args()
dev = load_frames(args.cuts, args.frames_cache)
systems = dict(a.split("=", 1) for a in args.systems)
out = {}
for name, paths in systems.items():
    ms = [load_model(p) for p in paths.split(",")]
    model = ms[0] if len(ms) == 1 else Ensemble(ms)
    log_prior = torch.tensor(ms[0].meta["log_priors"])
    idx = torch.nonzero(dev.labels >= 0).squeeze(1)
    n = correct = correct_ll = 0; nll = ent = 0.0; avg = torch.zeros_like(log_prior)
    for b, z in _batched_logits(model, dev, idx, 4096, "cpu", "fp32"):
        lp = torch.log_softmax(z, -1)
        if lp.dim() == 3:
            lp = torch.logsumexp(lp, 0) - torch.log(torch.tensor(float(lp.shape[0])))
        y = dev.labels[b]
        correct += int((lp.argmax(-1) == y).sum()); correct_ll += int(((lp - log_prior).argmax(-1) == y).sum())
        nll += float(-lp.gather(1, y[:, None]).sum()); p = lp.exp(); ent += float(-(p * lp).sum())
        avg += p.sum(0); n += len(y)
    avg /= n
    kl = float((avg * (avg.clamp_min(1e-12).log() - log_prior)).sum())
    out[name] = {"frame_acc": round(100 * correct / n, 2), "loglike_argmax_acc": round(100 * correct_ll / n, 2),
                 "nll": round(nll / n, 3), "entropy": round(ent / n, 3), "kl_avgpost_prior": round(kl, 3)}
    print(name, out[name], flush=True)
