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
- :mod:`~asr_kd.hmm.align`: equal (flat-start) alignment and batched k2 forced alignment.
- :mod:`~asr_kd.hmm.train`: monophone and triphone training loops; model directories.
- :mod:`~asr_kd.hmm.output`: senone labels on lhotse cuts, priors, CTM.
"""
