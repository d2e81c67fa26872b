"""Lexicons, disambiguation symbols, L.fst and the lang directory."""
import gzip
import json
import math
from collections import OrderedDict

import kaldifst
import pytest
from lhotse import CutSet, MonoCut, SupervisionSegment

from asr_kd.lang import Lang, add_disambig_symbols, build_lexicon, graphemic_pronunciation, prepare_lang, read_lexicon


def make_cuts(path, texts, speaker="s1"):
    cuts = CutSet.from_cuts(
        MonoCut(id=f"u{i}", start=0, duration=1.0, channel=0,
                supervisions=[SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0, duration=1.0,
                                                 text=t, speaker=speaker)])
        for i, t in enumerate(texts)
    )
    cuts.to_file(path)
    return path


def linear_fst(labels):
    text = "".join(f"{i} {i + 1} {x} {x} 0\n" for i, x in enumerate(labels)) + f"{len(labels)} 0\n"
    return kaldifst.compile(text, acceptor=False)


def decode_phones(lang_dir, phones):
    """Words (and cost) that L maps a phone sequence to: the best path of phones o L."""
    lang = Lang.load(lang_dir)
    L = kaldifst.StdVectorFst.read(str(lang_dir / "L.fst"))
    kaldifst.arcsort(L, sort_type="ilabel")
    composed = kaldifst.compose(linear_fst([lang.phones[p] for p in phones]), L)
    best = kaldifst.shortest_path(composed)
    ok, _, olabels, weight = kaldifst.get_linear_symbol_sequence(best)
    id2word = {i: w for w, i in lang.words.items()}
    return [id2word[i] for i in olabels], float(weight.value) if composed.num_states else math.inf


def test_read_lexicon_strips_stress_and_reports_bad_lines(tmp_path, caplog):
    p = tmp_path / "lexicon.txt"
    p.write_text("A\tAH0\nA\tEY1\nABOUT AH0 B AW1 T\nBROKEN\nread 1.0 R IY1 D\n")
    lex = read_lexicon(p)
    assert lex["A"] == [("AH",), ("EY",)]
    assert lex["ABOUT"] == [("AH", "B", "AW", "T")]
    assert lex["READ"] == [("R", "IY", "D")]  # lexiconp format, normalized word
    assert "BROKEN" not in lex and "lexicon.txt:4" in caplog.text


def test_disambig_symbols_for_homophones_and_prefixes():
    lex = OrderedDict([("RED", [("R", "EH", "D")]), ("READ", [("R", "EH", "D"), ("R", "IY", "D")]),
                       ("RE", [("R", "EH")]), ("BED", [("B", "EH", "D")])])
    entries, max_k = add_disambig_symbols(lex)
    prons = dict(((w, p[:-1] if p[-1].startswith("#") else p), p) for w, p in entries)
    assert prons[("RED", ("R", "EH", "D"))][-1] == "#1"
    assert prons[("READ", ("R", "EH", "D"))][-1] == "#2"
    assert prons[("RE", ("R", "EH"))][-1] == "#1"  # a prefix of R EH D
    assert prons[("READ", ("R", "IY", "D"))] == ("R", "IY", "D")
    assert prons[("BED", ("B", "EH", "D"))] == ("B", "EH", "D")
    assert max_k == 2


def test_no_word_is_dropped():
    lex, sources = build_lexicon(["YES", "XQZWV", "R2D2"], primary=None)
    assert lex["YES"] == [("Y", "EH", "S")] and sources["YES"] == "cmudict"
    assert sources["XQZWV"] == "graphemic" and lex["XQZWV"] == [graphemic_pronunciation("XQZWV")]
    assert lex["R2D2"] == [("R", "T", "UW", "D", "T", "UW")]
    graph, _ = build_lexicon(["HELLO"], graphemic=True)
    assert graph["HELLO"] == [("H", "E", "L", "O")]


@pytest.fixture()
def toy_lang(tmp_path):
    train = make_cuts(tmp_path / "train.jsonl.gz", ["yes no yes", "no", "red read"])
    test = make_cuts(tmp_path / "test.jsonl.gz", ["yes maybe", "zzyzxq no"])
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("RED R EH1 D\nREAD R EH1 D\nREAD R IY1 D\n")
    stats = prepare_lang(tmp_path / "lang", [train], {"test": test}, lexicon_path=lexicon)
    return tmp_path / "lang", stats


def test_prepare_lang_tables_and_oov_report(toy_lang):
    lang_dir, stats = toy_lang
    lang = Lang.load(lang_dir)
    assert lang.phones["<eps>"] == 0 and lang.words["<eps>"] == 0
    assert lang.silence_phones == ["SIL", "SPN"] and lang.optional_silence == "SIL"
    assert set(lang.nonsilence_phones) == {"Y", "EH", "S", "N", "OW", "R", "D", "IY"}
    assert lang.disambig_phones[0] == "#0" and max(lang.phones.values()) == lang.phones[lang.disambig_phones[-1]]
    assert list(lang.words)[-3:] == ["#0", "<s>", "</s>"]
    assert set(lang.lexicon) == {"<UNK>", "RED", "READ", "YES", "NO"}
    # Test words are reported, never added to the vocabulary.
    assert "MAYBE" not in lang.words
    assert stats["splits"]["test"]["oov_words"] == ["MAYBE", "ZZYZXQ"]
    assert stats["splits"]["test"]["oov_tokens"] == 2 and stats["splits"]["train"]["oov_tokens"] == 0
    assert stats["added_words"] == {"NO": "cmudict", "YES": "cmudict"}


def test_lexicon_fst_maps_phones_to_words_with_optional_silence(toy_lang):
    lang_dir, _ = toy_lang
    words, cost = decode_phones(lang_dir, ["Y", "EH", "S", "N", "OW"])
    assert words == ["YES", "NO"]
    assert cost == pytest.approx(3 * math.log(2), abs=1e-4)  # no-silence at start and after each word
    words, _ = decode_phones(lang_dir, ["SIL", "Y", "EH", "S", "SIL", "N", "OW", "SIL"])
    assert words == ["YES", "NO"]
    assert decode_phones(lang_dir, ["Y", "EH"])[0] == []  # not a word: no path


def test_lexicon_disambig_fst_has_disambig_loop(toy_lang):
    lang_dir, _ = toy_lang
    lang = Lang.load(lang_dir)
    Ld = kaldifst.StdVectorFst.read(str(lang_dir / "L_disambig.fst"))
    arcs = [(s, a.ilabel, a.olabel) for s in range(Ld.num_states) for a in kaldifst.ArcIterator(Ld, s)]
    assert (1, lang.phones["#0"], lang.words["#0"]) in arcs
    lines = (lang_dir / "lexicon_disambig.txt").read_text().splitlines()
    assert "RED R EH D #1" in lines and "READ R EH D #2" in lines


def test_prepare_lang_needs_its_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare stage"):
        prepare_lang(tmp_path / "lang", [tmp_path / "missing.jsonl.gz"])


def test_speechocean762_lexicon_covers_all_words(corpora, tmp_path):
    lex = read_lexicon(corpora / "speechocean762" / "resource" / "lexicon.txt")
    assert len(lex) == 2604
    words = set()
    for split in ("train", "test"):
        for line in (corpora / "speechocean762" / split / "text").read_text().splitlines():
            words.update(line.split()[1:])
    assert words <= set(lex)
    phones = {p for prons in lex.values() for pron in prons for p in pron}
    assert len(phones) == 39
