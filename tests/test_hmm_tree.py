import numpy as np

from asr_kd.hmm.synthetic import toy_corpus, toy_lang
from asr_kd.hmm.topology import HmmTopology
from asr_kd.hmm.tree import DecisionTree, TreeStats, build_tree, cluster_phones, gaussian_loglike
from asr_kd.hmm.train import TrainOpts, train_mono, train_tri


def _stats_from_samples(samples):
    """samples: {(l, p, r, k): array [n, D]} -> TreeStats"""
    keys, rows = [], []
    for key, x in sorted(samples.items()):
        keys.append(key)
        rows.append(np.concatenate([[len(x)], x.sum(0), (x**2).sum(0)]))
    return TreeStats(np.array(keys, dtype=np.int32), np.array(rows))


def test_gaussian_loglike_matches_direct():
    rng = np.random.RandomState(0)
    x = rng.randn(500, 3) * [1.0, 2.0, 0.5] + 1.0
    row = np.concatenate([[500], x.sum(0), (x**2).sum(0)])
    var = x.var(0)
    direct = -0.5 * np.sum((x - x.mean(0)) ** 2 / var + np.log(2 * np.pi * var))
    np.testing.assert_allclose(gaussian_loglike(row, np.full(3, 1e-6))[0], direct, rtol=1e-9)


def test_tree_splits_on_the_context_that_matters():
    rng = np.random.RandomState(0)
    topo = HmmTopology({p: 1 for p in range(1, 7)})
    samples = {}
    for l in range(1, 7):
        for r in range(1, 7):
            shift = 5.0 if l in (1, 2, 3) else -5.0  # only the left context matters
            samples[(l, 4, r, 0)] = rng.randn(50, 2) + shift
    ts = _stats_from_samples(samples)
    questions = [[1, 2, 3], [4, 5, 6], [1, 4], [2, 5, 6], [0]]
    tree, summary = build_tree(ts, topo, num_leaves=7, questions=questions, min_count=20)
    # phones 1,2,3,5,6 have no data: their roots are leaves; phone 4 splits once, on the left context
    assert tree.num_pdfs == 7
    assert tree.pdf(1, 4, 5, 0) == tree.pdf(3, 4, 1, 0) != tree.pdf(5, 4, 5, 0) == tree.pdf(6, 4, 2, 0)
    root = tree.nodes[tree.roots[(4, 0)]]
    assert root[0] == "q" and root[1] == 0 and set(questions[root[2]]) in ({1, 2, 3}, {4, 5, 6})
    assert summary["likelihood_gain"] > 0
    # a bigger budget cannot split on the right context, which carries no information worth min_count
    tree2, _ = build_tree(ts, topo, num_leaves=100, questions=questions, min_count=20, min_gain=50.0)
    assert tree2.num_pdfs == 7
    # serialisation round trip
    t3 = DecisionTree.from_dict(tree.to_dict())
    assert all(t3.pdf(l, 4, r, 0) == tree.pdf(l, 4, r, 0) for l in range(0, 7) for r in range(0, 7))


def test_silence_is_context_independent():
    """Like Kaldi's acc-tree-stats --ci-phones: silence's statistics pool over its neighbours, so its
    root cannot split even where its contexts differ, while other phones still split on silence."""
    rng = np.random.RandomState(0)
    topo = HmmTopology({p: 1 for p in range(1, 5)})
    sil = 1
    samples = {}
    for l in range(0, 5):
        for r in range(0, 5):
            samples[(l, sil, r, 0)] = rng.randn(50, 2) + (5.0 if l == 2 else -5.0)
            samples[(l, 3, r, 0)] = rng.randn(50, 2) + (5.0 if l == sil else -5.0)
    ts = _stats_from_samples(samples).context_independent([sil])
    assert set(map(tuple, ts.keys[ts.keys[:, 1] == sil].tolist())) == {(0, sil, 0, 0)}
    assert ts.stats[:, 0].sum() == 50 * 25 * 2  # no frame lost
    questions = [[1], [2], [3, 4], [0]]
    tree, _ = build_tree(ts, topo, num_leaves=10, questions=questions, min_count=20)
    assert len({tree.pdf(l, sil, r, 0) for l in range(5) for r in range(5)}) == 1
    assert tree.pdf(sil, 3, 2, 0) != tree.pdf(2, 3, 2, 0)


def test_cluster_phones_finds_the_natural_groups():
    rng = np.random.RandomState(1)
    samples = {}
    for p in range(1, 9):
        centre = 4.0 if p <= 4 else -4.0
        samples[(0, p, 0, 0)] = rng.randn(100, 2) + centre + rng.randn(2) * 0.3
    ts = _stats_from_samples(samples)
    qs = cluster_phones(ts, list(range(1, 9)), np.full(2, 1e-3), max_states=1)
    assert [1, 2, 3, 4] in qs and [5, 6, 7, 8] in qs
    assert len(qs) == 2 * 8 - 2  # a full binary tree over 8 phones, root excluded
    assert all([p] in qs for p in range(1, 9))


def test_triphone_training_and_graph_context_consistency():
    lang = toy_lang()
    feats, texts, truth = toy_corpus(lang, num_utts=40)
    opts = TrainOpts(num_iters=4, realign_iters=(1, 2, 3), max_gauss=60, max_iter_inc=3)
    opts.align.acoustic_scale = 1.0
    mono, alis, _, _ = train_mono(lang, feats, texts, opts, num_sil_states=3)
    topts = TrainOpts(num_iters=3, realign_iters=(2,), max_gauss=120, max_iter_inc=2)
    topts.align.acoustic_scale = 1.0
    tri, talis, failures, hist, summary = train_tri(mono, alis, feats, texts, lang, num_leaves=35,
                                                    opts=topts, min_leaf_count=10)
    assert not failures and summary["num_leaves"] == tri.ctx_dep.num_pdfs
    assert tri.ctx_dep.num_pdfs > mono.ctx_dep.num_pdfs  # contexts were split
    ph = np.concatenate([talis[u].phones == truth[u][0] for u in talis])
    assert ph.mean() > 0.98
    # the pdf on every frame of a triphone-graph alignment is the tree's answer for the frame's
    # phone, state and aligned neighbours (graph context expansion == alignment contexts)
    for u in list(talis)[:10]:
        a = talis[u]
        left, right = a.contexts()
        expect = [tri.ctx_dep.pdf(l, p, r, k) for l, p, r, k in zip(left, a.phones, right, a.states)]
        assert a.pdfs.tolist() == expect
