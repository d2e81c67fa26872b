"""MFCC-like features computed from the 40-dim log-mel fbank the rest of the project uses.

Kaldi's MFCC is the DCT of the log mel energies followed by a cepstral lifter; taking the DCT of
the stored fbank gives the same thing without reading audio again. As in Kaldi's monophone and
delta recipes, cepstral mean normalisation is per speaker and is applied before the deltas.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from asr_kd.data.features import Cmvn, cmvn_stats

logger = logging.getLogger(__name__)


def dct_matrix(num_ceps: int, num_bins: int) -> np.ndarray:
    """Kaldi's ``ComputeDctMatrix``: orthonormal DCT-II, rows = cepstra, shape [num_ceps, num_bins]."""
    n = np.arange(num_bins)
    k = np.arange(num_ceps)[:, None]
    m = np.sqrt(2.0 / num_bins) * np.cos(np.pi / num_bins * (n + 0.5) * k)
    m[0] = np.sqrt(1.0 / num_bins)
    return m.astype(np.float32)


def lifter_coeffs(num_ceps: int, cepstral_lifter: float = 22.0) -> np.ndarray:
    """Kaldi's cepstral lifter: c_i *= 1 + L/2 sin(pi i / L)."""
    i = np.arange(num_ceps)
    if cepstral_lifter == 0:
        return np.ones(num_ceps, dtype=np.float32)
    return (1.0 + 0.5 * cepstral_lifter * np.sin(np.pi * i / cepstral_lifter)).astype(np.float32)


def fbank_to_mfcc(fbank: np.ndarray, num_ceps: int = 13, cepstral_lifter: float = 22.0) -> np.ndarray:
    """[T, num_mel] log-mel -> [T, num_ceps] MFCC."""
    fbank = np.asarray(fbank, dtype=np.float32)
    m = dct_matrix(num_ceps, fbank.shape[1])
    return (fbank @ m.T) * lifter_coeffs(num_ceps, cepstral_lifter)


def add_deltas(feats: np.ndarray, order: int = 2, window: int = 2) -> np.ndarray:
    """Kaldi's ``add-deltas``: append delta and delta-delta (regression over +-window frames,
    edge frames replicated). [T, D] -> [T, D * (order + 1)]."""
    feats = np.asarray(feats, dtype=np.float32)
    denom = 2.0 * sum(i * i for i in range(1, window + 1))
    base = np.arange(-window, window + 1, dtype=np.float64) / denom
    # Kaldi builds higher orders by convolving the first-order window with itself.
    scales = [np.array([1.0])]
    for _ in range(order):
        scales.append(np.convolve(scales[-1], base))
    out = [feats]
    T = feats.shape[0]
    for o in range(1, order + 1):
        s = scales[o]
        half = (len(s) - 1) // 2
        idx = np.clip(np.arange(T)[:, None] + np.arange(-half, half + 1)[None, :], 0, T - 1)
        out.append(np.einsum("tkd,k->td", feats[idx], s.astype(np.float32)))
    return np.concatenate(out, axis=1).astype(np.float32)


@dataclass
class FeatureOpts:
    num_ceps: int = 13
    cepstral_lifter: float = 22.0
    delta_order: int = 2
    norm_vars: bool = False
    # utterances whose mean log-mel energy varies less than this over time are digital silence
    min_energy_range: float = 1e-3

    @property
    def dim(self) -> int:
        return self.num_ceps * (self.delta_order + 1)


def _unusable(fbank: np.ndarray, opts: FeatureOpts) -> Optional[str]:
    """Why an utterance's fbank cannot be used, or None."""
    if fbank.ndim != 2 or fbank.shape[0] == 0:
        return "empty features: 0 frames"
    if not np.isfinite(fbank).all():
        bad = int((~np.isfinite(fbank)).any(axis=1).sum())
        return f"bad features: NaN/inf values in {bad} of {fbank.shape[0]} frames"
    if fbank.shape[0] > 1 and float(np.ptp(fbank.mean(axis=1))) < opts.min_energy_range:
        return ("silent audio: frame energies constant (digital silence), "
                f"range {float(np.ptp(fbank.mean(axis=1))):.2g} < {opts.min_energy_range}")
    return None


def compute_features(
    items: Iterable[Tuple[str, str, np.ndarray]], opts: Optional[FeatureOpts] = None, cmvn: Optional[Cmvn] = None,
) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """MFCC + per-speaker CMVN + deltas for ``(utt_id, speaker, fbank)`` items.

    Returns ``(feats, rejected)``: features by utterance id and, for utterances that cannot be
    used, the reason (empty, or NaN/inf values in the fbank); those never reach the CMVN sums.
    The CMVN statistics are those of ``items`` unless ``cmvn`` (from :func:`mfcc_cmvn` over a
    whole set) is given: a decoder that scores a set batch by batch passes the set's.
    """
    opts = opts or FeatureOpts()
    mfcc: Dict[str, np.ndarray] = {}
    spk_of: Dict[str, str] = {}
    rejected: Dict[str, str] = {}
    for utt, spk, fbank in items:
        fbank = np.asarray(fbank)
        reason = _unusable(fbank, opts)
        if reason:
            rejected[utt] = reason
            continue
        c = fbank_to_mfcc(fbank, opts.num_ceps, opts.cepstral_lifter)
        mfcc[utt] = c
        spk_of[utt] = spk
    feats = {}
    if mfcc:  # per-speaker CMN (CMVN with norm_vars) of the cepstra, before the deltas, as Kaldi does
        if cmvn is None:
            cmvn = Cmvn(cmvn_stats((spk_of[u], c) for u, c in mfcc.items()), mode="speaker", norm_vars=opts.norm_vars)
        feats = {utt: add_deltas(cmvn(c, spk_of[utt]), order=opts.delta_order) for utt, c in mfcc.items()}
    for utt, reason in rejected.items():
        logger.warning("utterance %s rejected: %s", utt, reason)
    return feats, rejected


def mfcc_cmvn(items: Iterable[Tuple[str, str, np.ndarray]], opts: Optional[FeatureOpts] = None) -> Cmvn:
    """Per-speaker CMVN of the cepstra of all usable ``(utt_id, speaker, fbank)`` items."""
    opts = opts or FeatureOpts()
    usable = ((spk, fbank_to_mfcc(np.asarray(x), opts.num_ceps, opts.cepstral_lifter)) for _, spk, x in items
              if _unusable(np.asarray(x), opts) is None)
    return Cmvn(cmvn_stats(usable), mode="speaker", norm_vars=opts.norm_vars)


def features_from_cuts(cuts, opts: Optional[FeatureOpts] = None):
    """:func:`compute_features` over a lhotse CutSet (fbank from ``cut.load_features()``,
    speaker from the first supervision, or the recording id when there is none)."""

    def gen():
        for cut in cuts:
            spk = None
            if cut.supervisions:
                spk = cut.supervisions[0].speaker
            yield cut.id, spk or cut.recording_id, cut.load_features()

    return compute_features(gen(), opts)
