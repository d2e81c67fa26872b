"""``asr-kd decode --audio`` on bad input (issue #17): audio at other rates, broken files, a lang
with other phones than the model's, a DNN decoded from another directory.

The models are tiny and untrained (flat GMMs, a random DNN) over a yes/no lang: what is checked is
what reaches the decoder and what the user is told, not the transcripts.
"""
import argparse
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Fbank, MonoCut, Recording, SupervisionSegment

k2 = pytest.importorskip("k2")  # before asr_kd.decode, which imports k2

from asr_kd.data.features import fbank_config
from asr_kd.decode import cli as decode_cli
from asr_kd.decode import steps as decode_steps
from asr_kd.decode.acoustic import DnnScorer, GmmScorer
from asr_kd.hmm.features import FeatureOpts
from asr_kd.hmm.gmm import DiagGmmSet
from asr_kd.hmm.lang_info import LangInfo
from asr_kd.hmm.alignments import save_model_dir
from asr_kd.hmm.topology import HmmTopology, TransitionModel
from asr_kd.hmm.train import GmmHmm
from asr_kd.hmm.tree import MonophoneContext
from asr_kd.lang import Lang, prepare_lang
from asr_kd.lang.lm import NgramLM, arpa_to_fst
from asr_kd.model_info import feature_config, phone_table
from asr_kd.nnet.model import Dnn, DnnConfig, load_model, save_model
from asr_kd.utils import write_json

TEXTS = ["yes no", "no no yes", "yes yes", "no"]


def make_lang(d, lexicon=None):
    cuts = CutSet.from_cuts(
        MonoCut(id=f"u{i}", start=0, duration=1, channel=0,
                supervisions=[SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0, duration=1, text=t)])
        for i, t in enumerate(TEXTS))
    d.mkdir(parents=True, exist_ok=True)
    cuts.to_file(d / "cuts.jsonl.gz")
    lexicon_path = None
    if lexicon:
        lexicon_path = d / "lexicon_in.txt"
        lexicon_path.write_text("".join(f"{w} {p}\n" for w, p in lexicon.items()))
    prepare_lang(d / "lang", [d / "cuts.jsonl.gz"], lexicon_path=lexicon_path, use_cmudict=lexicon is None)
    lang = Lang.load(d / "lang")
    vocab = [w for w in lang.words if w not in ("<eps>", "#0", "<s>", "</s>")]
    NgramLM.estimate([t.upper().split() for t in TEXTS], vocab, 2).write_arpa(d / "lm.arpa")
    arpa_to_fst(d / "lm.arpa", d / "lang" / "words.txt", d / "G.fst")
    return d / "lang", d / "G.fst"


def make_gmm(exp_dir, lang_dir, rate=8000, record=True):
    """A flat monophone GMM dir as `asr-kd gmm mono` writes it (with ``record``: its features and
    phone set in final.mdl; without: as models trained before they were recorded)."""
    lang = LangInfo.load(lang_dir)
    topo = HmmTopology.build(lang.real_phones, lang.silence_phones, 3, 5)
    ctx = MonophoneContext(topo)
    opts = FeatureOpts()
    model = GmmHmm(ctx, TransitionModel.init(topo),
                   DiagGmmSet.single_gaussian(torch.zeros(opts.dim), torch.full((opts.dim,), 10.0), ctx.num_pdfs))
    if record:
        model.info = {"features": feature_config(rate, asdict(opts)), "phones": phone_table(lang_dir)}
    save_model_dir(exp_dir, model, {}, {}, [], lang)
    return exp_dir


def decode(model, lang_dir, g, *audio, **kw):
    p = argparse.ArgumentParser()
    decode_cli.add_arguments(p)
    models = [str(m) for m in (model if isinstance(model, list) else [model])]
    args = p.parse_args(["--model", *models, "--lang-dir", str(lang_dir), "--lm", str(g),
                         "--audio", *map(str, audio), *kw.get("extra", [])])
    return decode_cli.run(args)


def tone(rate, seconds=1.0, seed=0):
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    d = tmp_path_factory.mktemp("system")
    lang_dir, g = make_lang(d / "yesno")
    gmm = make_gmm(d / "exp" / "mono", lang_dir)
    return d, lang_dir, g, gmm


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    """One of each kind of bad input, and good files, at 8 kHz unless named otherwise."""
    d = tmp_path_factory.mktemp("wavs")
    sf.write(d / "good.wav", tone(8000), 8000, subtype="PCM_16")
    (d / "zero.wav").write_bytes(b"")
    sf.write(d / "header_only.wav", np.zeros(0, np.float32), 8000, subtype="PCM_16")
    sf.write(d / "full.wav", tone(8000, seed=1), 8000, subtype="PCM_16")
    data = (d / "full.wav").read_bytes()
    (d / "truncated.wav").write_bytes(data[: 44 + (len(data) - 44) // 2])  # half the declared samples
    (d / "random.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    sf.write(d / "silence.wav", np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    sf.write(d / "stereo.wav", np.stack([tone(8000), tone(8000, seed=2)], 1), 8000, subtype="PCM_16")
    for rate in (16000, 22050, 44100, 48000):
        sf.write(d / f"rate{rate}.wav", tone(rate), rate, subtype="PCM_16")
    sf.write(d / "50ms.wav", tone(8000, 0.05), 8000, subtype="PCM_16")
    return d


def warnings_about(caplog, path):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and str(path) in r.getMessage()]


# ---------------------------------------------------------------- item 1: the model's sampling rate


def test_gmm_featurizes_audio_at_its_recorded_rate(system, wavs, caplog, capsys):
    d, lang_dir, g, gmm = system
    scorer = GmmScorer(gmm)
    assert scorer.features["sampling_rate"] == 8000 and scorer.features["fbank"]["high_freq"] == -200.0
    items, failures = decode_steps.audio_items([wavs / "rate16000.wav"], scorer.features)
    expected = Fbank(fbank_config(8000)).extract(Recording.from_file(wavs / "rate16000.wav").resample(8000).load_audio(),
                                                 8000)
    assert not failures and np.allclose(items[0][2], expected, atol=1e-4)
    caplog.set_level(logging.INFO)
    rates = [wavs / f"rate{r}.wav" for r in (16000, 22050, 44100, 48000)]
    assert decode(gmm, lang_dir, g, *rates, rates[0]) == 0
    resampling = [r.getMessage() for r in caplog.records if "resampling" in r.getMessage()]
    assert len(resampling) == 4 and "from 16000 Hz to the model's 8000 Hz" in resampling[0]  # once per rate
    assert len(capsys.readouterr().out.splitlines()) == 5


def test_gmm_trained_before_rates_were_recorded(system, wavs, tmp_path):
    d, lang_dir, g, _ = system
    old = make_gmm(tmp_path / "old", lang_dir, record=False)
    with pytest.raises(ValueError, match=r"old/final.mdl records no sampling rate"):
        decode(old, lang_dir, g, wavs / "good.wav")
    # ... unless its directory names its training cuts: their rate is the model's
    rec = Recording.from_file(wavs / "good.wav")
    CutSet.from_cuts([rec.to_cut()]).to_file(tmp_path / "train_cuts.jsonl.gz")
    summary = tmp_path / "old" / "summary.json"
    write_json(summary, {**json.loads(summary.read_text()), "train_cuts": str(tmp_path / "train_cuts.jsonl.gz")})
    assert GmmScorer(old).features == feature_config(8000)


def test_dnn_featurizes_audio_at_its_rate(system, wavs, tmp_path):
    d, lang_dir, g, gmm = system
    path = make_dnn(tmp_path / "dnn" / "final.pt", gmm, rate=8000)
    scorer = DnnScorer([path])
    assert scorer.features == feature_config(8000)
    assert decode(path, lang_dir, g, wavs / "rate44100.wav", wavs / "good.wav") == 0


# ---------------------------------------------------------------- item 2: bad files


def test_bad_files_are_named_skipped_and_counted(system, wavs, caplog, capsys):
    d, lang_dir, g, gmm = system
    bad = {"zero.wav": "empty file", "header_only.wav": "no audio samples", "random.wav": "unreadable audio",
           "absent.wav": "no such file"}
    good = ["good.wav", "truncated.wav", "silence.wav", "stereo.wav", "50ms.wav", "rate48000.wav"]
    files = [wavs / n for n in ["zero.wav", "good.wav", "header_only.wav", "truncated.wav", "random.wav", "silence.wav",
                                "stereo.wav", "absent.wav", "50ms.wav", "rate48000.wav"]]
    caplog.set_level(logging.INFO)
    assert decode(gmm, lang_dir, g, *files) == 1
    out = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert sorted(out) == sorted(str(wavs / n) for n in good)
    for name, reason in bad.items():
        msgs = warnings_about(caplog, wavs / name)
        assert len(msgs) == 1 and reason in msgs[0] and "\n" not in msgs[0], (name, msgs)
    trunc = warnings_about(caplog, wavs / "truncated.wav")
    assert len(trunc) == 1 and "declares 1.00 s (8000 samples)" in trunc[0] and "0.50 s (4000)" in trunc[0]
    assert any("stereo.wav: 2 channels mixed down" in r.getMessage() for r in caplog.records)
    assert any("4 of 10 audio files failed" in r.getMessage() for r in caplog.records)


def test_gmm_decodes_a_lone_silent_file(system, wavs, capsys):
    d, lang_dir, g, gmm = system
    assert decode(gmm, lang_dir, g, wavs / "silence.wav") == 0
    assert capsys.readouterr().out.startswith(f"{wavs / 'silence.wav'}\t")


def test_all_files_bad(system, wavs, capsys):
    d, lang_dir, g, gmm = system
    assert decode(gmm, lang_dir, g, wavs / "zero.wav", wavs / "header_only.wav") == 1
    assert capsys.readouterr().out == ""


def test_help_documents_the_exit_status():
    p = argparse.ArgumentParser()
    decode_cli.add_arguments(p)
    assert "exit status is then 1" in " ".join(p.format_help().split())


# ---------------------------------------------------------------- item 3: phone sets


def test_lang_with_other_phones_is_refused(system, wavs, tmp_path):
    d, lang_dir, g, gmm = system
    # A phone the model does not know (AA for EH): as many phones, but renumbered from the third on.
    other_lang, other_g = make_lang(tmp_path / "other", {"YES": "Y AA S", "NO": "N OW"})
    with pytest.raises(ValueError, match="phone sets differ") as e:
        decode(gmm, other_lang, other_g, wavs / "good.wav")
    msg = str(e.value)
    assert str(gmm / "final.mdl") in msg and str((other_lang / "phones.txt").resolve()) in msg
    assert str((lang_dir / "phones.txt").resolve()) in msg  # the lang the model was trained with
    assert "phone 3 is EH in the model, AA in the lang" in msg and "\n" not in msg
    dnn = make_dnn(tmp_path / "dnn" / "final.pt", gmm)
    with pytest.raises(ValueError, match=r"phone sets differ: .*dnn/final.pt \(its GMM"):
        decode(dnn, other_lang, other_g, wavs / "good.wav")


def test_old_model_with_another_phone_count_is_refused(system, wavs, tmp_path):
    d, lang_dir, g, _ = system
    old = make_gmm(tmp_path / "old", lang_dir, rate=8000, record=False)
    other_lang, other_g = make_lang(tmp_path / "other", {"YES": "Y EH S", "NO": "N AA OW"})
    with pytest.raises(ValueError, match=r"phone sets differ: .*old/final.mdl has 7 phones, .*other/lang/phones.txt has 8"):
        decode(old, other_lang, other_g, wavs / "good.wav", extra=["--graph-dir", str(tmp_path / "graph")])


# ---------------------------------------------------------------- item 6: paths in a DNN's meta


def make_dnn(path, gmm_dir, rate=8000, meta=None):
    num_pdfs = GmmHmm.load(Path(gmm_dir) / "final.mdl").ctx_dep.num_pdfs
    model = Dnn(DnnConfig.from_preset("tiny", num_senones=num_pdfs))
    meta = meta or {"gmm_dir": str(gmm_dir), "log_priors": [float(-np.log(num_pdfs))] * num_pdfs,
                    "sampling_rate": rate, "cmvn": "speaker", "train_cuts": "data/cuts.jsonl.gz", "teachers": []}
    save_model(path, model, meta)
    return path


def test_dnn_meta_paths_are_absolute_and_resolved_from_anywhere(system, wavs, tmp_path, monkeypatch):
    d, lang_dir, g, gmm = system
    recipe = tmp_path / "recipe"
    make_gmm(recipe / "exp" / "tri1", lang_dir)
    monkeypatch.chdir(recipe)
    make_dnn(recipe / "exp" / "dnn" / "final.pt", "exp/tri1")
    monkeypatch.chdir(tmp_path)
    meta = load_model(recipe / "exp" / "dnn" / "final.pt").meta
    assert meta["gmm_dir"] == str((recipe / "exp" / "tri1").resolve()) and os.path.isabs(meta["train_cuts"])
    assert decode(recipe / "exp" / "dnn" / "final.pt", lang_dir, g, wavs / "good.wav") == 0

    # A model saved with paths relative to its recipe directory (before they were stored absolute).
    old = recipe / "exp" / "dnn_old" / "final.pt"
    make_dnn(old, gmm)
    saved = torch.load(old)
    saved["meta"]["gmm_dir"] = "exp/tri1"
    torch.save(saved, old)
    assert DnnScorer([old]).gmm_dir == (recipe / "exp" / "tri1").resolve()  # found above the model file
    saved["meta"]["gmm_dir"] = "exp/missing"
    torch.save(saved, old)
    with pytest.raises(FileNotFoundError, match=r"dnn_old/final.pt: its gmm_dir exp/missing does not exist \(looked in"):
        DnnScorer([old])
