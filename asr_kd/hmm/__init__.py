"""Kaldi-style GMM-HMM system: the source of the DNNs' frame labels (senones).

- :mod:`~asr_kd.hmm.features`: MFCC-like features from the 40-dim log-mel fbank (DCT, lifter,
  per-speaker CMVN, deltas).
- :mod:`~asr_kd.hmm.topology`: HMM topology (left-to-right phone HMMs) and the transition model.
- :mod:`~asr_kd.hmm.gmm`: a set of diagonal GMMs (one per pdf-id), batched log-likelihoods,
  accumulators, MLE update and Gaussian splitting.
- :mod:`~asr_kd.hmm.tree`: context dependency: the monophone map and the phonetic decision tree
  (automatic questions, likelihood-gain splitting).
- :mod:`~asr_kd.hmm.graph`: per-utterance training graphs (lexicon, optional silence, context,
  HMMs) as epsilon-free k2 FSAs.
- :mod:`~asr_kd.hmm.align`: equal (flat-start) alignment and batched forced alignment, with
  k2 (``intersect_dense`` + ``shortest_path``) or :mod:`~asr_kd.hmm.viterbi` (the same search
  as a batched torch Viterbi, the faster default on CPU).
- :mod:`~asr_kd.hmm.train`: monophone and triphone training loops; model directories.
- :mod:`~asr_kd.hmm.jobs`: ``--nj``: the E-step and alignment in parallel jobs, with the result of
  one (fixed accumulation blocks summed along a fixed tree).
- :mod:`~asr_kd.hmm.alignments`: what the GMM system hands on: alignments (saved, loaded), senone
  labels on lhotse cuts, priors, CTM, model directories.
- :mod:`~asr_kd.hmm.kaldi_peer`: peer check against Kaldi's own code (kaldi-hmm-gmm, run in its
  own process by :mod:`~asr_kd.hmm.kaldi_peer_worker`).
- :mod:`~asr_kd.hmm.lang_info`, :mod:`~asr_kd.hmm.synthetic`: reading ``data/lang``; a synthetic
  corpus with known segmentations for tests.
- :mod:`~asr_kd.hmm.steps`: the steps of ``asr-kd gmm`` as functions (train_mono_step, train_tri_step,
  align_step, senone_labels_step, ctm_step, report_step, kaldi_compare_step).
- :mod:`~asr_kd.hmm.cli`: ``asr-kd gmm mono|tri|align|labels|ctm|report|kaldi-compare``: options, then one step.
"""
