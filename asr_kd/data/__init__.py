"""Corpora to lhotse manifests, fbank features and CMVN statistics.

- :mod:`asr_kd.data.text`: the one place where transcripts are normalized.
- :mod:`asr_kd.data.corpora`: download (where public) and prepare yesno, FSDD, speechocean762,
  LibriSpeech / mini-LibriSpeech into RecordingSet / SupervisionSet / CutSet manifests.
- :mod:`asr_kd.data.features`: 40-dim log-mel fbank into lilcom storage, CMVN statistics.
"""
