"""Acoustic scorers: per-frame senone log-likelihoods for the decoder, from a GMM or from DNNs.

- :class:`GmmScorer`: ``exp/<gmm>/final.mdl``; MFCC + deltas with per-speaker CMVN from the fbank,
  GMM log-likelihoods.
- :class:`DnnScorer`: one ``final.pt`` or several (an ensemble, combined by the arithmetic mean of
  their posteriors); per-speaker CMVN of the fbank, ``log p(s | x) - log p(s)`` with the senone
  priors saved in the model (pseudo log-likelihoods, the hybrid recipe).

Both expose the context dependency and transition model of the GMM system that defined the
senones (for HCLG), the phone set that system was trained with (``phones``, checked against the
lang by :func:`asr_kd.decode.graph.build_graph`), the feature settings audio must be turned into
(``features``: sampling rate, fbank, MFCC), and take ``(utt_id, speaker, fbank)`` items so that manifests and plain
audio files decode the same way. ``fit_cmvn(items)`` fixes the per-speaker CMVN statistics from
a whole set before it is scored batch by batch, as training saw them (without it, each call
normalises with the statistics of the items it is given).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from asr_kd.data.features import Cmvn, cmvn_stats
from asr_kd.hmm.features import FeatureOpts, compute_features, mfcc_cmvn
from asr_kd.hmm.topology import TransitionModel
from asr_kd.hmm.train import GmmHmm, context_from_dict
from asr_kd.model_info import cuts_sampling_rate, feature_config
from asr_kd.nnet.data import FrameSet
from asr_kd.nnet.model import Ensemble, load_model, meta_path
from asr_kd.nnet.train import predict
from asr_kd.utils import Pathlike, read_json

log = logging.getLogger(__name__)

Item = Tuple[str, str, np.ndarray]  # (utt_id, speaker, fbank [T, 40])


def _load_gmm(gmm_dir: Pathlike):
    path = Path(gmm_dir) / "final.mdl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train the GMM system first")
    return GmmHmm.load(path)


def _senone_system(gmm_dir: Path):
    """(context dependency, transition model, phone set) of the GMM system that defines a DNN's
    senones: from its ``final.mdl``, or, in a directory written by ``asr-kd export`` (which holds
    no GMM for a DNN), from its ``tree.json``, ``transitions.json`` and ``phones.json``."""
    if (gmm_dir / "final.mdl").is_file() or not (gmm_dir / "tree.json").is_file():
        gmm = _load_gmm(gmm_dir)
        return gmm.ctx_dep, gmm.trans, gmm.info.get("phones")
    for name in ("transitions.json", "phones.json"):
        if not (gmm_dir / name).is_file():
            raise FileNotFoundError(f"{gmm_dir / name} not found: {gmm_dir} has a tree.json but neither a final.mdl "
                                    f"nor a complete export (asr-kd export)")
    trans = TransitionModel.from_dict(read_json(gmm_dir / "transitions.json"))
    return context_from_dict(read_json(gmm_dir / "tree.json"), trans.topo), trans, read_json(gmm_dir / "phones.json")


def gmm_features(gmm_dir: Path, model) -> dict:
    """The GMM's feature settings: recorded in final.mdl, else (models trained before they were)
    the fbank settings of the rate of the training cuts its directory names, else an error."""
    if model.info.get("features"):
        return model.info["features"]
    summary = gmm_dir / "summary.json"
    cuts = model.info.get("train_cuts") or (read_json(summary).get("train_cuts") if summary.is_file() else None)
    if cuts and Path(cuts).is_file():
        return feature_config(cuts_sampling_rate(cuts))
    raise ValueError(f"{gmm_dir / 'final.mdl'} records no sampling rate (trained before models recorded their "
                     "features) and names no training cuts: retrain it (asr-kd gmm mono/tri --force), or decode "
                     "feature manifests with --cuts")


class GmmScorer:
    kind = "gmm"

    def __init__(self, gmm_dir: Pathlike, device: str = "cpu"):
        self.gmm_dir = Path(gmm_dir)
        self.model = _load_gmm(gmm_dir)
        self.name = str(self.gmm_dir / "final.mdl")
        self.ctx_dep, self.trans = self.model.ctx_dep, self.model.trans
        self.model_files = [self.gmm_dir / "tree.json", self.gmm_dir / "transitions.json"]
        self.phones = self.model.info.get("phones")
        mfcc = self.model.info.get("features", {}).get("mfcc", {})
        # Decoding scores digitally silent audio too (training leaves it out: it cannot be aligned).
        self.opts = FeatureOpts(**{**mfcc, "min_energy_range": 0.0})
        self.device = device
        self.cmvn = None
        self._features: Optional[dict] = None

    @property
    def features(self) -> dict:
        if self._features is None:
            self._features = gmm_features(self.gmm_dir, self.model)
        return self._features

    @property
    def num_pdfs(self) -> int:
        return self.ctx_dep.num_pdfs

    @property
    def parameters(self) -> int:
        """Means, variances and weights of every Gaussian."""
        gmm = self.model.gmm
        return gmm.total_gauss() * (2 * gmm.dim + 1)

    def fit_cmvn(self, items: Sequence[Item]) -> None:
        self.cmvn = mfcc_cmvn(items, self.opts)

    def loglikes(self, items: Sequence[Item]) -> Dict[str, torch.Tensor]:
        feats, rejected = compute_features(items, self.opts, cmvn=self.cmvn)
        gmm = self.model.gmm.to(self.device)
        return {u: gmm.loglikes(torch.from_numpy(x).to(self.device)).float().cpu() for u, x in feats.items()}


class DnnScorer:
    kind = "dnn"

    def __init__(self, model_paths: Sequence[Pathlike], device: str = "cpu", dtype: str = "auto",
                 priors: Optional[Pathlike] = None):
        models = [load_model(p, device) for p in model_paths]
        self.model = Ensemble(models)
        meta = models[0].meta
        if "gmm_dir" not in meta or "log_priors" not in meta:
            raise ValueError(f"{model_paths[0]}: model metadata lacks gmm_dir/log_priors; was it trained by asr-kd nnet?")
        self.gmm_dir = meta_path(models[0], "gmm_dir")
        self.ctx_dep, self.trans, self.phones = _senone_system(self.gmm_dir)
        gmm_file = self.gmm_dir / "final.mdl"
        its = f"GMM {gmm_file}" if gmm_file.is_file() else f"senones {self.gmm_dir}"  # an export has no GMM
        self.name = f"{model_paths[0]} (its {its})"
        self.model_files = [self.gmm_dir / "tree.json", self.gmm_dir / "transitions.json"]
        # The hybrid's p(x|s) ~ p(s|x) / p(s): p(s) from the GMM alignment the model learned from (saved
        # in the model), or from a file (asr-kd nnet priors: the model's own mean posterior, as Kaldi's nnet).
        self.priors = str(priors) if priors else "model"
        log_priors = read_json(priors)["log_priors"] if priors else meta["log_priors"]
        self.log_priors = torch.tensor(log_priors, dtype=torch.float32)
        if self.log_priors.numel() != self.ctx_dep.num_pdfs:
            raise ValueError(f"model has {self.log_priors.numel()} senones but {self.gmm_dir} has {self.ctx_dep.num_pdfs}")
        self.device, self.dtype = device, dtype
        self.cmvn = None
        rates = {m.meta.get("sampling_rate") for m in models}
        if len(rates) != 1:
            raise ValueError(f"ensemble members were trained at different sampling rates {sorted(map(str, rates))}")
        self.meta = meta

    @property
    def features(self) -> dict:
        if self.meta.get("features"):
            return self.meta["features"]
        if self.meta.get("sampling_rate"):
            return feature_config(self.meta["sampling_rate"])
        raise ValueError(f"{self.name}: model metadata has no sampling rate; was it trained by asr-kd nnet?")

    @property
    def num_pdfs(self) -> int:
        return self.ctx_dep.num_pdfs

    @property
    def parameters(self) -> int:
        """Weights of the acoustic model (every member of an ensemble): what it costs to deploy."""
        return sum(p.numel() for p in self.model.parameters())

    @staticmethod
    def _speaker_cmvn(items: Sequence[Item]):
        usable = ((s, x) for _, s, x in items if len(x) and np.isfinite(x).all())
        return Cmvn(cmvn_stats(usable), mode="speaker")

    def fit_cmvn(self, items: Sequence[Item]) -> None:
        self.cmvn = self._speaker_cmvn(items)

    def loglikes(self, items: Sequence[Item]) -> Dict[str, torch.Tensor]:
        items = [(u, s, np.asarray(x, dtype=np.float32)) for u, s, x in items if len(x)]
        if not items:
            return {}
        cmvn = self.cmvn or self._speaker_cmvn(items)
        feats = [torch.from_numpy(cmvn(x, s)) for _, s, x in items]
        lengths = torch.tensor([len(f) for f in feats])
        ends = torch.cumsum(lengths, 0)
        frames = FrameSet(torch.cat(feats), torch.full((int(ends[-1]),), -1), torch.repeat_interleave(
            torch.arange(len(feats)), lengths), ends - lengths, ends, [u for u, _, _ in items], [s for _, s, _ in items])
        logits = predict(self.model, frames, device=self.device, dtype=self.dtype)  # [K, N, S]
        log_post = torch.logsumexp(torch.log_softmax(logits, -1), 0) - np.log(logits.shape[0])
        scores = log_post - self.log_priors
        return {u: scores[frames.utterance(i)] for i, (u, _, _) in enumerate(items)}


def load_scorer(models: Sequence[Pathlike], device: str = "cpu", priors: Optional[Pathlike] = None):
    """A GMM directory, or one or more DNN ``.pt`` files (an ensemble; ``priors``: a JSON file of
    senone ``log_priors`` to divide its posteriors by, instead of those saved in the model)."""
    paths = [Path(m) for m in models]
    if len(paths) == 1 and paths[0].is_dir():
        if priors:
            raise ValueError("--priors is for DNNs: a GMM gives likelihoods, not posteriors")
        return GmmScorer(paths[0], device)
    if all(p.suffix == ".pt" for p in paths):
        return DnnScorer(paths, device, priors=priors)
    raise ValueError(f"--model takes a GMM directory (with final.mdl) or DNN .pt files, not {models}")
