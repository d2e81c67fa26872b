"""Forced alignment with DNNs (Kaldi's ``steps/nnet/align.sh``): new senone labels for training.

A hybrid DNN learns its frame labels from the GMM that aligned the training set; once trained it
scores frames better than that GMM, and its own alignment (``log p(s|x) - log p(s)``, the
pseudo log-likelihoods the decoder uses, through the same per-utterance training graphs and
Viterbi search as the GMM's, :class:`asr_kd.hmm.align.ForcedAligner`) labels the frames again for
the next DNN. Several models align as their ensemble (mean posterior), as they decode.

The output directory has the layout of ``asr-kd gmm align``'s, so ``asr-kd gmm labels --ali-dir``
turns it into labelled cuts.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from tqdm import tqdm

from asr_kd.decode.acoustic import DnnScorer, load_scorer
from asr_kd.decode.decoder import batches_by_frames
from asr_kd.decode.steps import cut_items
from asr_kd.hmm.align import AlignOpts, ForcedAligner, report_failures
from asr_kd.hmm.lang_info import LangInfo
from asr_kd.hmm.steps import write_align_dir
from asr_kd.model_info import check_phones
from asr_kd.utils import Pathlike, UserError, load_cuts, outputs_fresh, training_lock

logger = logging.getLogger(__name__)


class FrameScores:
    """Stands in for the GMM of :class:`ForcedAligner` when the "features" it is given are already
    each frame's senone scores ``[T, num_pdfs]``: the columns of the pdfs a graph uses."""

    @staticmethod
    def loglikes_subset(scores: torch.Tensor, pdf_set: torch.Tensor) -> torch.Tensor:
        return scores[:, pdf_set.to(scores.device).long()]


def dnn_align_step(models: Sequence[Pathlike], lang_dir: Pathlike, cuts: Pathlike, out_dir: Pathlike,
                   opts: Optional[AlignOpts] = None, *, priors: Optional[Pathlike] = None, device: str = "cpu",
                   progress: bool = True, force: bool = False) -> None:
    """``asr-kd nnet align``: forced-align ``cuts`` with the DNN ``models`` (several: their ensemble)
    into ``out_dir``, scoring ``opts.batch_frames`` frames at a time; ``priors``: senone log-priors
    other than those saved in the models (``asr-kd nnet priors``)."""
    opts = opts or AlignOpts()
    out_dir = Path(out_dir)
    inputs = [*map(Path, models), Path(cuts), *([Path(priors)] if priors else [])]
    if outputs_fresh([out_dir / "ali.pt"], inputs) and not force:
        logger.info("%s is done and newer than its inputs; skipping (use --force to redo)", out_dir)
        return
    with training_lock(out_dir):
        scorer = load_scorer(models, device, priors)
        if not isinstance(scorer, DnnScorer):
            raise UserError(f"{models[0]} is a GMM directory: align with it by asr-kd gmm align")
        lang = LangInfo.load(lang_dir)
        check_phones(scorer.phones, scorer.name, lang_dir, scorer.trans.topo.phones)
        cut_set = load_cuts(cuts, "run the fbank stage first")
        items, texts, featurize = cut_items(cut_set, scorer, Path(cuts))
        scorer.fit_cmvn(items)  # each speaker normalized over all their utterances, as in training
        aligner = ForcedAligner(FrameScores(), scorer.ctx_dep, scorer.trans, lang, opts, device)
        alis, failures = {}, dict(featurize.failures) if featurize else {}
        batches = [[items[i] for i in b] for b in batches_by_frames([len(x) for _, _, x in items], opts.batch_frames)]
        t0 = time.time()
        for batch in tqdm(batches, desc="align", unit="batch", disable=not progress):
            scores: Dict[str, torch.Tensor] = scorer.loglikes(batch)
            done, failed = aligner.align({u: x.to(device) for u, x in scores.items()},
                                         {u: texts[u] for u, _, _ in batch}, report=False)
            alis.update(done)
            failures.update(failed)
        secs = time.time() - t0
        report_failures(failures, len(cut_set))
        if not alis:
            raise UserError(f"{cuts}: no utterance could be aligned by {scorer.name}")
        write_align_dir(out_dir, alis, failures, len(cut_set), " ".join(map(str, models)), scorer.num_pdfs,
                        lang.phone_names, secs, {"priors": scorer.priors, "acoustic_scale": opts.acoustic_scale})
        frames = sum(a.num_frames for a in alis.values())
        logger.info("%s: %d of %d utterances aligned (%d frames) in %.1f s", out_dir, len(alis), len(cut_set),
                    frames, secs)
