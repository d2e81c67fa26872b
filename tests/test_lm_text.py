"""``asr-kd lm`` from plain text, two LMs interpolated, perplexity on held-out text (issue 15, part 3)."""
import itertools
import json
import math

import pytest
from lhotse import CutSet, MonoCut, SupervisionSegment

from asr_kd.cli import main
from asr_kd.lang import prepare_lang
from asr_kd.lang.lm import ArpaLM, NgramLM
from asr_kd.lang.lm_mix import interpolate, perplexity, read_text

L = math.log10

# Two toy models over {a, b}: A unigram only; B with one bigram, its back-off weight normalizing it.
TOY_A = f"""\\data\\
ngram 1=4

\\1-grams:
-99\t<s>
{L(.5)}\ta
{L(.3)}\tb
{L(.2)}\t</s>

\\end\\
"""
TOY_B = f"""\\data\\
ngram 1=4
ngram 2=1

\\1-grams:
-99\t<s>\t0
{L(.2)}\ta\t{L(.4 / .6)}
{L(.4)}\tb
{L(.4)}\t</s>

\\2-grams:
{L(.6)}\ta b

\\end\\
"""


def test_interpolation_of_a_toy_case_by_hand():
    mix = interpolate(ArpaLM(TOY_A), ArpaLM(TOY_B), 0.5, ["a", "b"])
    # Unigrams: the mixture, 0.5 * (.5, .3, .2) + 0.5 * (.2, .4, .4) = (.35, .35, .3), already normalized.
    assert mix.prob[1] == pytest.approx({("a",): .35, ("b",): .35, ("</s>",): .30})
    # The bigram both models give: 0.5 * p_A(b) + 0.5 * p_B(b | a) = 0.5 * .3 + 0.5 * .6.
    assert mix.prob[2] == pytest.approx({("a", "b"): .45})
    # bow(a) = (1 - .45) / (1 - p(b)) = .55 / .65.
    assert mix.bow[1][("a",)] == pytest.approx(.55 / .65)
    assert mix.prob_of(("a",), "a") == pytest.approx(.55 / .65 * .35)
    # Through ARPA and back: the same numbers (to ARPA's 6 decimals).
    back = ArpaLM(mix.to_arpa())
    assert 10 ** back.log10_prob(["a"], "</s>") == pytest.approx(.55 / .65 * .30, rel=1e-5)
    # The weight's ends are the models themselves.
    only_b = interpolate(ArpaLM(TOY_A), ArpaLM(TOY_B), 1.0, ["a", "b"])
    assert only_b.prob_of(("a",), "a") == pytest.approx(.4 / .6 * .2)


@pytest.mark.parametrize("order", [2, 3])
def test_interpolated_model_is_normalized(order):
    vocab = ["A", "B", "C", "D"]
    a = NgramLM.estimate([s.split() for s in ["A B C", "A B", "B C D A", "C C"]], vocab, order)
    b = NgramLM.estimate([s.split() for s in ["D D A", "B A", "A B C D", "D"]], vocab, order, smoothing="wb")
    mix = interpolate(ArpaLM(a.to_arpa()), ArpaLM(b.to_arpa()), 0.3, vocab)
    histories = [()] + [h for n in range(1, order) for h in itertools.product(["<s>"] + vocab, repeat=n)]
    for h in histories:
        assert sum(mix.prob_of(h, w) for w in vocab + ["</s>"]) == pytest.approx(1.0, abs=1e-9), h
    # Listed n-grams hold the exact mixture.
    for g in a.prob[2]:
        assert mix.prob[2][g] == pytest.approx(0.7 * a.prob_of(g[:-1], g[-1]) + 0.3 * b.prob_of(g[:-1], g[-1]))


def test_read_text_normalizes_like_transcripts(tmp_path):
    (tmp_path / "t.txt").write_text("Hello, world!\n\n  yes -- no  \n...\n")
    assert read_text([tmp_path / "t.txt"]) == [["HELLO", "WORLD"], ["YES", "NO"]]


def test_perplexity_counts_words_the_model_lacks():
    model = ArpaLM(TOY_A)
    r = perplexity(model, [["a", "z", "b"]])  # no <UNK> in the model: z left out, counted
    assert r["oov_tokens"] == 1 and r["tokens"] == 3
    assert r["perplexity"] == pytest.approx(round((.5 * .3 * .2) ** (-1 / 3), 2))


@pytest.fixture
def lang(tmp_path):
    cuts = CutSet.from_cuts(
        MonoCut(id=f"u{i}", start=0, duration=1, channel=0,
                supervisions=[SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0, duration=1, text=t)])
        for i, t in enumerate(["yes no", "no no yes", "yes yes no"]))
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    # The vocabulary: the lexicon's words (four of them never in the transcripts).
    (tmp_path / "lexicon.txt").write_text("YES Y EH S\nNO N OW\nMAYBE M EY B IY\nNEVER N EH V ER\n"
                                          "ALWAYS AO L W EY Z\nPERHAPS P ER HH AE P S\n")
    prepare_lang(tmp_path / "lang", [tmp_path / "cuts.jsonl.gz"], lexicon_path=tmp_path / "lexicon.txt")
    (tmp_path / "big.txt").write_text("maybe never\nyes maybe\nalways perhaps maybe\nno, never!\n" * 5)
    (tmp_path / "heldout.txt").write_text("maybe never yes\nalways no\n")
    return tmp_path


def lm(tmp_path, out, *extra):
    rc = main(["lm", "--lang-dir", str(tmp_path / "lang"), "--out-dir", str(tmp_path / out), "--order", "2", *extra])
    stats = json.loads((tmp_path / out / "lm_2gram.json").read_text()) if rc == 0 else None
    return rc, stats


def test_cli_text_mix_and_held_out_perplexity(lang):
    t = lang
    rc, cuts_only = lm(t, "a", "--train-cuts", str(t / "cuts.jsonl.gz"), "--ppl-text", str(t / "heldout.txt"))
    assert rc == 0 and (t / "a" / "G_2gram.fst").is_file()
    held = f"text:{t / 'heldout.txt'}"
    assert set(cuts_only["perplexity"]) == {"train", held}
    rc, text_only = lm(t, "b", "--text", str(t / "big.txt"), "--ppl-text", str(t / "heldout.txt"))
    assert rc == 0 and text_only["train_sentences"] == 20 and text_only["train_cuts"] == []
    # Transcripts + a larger text, estimated apart and mixed: better on the held-out text than the
    # transcripts alone; the components' own perplexities are reported beside it.
    rc, mixed = lm(t, "c", "--train-cuts", str(t / "cuts.jsonl.gz"), "--mix-text", str(t / "big.txt"),
                   "--mix-weight", "0.5", "--ppl-text", str(t / "heldout.txt"))
    assert rc == 0 and mixed["mix"]["weight"] == 0.5 and mixed["mix"]["text_sentences"] == 20
    ppl = mixed["perplexity"][held]
    assert ppl["perplexity"] < cuts_only["perplexity"][held]["perplexity"]
    assert set(ppl["components"]) == {"train", "mix"} and ppl["tokens"] == 7
    assert ppl["components"]["train"] == pytest.approx(cuts_only["perplexity"][held]["perplexity"], rel=1e-3)
    # Mixing with an ARPA file gives the same model as estimating it from the text.
    rc, with_arpa = lm(t, "d", "--train-cuts", str(t / "cuts.jsonl.gz"), "--mix", str(t / "b" / "lm_2gram.arpa"),
                       "--mix-weight", "0.5", "--ppl-text", str(t / "heldout.txt"))
    assert rc == 0 and with_arpa["perplexity"][held]["perplexity"] == pytest.approx(ppl["perplexity"], rel=1e-4)


def test_cli_errors(lang, capsys):
    t = lang
    assert lm(t, "e")[0] == 1
    assert "no training text" in capsys.readouterr().err
    assert lm(t, "e", "--text", str(t / "big.txt"), "--mix-text", str(t / "big.txt"), "--mix-weight", "1.5")[0] == 1
    assert "--mix-weight" in capsys.readouterr().err
    assert lm(t, "e", "--text", str(t / "absent.txt"))[0] == 1
    assert "absent.txt not found" in capsys.readouterr().err
    (t / "lower.arpa").write_text(TOY_A)  # words a, b: none of the lang's
    assert lm(t, "e", "--text", str(t / "big.txt"), "--mix", str(t / "lower.arpa"))[0] == 1
    assert "none of the lang's" in capsys.readouterr().err
