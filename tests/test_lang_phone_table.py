"""``asr-kd lang --phone-symbol-table`` (issue 15, part 2): a lang for new words on a trained model's
phone set keeps its phone ids; a word it cannot pronounce there is an error naming it; a lang with
other phones is refused when a graph is built for the model (model_info.check_phones)."""
import argparse
import json
from dataclasses import asdict

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, MonoCut, SupervisionSegment

from asr_kd.cli import main
from asr_kd.lang import Lang, prepare_lang
from asr_kd.lang.lm import NgramLM, arpa_to_fst
from asr_kd.lang.prepare_lang import read_symbol_table
from asr_kd.model_info import check_phones, phone_table
from asr_kd.utils import UserError


def make_cuts(path, texts):
    CutSet.from_cuts(
        MonoCut(id=f"u{i}", start=0, duration=1, channel=0,
                supervisions=[SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0, duration=1, text=t)])
        for i, t in enumerate(texts)).to_file(path)
    return path


def new_lang(d, texts, lexicon=None, table=None, force=False):
    """A lang whose vocabulary is ``texts`` (pronounced from ``lexicon``, then CMUdict)."""
    d.mkdir(parents=True, exist_ok=True)
    lexicon_path = None
    if lexicon:
        lexicon_path = d / "lexicon_in.txt"
        lexicon_path.write_text("".join(f"{w} {p}\n" for w, p in lexicon.items()))
    prepare_lang(d / "lang", [make_cuts(d / "cuts.jsonl.gz", texts)], lexicon_path=lexicon_path,
                 phone_symbol_table=table, force=force)
    return d / "lang"


@pytest.fixture(scope="module")
def model_lang(tmp_path_factory):
    """The lang a model was trained with: YES NO, phones SIL SPN EH N OW S Y."""
    return new_lang(tmp_path_factory.mktemp("model"), ["yes no", "no no yes"])


NEW_TEXTS = ["so snow", "no so", "sew"]  # only N OW S of the model's phones; SO/SEW are homophones


def test_new_lang_keeps_the_model_phone_ids(model_lang, tmp_path):
    table = model_lang / "phones.txt"
    lang_dir = new_lang(tmp_path / "new", NEW_TEXTS, table=table)
    model, new = read_symbol_table(table), read_symbol_table(lang_dir / "phones.txt")
    assert {p: i for p, i in new.items() if not p.startswith("#")} == {p: i for p, i in model.items()
                                                                        if not p.startswith("#")}
    # The homophones need #1 and #2, which the model's table (#0 only) lacks: appended after its last id.
    assert new["#0"] == model["#0"] and new["#1"] == max(model.values()) + 1 and new["#2"] == new["#1"] + 1
    lang = Lang.load(lang_dir)
    assert {"EH", "Y"} <= set(lang.nonsilence_phones)  # kept, though no new word uses them
    assert lang.disambig_phones == ["#0", "#1", "#2"]
    check_phones(phone_table(model_lang), "exp/mono/final.mdl", lang_dir)  # what graph building checks
    assert phone_table(lang_dir)["sha256"] == phone_table(model_lang)["sha256"]


def test_without_the_table_other_phones_fail_the_check(model_lang, tmp_path):
    lang_dir = new_lang(tmp_path / "plain", NEW_TEXTS)  # phones N OW S only: renumbered
    with pytest.raises(ValueError, match="phone sets differ: exp/mono/final.mdl .*phone 3 is EH in the model, N in the lang"):
        check_phones(phone_table(model_lang), "exp/mono/final.mdl", lang_dir)


def test_a_word_outside_the_phone_set_is_an_error_naming_it(model_lang, tmp_path):
    with pytest.raises(UserError, match=r"2 word\(s\) cannot be pronounced with the phones of .*phones.txt: "
                                        r"SENSE \(phone AA\), NOSE \(phone Z\)$"):
        new_lang(tmp_path / "bad", ["no nose sense"], lexicon={"SENSE": "S AA N S"}, table=model_lang / "phones.txt")
    assert not (tmp_path / "bad" / "lang" / "L.fst").exists()
    with pytest.raises(UserError, match="not found"):
        new_lang(tmp_path / "bad2", ["no"], table=tmp_path / "absent.txt")


def test_cli_option(model_lang, tmp_path, capsys):
    cuts = make_cuts(tmp_path / "cuts.jsonl.gz", ["no nose"])
    assert main(["lang", str(tmp_path / "lang"), "--vocab-cuts", str(cuts),
                 "--phone-symbol-table", str(model_lang / "phones.txt")]) == 1
    assert "NOSE (phone Z)" in capsys.readouterr().err
    cuts = make_cuts(tmp_path / "cuts.jsonl.gz", NEW_TEXTS)
    assert main(["lang", str(tmp_path / "lang"), "--vocab-cuts", str(cuts),
                 "--phone-symbol-table", str(model_lang / "phones.txt")]) == 0
    assert (tmp_path / "lang" / "phones.txt").read_text().startswith((model_lang / "phones.txt").read_text())


def test_graph_for_the_model_builds_with_the_new_lang_only(model_lang, tmp_path):
    """End to end: a GMM trained on the model lang decodes through a graph of the new lang built with
    --phone-symbol-table, and refuses the graph of one built without it."""
    pytest.importorskip("k2")
    from asr_kd.decode import cli as decode_cli
    from asr_kd.hmm.features import FeatureOpts
    from asr_kd.hmm.gmm import DiagGmmSet
    from asr_kd.hmm.lang_info import LangInfo
    from asr_kd.hmm.alignments import save_model_dir
    from asr_kd.hmm.topology import HmmTopology, TransitionModel
    from asr_kd.hmm.train import GmmHmm
    from asr_kd.hmm.tree import MonophoneContext
    from asr_kd.model_info import feature_config

    info = LangInfo.load(model_lang)
    topo = HmmTopology.build(info.real_phones, info.silence_phones, 3, 5)
    ctx = MonophoneContext(topo)
    opts = FeatureOpts()
    gmm = GmmHmm(ctx, TransitionModel.init(topo),
                 DiagGmmSet.single_gaussian(torch.zeros(opts.dim), torch.full((opts.dim,), 10.0), ctx.num_pdfs))
    gmm.info = {"features": feature_config(8000, asdict(opts)), "phones": phone_table(model_lang)}
    save_model_dir(tmp_path / "mono", gmm, {}, {}, [], info)
    wav = tmp_path / "a.wav"
    sf.write(wav, 0.1 * np.random.default_rng(0).standard_normal(8000).astype(np.float32), 8000)

    def decode(lang_dir):
        lang = Lang.load(lang_dir)
        vocab = [w for w in lang.words if w not in ("<eps>", "#0", "<s>", "</s>")]
        NgramLM.estimate([t.upper().split() for t in NEW_TEXTS], vocab, 2).write_arpa(lang_dir / "lm.arpa")
        arpa_to_fst(lang_dir / "lm.arpa", lang_dir / "words.txt", lang_dir / "G.fst")
        p = argparse.ArgumentParser()
        decode_cli.add_arguments(p)
        return decode_cli.run(p.parse_args(["--model", str(tmp_path / "mono"), "--lang-dir", str(lang_dir),
                                            "--lm", str(lang_dir / "G.fst"), "--audio", str(wav),
                                            "--graph-dir", str(lang_dir / "graph")]))

    assert decode(new_lang(tmp_path / "new", NEW_TEXTS, table=model_lang / "phones.txt")) == 0
    with pytest.raises(ValueError, match="phone sets differ"):
        decode(new_lang(tmp_path / "plain", NEW_TEXTS))


def test_an_exports_phones_json_is_a_table(model_lang, tmp_path):
    """An export holds phones.json (model_info.phone_table) rather than phones.txt: it keeps the same ids."""
    exported = tmp_path / "phones.json"
    exported.write_text(json.dumps(phone_table(model_lang)))
    lang_dir = new_lang(tmp_path / "new", NEW_TEXTS, table=exported)
    assert phone_table(lang_dir)["sha256"] == phone_table(model_lang)["sha256"]
    exported.write_text("{}")
    with pytest.raises(UserError, match="phones.json: not an export's phones.json"):
        new_lang(tmp_path / "bad", NEW_TEXTS, table=exported)
