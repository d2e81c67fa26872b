"""The LibriSpeech recipe end to end on a tiny directory in LibriSpeech's layout.

No LibriSpeech is in ../shared/corpora, so a fixture builds one from speechocean762 (16 kHz read
English): ``LibriSpeech/{train-clean-5,dev-clean-2}/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac``
with ``<spk>-<chapter>.trans.txt``, the layout lhotse's ``prepare_librispeech`` reads, and
speechocean762's lexicon stands in for ``librispeech-lexicon.txt``. ``recipes/librispeech/run.sh``
then runs every stage (0-12) with tiny sizes in a scratch copy of the recipe, which exercises its
wiring: the parts mapped to train/dev/test, dev carved from train, ``--lexicon``, and the shared
stages of local/. Takes a few minutes.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from lhotse import load_manifest

from asr_kd.data.corpora import prepare_corpus

REPO = Path(__file__).resolve().parents[1]
TRAIN_SPEAKERS, TRAIN_UTTS = 4, 10   # train-clean-5: 40 utterances
TEST_SPEAKERS, TEST_UTTS = 2, 5      # dev-clean-2: 10 utterances (the recipe's test set by default)


def _kaldi_dir(d: Path):
    """{speaker: [(utt, audio path, text)]} of a speechocean762 Kaldi data dir, in file order."""
    text = dict(line.split(maxsplit=1) for line in (d / "text").read_text().splitlines())
    wav = dict(line.split(maxsplit=1) for line in (d / "wav.scp").read_text().splitlines())
    by_spk = {}
    for line in (d / "utt2spk").read_text().splitlines():
        utt, spk = line.split()
        by_spk.setdefault(spk, []).append((utt, d.parent / wav[utt].strip(), text[utt].strip()))
    return by_spk


def build_tiny_librispeech(corpora: Path, root: Path) -> Path:
    """``root/LibriSpeech`` with parts train-clean-5 and dev-clean-2, flac from speechocean762."""
    so = corpora / "speechocean762"
    if not (so / "train" / "wav.scp").is_file():
        pytest.skip(f"speechocean762 not found at {so}")
    out = root / "LibriSpeech"
    for part, split, speakers, utts in (("train-clean-5", "train", TRAIN_SPEAKERS, TRAIN_UTTS),
                                        ("dev-clean-2", "test", TEST_SPEAKERS, TEST_UTTS)):
        for k, (spk, items) in enumerate(list(_kaldi_dir(so / split).items())[:speakers]):
            spk_id, chapter = str(int(spk)), str(100 + k)   # LibriSpeech ids are numbers
            d = out / part / spk_id / chapter
            d.mkdir(parents=True)
            lines = []
            for i, (_, audio, text) in enumerate(items[:utts]):
                uid = f"{spk_id}-{chapter}-{i:04d}"
                samples, rate = sf.read(audio, dtype="int16")
                assert rate == 16000, audio
                sf.write(d / f"{uid}.flac", samples, rate, format="FLAC", subtype="PCM_16")
                lines.append(f"{uid} {text}\n")
            (d / f"{spk_id}-{chapter}.trans.txt").write_text("".join(lines))
    return out


@pytest.fixture(scope="module")
def tiny_librispeech(corpora, tmp_path_factory):
    return build_tiny_librispeech(corpora, tmp_path_factory.mktemp("corpus"))


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
def recipe(corpora, tiny_librispeech, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "local", root / "local")
    shutil.copytree(REPO / "recipes" / "librispeech", root / "recipes" / "librispeech",
                    ignore=shutil.ignore_patterns("data", "exp", "download", "RESULTS.md", "results.json"))
    env = dict(os.environ, CORPORA=str(corpora), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("VIRTUAL_ENV", None)
    args = ["--corpus-dir", str(tiny_librispeech),
            "--lexicon", str(corpora / "speechocean762" / "resource" / "lexicon.txt"),
            "--mono-gauss", "100", "--tri-leaves", "60", "--tri-gauss", "300",
            "--num-teachers", "2", "--epochs", "2", "--preset", "tiny", "--temperatures", "2",
            "--subset-fraction", "0.25", "--subset-epochs", "2", "--nnet-opts", "--dtype fp32",
            "--lm-weights", "8 12"]
    proc = subprocess.run(["bash", str(root / "recipes" / "librispeech" / "run.sh"), *args],
                          env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return root / "recipes" / "librispeech", proc


def test_every_stage_ran(recipe):
    d, proc = recipe
    for stage in range(0, 13):
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


def test_a_missing_lexicon_is_one_line(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "recipes" / "librispeech" / "run.sh"), "--lexicon", str(tmp_path / "absent.txt"),
                           "--stage", "3", "--stop-stage", "3"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"))
    assert proc.returncode == 1 and proc.stderr.strip().endswith(f"--lexicon {tmp_path / 'absent.txt'}: no such file")
