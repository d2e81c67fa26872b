"""N-gram LM estimation, ARPA round trip, G.fst, WER and frame accuracy."""
import logging
import math

import kaldifst
import numpy as np
import pytest

from asr_kd.lang.lm import EOS, ArpaLM, NgramLM, arpa_to_fst, lm_vocabulary
from asr_kd.lang.lm_mix import perplexity
from asr_kd.score import compute_wer, frame_accuracy, paired_bootstrap, score_wer, utterance_errors

SENTS = [s.split() for s in ["a b c", "a b d", "b c a", "c c", "a", "d a b c", "b b b"]]
VOCAB = ["a", "b", "c", "d", "never_seen", "<UNK>"]


@pytest.mark.parametrize("smoothing", ["kn", "wb"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_probabilities_sum_to_one_per_history(smoothing, order):
    lm = NgramLM.estimate(SENTS, VOCAB, order, smoothing)
    arpa = ArpaLM(lm.to_arpa())
    histories = [()] + [h for n in range(1, order) for h in lm.bow[n]]
    assert len(histories) >= (1 if order == 1 else 4)
    targets = VOCAB + [EOS]
    for h in histories:
        assert sum(lm.prob_of(h, w) for w in targets) == pytest.approx(1.0, abs=1e-9)
        # ...and the ARPA file (rounded to 6 decimals of log10) says the same.
        assert sum(10 ** arpa.log10_prob(h, w) for w in targets) == pytest.approx(1.0, abs=1e-4)


def test_unseen_vocabulary_words_get_probability_and_test_text_is_not_needed():
    lm = NgramLM.estimate(SENTS, VOCAB, 3)
    arpa = ArpaLM(lm.to_arpa())
    assert 0 < lm.prob_of(("a", "b"), "never_seen") < lm.prob_of(("a", "b"), "c")
    assert math.isfinite(arpa.log10_prob(("a", "b"), "never_seen"))
    # Seen continuations beat unseen ones, and the model prefers its training text.
    train, other = perplexity(arpa, SENTS), perplexity(arpa, [["d", "d", "never_seen", "c"]])
    assert train["tokens"] == sum(len(s) + 1 for s in SENTS) and train["perplexity"] < other["perplexity"]


def test_out_of_vocabulary_training_words_map_to_unk():
    lm = NgramLM.estimate([["a", "zzz", "b"]], ["a", "b", "<UNK>"], 2)
    assert ("a", "<UNK>") in lm.prob[2] and not any("zzz" in g for g in lm.prob[2])
    with pytest.raises(ValueError):
        NgramLM.estimate(SENTS, VOCAB, 2, smoothing="good-turing")


def test_arpa_to_g_fst(tmp_path):
    words = ["<eps>"] + VOCAB + ["#0", "<s>", "</s>"]
    (tmp_path / "words.txt").write_text("".join(f"{w} {i}\n" for i, w in enumerate(words)))
    lm = NgramLM.estimate(SENTS, VOCAB, 2)
    lm.write_arpa(tmp_path / "lm.arpa")
    arpa_to_fst(tmp_path / "lm.arpa", tmp_path / "words.txt", tmp_path / "G.fst")
    G = kaldifst.StdVectorFst.read(str(tmp_path / "G.fst"))
    ilabels = {a.ilabel for s in range(G.num_states) for a in kaldifst.ArcIterator(G, s)}
    olabels = {a.olabel for s in range(G.num_states) for a in kaldifst.ArcIterator(G, s)}
    assert words.index("#0") in ilabels and words.index("#0") not in olabels  # back-off arcs are #0:eps
    assert words.index("never_seen") in olabels


def test_wer_kaldi_conventions(tmp_path):
    refs = {"u1": "a b c d".split(), "u2": "e f".split(), "u3": "g".split()}
    hyps = {"u1": "a x c d y".split(), "u2": [], "u4": ["z"]}
    stats = score_wer(refs, hyps, tmp_path, "test")
    # u1: 1 sub + 1 ins; u2: 2 del; u3: missing -> 1 del.
    assert (stats.subs, stats.ins, stats.dels, stats.ref_words) == (1, 1, 3, 7)
    assert stats.utterances == 3 and stats.missing_hyps == 1
    line = (tmp_path / "wer_test").read_text().splitlines()[0]
    assert line == "%WER 71.43 [ 5 / 7, 1 ins, 3 del, 1 sub ]"
    assert "Scored 3 sentences, 1 not present in hyp." in (tmp_path / "wer_test").read_text()
    errs = (tmp_path / "errs_test").read_text()
    assert "(b->x)" in errs and "1   b -> x" in errs
    assert "u1 #csid 3 1 1 0" in (tmp_path / "per_utt_test").read_text()
    perfect, _ = compute_wer(refs, refs)
    assert perfect.wer == 0.0 and perfect.kaldi_line().startswith("%WER 0.00 [ 0 / 7")


def test_frame_accuracy():
    labels = [np.array([0, 1, 2, -1]), np.array([3, 3])]
    preds = [np.array([0, 1, 0, 5]), np.eye(4)[[3, 2]]]  # ids, and one-hot posteriors
    acc, n = frame_accuracy(preds, labels)
    assert n == 5 and acc == pytest.approx(60.0)
    with pytest.raises(ValueError, match="3 predictions for 2"):
        frame_accuracy([np.zeros(3)], [np.zeros(2)])


def test_unk_gets_no_probability_unless_training_text_has_oovs():
    words = ["<eps>", "<UNK>", "a", "b", "#0", "<s>", "</s>"]
    assert lm_vocabulary(words, [["a", "b"]]) == ["a", "b"]
    assert lm_vocabulary(words, [["a", "zzz"]]) == ["<UNK>", "a", "b"]


def test_empty_references_are_named_counted_and_left_out(tmp_path, caplog):
    refs = {"u1": "a b".split(), "blank": [], "nosup": []}
    hyps = {"u1": "a b".split(), "blank": "x y z".split(), "nosup": ["w"]}
    with caplog.at_level(logging.WARNING):
        stats = score_wer(refs, hyps, tmp_path, "test")
    assert stats.wer == 0.0 and stats.ins == 0 and stats.utterances == 1 and stats.excluded_empty_refs == 2
    assert "2 utterances have an empty reference" in caplog.text and "blank, nosup" in caplog.text
    assert stats.as_dict()["excluded_empty_refs"] == 2
    assert "Excluded 2 sentences with an empty reference." in (tmp_path / "wer_test").read_text()
    assert "blank" not in (tmp_path / "per_utt_test").read_text()


def test_paired_bootstrap_tells_a_real_difference_from_noise(tmp_path):
    refs = {f"u{i:03d}": "a b c d e".split() for i in range(200)}
    good = {u: r for u, r in refs.items()}
    good.update({u: "a b c d x".split() for u in list(refs)[:20]})  # 20 errors
    bad = {u: "a b c x x".split() for u in refs}  # 400 errors
    score_wer(refs, good, tmp_path, "good")
    score_wer(refs, bad, tmp_path, "bad")
    g, b = utterance_errors(tmp_path / "per_utt_good"), utterance_errors(tmp_path / "per_utt_bad")
    assert g["u000"] == (1, 5) and g["u199"] == (0, 5) and b["u100"] == (2, 5)
    r = paired_bootstrap(b, g, samples=2000)  # good against bad
    assert r.wer_a == pytest.approx(40.0) and r.wer_b == pytest.approx(2.0) and r.delta == pytest.approx(-38.0)
    assert r.p_improvement == 100.0 and r.delta_ci95[0] <= -38.0 <= r.delta_ci95[1] < 0 and r.units == 200
    # a system against a copy of itself with one utterance swapped for the worse: no clear winner
    worse = dict(g, u150=(1, 5))
    r = paired_bootstrap(g, worse, samples=2000, seed=1)
    assert r.delta_ci95[0] <= 0 <= r.delta_ci95[1] and r.p_improvement == 0.0
    # whole speakers: fewer units, the same point estimate
    spk = {u: f"s{int(u[1:]) % 10}" for u in refs}
    by_speaker = paired_bootstrap(b, g, samples=2000, groups=spk)
    assert by_speaker.units == 10 and by_speaker.delta == pytest.approx(-38.0)
    with pytest.raises(ValueError, match="different utterances"):
        paired_bootstrap(g, {u: e for u, e in g.items() if u != "u000"})
    with pytest.raises(ValueError, match="different reference"):
        paired_bootstrap(g, dict(g, u000=(1, 6)))
    with pytest.raises(ValueError, match="no '#csid' lines"):
        utterance_errors(tmp_path / "wer_good")


def test_gain_recovered_bootstrap():
    """(baseline errors - student's) / (baseline errors - ensemble's): 0% for a copy of the
    baseline, 100% for a copy of the ensemble, the point estimate inside its interval; a set where
    the ensemble gains nothing is refused."""
    from asr_kd.score import gain_recovered_bootstrap

    rng = np.random.default_rng(0)
    base = {f"u{i:03d}": (int(rng.integers(20, 40)), 100) for i in range(200)}
    ens = {u: (e - 2 * int(rng.integers(0, 5)), n) for u, (e, n) in base.items()}  # half of each gain: whole
    half = {u: ((base[u][0] + ens[u][0]) // 2, n) for u, (_, n) in base.items()}
    assert gain_recovered_bootstrap(base, ens, base, samples=500).ci95 == (0.0, 0.0)
    full = gain_recovered_bootstrap(base, ens, ens, samples=500)
    assert full.pct == full.ci95[0] == full.ci95[1] == pytest.approx(100.0)
    r = gain_recovered_bootstrap(base, ens, half, samples=2000, groups={u: u[:3] for u in base})
    assert r.pct == pytest.approx(50.0) and r.units == 20  # 200 utterances, speakers "u00".."u19"
    gained = next(u for u in base if ens[u][0] < base[u][0])  # the student loses one utterance's gain
    r = gain_recovered_bootstrap(base, ens, dict(half, **{gained: base[gained]}), samples=2000,
                                 groups={u: u[:3] for u in base})
    assert r.ci95[0] < r.pct < 50.0 <= r.ci95[1]  # draws without that speaker recover 50%
    with pytest.raises(ValueError, match="no gain to recover"):
        gain_recovered_bootstrap(ens, base, half)
    with pytest.raises(ValueError, match="different utterances"):
        gain_recovered_bootstrap(base, ens, {u: e for u, e in half.items() if u != "u000"})
