"""Peer check against Kaldi's own code (kaldi-hmm-gmm in its own process; see asr_kd/hmm/kaldi_peer.py).

Skipped unless the peer is installed: pip install --no-deps --target DIR kaldi-hmm-gmm==1.1.4
kaldifst==1.7.17, then ASR_KD_KALDI_PEER=DIR (default /tmp/kaldi_peer)."""
import os
from pathlib import Path

import numpy as np
import pytest

from asr_kd.hmm.synthetic import toy_corpus, toy_lang, write_lang_dir
from asr_kd.hmm.train import TrainOpts, train_mono

PEER = Path(os.environ.get("ASR_KD_KALDI_PEER", "/tmp/kaldi_peer"))
pytestmark = pytest.mark.skipif(not (PEER / "kaldi_hmm_gmm").is_dir(), reason=f"kaldi-hmm-gmm not installed at {PEER}")


def test_kaldi_aligner_agrees_with_ours_on_the_same_model(tmp_path):
    from asr_kd.hmm.kaldi_peer import compare, run_kaldi_mono

    lang = toy_lang()
    feats, texts, truth = toy_corpus(lang, num_utts=25)
    write_lang_dir(lang, tmp_path / "lang")
    opts = TrainOpts(num_iters=4, realign_iters=(1, 2, 3), max_gauss=50, max_iter_inc=3)
    model, alis, failures, _ = train_mono(lang, feats, texts, opts, num_sil_states=3)
    assert not failures
    kaldi = run_kaldi_mono(feats, texts, tmp_path / "lang", PEER, model=model, timeout=300)
    c = compare(alis, kaldi)
    assert c["utts_compared"] == 25 and c["kaldi_failed"] == 0
    # same GMMs, transition probabilities, lexicon and scales: the same Viterbi paths
    assert c["phone_agreement"] > 0.995
    assert c["loglike_per_frame_kaldi"] == pytest.approx(c["loglike_per_frame_ours"], abs=0.01)
    # and both recover the true segmentation
    kp = np.concatenate([kaldi["alignments"][u][0] == truth[u][0] for u in sorted(truth)])
    assert kp.mean() > 0.98
