"""The LibriSpeech recipe end to end on a tiny directory in LibriSpeech's layout.

No LibriSpeech is in ../shared/corpora, so a fixture builds one from speechocean762 (16 kHz read
English): ``LibriSpeech/{train-clean-5,dev-clean-2}/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac``
with ``<spk>-<chapter>.trans.txt``, the layout lhotse's ``prepare_librispeech`` reads, and
speechocean762's lexicon stands in for ``librispeech-lexicon.txt``. ``recipes/librispeech/run.sh``
then runs every stage (0-13) with tiny sizes in a scratch copy of the recipe, which exercises its
wiring: the parts mapped to train/dev/test, dev carved from train, ``--lexicon``, and the shared
stages of local/. Takes a few minutes. The corpus and the run are session fixtures of conftest.py
(tests/test_recipe_transfer.py decodes other data with the trained system).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lhotse import load_manifest

from asr_kd.data.corpora import prepare_corpus
from asr_kd.nnet.steps import StreamOpts, eval_step
from asr_kd.utils import UserError, read_json

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_librispeech(tiny_librispeech_corpus):
    return tiny_librispeech_corpus  # conftest.py: built once a session


def test_parts_map_to_the_recipe_splits(tiny_librispeech, tmp_path):
    """train=/dev=/test= name the splits; without dev=, dev is carved from train."""
    carved = prepare_corpus("librispeech", tiny_librispeech, tmp_path / "a",
                            parts=["train=train-clean-5", "test=dev-clean-2"], dev_fraction=0.1)
    assert {s: r["utterances"] for s, r in carved.items()} == {"train": 36, "dev": 4, "test": 10}
    assert carved["train"]["parts"] == ["train-clean-5"] and "carved" in carved["dev"]
    train = load_manifest(tmp_path / "a" / "librispeech_cuts_train.jsonl.gz")
    dev = load_manifest(tmp_path / "a" / "librispeech_cuts_dev.jsonl.gz")
    assert not set(train.ids) & set(dev.ids) and len(train) + len(dev) == 40
    assert {c.sampling_rate for c in train} == {16000}
    # a part given as dev, and two parts concatenated into one split
    given = prepare_corpus("librispeech", tiny_librispeech, tmp_path / "b",
                           parts=["train=train-clean-5,dev-clean-2", "dev=dev-clean-2"])
    assert {s: r["utterances"] for s, r in given.items()} == {"train": 50, "dev": 10}
    with pytest.raises(RuntimeError, match="test-clean"):
        prepare_corpus("librispeech", tiny_librispeech, tmp_path / "c", parts=["train=train-clean-5", "test=test-clean"])


@pytest.fixture(scope="module")
def recipe(tiny_trained_recipe):
    return tiny_trained_recipe  # conftest.py: run once a session (tests/test_recipe_transfer.py decodes with it)


def test_every_stage_ran(recipe):
    d, proc = recipe
    for stage in range(0, 14):
        assert f"Stage {stage}:" in proc.stdout + proc.stderr, f"stage {stage} did not run"
    prepared = json.loads((d / "data" / "manifests" / "librispeech_prepare.json").read_text())
    assert {s: r["utterances"] for s, r in prepared.items()} == {"train": 36, "dev": 4, "test": 10}
    assert prepared["test"]["parts"] == ["dev-clean-2"]


def test_the_given_lexicon_is_used(recipe, corpora):
    d, _ = recipe
    stats = json.loads((d / "data" / "lang" / "lang_stats.json").read_text())
    assert stats["primary_lexicon"] == str(corpora / "speechocean762" / "resource" / "lexicon.txt")
    assert stats["added_words"] == {}  # every training word from that lexicon: none from CMUdict or spelled
    assert stats["splits"]["train"]["not_in_primary_lexicon"] == 0


def test_senones_decodes_and_tables(recipe, monkeypatch):
    d, _ = recipe
    monkeypatch.chdir(d)  # manifests point at storage relative to the recipe directory
    num_pdfs = json.loads((d / "exp" / "tri1" / "priors.json").read_text())["num_pdfs"]
    cuts = load_manifest(d / "data" / "senones" / "librispeech_cuts_train.jsonl.gz")
    assert len(cuts) == 36
    for cut in cuts:
        labels = cut.load_custom("senone")
        assert labels.shape == (cut.num_frames,) and labels.min() >= 0 and labels.max() < num_pdfs
    for system in ("mono", "tri1", "dnn_seed1", "dnn_ensemble", "dnn_distilled_T2"):
        summary = json.loads((d / "exp" / system / "decode_test" / "decode.json").read_text())
        assert summary["utterances"] == 10, system
        assert (d / "exp" / system / "decode_test" / f"wer_{summary['best']}").read_text().startswith("%WER ")
    rows = json.loads((d / "results.json").read_text())["rows"]
    systems = {(r["system"], r["set"]) for r in rows}
    for key in [("gmm-mono", "test"), ("gmm-tri", "test"), ("dnn-baseline", "test"), ("dnn-ensemble-2", "test"),
                ("dnn-distilled-T2", "test"), ("dnn-3pct-hard", "train"), ("dnn-3pct-soft", "test")]:
        assert key in systems, key
    assert all(r["command"].startswith("cd recipes/librispeech && ./run.sh --corpus-dir") for r in rows)


def test_dnns_streamed_their_frames(recipe, monkeypatch, tmp_path):
    """The recipe streams (stream_frames=true): the training frames went to shards, not to a cache in
    memory, and a frame accuracy read from the shards a part at a time is the one read in memory."""
    d, _ = recipe
    monkeypatch.chdir(d)
    assert (d / "data" / "shards" / "train" / "manifest.json").is_file() and not (d / "data" / "frames").exists()
    streamed = json.loads((d / "exp" / "dnn_seed1" / "eval_train.json").read_text())  # stage 12, from the shards
    model, cuts = d / "exp" / "dnn_seed1" / "final.pt", d / "data" / "senones" / "librispeech_cuts_train.jsonl.gz"
    in_memory = eval_step([model], cuts, tmp_path / "memory.json")
    parts = eval_step([model], cuts, tmp_path / "parts.json", stream=StreamOpts(d / "data" / "shards" / "train", 500))
    assert in_memory["frames"] == streamed["frames"] == parts["frames"]
    assert in_memory["frame_accuracy"] == pytest.approx(streamed["frame_accuracy"], abs=1e-9)
    assert parts["frame_accuracy"] == pytest.approx(in_memory["frame_accuracy"], abs=1e-9)
    # the per-utterance counts a frame-accuracy bootstrap draws from: the same both ways, and they add up
    assert parts["per_utterance"] == in_memory["per_utterance"] == streamed["per_utterance"]
    correct, labelled = (sum(c[i] for c in parts["per_utterance"].values()) for i in (0, 1))
    assert len(parts["per_utterance"]) == parts["utterances"] and labelled == parts["frames"]
    assert 100.0 * correct / labelled == pytest.approx(parts["frame_accuracy"])
    assert set(parts["speakers"]) == set(parts["per_utterance"])


def test_dnn_realignment_gives_labels_for_the_next_dnn(recipe, monkeypatch, tmp_path):
    """asr-kd nnet align: the baseline DNN aligns the training set again, and asr-kd gmm labels turns
    its alignment into labelled cuts, one label per frame, mostly on the GMM's phones."""
    from asr_kd.hmm.alignments import load_alignments
    from asr_kd.hmm.steps import senone_labels_step
    from asr_kd.nnet.align import dnn_align_step

    d, _ = recipe
    monkeypatch.chdir(d)
    fbank = d / "data" / "fbank" / "librispeech_cuts_train.jsonl.gz"
    dnn_align_step([d / "exp" / "dnn_seed1" / "final.pt"], d / "data" / "lang", fbank, tmp_path / "ali", progress=False)
    by_dnn, by_gmm = load_alignments(tmp_path / "ali" / "ali.pt"), load_alignments(d / "exp" / "tri1" / "ali.pt")
    summary = read_json(tmp_path / "ali" / "summary.json")
    assert summary["utts_aligned"] == len(by_dnn) == len(by_gmm) == 36 and summary["utts_failed"] == 0
    assert all(by_dnn[u].num_frames == by_gmm[u].num_frames for u in by_gmm)
    same_phone = sum(int((by_dnn[u].phones == by_gmm[u].phones).sum()) for u in by_gmm)
    assert same_phone / sum(a.num_frames for a in by_gmm.values()) > 0.7
    senone_labels_step(fbank, tmp_path / "ali", tmp_path / "train_dnnali.jsonl.gz")
    for cut in load_manifest(tmp_path / "train_dnnali.jsonl.gz"):
        assert np.array_equal(cut.load_custom("senone"), by_dnn[cut.id].pdfs)
    with pytest.raises(UserError, match="gmm align"):
        dnn_align_step([d / "exp" / "tri1"], d / "data" / "lang", fbank, tmp_path / "ali2")


def test_a_missing_lexicon_is_one_line(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "recipes" / "librispeech" / "run.sh"), "--lexicon", str(tmp_path / "absent.txt"),
                           "--stage", "3", "--stop-stage", "3"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"))
    assert proc.returncode == 1 and proc.stderr.strip().endswith(f"--lexicon {tmp_path / 'absent.txt'}: no such file")
