import numpy as np
import pytest
import torch

from asr_kd.hmm.align import AlignOpts, ForcedAligner, equal_alignment
from asr_kd.hmm.graph import AlignError, context_expand, transcript_dag
from asr_kd.hmm.synthetic import toy_corpus, toy_lang
from asr_kd.hmm.train import TrainOpts, init_monophone, train_mono


@pytest.fixture(scope="module")
def toy():
    lang = toy_lang()
    feats, texts, truth = toy_corpus(lang, num_utts=40)
    return lang, feats, texts, truth


def _oracle_model(lang, feats, truth):
    """Monophone model whose Gaussians are estimated from the true segmentation."""
    model = init_monophone(lang, feats, num_states=3, num_sil_states=3)
    utts = sorted(feats)
    x = torch.from_numpy(np.concatenate([feats[u] for u in utts]))
    pdfs = torch.tensor(np.concatenate(
        [[model.ctx_dep.pdf(0, p, 0, k) for p, k in zip(*truth[u])] for u in utts]))
    accs = model.gmm.new_accs()
    model.gmm.accumulate(x, pdfs, accs)
    model.gmm.update(accs)
    return model


def test_transcript_dag_has_optional_silence_and_alternatives(toy):
    lang = toy[0]
    dag = transcript_dag(["W1", "W2"], lang, sil_prob=0.5)
    n_w1 = len(lang.lexicon["W1"])
    sil_arcs = [a for a in dag.arcs if a[2] == 1]
    assert len(sil_arcs) == 3  # before, between, after
    assert len(dag.finals) == 2  # with or without final silence
    from asr_kd.hmm.topology import HmmTopology

    topo = HmmTopology.build(lang.real_phones, lang.silence_phones)
    shortest = min(len(p) for p in lang.lexicon["W1"]) + min(len(p) for p in lang.lexicon["W2"])
    assert dag.min_frames(topo) == 3 * shortest
    assert n_w1 == 2
    with pytest.raises(AlignError, match="empty transcript"):
        transcript_dag([], lang)
    with pytest.raises(AlignError, match="no pronunciation"):
        transcript_dag(["NOTAWORD"], lang, map_oov=False)


def test_triphone_context_expansion():
    # a -> b -> c with an optional d between b and c: b has right contexts {c, d}
    from asr_kd.hmm.graph import PhoneDag

    dag = PhoneDag(arcs=[(0, 1, 5, 0.0), (1, 2, 6, 0.0), (2, 3, 8, 0.0), (3, 4, 7, 0.0), (2, 4, 7, 0.0)],
                   finals={4: 0.0}, num_states=5)
    copies, nxt, start, final = context_expand(dag, 3)
    ctx = {(dag.arcs[i][2], l, r) for i, l, r in copies}
    assert (6, 5, 8) in ctx and (6, 5, 7) in ctx and (7, 8, 0) in ctx and (7, 6, 0) in ctx
    assert [copies[c] for c in start] == [(0, 0, 6)]
    for c, (i, l, r) in enumerate(copies):  # every successor copy agrees on the shared contexts
        for c2 in nxt[c]:
            i2, l2, r2 = copies[c2]
            assert dag.arcs[i2][2] == r and l2 == dag.arcs[i][2]


def test_equal_alignment():
    from asr_kd.hmm.topology import HmmTopology
    from asr_kd.hmm.tree import MonophoneContext

    topo = HmmTopology.build([1, 2, 3], [1])
    ali = equal_alignment(12, [2, 3], MonophoneContext(topo), topo)
    assert ali.states.tolist() == [0, 0, 1, 1, 2, 2] * 2
    assert ali.phone_segments() == [(2, 0, 6), (3, 6, 6)]
    with pytest.raises(AlignError, match="too short"):
        equal_alignment(5, [2, 3], MonophoneContext(topo), topo)


def test_forced_alignment_recovers_the_true_segmentation(toy):
    lang, feats, texts, truth = toy
    model = _oracle_model(lang, feats, truth)
    texts = dict(texts)
    feats = dict(feats)
    # bad input: too short, OOV without mapping, empty transcript, missing features
    feats["short"] = feats["utt000"][:4]
    texts["short"] = ["W2", "W3", "W4"]
    texts["empty"] = []
    feats["empty"] = feats["utt001"]
    texts["nofeats"] = ["W1"]
    texts["oov"] = ["W1", "NOTAWORD"]
    feats["oov"] = feats["utt002"]
    aligner = ForcedAligner(model.gmm, model.ctx_dep, model.trans, lang,
                            AlignOpts(acoustic_scale=1.0, map_oov=False, batch_frames=1500))
    alis, failures = aligner.align(feats, texts)
    assert set(failures) == {"short", "empty", "nofeats", "oov"}
    assert failures["short"].startswith("too short")
    assert "no pronunciation" in failures["oov"] and failures["empty"] == "empty transcript"
    assert len(alis) == 40
    for u, a in alis.items():
        assert a.num_frames == feats[u].shape[0]  # exactly one label per frame
    ph = np.concatenate([alis[u].phones == truth[u][0] for u in alis])
    st = np.concatenate([(alis[u].phones == truth[u][0]) & (alis[u].states == truth[u][1]) for u in alis])
    assert ph.mean() > 0.99 and st.mean() > 0.95
    # pdfs are consistent with the phone/state attributes
    a = alis["utt003"]
    assert all(model.ctx_dep.pdf(0, p, 0, k) == d for p, k, d in zip(a.phones, a.states, a.pdfs))
    # with OOV mapping on, the OOV utterance aligns (the unknown word as SPN)
    aligner.opts.map_oov = True
    alis2, failures2 = aligner.align(feats, {"oov": texts["oov"]})
    assert "oov" in alis2 and 2 in set(alis2["oov"].phones.tolist())


def test_monophone_training_from_flat_start(toy):
    lang, feats, texts, truth = toy
    opts = TrainOpts(num_iters=6, realign_iters=(1, 2, 3, 5), max_gauss=60, max_iter_inc=4)
    opts.align.acoustic_scale = 1.0
    model, alis, failures, hist = train_mono(lang, feats, texts, opts, num_sil_states=3)
    assert not failures and len(alis) == len(texts)
    likes = [h["loglike_per_frame"] for h in hist]
    assert likes[-1] > likes[0] + 3  # training improved the fit a lot
    assert all(b >= a - 0.05 for a, b in zip(likes[1:], likes[2:]))
    assert hist[-1]["num_gauss"] > model.ctx_dep.num_pdfs
    ph = np.concatenate([alis[u].phones == truth[u][0] for u in alis])
    assert ph.mean() > 0.98


def test_torch_viterbi_matches_k2(toy):
    """The batched torch Viterbi and k2 intersect_dense + shortest_path find the same paths
    (monophone and triphone graphs, optional silence, alternative pronunciations)."""
    lang, feats, texts, truth = toy
    model = _oracle_model(lang, feats, truth)
    texts = {u: texts[u] for u in list(texts)[:20]}
    out = {}
    for backend in ("k2", "torch"):
        al = ForcedAligner(model.gmm, model.ctx_dep, model.trans, lang, AlignOpts(backend=backend, batch_frames=800))
        out[backend], fails = al.align(feats, texts)
        assert not fails
    for u in texts:
        a, b = out["k2"][u], out["torch"][u]
        assert a.pdfs.tolist() == b.pdfs.tolist() and a.phone_start.tolist() == b.phone_start.tolist()
        assert a.loglike == pytest.approx(b.loglike, rel=1e-6)


def test_precomputed_frame_scores_align_as_the_model_that_made_them(toy):
    # asr-kd nnet align hands the aligner each frame's senone scores instead of features
    # (asr_kd.nnet.align.FrameScores): given the GMM's own log-likelihoods, the alignments are the GMM's.
    from asr_kd.nnet.align import FrameScores

    lang, feats, texts, truth = toy
    model = _oracle_model(lang, feats, truth)
    opts = AlignOpts(acoustic_scale=1.0, batch_frames=1500)
    by_gmm, _ = ForcedAligner(model.gmm, model.ctx_dep, model.trans, lang, opts).align(feats, texts)
    scores = {u: model.gmm.loglikes(torch.from_numpy(x)).float() for u, x in feats.items()}
    by_scores, failures = ForcedAligner(FrameScores(), model.ctx_dep, model.trans, lang, opts).align(scores, texts)
    assert not failures and set(by_scores) == set(by_gmm)
    for u, a in by_gmm.items():
        assert np.array_equal(by_scores[u].pdfs, a.pdfs) and np.array_equal(by_scores[u].phones, a.phones)
        assert by_scores[u].loglike == pytest.approx(a.loglike, rel=1e-5)
