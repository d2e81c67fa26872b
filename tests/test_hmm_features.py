import numpy as np

from asr_kd.hmm.features import FeatureOpts, add_deltas, compute_features, dct_matrix, fbank_to_mfcc


def test_dct_is_orthonormal():
    m = dct_matrix(40, 40)
    np.testing.assert_allclose(m @ m.T, np.eye(40), atol=1e-5)
    # c0 of a constant log-mel spectrum is sqrt(N) * value (before the lifter, which leaves c0 alone)
    c = fbank_to_mfcc(np.full((2, 40), 3.0))
    np.testing.assert_allclose(c[:, 0], 3.0 * np.sqrt(40), rtol=1e-5)
    np.testing.assert_allclose(c[:, 1:], 0.0, atol=1e-4)


def test_deltas_of_a_ramp():
    t = np.arange(20, dtype=np.float32)[:, None]
    d = add_deltas(np.hstack([t, 2 * t]))
    assert d.shape == (20, 6)
    # interior frames: first derivative exact, second derivative zero
    np.testing.assert_allclose(d[3:-3, 2:4], [[1.0, 2.0]] * 14, atol=1e-5)
    np.testing.assert_allclose(d[4:-4, 4:6], 0.0, atol=1e-5)  # +-4 frame window
    # edges replicate frames, so the slope shrinks there
    assert d[0, 2] < 1.0


def test_per_speaker_cmvn_and_bad_input():
    rng = np.random.RandomState(0)
    items = [
        ("a1", "A", rng.randn(30, 40) + 5),
        ("a2", "A", rng.randn(20, 40) + 5),
        ("b1", "B", rng.randn(25, 40) - 3),
        ("empty", "B", np.zeros((0, 40))),
        ("nan", "B", np.full((10, 40), np.nan)),
        ("silent", "B", np.full((30, 40), -15.9)),  # log(eps) everywhere: digital silence
    ]
    feats, rejected = compute_features(items, FeatureOpts())
    assert set(feats) == {"a1", "a2", "b1"}
    assert "empty" in rejected["empty"] and "NaN" in rejected["nan"]
    assert rejected["silent"].startswith("silent audio")
    assert feats["a1"].shape == (30, 39)
    # static cepstra have zero mean per speaker
    a = np.concatenate([feats["a1"], feats["a2"]])[:, :13]
    np.testing.assert_allclose(a.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(feats["b1"][:, :13].mean(0), 0.0, atol=1e-4)
    # the NaN utterance did not contaminate speaker B's statistics
    assert np.isfinite(feats["b1"]).all()


def test_set_cmvn_makes_features_independent_of_the_batch():
    from asr_kd.hmm.features import mfcc_cmvn

    rng = np.random.RandomState(1)
    items = [("a1", "A", rng.randn(30, 40) + 5), ("a2", "A", rng.randn(20, 40) - 5),
             ("b1", "B", rng.randn(25, 40)), ("nan", "B", np.full((10, 40), np.nan))]
    cmvn = mfcc_cmvn(items)
    whole, _ = compute_features(items, cmvn=cmvn)
    alone, _ = compute_features(items[:1], cmvn=cmvn)
    np.testing.assert_allclose(alone["a1"], whole["a1"], rtol=1e-5, atol=1e-5)
    # the set's statistics equal those computed from all items; a batch of one utterance differs
    np.testing.assert_allclose(compute_features(items)[0]["a1"], whole["a1"], rtol=1e-5, atol=1e-5)
    assert not np.allclose(compute_features(items[:1])[0]["a1"], whole["a1"], atol=1e-2)
